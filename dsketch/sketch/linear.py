"""Linear random sketches of one vector: SRHT (real and complex signs), Gaussian, CountSketch,
the signed sum of several blocks (:class:`SignedSum`), and how rows of any width enter a
map's first random layer (:func:`input_reduction`, :func:`first_layer_rows`).

Owns the maps ``S: R^{d_in} → R^{d_out}`` with ``E⟨Sx, Sy⟩ = ⟨x, y⟩`` (``ComplexSRHT``:
``E[u(x) · conj u(y)] = ⟨x, y⟩`` and ``E[u(x) · u(y)] = 0``) that the tensor sketches,
the PolySketch tree, the layers of :mod:`dsketch.nets` and the kernel maps are built from.
Each is a frozen dataclass spec that acts on the last axis of its input (any leading
dimensions), takes NumPy or CuPy arrays and returns the same module, preserves the float
dtype of its input (integers → float64), and draws its randomness on the host from
``dsketch.backend.rng(seed, *path, "<component>")``, cached per process, device and dtype
(:class:`._base.RandomSpec`). Calls validate their input unless ``check=False`` (internal
callers that already did). Must not import Dask and holds no random state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.sparse

from ..backend import get_namespace, rng, rows_matmul, to_namespace
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
from .compiled import NUMBA_DTYPES, signed_add
from .hadamard import fold_fwht, fwht, hadamard_blocks, hadamard_gather, next_pow2

__all__ = ["SRHT", "ComplexSRHT", "GaussianProjection", "CountSketch", "SignedSum", "srht_block_sum",
           "REDUCE_ABOVE", "reduced_width", "input_reduction", "first_layer_rows", "row_sq_norms"]

#: Rows wider than this enter a map through a CountSketch (dense and sparse rows alike), so no
#: random matrix, transform or densified chunk is ever as wide as a huge sparse input.
REDUCE_ABOVE = 1 << 13


@dataclass(frozen=True)
class _SRHTCore(RandomSpec):
    """Shared SRHT body (real or complex signs); see :class:`SRHT`."""

    d_in: int
    d_out: int
    seed: int
    path: tuple = ()

    _component = "srht"
    _complex = False

    def __post_init__(self):
        check_spec(self, "d_in", "d_out")

    @property
    def _n(self) -> int:
        return next_pow2(self.d_in)

    def _build(self, xp, dtype):
        n = self._n
        blocks = -(-self.d_out // n)
        gen = rng(self.seed, *self.path, self._component)
        signs = random_signs(gen, (blocks, n), self._complex) / math.sqrt(self.d_out)
        last = self.d_out - (blocks - 1) * n
        idx = np.concatenate([np.arange((blocks - 1) * n),
                              (blocks - 1) * n + np.sort(gen.choice(n, last, replace=False))])
        sdt = complex_dtype(dtype) if self._complex else dtype
        return (to_namespace(signs.astype(sdt), xp), to_namespace(idx.astype(np.int64), xp))

    def _apply(self, x, check: bool):
        x = prepare_input(x, self.d_in, type(self).__name__, check=check)
        xp = get_namespace(x)
        x2, lead = as_rows(x, self.d_in)
        signs, idx = self._params(xp, float_dtype(x))
        if signs.shape[0] * signs.shape[1] == self.d_out:  # full blocks need no gather
            y = hadamard_blocks(x2, signs)
        else:
            y = hadamard_gather(x2, signs, idx)
        return y.reshape(lead + (self.d_out,))


@dataclass(frozen=True)
class SRHT(_SRHTCore):
    """Subsampled randomized Hadamard transform ``S: R^{d_in} → R^{d_out}``.

    ``S x = (H D x̃)[P] / √d_out`` with ``x̃`` the input zero-padded to ``n = 2^⌈log₂ d_in⌉``,
    ``D`` a random ±1 diagonal, ``H`` the unnormalized ``n × n`` Walsh–Hadamard matrix and
    ``P`` ``d_out`` coordinates sampled **without replacement**. When ``d_out > n`` the map
    stacks ``⌈d_out/n⌉`` independent blocks (independent ``D``): all ``n`` coordinates of
    the full blocks and a without-replacement sample of the last. Unbiased,
    ``E⟨Sx, Sy⟩ = ⟨x, y⟩``; exact (an isometry) when ``d_out`` is a multiple of ``n``.
    Cost ``O(⌈d_out/n⌉ · n log n)`` per row.

    Parameters
    ----------
    d_in, d_out : int
        Input and output widths (≥ 1).
    seed : int
        Non-negative root seed.
    path : tuple of str/int
        Named stream below ``seed``; draws come from ``rng(seed, *path, "srht")``.
    """

    def __call__(self, x, *, check: bool = True):
        """Sketch the last axis of ``x``: ``(..., d_in) → (..., d_out)``."""
        return self._apply(x, check)


@dataclass(frozen=True)
class ComplexSRHT(_SRHTCore):
    """SRHT with complex Rademacher signs ``{±1, ±i}``: complex output ``(..., d_out)``.

    ``u = (H D x̃)[P] / √d_out``. For real or complex ``x``: ``E[Σ u(x) conj u(y)] = ⟨x, ȳ⟩``
    (the Hermitian inner product) and ``E[Σ u(x) u(y)] = 0``: the building block of the
    complex-to-real sketches of Wacker et al. (2022). Draws: ``rng(seed, *path, "csrht")``.
    """

    _component = "csrht"
    _complex = True

    def __call__(self, x, *, check: bool = True):
        """Complex sketch of the last axis: ``(..., d_in) → (..., d_out)`` complex.

        Real input is validated like :class:`SRHT`'s; complex input is accepted only from
        internal callers (``check=False``).
        """
        if check or x.dtype.kind != "c":
            return self._apply(x, check)
        xp = get_namespace(x)
        x2, lead = as_rows(x, self.d_in)
        real = np.float32 if x.dtype == np.complex64 else np.float64
        signs, idx = self._params(xp, real)
        y = hadamard_gather(x2, signs, idx)
        return y.reshape(lead + (self.d_out,))


@dataclass(frozen=True)
class GaussianProjection(RandomSpec):
    """Dense Gaussian projection ``S x = Gᵀ x / √d_out`` with ``G`` i.i.d. N(0, 1), d_in × d_out.

    Unbiased, ``E⟨Sx, Sy⟩ = ⟨x, y⟩``; cost ``O(d_in · d_out)`` per row (``O(nnz · d_out)``
    for 2-D sparse input). Draws:
    ``rng(seed, *path, "gaussian")`` (float64 on the host, cast to the input dtype).
    """

    d_in: int
    d_out: int
    seed: int
    path: tuple = ()

    def __post_init__(self):
        check_spec(self, "d_in", "d_out")

    def _build(self, xp, dtype):
        gen = rng(self.seed, *self.path, "gaussian")
        g = gen.standard_normal((self.d_in, self.d_out)) / math.sqrt(self.d_out)
        return to_namespace(g.astype(dtype), xp)

    def __call__(self, x, *, check: bool = True):
        """Project the last axis of ``x``: ``(..., d_in) → (..., d_out)`` (2-D sparse too)."""
        if is_sparse(x):  # a sparse product, O(nnz · d_out)
            x = check_sparse(x, self.d_in, type(self).__name__)
            return x @ self._params(get_namespace(x.data), x.dtype)
        x = prepare_input(x, self.d_in, type(self).__name__, check=check)
        xp = get_namespace(x)
        x2, lead = as_rows(x, self.d_in)
        return rows_matmul(x2, self._params(xp, x.dtype)).reshape(lead + (self.d_out,))


@dataclass(frozen=True)
class CountSketch(RandomSpec):
    """CountSketch ``(S x)_j = Σ_{i: h(i)=j} s(i) x_i`` (Charikar et al.), O(nnz) per row.

    ``h`` uniform on ``[0, d_out)`` and ``s`` uniform ±1, independent per coordinate, from
    ``rng(seed, *path, "countsketch")``. Unbiased, ``E⟨Sx, Sy⟩ = ⟨x, y⟩``. Also accepts a 2-D
    ``scipy.sparse`` (or ``cupyx.scipy.sparse``) matrix and returns a dense array.
    """

    d_in: int
    d_out: int
    seed: int
    path: tuple = ()

    def __post_init__(self):
        check_spec(self, "d_in", "d_out")

    def hashes(self) -> tuple[np.ndarray, np.ndarray]:
        """Host arrays ``(h, s)``: bucket index and sign of every input coordinate."""
        gen = rng(self.seed, *self.path, "countsketch")
        h = gen.integers(0, self.d_out, size=self.d_in)
        s = 1.0 - 2.0 * gen.integers(0, 2, size=self.d_in)
        return h, s

    def _build(self, xp, dtype):
        h, s = self.hashes()
        ct = scipy.sparse.csr_matrix((s.astype(dtype), (h, np.arange(self.d_in))),
                           shape=(self.d_out, self.d_in))
        c = ct.T.tocsr()
        if xp is not np:  # pragma: no cover - GPU only
            import cupyx.scipy.sparse as csp

            ct, c = csp.csr_matrix(ct), csp.csr_matrix(c)
        return ct, c

    def __call__(self, x, *, check: bool = True):
        """Sketch the last axis: ``(..., d_in) → (..., d_out)`` dense (sparse 2-D input too)."""
        name = type(self).__name__
        if is_sparse(x):
            x = check_sparse(x, self.d_in, name)
            xp = get_namespace(x.data)
            _, c = self._params(xp, float_dtype(x.data))
            return (x @ c).toarray()
        x = prepare_input(x, self.d_in, name, check=check)
        xp = get_namespace(x)
        x2, lead = as_rows(x, self.d_in)
        ct, _ = self._params(xp, x.dtype)
        y = xp.ascontiguousarray((ct @ x2.T).T)
        return y.reshape(lead + (self.d_out,))


@dataclass(frozen=True)
class SignedSum(RandomSpec):
    """Sum of ``terms`` blocks of width ``width`` under independent random ±1 diagonals.

    ``f(a_0, …, a_{T−1}) = Σ_t D_t a_t`` with ``E⟨f(a), f(b)⟩ = Σ_t ⟨a_t, b_t⟩``: the cross
    terms ``⟨D_t a_t, D_s b_s⟩`` (``t ≠ s``) have mean zero whatever the blocks are (they may
    be built from the same random matrices). This is how the per-degree sketches of a
    dot-product kernel are merged into one feature vector at the cost of one multiply-add
    per entry, with no transform. Draws: ``rng(seed, *path, "signedsum")``.
    """

    width: int
    terms: int
    seed: int
    path: tuple = ()

    def __post_init__(self):
        check_spec(self, "width", "terms")

    def _build(self, xp, dtype):
        gen = rng(self.seed, *self.path, "signedsum")
        return to_namespace(random_signs(gen, (self.terms, self.width), False).astype(dtype), xp)

    def add(self, acc, t: int, a, scale=None):
        """``acc + D_t (scale · a)`` (a new array when ``acc`` is None; else updated in place).

        ``a`` is ``(R, w)`` real with ``w ≤ width`` (a narrower block adds into the first
        ``w`` columns); ``scale`` a scalar or an ``(R, 1)`` array (or None). ``a`` itself is
        never modified.
        """
        xp = get_namespace(a)
        w = a.shape[-1]
        signs = self._params(xp, a.dtype)[t]
        if _fused_add(acc, a, scale, self.width):  # host: one compiled pass, same rounding
            return signed_add(acc, a, signs, scale, self.width)
        term = a * signs[:w]
        if scale is not None:
            term *= scale
        if acc is None and w == self.width:
            return term
        if acc is None:
            acc = xp.zeros(a.shape[:-1] + (self.width,), dtype=term.dtype)
        acc[..., :w] += term
        return acc


def _fused_add(acc, a, scale, width: int) -> bool:
    """Whether :func:`.compiled.signed_add` computes ``SignedSum.add`` here: 2-D real NumPy
    rows, the accumulator and the ``(R, 1)`` scale (if any) in the rows' dtype."""
    if not hadamard.USE_COMPILED or type(a) is not np.ndarray or a.ndim != 2 or a.dtype not in NUMBA_DTYPES:
        return False
    if acc is not None and not (type(acc) is np.ndarray and acc.dtype == a.dtype
                                and acc.shape == (a.shape[0], width) and acc.flags.c_contiguous):
        return False
    return scale is None or (type(scale) is np.ndarray and scale.dtype == a.dtype
                             and scale.shape == (a.shape[0], 1))


