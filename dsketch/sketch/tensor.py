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
from . import hadamard
from .compiled import NUMBA_DTYPES, window_product
from .hadamard import fold_fwht, hadamard_blocks, hadamard_gather, next_pow2
from .linear import CountSketch

__all__ = [
    "TensorSRHT",
    "ComplexTensorSRHT",
    "CtRTensorSRHT",
    "ctr_real",
    "TensorSketch",
    "TensorSketchPower",
]


def _compiled_windows(xp, out, t1, t2) -> bool:
    """Whether :func:`.compiled.window_product` writes a windowed combine here (host,
    real float32/float64 factors of the output's dtype)."""
    return (hadamard.USE_COMPILED and xp is np and out.dtype in NUMBA_DTYPES
            and t1.dtype == out.dtype and (t2 is None or t2.dtype == out.dtype))


@dataclass(frozen=True)
class _Design:
    """A TensorSRHT's drawn parameters: signs and either the one-block design (``p1``, the
    first factor's ``w1`` coordinates; ``p2ext``, the second's, read in ``rows`` windows of
    ``w1``) or the gather indices ``i1``, ``i2`` of several blocks."""

    s1: object
    s2: object
    p1: object
    p2ext: object
    w1: int
    rows: int
    i1: object
    i2: object
    n1: int = 0     # folded factor widths (``fold``); 0: not folded
    n2: int = 0
    blocks: int = 1  # > 1: full blocks of n1·n2 outputs, each read in windows (``combine``)


