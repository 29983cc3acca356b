"""Random-feature maps of non-network kernels and their exact kernels.

Owns the feature maps of the polynomial, Gaussian (random Fourier and Maclaurin routes),
arc-cosine and ReLU-NTK kernels that the engine embeds directly. Each map is a frozen
dataclass spec with ``input_dim``, ``n_features``, ``seed`` and ``dtype`` fields and

- ``__call__(X) -> (n, n_features)``: exactly ``n_features`` wide, in ``dtype`` (float32
  by default, float64 on request), NumPy in → NumPy out, CuPy in → CuPy out; row ``i``'s
  features depend only on row ``i`` and the spec (chunk invariance);
- ``kernel(X1, X2=None)``: the exact kernel the features approximate, in float64;
- ``input_shape`` (``(input_dim,)``), ``output_shape`` and ``n_features``: the engine's
  feature-map protocol (``dtype`` is stored as a ``numpy.dtype``).

Random draws come from ``dsketch.backend.rng(seed, "<map>", ...)`` through the primitives
of :mod:`.linear`, :mod:`.tensor` and :mod:`.polysketch`, materialized once per process and
device. The exact arc-cosine maths lives in :mod:`.arccos` and the ReLU-NTK map in
:mod:`.ntk_random_features`; both names are re-exported here (saved models name
``kernels.<Map>``).

Every map takes 2-D ``scipy.sparse`` rows too, with the same features as their dense copy
(to float rounding): rows wider than :data:`.linear.REDUCE_ABOVE` enter every map except the
CountSketch-based ones through a CountSketch (:func:`.linear.input_reduction`, dense rows
alike), the Gaussian first layers multiply sparse rows directly, and the other maps densify
sparse rows of at most that width chunk by chunk; exact kernels densify.

Must not import Dask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import get_namespace, pairs_matmul, rng, rows_matmul, to_namespace
from ._base import KernelMap, is_sparse, pos_float, pos_int, sparse_namespace
from .linear import first_layer_rows, input_reduction, row_sq_norms
from .arccos import arccos_kernel
from .ntk_random_features import NTKRandomFeatures, relu_ntk
from .polysketch import CtRPolySketch, DotProductSketch, PolySketch
from .tensor import TensorSketchPower

__all__ = [
    "PolynomialSketch",
    "RandomFourierFeatures",
    "GaussianMaclaurin",
    "ArcCosineFeatures",
    "NTKRandomFeatures",
    "arccos_kernel",
    "relu_ntk",
]


# ---------------------------------------------------------------------------- polynomial
@dataclass(frozen=True)
class PolynomialSketch(KernelMap):
    """Sketch of the polynomial kernel ``k(x, y) = (γ⟨x, y⟩ + c)ᵖ``.

    Sketches (all unbiased, ``E⟨f(x), f(y)⟩ = k(x, y)``):

    - ``method="polysketch"`` (default): the Ahle et al. tree (:class:`PolySketch`),
      variance polynomial in ``p``;
    - ``method="ctr"``: the complex-to-real tree (:class:`CtRPolySketch`), lower variance
      for strongly correlated pairs;
    - ``method="tensorsketch"``: Pham–Pagh TensorSketch (:class:`TensorSketchPower`), the
      estimator of scikit-learn's ``PolynomialCountSketch``; O(nnz), variance exponential
      in ``p``.

    The offset ``c > 0`` is handled by

    - ``expansion="binomial"`` (default for the tree methods): the dot-product kernel
      ``Σ_k C(p,k) c^{p−k} γᵏ ⟨x, y⟩ᵏ`` through :class:`DotProductSketch` — the constant
      term is one exact feature and every degree comes out of one shared tree, which
      measured lower error than the lifted input at equal width when ``c`` carries a
      sizeable part of the kernel (e.g. unit rows, p = 4, c = 1, m = 1024: 0.163 vs 0.220;
      c = 0.25: 0.290 vs 0.295) at about twice the compute;
    - ``expansion="append"``: the lifted input ``x' = [√γ·x, √c]``, ``k = ⟨x', y'⟩ᵖ``, and a
      degree-``p`` sketch of ``x'`` (always used by ``method="tensorsketch"``, as in
      scikit-learn, and when ``n_features == 1``).

    ``leaf="countsketch"`` makes the tree leaves CountSketches (input-sparsity time); with it
    and with ``method="tensorsketch"`` sparse rows go in as they are, whatever their width.

    Parameters follow scikit-learn's ``PolynomialCountSketch`` (``gamma``, ``coef0``,
    ``degree``). Draws at ``rng(seed, "polynomial", ...)``.
    """

    input_dim: int
    n_features: int
    degree: int
    gamma: float = 1.0
    coef0: float = 0.0
    method: str = "polysketch"
    seed: int = 0
    dtype: Any = "float32"
    leaf: str = "srht"
    expansion: str = "binomial"

    def __post_init__(self):
        self._check_common()
        pos_int(self, "degree")
        if self.expansion not in ("binomial", "append"):
            raise ValueError(f"PolynomialSketch: expansion must be 'binomial' or 'append', "
                             f"got {self.expansion!r}")
        pos_float(self, "gamma")
        pos_float(self, "coef0", allow_zero=True)
        if self.method not in ("polysketch", "ctr", "tensorsketch"):
            raise ValueError("PolynomialSketch: method must be 'polysketch', 'ctr' or "
                             f"'tensorsketch', got {self.method!r}")
        if self.leaf not in ("srht", "countsketch"):
            raise ValueError(f"PolynomialSketch: leaf must be 'srht' or 'countsketch', "
                             f"got {self.leaf!r}")
        if self.method == "ctr" and self.leaf != "srht":
            raise ValueError("PolynomialSketch: method='ctr' needs leaf='srht'")

    @property
    def _binomial(self) -> bool:
        return (self.coef0 > 0 and self.expansion == "binomial"
                and self.method != "tensorsketch" and self.n_features >= 2)

    @property
    def _native_sparse(self) -> bool:
        """CountSketch first layer: sparse rows of any width go in as they are."""
        return self.method == "tensorsketch" or self.leaf == "countsketch"

    @property
    def _reduction(self):
        return None if self._native_sparse else input_reduction(
            self.input_dim, self.n_features, self.seed, ("polynomial",))

    @property
    def _width(self) -> int:
        """Width of the rows the sketch sees (the input's, or its reduction's)."""
        red = self._reduction
        return self.input_dim if red is None else red.d_out

    @property
    def _d(self) -> int:
        return self._width + (1 if self.coef0 > 0 and not self._binomial else 0)

    def _build(self, xp, dtype):
        path = ("polynomial", self.method)
        p, c, g = self.degree, self.coef0, self.gamma
        if self._binomial:
            coeffs = tuple(math.comb(p, k) * c ** (p - k) * g**k for k in range(p + 1))
            return DotProductSketch(self._width, self.n_features, coeffs, self.seed, path,
                                    method=self.method, leaf=self.leaf)
        if self.method == "tensorsketch":
            return TensorSketchPower(self._d, self.n_features, self.degree, self.seed, path)
        if self.method == "ctr":
            return CtRPolySketch(self._d, self.n_features, self.degree, self.seed, path)
        return PolySketch(self._d, self.n_features, self.degree, self.seed, path, leaf=self.leaf)

    def _apply(self, sk, x):
        """Run the planned sketch on rows ``x`` (dense or sparse, already in ``dtype``)."""
        if self._binomial:
            return sk(x, check=False)
        if is_sparse(x):
            x = x * math.sqrt(self.gamma)
            if self.coef0 > 0:
                sps = sparse_namespace(x)
                col = sps.csr_matrix(
                    np.full((x.shape[0], 1), math.sqrt(self.coef0), self.dtype))
                x = sps.hstack([x, col], format="csr")
        else:
            xp = get_namespace(x)
            x = x * math.sqrt(self.gamma)
            if self.coef0 > 0:
                c = xp.full((x.shape[0], 1), math.sqrt(self.coef0), dtype=x.dtype)
                x = xp.concatenate([x, c], axis=1)
        if self.method == "tensorsketch":
            return sk(x, check=False)
        return sk.top(x, check=False)

    def _features(self, x2):
        x2 = first_layer_rows(x2, self._reduction, keep_sparse=self._native_sparse)
        return self._apply(self._params(get_namespace(x2), self.dtype), x2)

    def kernel(self, X1, X2=None):
        """Exact ``(γ⟨x, y⟩ + c)ᵖ`` (float64); dense inputs."""
        x1, x2 = self._kernel_inputs(X1, X2)
        return (self.gamma * pairs_matmul(x1, x2) + self.coef0) ** self.degree


# ------------------------------------------------------------------------------ Gaussian
def _project(fmap, x2, item):
    """``x2 @ W`` of a Gaussian first layer (``fmap._params(...)[item]``, or the whole).

    Sparse rows multiply directly; reduced rows (wide input, dense or sparse) are projected
    in float64 and cast back, so BLAS blocking, which varies with the batch size, stays below
    float32 resolution over the long reduced rows (chunk invariance).
    """
    xp = get_namespace(x2)
    red = fmap._reduction

    def weights(dtype):
        w = fmap._params(xp, dtype)
        return w if item is None else w[item]

    if red is None:
        return rows_matmul(x2, weights(fmap.dtype))
    rows = red(x2.astype(np.float64), check=False)
    return rows_matmul(rows, weights(np.float64)).astype(fmap.dtype)


def _gaussian_kernel(x1, x2, gamma: float):
    """``exp(−γ‖x − y‖²)`` of 2-D float64 rows (squared distances clipped at 0)."""
    xp = get_namespace(x1, x2)
    d = (x1 * x1).sum(1)[:, None] + (x2 * x2).sum(1)[None, :] - 2.0 * pairs_matmul(x1, x2)
    return xp.exp(-gamma * xp.maximum(d, 0.0))


@dataclass(frozen=True)
class RandomFourierFeatures(KernelMap):
    """Random Fourier features (Rahimi & Recht) of the Gaussian kernel ``exp(−γ‖x − y‖²)``.

    ``γ`` follows scikit-learn's ``RBFSampler`` (``gamma``). Frequencies ``ω ~ N(0, 2γ I)``.
    We use **cos/sin pairs**: with ``h = ⌊m/2⌋`` frequencies,
    ``f(x) = [cos(Ωᵀx), sin(Ωᵀx)] / √h``, so ``⟨f(x), f(y)⟩ = (1/h) Σ cos(ω_j·(x − y))``.
    For the Gaussian kernel this has lower variance than ``√2·cos(ωᵀx + b)`` features with
    ``m`` frequencies (RBFSampler's): per frequency, pairs give
    ``Var = (1 + k(2δ))/2 − k(δ)²`` over ``m/2`` frequencies, offsets give that plus ``1/2``
    over ``m`` (Sutherland & Schneider 2015); pairs win iff ``k(2δ) ≤ 2k(δ)²``, always true
    here since ``k(2δ) = k(δ)⁴``. For odd ``m`` the last feature is one offset feature
    ``√2·cos(ωᵀx + b)`` and the divisor is ``h + 1``. Draws at ``rng(seed, "rff")``.
    """

    input_dim: int
    n_features: int
    gamma: float = 1.0
    seed: int = 0
    dtype: Any = "float32"

    def __post_init__(self):
        self._check_common()
        pos_float(self, "gamma")

    @property
    def _reduction(self):
        return input_reduction(self.input_dim, self.n_features, self.seed, ("rff",))

    def _build(self, xp, dtype):
        h, odd = divmod(self.n_features, 2)
        gen = rng(self.seed, "rff")
        red = self._reduction
        width = self.input_dim if red is None else red.d_out
        omega = gen.standard_normal((width, h + odd)) * math.sqrt(2.0 * self.gamma)
        b = gen.uniform(0.0, 2.0 * math.pi, size=odd)
        return to_namespace(omega.astype(dtype), xp), to_namespace(b.astype(dtype), xp)

    def _features(self, x2):
        xp = get_namespace(x2)
        omega, b = self._params(xp, self.dtype)
        h, odd = divmod(self.n_features, 2)
        z = _project(self, x2, 0)
        scale = 1.0 / math.sqrt(h + odd)
        parts = [xp.cos(z[:, :h]) * scale, xp.sin(z[:, :h]) * scale]
        if odd:
            parts.append(xp.cos(z[:, h:] + b) * (math.sqrt(2.0) * scale))
        return xp.concatenate(parts, axis=1)

    def kernel(self, X1, X2=None):
        """Exact ``exp(−γ‖x − y‖²)`` (float64)."""
        return _gaussian_kernel(*self._kernel_inputs(X1, X2), self.gamma)


@dataclass(frozen=True)
class GaussianMaclaurin(KernelMap):
    """Gaussian kernel through its Maclaurin series and a polynomial sketch.

    ``exp(−γ‖x − y‖²) = e^{−γ‖x‖²} e^{−γ‖y‖²} Σ_k (2γ)ᵏ ⟨x, y⟩ᵏ / k!``, truncated at
    ``degree``; each ``⟨x, y⟩ᵏ`` is sketched by one shared :class:`PolySketch` tree of the
    unit vectors ``x̂`` (``method="ctr"``: the complex-to-real tree), weighted per row by
    ``a_k(x) = e^{−γ‖x‖²} √((2γ)ᵏ/k!) ‖x‖ᵏ`` (computed in the log domain, so large norms do
    not overflow), mapped by independent per-degree SRHTs to ``n_features − 1`` features and
    summed, after the exact feature ``a_0(x) = e^{−γ‖x‖²}`` (:class:`DotProductSketch`;
    cost about ``degree·log₂(degree)`` TensorSRHTs of width ``poly_width`` per row). Unbiased for
    the **truncated** series (:meth:`truncated_kernel`); :meth:`kernel` is the Gaussian
    itself. The truncation is accurate while ``2γ‖x‖‖y‖`` is well below ``degree``: scale
    the data (or raise ``degree``) accordingly. Draws at ``rng(seed, "maclaurin", ...)``.

    ``poly_width`` is the internal tree width (default ``n_features``).
    """

    input_dim: int
    n_features: int
    gamma: float = 1.0
    degree: int = 10
    seed: int = 0
    dtype: Any = "float32"
    method: str = "polysketch"
    poly_width: Any = None

    def __post_init__(self):
        self._check_common()
        pos_float(self, "gamma")
        pos_int(self, "degree")
        if self.n_features < 2:
            raise ValueError("GaussianMaclaurin: n_features must be ≥ 2")
        if self.poly_width is not None:
            pos_int(self, "poly_width")
        if self.method not in ("polysketch", "ctr"):
            raise ValueError(f"GaussianMaclaurin: method must be 'polysketch' or 'ctr', "
                             f"got {self.method!r}")

    def _coeffs(self) -> tuple:
        return tuple((2.0 * self.gamma) ** k / math.factorial(k) for k in range(self.degree + 1))

    @property
    def _reduction(self):
        return input_reduction(self.input_dim, self.n_features, self.seed, ("maclaurin",))

    def _build(self, xp, dtype):
        red = self._reduction
        width = self.input_dim if red is None else red.d_out
        return DotProductSketch(width, self.n_features, self._coeffs(), self.seed,
                                ("maclaurin",), width=self.poly_width, method=self.method)

    def _features(self, x2):
        xp = get_namespace(x2)
        dps = self._params(xp, self.dtype)
        sq = row_sq_norms(x2)[:, None]  # of the input rows (exact radial weights)
        x2 = first_layer_rows(x2, self._reduction)
        r = xp.sqrt(sq)
        unit = x2 / xp.where(r > 0, r, 1.0).astype(x2.dtype)
        log_r = xp.log(xp.where(r > 0, r, 1.0))
        scales = []
        for k in range(self.degree + 1):
            log_a = -self.gamma * sq + 0.5 * (k * math.log(2.0 * self.gamma) - math.lgamma(k + 1))
            a = xp.exp(log_a + k * log_r)
            if k > 0:
                a = xp.where(r > 0, a, 0.0)
            scales.append(a.astype(x2.dtype))
        return dps.compose(unit, scales)

    def kernel(self, X1, X2=None):
        """Exact Gaussian kernel ``exp(−γ‖x − y‖²)`` (float64)."""
        return _gaussian_kernel(*self._kernel_inputs(X1, X2), self.gamma)

    def truncated_kernel(self, X1, X2=None):
        """The degree-``degree`` Maclaurin truncation the features are unbiased for."""
        x1, x2 = self._kernel_inputs(X1, X2)
        xp = get_namespace(x1)
        g = pairs_matmul(x1, x2)
        s = 0.0
        for c in reversed(self._coeffs()):
            s = s * g + c
        n1 = (x1 * x1).sum(1)[:, None]
        n2 = (x2 * x2).sum(1)[None, :]
        return xp.exp(-self.gamma * (n1 + n2)) * s


# ---------------------------------------------------------------------------- arc-cosine
@dataclass(frozen=True)
class ArcCosineFeatures(KernelMap):
    """Random features of the Cho & Saul arc-cosine kernel of order ``q``.

    ``f(x) = √(2/m) · Θ(Wᵀx) ⊙ (Wᵀx)^q`` with ``W`` i.i.d. N(0, 1) (``d × m``) and
    ``Θ`` the Heaviside step (``Θ(0) = 0``): ``E⟨f(x), f(y)⟩ = k_q(x, y)`` in Cho & Saul's
    normalization ``k_q(x, y) = (1/π)‖x‖^q‖y‖^q J_q(θ)`` (see :func:`arccos_kernel`;
    ``k_0 = 1 − θ/π``, ``k_1(x, x) = ‖x‖²``). Note neural-tangents' ReLU dual is ``k_1/2``.
    Draws at ``rng(seed, "arccos")``.
    """

    input_dim: int
    n_features: int
    order: int = 1
    seed: int = 0
    dtype: Any = "float32"

    def __post_init__(self):
        self._check_common()
        pos_int(self, "order", minimum=0)

    @property
    def _reduction(self):
        return input_reduction(self.input_dim, self.n_features, self.seed, ("arccos",))

    def _build(self, xp, dtype):
        red = self._reduction
        width = self.input_dim if red is None else red.d_out
        w = rng(self.seed, "arccos").standard_normal((width, self.n_features))
        return to_namespace(w.astype(dtype), xp)

    def _features(self, x2):
        xp = get_namespace(x2)
        z = _project(self, x2, None)
        scale = math.sqrt(2.0 / self.n_features)
        if self.order == 0:
            return (z > 0).astype(x2.dtype) * scale
        return xp.maximum(z, 0) ** self.order * scale

    def kernel(self, X1, X2=None):
        """Exact ``k_q(x, y)`` (float64)."""
        x1, x2 = self._kernel_inputs(X1, X2)
        return arccos_kernel(x1, x2, self.order)