def srht_block_sum(x, d_out: int, seed: int, path: tuple, *, check: bool = True):
    """``Σ_b SRHT_b(x[..., b·d_out : (b+1)·d_out])``, ``SRHT_b = SRHT(w_b, d_out, seed, (*path, "block", b))``.

    The sum of SRHT-rotated blocks of width ``d_out`` (``w_b`` the block widths; the last
    may be narrower).  When every block pads to exactly ``d_out`` (a power of two, last
    block wider than ``d_out/2``) each ``SRHT_b`` is ``H D_b x̃_b / √d_out`` with no gather,
    so the sum is ``H (Σ_b D_b x̃_b) / √d_out``: one transform instead of one per block, the
    same values up to float rounding.  Otherwise the rotated blocks are summed one by one.
    """
    d_in = x.shape[-1]
    starts = range(0, d_in, d_out)
    specs = [SRHT(min(d_out, d_in - a), d_out, seed, tuple(path) + ("block", b))
             for b, a in enumerate(starts)]
    if any(next_pow2(sp.d_in) != d_out for sp in specs):
        out = None
        for a, sp in zip(starts, specs):
            y = sp(x[..., a:a + d_out], check=check)
            out = y if out is None else out + y
        return out
    x = prepare_input(x, d_in, "SRHT", check=check)
    xp = get_namespace(x)
    x2, lead = as_rows(x, d_in)
    signs = xp.concatenate([sp._params(xp, x2.dtype)[0][0, :sp.d_in] for sp in specs])
    return fold_fwht(x2, signs, d_out).reshape(lead + (d_out,))


