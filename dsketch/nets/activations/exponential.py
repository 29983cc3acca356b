"""``Exp`` (a·exp(b·x)) and ``Gaussian`` (a·exp(b·x²)): exact duals and Hermite factors.

Must not import Dask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...backend import get_namespace
from .. import dual as D
from ..base import check_param
from .base import Activation
from .registry import register_activation

__all__ = ["Exp", "Gaussian"]


@register_activation("exp")
@dataclass(frozen=True)
class Exp(Activation):
    """``a·exp(b·x)``: Σ' = a² exp(b²(Σxx + Σyy + 2Σxy)/2), E[φ'φ'] = b² Σ'."""

    a: float = 1.0
    b: float = 1.0

    def __post_init__(self):
        for name in ("a", "b"):
            object.__setattr__(self, name, check_param(name, getattr(self, name)))

    def fn(self, x):
        return self.a * get_namespace(x).exp(self.b * x)

    def deriv(self, x):
        return self.a * self.b * get_namespace(x).exp(self.b * x)

    def dual_moments(self, m: D.Moments, need_dot: bool = True):
        xp = get_namespace(m.rho)
        b2 = self.b ** 2
        nngp = self.a ** 2 * xp.exp(b2 * ((m.s1 - m.s2) ** 2 + 2 * m.prod * (1 + m.rho)) / 2)
        return nngp, (b2 * nngp if need_dot else None)

    def hermite(self, var, degree: int):
        # E[e^{sz} He_l(z)] = s^l e^{s²/2}
        xp = get_namespace(var)
        s = self.b * xp.sqrt(var)
        grow = xp.exp(s * s / 2)
        R = xp.zeros(var.shape + (degree + 1,), dtype=xp.float64)
        base = self.a * grow                          # a s^l e^{s²/2}/√(l!)
        for l in range(degree + 1):
            if l:
                base = base * s / math.sqrt(l)
            R[..., l] = base
        return R, self.b * R


@register_activation("gaussian")
@dataclass(frozen=True)
class Gaussian(Activation):
    """``a·exp(b·x²)`` (neural-tangents ``Gaussian``; b < 0 for a bump).

    With det = (1 − 2bΣxx)(1 − 2bΣyy) − 4b²Σxy²: Σ' = a²/√det, E[φ'φ'] = 4a²b²Σxy/det^{3/2}
    (infinite where det ≤ 0, which needs b > 0).
    """

    a: float = 1.0
    b: float = -1.0

    def __post_init__(self):
        for name in ("a", "b"):
            object.__setattr__(self, name, check_param(name, getattr(self, name)))

    def fn(self, x):
        return self.a * get_namespace(x).exp(self.b * x * x)

    def deriv(self, x):
        return 2 * self.a * self.b * x * get_namespace(x).exp(self.b * x * x)

    def dual_moments(self, m: D.Moments, need_dot: bool = True):
        xp = get_namespace(m.rho)
        b = self.b
        det = 1 - 2 * b * (m.v1 + m.v2) + 4 * b * b * (m.prod * m.sin) ** 2
        ok = det > 0
        safe = xp.where(ok, det, 1)
        nngp = xp.where(ok, self.a ** 2 / xp.sqrt(safe), xp.inf)
        dot = None
        if need_dot:
            dot = xp.where(ok, 4 * self.a ** 2 * b * b * m.cov / safe ** 1.5, xp.inf)
        return nngp, dot

    def hermite(self, var, degree: int):
        # E[e^{βz²} He_{2i}(z)] = (1−2β)^{−1/2} (2i−1)!! (2β/(1−2β))^i, β = b v
        xp = get_namespace(var)
        beta = self.b * var
        den = 1 - 2 * beta
        ok = den > 0
        den = xp.where(ok, den, 1)
        ratio = 2 * beta / den
        E = xp.zeros(var.shape + (degree + 2,), dtype=xp.float64)
        for k in range(0, degree + 2, 2):
            E[..., k] = D.double_factorial_ratio(k) * ratio ** (k // 2) / xp.sqrt(den)
        R = self.a * E[..., : degree + 1]
        Rdot = xp.zeros_like(R)
        s = xp.sqrt(var)
        for l in range(degree + 1):
            Rdot[..., l] = 2 * self.a * self.b * s * (
                math.sqrt(l + 1) * E[..., l + 1] + (math.sqrt(l) * E[..., l - 1] if l else 0))
        bad = ~ok[..., None]  # E[φ²] diverges (b > 0, 2bv ≥ 1)
        return xp.where(bad, xp.inf, R), xp.where(bad, xp.inf, Rdot)