@dataclass(frozen=True)
class _TensorSRHTCore(RandomSpec):
    """Shared TensorSRHT body (real or complex signs, index-pair design); see :class:`TensorSRHT`."""

    d1: int
    d2: int
    d_out: int
    seed: int
    path: tuple = ()

    fold: bool = False

    _component = "tensorsrht"
    _complex = False

    def __post_init__(self):
        check_spec(self, "d1", "d2", "d_out")

    def _widths(self):
        """Transform widths of the factors: padded, or folded to ``next_pow2(d_out)`` (``fold``)."""
        n1, n2 = next_pow2(self.d1), next_pow2(self.d2)
        if not self.fold:
            return n1, n2
        cap = next_pow2(self.d_out)
        return min(n1, cap), min(n2, cap)

    def _build(self, xp, dtype):
        full1, full2 = next_pow2(self.d1), next_pow2(self.d2)
        n1, n2 = self._widths()
        pairs = n1 * n2
        blocks = -(-self.d_out // pairs)
        gen = rng(self.seed, *self.path, self._component)
        s1 = random_signs(gen, (blocks, full1), self._complex) / math.sqrt(self.d_out)
        s2 = random_signs(gen, (blocks, full2), self._complex)
        folded = (n1 if n1 < full1 else 0, n2 if n2 < full2 else 0)
        i1, i2, perms = [], [], []
        for b in range(blocks):
            j = np.arange(min(pairs, self.d_out - b * pairs))
            r, t = j % n1, j // n1
            p1, p2 = gen.permutation(n1), gen.permutation(n2)
            perms.append((p1, p2))
            i1.append(b * n1 + p1[r])
            i2.append(b * n2 + p2[(r + t) % n2])
        sdt = complex_dtype(dtype) if self._complex else dtype
        put = lambda a, t: to_namespace(a.astype(t), xp)  # noqa: E731
        if blocks == 1:
            # one block: output (t, r) pairs p1[r] with p2[(r + t) mod n2]; the fused
            # product gathers n1 + n2 coordinates, not 2·d_out (see ``combine``)
            w1 = min(n1, self.d_out)
            p1, p2 = perms[0]
            rows = -(-self.d_out // w1)
            ext = p2[np.arange(w1 + rows - 1) % n2]
            if rows == 1 and w1 == n1:
                # d_out = n1: output r pairs p1[r] with ext[r]; listed in the order of p1
                # (output c pairs c with ext[p1⁻¹ c]), the first factor needs no gather.
                # A fixed permutation of the outputs: the same inner products.
                return _Design(put(s1, sdt), put(s2, sdt), None, put(ext[np.argsort(p1)], np.int64),
                               w1, rows, None, None, *folded)
            return _Design(put(s1, sdt), put(s2, sdt), put(p1[:w1], np.int64),
                           put(ext, np.int64), w1, rows, None, None, *folded)
        if self.d_out % pairs == 0:
            # full blocks: the one-block windows per block (the same pairs as i1, i2)
            ext = np.arange(n1 + n2 - 1) % n2
            p1 = np.concatenate([b * n1 + q1 for b, (q1, _) in enumerate(perms)])
            p2 = np.concatenate([b * n2 + q2[ext] for b, (_, q2) in enumerate(perms)])
            return _Design(put(s1, sdt), put(s2, sdt), put(p1, np.int64), put(p2, np.int64),
                           n1, n2, None, None, *folded, blocks)
        return _Design(put(s1, sdt), put(s2, sdt), None, None, 0, 0,
                       put(np.concatenate(i1), np.int64), put(np.concatenate(i2), np.int64))

    def _design(self, x):
        real = np.float32 if x.dtype in (np.float32, np.complex64) else np.float64
        return self._params(get_namespace(x), real)

    def transform(self, x, which: int):
        """Signed Hadamard transform of one factor, gathered to its design coordinates.

        ``(R, d_which) → (R, k)``: the input to :meth:`combine` (no validation; 2-D rows).
        ``which=1`` carries the ``1/√d_out`` scale.
        """
        g = self._design(x)
        signs = g.s1 if which == 1 else g.s2
        fold = g.n1 if which == 1 else g.n2
        if fold:  # one block: (H D x̃)[:fold] of the padded width, then the design's gather
            return fold_fwht(x, signs[0], fold, g.p1 if which == 1 else g.p2ext)
        if g.i1 is not None or (which == 1 and g.p1 is None):
            return hadamard_blocks(x, signs)
        return hadamard_gather(x, signs, g.p1 if which == 1 else g.p2ext)

    def transform_product(self, t1, x2):
        """``combine(t1, transform(x2, 2))``: on the host, for the one-block design with one
        window (``d_out`` = the first factor's width), the product is fused into the second
        factor's gather (the same products, one pass less)."""
        g = self._design(x2)
        if (t1 is None or g.i1 is not None or g.blocks != 1 or g.rows != 1
                or g.w1 != self.d_out or t1.shape[1] != self.d_out):
            return self.combine(t1, self.transform(x2, 2))
        if g.n2:
            return fold_fwht(x2, g.s2[0], g.n2, g.p2ext, mul=t1)
        return hadamard_gather(x2, g.s2, g.p2ext, mul=t1)

    def combine(self, t1, t2):
        """``T(x₁, x₂)`` ``(R, d_out)`` from ``t1 = transform(x₁, 1)``, ``t2 = transform(x₂, 2)``.

        Either may be None: the factor is then the constant ``e₀`` side (its transform is
        ±1, a sign per block that does not change any inner product), so the result is the
        other factor spread over the ``d_out`` outputs (``t1`` itself when it already has
        them: callers never write into either).
        """
        ref = t1 if t1 is not None else t2
        xp = get_namespace(ref)
        g = self._design(ref)
        if g.i1 is not None:  # several blocks: plain gathers
            a = None if t1 is None else xp.take(t1, g.i1, axis=1)
            b = None if t2 is None else xp.take(t2, g.i2, axis=1)
            return a if b is None else (b if a is None else a * b)
        if g.blocks > 1:
            return self._combine_blocks(g, t1, t2)
        if t2 is None and g.rows == 1 and g.w1 == self.d_out and t1.shape[1] == self.d_out:
            return t1  # the first factor alone, one window: the output is t1 (no copy)
        rows, w1, n = ref.shape[0], g.w1, self.d_out
        full = (n // w1) * w1
        out = xp.empty((rows, n), dtype=ref.dtype if t2 is None or t1 is None
                       else xp.result_type(t1.dtype, t2.dtype))
        if t2 is not None:  # row t of the outputs sees t2[t : t + w1] (a strided view)
            st = t2.strides
            win = xp.lib.stride_tricks.as_strided(t2, (rows, g.rows, w1), (st[0], st[1], st[1]))
        if full and t1 is not None and _compiled_windows(xp, out, t1, t2):
            window_product(t1, t2, full // w1, out)  # the same products, one pass
        elif full:
            dst = out[:, :full].reshape(rows, full // w1, w1)
            if t1 is None:
                dst[...] = win[:, : full // w1]
            elif t2 is None:
                dst[...] = t1[:, None, :]
            else:
                xp.multiply(t1[:, None, :], win[:, : full // w1], out=dst)
        if n > full:
            k = n - full
            a = None if t1 is None else t1[:, :k]
            b = None if t2 is None else win[:, -1, :k]
            out[:, full:] = a if b is None else (b if a is None else a * b)
        return out

    def _combine_blocks(self, g, t1, t2):
        """:meth:`combine` for full blocks: block ``b``, row ``t`` reads ``t2`` window ``t``."""
        ref = t1 if t1 is not None else t2
        xp = get_namespace(ref)
        rows, w1, k = ref.shape[0], g.w1, g.rows
        shape = (rows, g.blocks, k, w1)
        if t2 is not None:
            st = t2.strides
            win = xp.lib.stride_tricks.as_strided(
                t2, shape, (st[0], (w1 + k - 1) * st[1], st[1], st[1]))
        if t1 is None:
            return xp.ascontiguousarray(win).reshape(rows, self.d_out)
        a = t1.reshape(rows, g.blocks, 1, w1)
        out = xp.broadcast_to(a, shape).copy() if t2 is None else a * win
        return out.reshape(rows, self.d_out)

    def left(self, x1):
        """First factor alone, spread to ``(..., d_out)`` (no validation; internal use)."""
        x2, lead = as_rows(x1, self.d1)
        return self.combine(self.transform(x2, 1), None).reshape(lead + (self.d_out,))

    def right(self, x2):
        """Second factor alone, spread to ``(..., d_out)`` (no validation; internal use)."""
        y2, lead = as_rows(x2, self.d2)
        return self.combine(None, self.transform(y2, 2)).reshape(lead + (self.d_out,))

    def _pair(self, x1, x2):
        """``T(x₁, x₂)`` with leading dimensions broadcast against each other."""
        lead = np.broadcast_shapes(x1.shape[:-1], x2.shape[:-1])
        a = as_rows(x1, self.d1)[0]
        b = as_rows(x2, self.d2)[0]
        if x1.shape[:-1] != lead:
            a = get_namespace(x1).broadcast_to(x1, lead + (self.d1,)).reshape(-1, self.d1)
        if x2.shape[:-1] != lead:
            b = get_namespace(x2).broadcast_to(x2, lead + (self.d2,)).reshape(-1, self.d2)
        return self.transform_product(self.transform(a, 1), b).reshape(lead + (self.d_out,))

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
    row: with one block, output row ``t`` of ``n₁`` pairs reads a contiguous window of the
    gathered second factor, so the product is one pass with no ``d_out``-wide gathers
    (:meth:`transform`, :meth:`combine`; the PolySketch tree shares a node's left factor
    through them). Leading dimensions of ``x₁`` and ``x₂`` broadcast against each other.
    When ``d_out = n₁`` the outputs are listed in the order of ``π₁`` (the same inner
    products), so the first factor needs no gather; several full blocks use the same
    windows per block (no ``d_out``-wide gathers either).

    ``fold=True`` (the PolySketch tree's nodes): a factor padded wider than
    ``n = next_pow2(d_out)`` is transformed as ``(H_N D x̃)[:n] = H_n Σ_a D_a x̃_a`` (the signed
    sum of its width-``n`` pieces, :func:`~.hadamard.fold_signed`): still an unbiased
    signed transform (any fixed rows of ``H_N`` are), at the cost of one size-``n``
    transform instead of one of the padded width (measured on the Myrtle-5 CNTK sketch,
    inputs 2043 wide, m = 1024: the same kernel error over 32 seeds).
    Draws: ``rng(seed, *path, "tensorsrht")``.
    """

    def __call__(self, x1, x2, *, check: bool = True):
        """``(..., d1), (..., d2) → (..., d_out)``."""
        x1, x2 = self._prep_pair(x1, x2, check)
        return self._pair(x1, x2)


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
        return self._pair(x1, x2)


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