# ------------------------------------------------------------------- first-layer input
def reduced_width(d_in: int, n_features: int) -> Optional[int]:
    """Width of the input CountSketch of rows ``d_in`` wide (``None``: rows enter as they are).

    Only rows wider than :data:`REDUCE_ABOVE` are reduced, to ``4·n_features`` rounded up to a
    power of two within ``[1024, REDUCE_ABOVE]``: the CountSketch adds a relative error of
    about ``1/√width`` to each inner product, half the feature map's own at that width, and
    makes the cost of everything after it independent of ``d_in`` (O(nnz) per sparse row).
    """
    if d_in <= REDUCE_ABOVE:
        return None
    return min(REDUCE_ABOVE, max(1024, next_pow2(4 * int(n_features))))


def input_reduction(d_in: int, n_features: int, seed: int, path: tuple) -> Optional[CountSketch]:
    """The input :class:`CountSketch` (``rng(seed, *path, "input", "countsketch")``) or None."""
    width = reduced_width(d_in, n_features)
    return None if width is None else CountSketch(d_in, width, seed, tuple(path) + ("input",))


def first_layer_rows(x, reduction: Optional[CountSketch], keep_sparse: bool = False):
    """Rows ``(R, d)`` as a map's first random layer takes them (dense and sparse alike).

    ``reduction`` (see :func:`input_reduction`) maps them to its width in O(nnz); otherwise
    sparse rows (at most :data:`REDUCE_ABOVE` wide) are densified unless ``keep_sparse`` (maps
    whose first layer is a sparse product). The same rows dense or sparse give the same
    result to float rounding.
    """
    if reduction is not None:
        return reduction(x, check=False)
    if is_sparse(x) and not keep_sparse:
        return x.toarray()
    return x


def row_sq_norms(x):
    """``Σ_j x_ij²`` of 2-D rows (dense or sparse) in float64, shape ``(R,)``."""
    if is_sparse(x):
        x = x.tocsr()
        xp = get_namespace(x.data)
        sq = x.data.astype(np.float64) ** 2
        rows = xp.repeat(xp.arange(x.shape[0]), xp.diff(x.indptr))
        out = xp.bincount(rows, weights=sq, minlength=x.shape[0])
        return out
    xp = get_namespace(x)
    return xp.sum(x.astype(np.float64) ** 2, axis=-1)
