"""Random features of the ReLU Neural Tangent Kernel (Zandieh et al., "Scaling neural
tangent kernels via sketching and random features", NeurIPS 2021), and its exact kernel.

Owns :class:`NTKRandomFeatures` — the paper's NTK random-features method for the network
``fully_connected(depth, Relu(), W_std, b_std)`` (``depth`` hidden Dense+ReLU layers and a
Dense readout) in neural-tangents' NTK parameterization — and :func:`relu_ntk`, the
closed-form NNGP/NTK recursion it approximates. Must not import Dask.

Conventions (neural-tangents ``parameterization="ntk"``):

- input covariance ``Σ⁰(x, y) = ⟨x, y⟩/d``, ``Θ⁰ = 0``;
- Dense: ``Σ' = W_std²·Σ + b_std²``, ``Θ' = Σ' + W_std²·Θ``;
- ReLU: with ``cos θ = Σxy/√(ΣxxΣyy)``, ``Σ' = √(ΣxxΣyy)·J₁(θ)/(2π)``,
  ``Σ̇ = J₀(θ)/(2π)`` and ``Θ' = Θ·Σ̇`` (``J_n`` of Cho & Saul, :func:`.arccos.arccos_J`;
  ``J₁(θ)·√(ΣxxΣyy) = √(ΣxxΣyy − Σxy²) + (π − θ)Σxy``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import get_namespace, pairs_matmul, rng, rows_matmul, to_namespace
from ._base import KernelMap, pos_float, pos_int
from .arccos import arccos_J
from .linear import first_layer_rows, input_reduction
from .tensor import TensorSRHT

__all__ = ["NTKRandomFeatures", "relu_ntk"]


def relu_ntk(x1, x2=None, depth: int = 1, W_std: float = 1.0, b_std: float = 0.0):
    """Exact NNGP and NTK of ``fully_connected(depth, Relu(), W_std, b_std)`` (float64).

    ``depth`` hidden (Dense, ReLU) layers followed by a Dense readout, neural-tangents NTK
    parameterization (module docstring). Returns ``(nngp, ntk)``, each ``(n1, n2)``. A row
    of zeros (with ``b_std = 0``) is given ``cos θ = 0``.
    """
    xp = get_namespace(x1, x2)
    x1 = x1.astype(np.float64)
    x2 = x1 if x2 is None else x2.astype(np.float64)
    d = x1.shape[-1]
    w2, b2 = float(W_std) ** 2, float(b_std) ** 2
    s = pairs_matmul(x1, x2) / d
    s1 = (x1 * x1).sum(1) / d
    s2 = (x2 * x2).sum(1) / d
    s, s1, s2 = w2 * s + b2, w2 * s1 + b2, w2 * s2 + b2
    t = s
    for _ in range(depth):
        prod = xp.sqrt(s1[:, None] * s2[None, :])
        cos = xp.clip(s / xp.where(prod > 0, prod, 1.0), -1.0, 1.0)
        theta = xp.arccos(cos)
        sdot = arccos_J(0, theta, xp) / (2 * math.pi)
        s = prod * arccos_J(1, theta, xp, cos=cos) / (2 * math.pi)
        s1, s2 = s1 / 2, s2 / 2
        t = t * sdot
        s, s1, s2 = w2 * s + b2, w2 * s1 + b2, w2 * s2 + b2
        t = s + w2 * t
    return s, t


@dataclass(frozen=True)
class NTKRandomFeatures(KernelMap):
    """Random features of the ReLU NTK of ``fully_connected(depth, Relu(), W_std, b_std)``.

    Feature recursion (rows are inputs; ``z_n`` approximates the NNGP Σ, ``z_t`` the NTK Θ,
    ``⟨z(x), z(y)⟩ ≈ kernel``):

    - input: ``z_n = x/√d``; first Dense: ``z_n ← [W_std·z_n, b_std]``, ``z_t ← z_n``;
    - each ReLU layer: ``φ₁ = ReLU(z_n G₁)/√m₁`` (arc-cosine order 1 with
      ``E⟨φ₁(x), φ₁(y)⟩ = Σ'``), ``φ₀ = Θ(z_n G₀)/√m₀`` (order 0, ``E⟨φ₀, φ₀⟩ = Σ̇``),
      ``z_t ← TensorSRHT(z_t, φ₀)`` (``E = Θ·Σ̇``), ``z_n ← φ₁``;
    - each Dense (hidden and readout): ``z_n ← [W_std·z_n, b_std]``,
      ``z_t ← [W_std·z_t, z_n]``.

    The output is the final ``z_t``: ``[W_std·TensorSRHT(...), W_std·φ₁, b_std]`` of width
    ``m_t + m₁ + [b_std ≠ 0] = n_features`` with ``m₁ = ⌊(n_features − bias)/2⌋``
    (``nngp_features`` overrides) and ``m_t`` the rest. Every step is unbiased given the
    previous layer, and the whole map is the method of Zandieh et al. (2021).

    Sparse rows are densified (at most :data:`.linear.REDUCE_ABOVE` wide) or, wider, enter
    through a CountSketch like dense ones (:func:`.linear.input_reduction`).

    Leverage-score sampling (``leverage=True``): the first-layer order-1 weights are drawn
    from the density ``∝ ‖w‖²·N(w; 0, I_k)`` (``k`` = width of ``z_n``) — radius²
    ``~ χ²_{k+2}``, uniform direction — and each feature is reweighted by ``√k/‖w‖``, which
    keeps ``E⟨φ₁(x), φ₁(y)⟩ = Σ'`` (importance weight ``N/q = k/‖w‖²``). Because ReLU is
    positively homogeneous, the weighted feature is exactly ``√k·ReLU(ŵ·z)``: we draw
    ``ŵ`` uniformly on the sphere and use ``√k·ŵ`` (the radius cancels), removing the
    radial variance. The order-0 features depend only on ``ŵ``, so reweighting would only
    add variance: they stay plain Gaussian (also unbiased).

    Parameters
    ----------
    input_dim, n_features : int
        Input width ``d`` and exact output width (``≥ 2``, ``≥ 3`` with a bias).
    depth : int
        Number of hidden ReLU layers (``≥ 1``).
    W_std, b_std : float
        neural-tangents weight and bias standard deviations.
    leverage : bool
        Leverage-score sampling of the first-layer order-1 weights.
    seed : int
        Draws at ``rng(seed, "ntkrf", "layer<l>", "relu1" | "relu0")`` and TensorSRHTs at
        ``(seed, ("ntkrf", "layer<l>", "tensor"))``.
    dtype : {"float32", "float64"}
    nngp_features, step_features : int or None
        ``m₁`` (default above) and ``m₀`` (default ``n_features``).
    """

    input_dim: int
    n_features: int
    depth: int = 1
    W_std: float = 1.0
    b_std: float = 0.0
    leverage: bool = True
    seed: int = 0
    dtype: Any = "float32"
    nngp_features: Any = None
    step_features: Any = None

    def __post_init__(self):
        self._check_common()
        pos_int(self, "depth")
        pos_float(self, "W_std")
        pos_float(self, "b_std", allow_zero=True)
        if not isinstance(self.leverage, (bool, np.bool_)):
            raise ValueError(f"NTKRandomFeatures: leverage must be a bool, got {self.leverage!r}")
        object.__setattr__(self, "leverage", bool(self.leverage))
        bias = self._bias
        if self.n_features < 2 + bias:
            raise ValueError(f"NTKRandomFeatures: n_features must be ≥ {2 + bias} "
                             f"(got {self.n_features})")
        for name in ("nngp_features", "step_features"):
            if getattr(self, name) is not None:
                pos_int(self, name)
        if self.nngp_features is not None and self.nngp_features > self.n_features - bias - 1:
            raise ValueError(f"NTKRandomFeatures: nngp_features must be ≤ n_features − "
                             f"{bias + 1} = {self.n_features - bias - 1}")

    @property
    def _bias(self) -> int:
        return 1 if self.b_std != 0 else 0

    @property
    def widths(self) -> dict:
        """Internal widths: ``nngp`` (m₁), ``step`` (m₀) and ``tensor`` (m_t)."""
        m1 = self.nngp_features or (self.n_features - self._bias) // 2
        return {"nngp": m1, "step": self.step_features or self.n_features,
                "tensor": self.n_features - self._bias - m1}

    # -- randomness --------------------------------------------------------------------
    @property
    def _reduction(self):
        """Input CountSketch of wide rows (see :func:`.linear.input_reduction`), or None."""
        return input_reduction(self.input_dim, self.n_features, self.seed, ("ntkrf",))

    def _layer_inputs(self, layer: int) -> tuple[int, int]:
        """(width of z_n, width of z_t) entering ReLU layer ``layer`` (1-based)."""
        w = self.widths
        if layer == 1:
            red = self._reduction
            k = (self.input_dim if red is None else red.d_out) + self._bias
            return k, k
        return w["nngp"] + self._bias, self.n_features

    def _build(self, xp, dtype):
        w = self.widths
        layers = []
        for l in range(1, self.depth + 1):
            kn, kt = self._layer_inputs(l)
            g1 = rng(self.seed, "ntkrf", f"layer{l}", "relu1").standard_normal((kn, w["nngp"]))
            if l == 1 and self.leverage:
                g1 = g1 / np.linalg.norm(g1, axis=0, keepdims=True) * math.sqrt(kn)
            g0 = rng(self.seed, "ntkrf", f"layer{l}", "relu0").standard_normal((kn, w["step"]))
            g1 = g1 / math.sqrt(w["nngp"])
            ts = TensorSRHT(kt, w["step"], w["tensor"], self.seed, ("ntkrf", f"layer{l}", "tensor"))
            layers.append((to_namespace(g1.astype(dtype), xp), to_namespace(g0.astype(dtype), xp),
                           ts))
        return layers

    # -- features ------------------------------------------------------------------------
    def _dense(self, zn, zt):
        xp = get_namespace(zn)
        zn = zn * self.W_std
        if self._bias:
            zn = xp.concatenate(
                [zn, xp.full((zn.shape[0], 1), self.b_std, dtype=zn.dtype)], axis=1)
        zt = zn if zt is None else xp.concatenate([zt * self.W_std, zn], axis=1)
        return zn, zt

    def _features(self, x2):
        xp = get_namespace(x2)
        step_scale = 1.0 / math.sqrt(self.widths["step"])
        x2 = first_layer_rows(x2, self._reduction)  # sparse rows: densified or reduced
        zn, zt = self._dense(x2 * (1.0 / math.sqrt(self.input_dim)), None)
        for g1, g0, ts in self._params(xp, self.dtype):
            phi0 = (rows_matmul(zn, g0) > 0).astype(zn.dtype) * step_scale
            zn_new = xp.maximum(rows_matmul(zn, g1), 0)
            zt = ts(zt, phi0, check=False)
            zn, zt = self._dense(zn_new, zt)
        return zt

    def kernel(self, X1, X2=None):
        """Exact ReLU NTK (float64), :func:`relu_ntk`'s ``ntk``."""
        return self.exact(X1, X2)[1]

    def exact(self, X1, X2=None):
        """Exact ``(nngp, ntk)`` of the network (float64)."""
        x1, x2 = self._kernel_inputs(X1, X2)
        return relu_ntk(x1, x2, self.depth, self.W_std, self.b_std)
