"""Sketches of tensor products: TensorSRHT (real, complex, complex-to-real), TensorSketch.

Owns the two-factor sketches ``T(x₁, x₂)`` of ``x₁ ⊗ x₂`` with
``E⟨T(x₁,x₂), T(y₁,y₂)⟩ = ⟨x₁,y₁⟩⟨x₂,y₂⟩`` (``TensorSRHT``, ``CtRTensorSRHT``,
``TensorSketch``; ``ComplexTensorSRHT`` in the Hermitian sense), the degree-``p``
``TensorSketchPower`` (``E⟨Tx, Ty⟩ = ⟨x, y⟩ᵖ``) and :func:`ctr_real`, the complex-to-real
output map of Wacker et al. They are the nodes of the PolySketch tree
(:mod:`.polysketch`) and of the ReLU-NTK features. Same spec conventions as
:mod:`.linear` (last axis, NumPy/CuPy, dtype-preserving, host draws from
``rng(seed, *path, ...)``, ``check=False`` for internal callers). Must not import Dask and
holds no random state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..backend import get_namespace, rng, to_namespace
from ._base import (
    RandomSpec,
    as_rows,
    check_sparse,
    check_spec,
    complex_dtype,
    float_dtype,
    is_sparse,
    prepare_input,
    random_signs,
)
from .hadamard import hadamard_blocks, next_pow2
from .linear import CountSketch

__all__ = [
    "TensorSRHT",
    "ComplexTensorSRHT",
    "CtRTensorSRHT",
    "ctr_real",
    "TensorSketch",
    "TensorSketchPower",
]


@dataclass(frozen=True)
class _TensorSRHTCore(RandomSpec):
    """Shared TensorSRHT body (real or complex signs, index-pair design); see :class:`TensorSRHT`."""

    d1: int
    d2: int
    d_out: int
    seed: int
    path: tuple = ()

    _component = "tensorsrht"
    _complex = False

    def __post_init__(self):
        check_spec(self, "d1", "d2", "d_out")

    def _build(self, xp, dtype):
        n1, n2 = next_pow2(self.d1), next_pow2(self.d2)
        pairs = n1 * n2
        blocks = -(-self.d_out // pairs)
        gen = rng(self.seed, *self.path, self._component)
        s1 = random_signs(gen, (blocks, n1), self._complex) / math.sqrt(self.d_out)
        s2 = random_signs(gen, (blocks, n2), self._complex)
        i1, i2 = [], []
        for b in range(blocks):
            j = np.arange(min(pairs, self.d_out - b * pairs))
            r, t = j % n1, j // n1
            i1.append(b * n1 + gen.permutation(n1)[r])
            i2.append(b * n2 + gen.permutation(n2)[(r + t) % n2])
        i1, i2 = np.concatenate(i1), np.concatenate(i2)
        sdt = complex_dtype(dtype) if self._complex else dtype
        put = lambda a, t: to_namespace(a.astype(t), xp)  # noqa: E731
        # a first factor whose coordinates are all used in order needs no gather (None)
        g1 = None if np.array_equal(i1, np.arange(blocks * n1)) else put(i1, np.int64)
        return (put(s1, sdt), put(s2, sdt), g1, put(i2, np.int64))

    def _side(self, x, which: int):
        """The gathered Hadamard transform of one factor: ``(..., d_which) → (..., d_out)``."""
        d = self.d1 if which == 1 else self.d2
        xp = get_namespace(x)
        x2, lead = as_rows(x, d)
        real = np.float32 if x.dtype in (np.float32, np.complex64) else np.float64
        s1, s2, i1, i2 = self._params(xp, real)
        signs, idx = (s1, i1) if which == 1 else (s2, i2)
        y = hadamard_blocks(x2, signs)
        if idx is not None:
            y = xp.take(y, idx, axis=1)
        return y.reshape(lead + (self.d_out,))

    def left(self, x1):
        """First factor ``(H D₁ x₁)[P₁] / √d_out`` (no validation; internal use)."""
        return self._side(x1, 1)

    def right(self, x2):
        """Second factor ``(H D₂ x₂)[P₂]`` (no validation; internal use)."""
        return self._side(x2, 2)

    def _prep_pair(self, x1, x2, check):
        name = type(self).__name__
        x1 = prepare_input(x1, self.d1, name, "x1", check, "d1")
        x2 = prepare_input(x2, self.d2, name, "x2", check, "d2")
        dt = np.promote_types(x1.dtype, x2.dtype)
        get_namespace(x1, x2)  # raises on a NumPy/CuPy mix
        return x1.astype(dt, copy=False), x2.astype(dt, copy=False)


@dataclass(frozen=True)
class TensorSRHT(_TensorSRHTCore):
    """Real TensorSRHT ``T(x₁, x₂) = (H D₁ x̃₁)[P₁] ⊙ (H D₂ x̃₂)[P₂] / √d_out``.

    A sketch of ``x₁ ⊗ x₂`` without forming it: ``D₁, D₂`` independent ±1 diagonals, ``H``
    the unnormalized Walsh–Hadamard matrices of the padded widths ``n₁, n₂`` and
    ``(P₁, P₂)`` ``d_out`` **distinct** index pairs from a balanced random design: output
    ``j`` pairs ``π₁[j mod n₁]`` with ``π₂[(j mod n₁ + ⌊j/n₁⌋) mod n₂]`` for random
    permutations ``π₁, π₂``, so each factor's coordinates are used equally often (an
    SRHT-like sample without replacement of each factor) and no pair repeats; independent
    blocks of all ``n₁ n₂`` pairs when ``d_out > n₁ n₂``. Unbiasedness holds for any fixed
    pairs (only the signs are averaged); the balanced design lowers the variance, and
    makes ``T(x, e₀)`` an exact isometry of ``x`` when ``d_out = n₁``. Real output;
    ``E⟨T(x₁,x₂), T(y₁,y₂)⟩ = ⟨x₁,y₁⟩⟨x₂,y₂⟩``. Cost ``O(n₁ log n₁ + n₂ log n₂ + d_out)`` per
    row. Leading dimensions of ``x₁`` and ``x₂`` broadcast against each other.
    Draws: ``rng(seed, *path, "tensorsrht")``.
    """

    def __call__(self, x1, x2, *, check: bool = True):
        """``(..., d1), (..., d2) → (..., d_out)``."""
        x1, x2 = self._prep_pair(x1, x2, check)
        return self.left(x1) * self.right(x2)


@dataclass(frozen=True)
class ComplexTensorSRHT(_TensorSRHTCore):
    """TensorSRHT with complex Rademacher signs ``{±1, ±i}``; complex in, complex out.

    ``z = (H D₁ x₁)[P₁] ⊙ (H D₂ x₂)[P₂] / √d_out`` with ``E[Σ z(x) conj z(y)] = ⟨x₁,ȳ₁⟩⟨x₂,ȳ₂⟩``
    and ``E[Σ z(x) z(y)] = 0``. Used inside :class:`CtRPolySketch`; for real features use
    :class:`CtRTensorSRHT`. Draws: ``rng(seed, *path, "ctensorsrht")``.
    """

    _component = "ctensorsrht"
    _complex = True

    def __call__(self, x1, x2, *, check: bool = True):
        """``(..., d1), (..., d2) → (..., d_out)`` complex (inputs real or complex)."""
        if check:
            x1, x2 = self._prep_pair(x1, x2, check)
        return self.left(x1) * self.right(x2)


def ctr_real(z, d_out: int):
    """Complex-to-real map of Wacker et al.: ``ceil(d_out/2)`` complex features → ``d_out`` reals.

    For ``z`` with ``E[z_j(x) conj z_j(y)] = k`` and ``E[z_j(x) z_j(y)] = 0`` (complex
    Rademacher products), returns ``[Re z_{1..h}, Im z_{1..h}] / √h`` for even ``d_out = 2h``:
    ``⟨f(x), f(y)⟩ = Re Σ_j z_j(x) conj z_j(y) / h``, unbiased for ``k``. For odd
    ``d_out = 2h + 1`` the last complex feature contributes only ``√2 · Re z_{h+1}`` (its
    expectation ``E[2 Re z Re z'] = Re E[z z̄'] + Re E[z z'] = k``) and the divisor is
    ``h + 1``. The input ``z`` has last axis ``ceil(d_out/2)`` and already carries any
    ``1/√width`` scale; this function rescales to the average over complex features.
    """
    xp = get_namespace(z)
    h, odd = divmod(d_out, 2)
    mc = h + odd
    if z.shape[-1] != mc:
        raise ValueError(f"ctr_real: z has width {z.shape[-1]}, expected ceil(d_out/2)={mc}")
    parts = [z[..., :h].real, z[..., :h].imag]
    if odd:
        parts.append(z[..., h:].real * math.sqrt(2.0))
    # z was scaled by 1/√mc; sum over mc complex features already averages: no rescale.
    return xp.concatenate(parts, axis=-1)


@dataclass(frozen=True)
class CtRTensorSRHT(_TensorSRHTCore):
    """Complex-to-real TensorSRHT (Wacker et al. 2022), real output of width ``d_out``.

    ``z = (H D₁ x̃₁)[P₁] ⊙ (H D₂ x̃₂)[P₂] / √⌈d_out/2⌉`` with complex Rademacher ``D`` and
    output ``[Re z, Im z]`` (odd ``d_out``: the last complex feature gives only ``√2·Re``;
    see :func:`ctr_real`). Estimator: ``⟨f(x), f(y)⟩ = Re Σ_j z_j(x) conj z_j(y)``, unbiased
    for ``⟨x₁,y₁⟩⟨x₂,y₂⟩``. Versus the real TensorSRHT at equal output width it halves the
    number of index pairs but drops the ``Re E[z z']`` term from the variance (real signs
    have ``E[d²] = 1``, complex ones ``E[d²] = 0``), which is what lowers the variance of
    products of many factors (the O(3ᵖ) → O(2ᵖ) of the paper).
    Draws: a :class:`ComplexTensorSRHT` of width ``⌈d_out/2⌉`` at ``(*path, "ctr")``.
    """

    def _build(self, xp, dtype):
        return ComplexTensorSRHT(self.d1, self.d2, (self.d_out + 1) // 2, self.seed,
                                 self.path + ("ctr",))

    def __call__(self, x1, x2, *, check: bool = True):
        """``(..., d1), (..., d2) → (..., d_out)`` real."""
        x1, x2 = self._prep_pair(x1, x2, check)
        core = self._params(get_namespace(x1), x1.dtype)
        return ctr_real(core(x1, x2, check=False), self.d_out)


@dataclass(frozen=True)
class TensorSketch(RandomSpec):
    """TensorSketch of Pham & Pagh: ``T(x₁,x₂) = IFFT(FFT(C₁x₁) ⊙ FFT(C₂x₂))`` (real).

    ``C₁, C₂`` independent CountSketches to ``d_out``; the circular convolution is the
    CountSketch of ``x₁ ⊗ x₂`` with hash ``(h₁+h₂) mod d_out`` and sign ``s₁s₂``, so
    ``E⟨T(x₁,x₂), T(y₁,y₂)⟩ = ⟨x₁,y₁⟩⟨x₂,y₂⟩``. Cost ``O(nnz + d_out log d_out)`` per row.
    Draws: the CountSketches at paths ``(*path, "tensorsketch", 1|2)``.
    """

    d1: int
    d2: int
    d_out: int
    seed: int
    path: tuple = ()

    def __post_init__(self):
        check_spec(self, "d1", "d2", "d_out")

    def _build(self, xp, dtype):
        return (CountSketch(self.d1, self.d_out, self.seed, self.path + ("tensorsketch", 1)),
                CountSketch(self.d2, self.d_out, self.seed, self.path + ("tensorsketch", 2)))

    def __call__(self, x1, x2, *, check: bool = True):
        """``(..., d1), (..., d2) → (..., d_out)``."""
        name = type(self).__name__
        x1 = prepare_input(x1, self.d1, name, "x1", check, "d1")
        x2 = prepare_input(x2, self.d2, name, "x2", check, "d2")
        xp = get_namespace(x1, x2)
        dt = np.promote_types(x1.dtype, x2.dtype)
        c1, c2 = self._params(xp, dt)
        f = xp.fft.rfft(c1(x1.astype(dt, copy=False), check=False), axis=-1)
        f = f * xp.fft.rfft(c2(x2.astype(dt, copy=False), check=False), axis=-1)
        return xp.fft.irfft(f, n=self.d_out, axis=-1).astype(dt, copy=False)


@dataclass(frozen=True)
class TensorSketchPower(RandomSpec):
    """Degree-``p`` TensorSketch of ``x^{⊗p}`` (Pham & Pagh; scikit-learn's PolynomialCountSketch).

    ``T x = IFFT(Π_{k=1}^{p} FFT(C_k x))`` with ``C_k`` independent CountSketches to
    ``d_out``; ``E⟨Tx, Ty⟩ = ⟨x, y⟩ᵖ``. Cost ``O(p·(nnz + d_out log d_out))`` per row; accepts
    2-D sparse input. Variance grows exponentially in ``p`` (compare :class:`PolySketch`).
    Draws: CountSketches at paths ``(*path, "tensorsketch", k)``, ``k = 1..p``.
    """

    d_in: int
    d_out: int
    degree: int
    seed: int
    path: tuple = ()

    def __post_init__(self):
        check_spec(self, "d_in", "d_out", "degree")

    def _build(self, xp, dtype):
        return tuple(CountSketch(self.d_in, self.d_out, self.seed,
                                 self.path + ("tensorsketch", k + 1)) for k in range(self.degree))

    def __call__(self, x, *, check: bool = True):
        """``(..., d_in) → (..., d_out)`` real."""
        name = type(self).__name__
        if is_sparse(x):
            x = check_sparse(x, self.d_in, name)
            xp, dt = get_namespace(x.data), float_dtype(x.data)
        else:
            x = prepare_input(x, self.d_in, name, check=check)
            xp, dt = get_namespace(x), x.dtype
        f = None
        for cs in self._params(xp, dt):
            g = xp.fft.rfft(cs(x, check=False), axis=-1)
            f = g if f is None else f * g
        return xp.fft.irfft(f, n=self.d_out, axis=-1).astype(dt, copy=False)
