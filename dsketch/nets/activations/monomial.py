"""``Monomial`` (x^q) and ``Identity`` (x): exact duals and Hermite factors in closed form.

``Identity`` is the one activation with its own sketch face: its features pass through
unchanged (:class:`IdentitySketch`).  Must not import Dask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...backend import check_int, get_namespace, resolve_dtype
from .. import dual as D
from ..base import Features, FeatureShape, LayerSketch, SketchOptions
from .base import Activation
from .registry import register_activation

__all__ = ["Monomial", "Identity", "IdentitySketch"]


@register_activation()
@dataclass(frozen=True)
class Monomial(Activation):
    """``x^degree``: Σ' = Σ_l (E[z^q He_l]²/l!) Σxy^l (Σxx Σyy)^{(q−l)/2} (exact, finite)."""

    degree: int = 1

    def __post_init__(self):
        object.__setattr__(self, "degree",
                           check_int(self.degree, "degree", minimum=0, maximum=32))

    def fn(self, x):
        return x ** self.degree if self.degree else get_namespace(x).ones_like(x)

    def deriv(self, x):
        q = self.degree
        return q * x ** (q - 1) if q else get_namespace(x).zeros_like(x)

    @staticmethod
    def _series(q: int, m: D.Moments):
        coefs = D.monomial_moments(q, q)
        out = 0 * m.rho
        for l in range(q, -1, -1):
            out = out * m.rho + coefs[l] ** 2
        return D.safe_power(m.prod, q) * out

    def dual_moments(self, m: D.Moments, need_dot: bool = True):
        q = self.degree
        nngp = self._series(q, m)
        dot = None
        if need_dot:
            dot = q * q * self._series(q - 1, m) if q >= 1 else 0 * m.rho
        return nngp, dot

    def hermite(self, var, degree: int):
        xp = get_namespace(var)
        q = self.degree
        r = xp.asarray(np.asarray(D.monomial_moments(q, degree)))
        R = D.safe_power(var, q / 2)[..., None] * r
        if q == 0:
            return R, xp.zeros_like(R)
        rdot = xp.asarray(q * np.asarray(D.monomial_moments(q - 1, degree)))
        return R, D.safe_power(var, (q - 1) / 2)[..., None] * rdot


@register_activation("identity")
@dataclass(frozen=True)
class Identity(Activation):
    """``x``: Σ' = Σ, Θ' = Θ; the sketch face passes features through (exact)."""

    def fn(self, x):
        return x

    def deriv(self, x):
        return get_namespace(x).ones_like(x)

    def dual_moments(self, m: D.Moments, need_dot: bool = True):
        return m.cov, (1 + 0 * m.rho) if need_dot else None

    def hermite(self, var, degree: int):
        xp = get_namespace(var)
        R = xp.zeros(var.shape + (degree + 1,), dtype=xp.float64)
        Rdot = xp.zeros_like(R)
        if degree >= 1:
            R[..., 1] = xp.sqrt(var)
        Rdot[..., 0] = 1
        return R, Rdot

    def sketch(self, shape: FeatureShape, options: SketchOptions, seed: int, path: tuple):
        resolve_dtype(options.dtype)
        return IdentitySketch(out=shape)


@dataclass(frozen=True)
class IdentitySketch(LayerSketch):
    """Sketch face of ``Identity``: features pass through unchanged."""

    out: FeatureShape

    def __call__(self, f: Features) -> Features:
        return f
