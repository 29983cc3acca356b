"""``Erf``: a·erf(b·x) + c (neural-tangents ``Erf``), exact dual and Hermite factors in closed form.

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

__all__ = ["Erf"]

_SQRT2 = math.sqrt(2.0)


@register_activation("erf")
@dataclass(frozen=True)
class Erf(Activation):
    """``a·erf(b·x) + c`` (neural-tangents ``Erf``).

    Σ' = a² (2/π) arcsin(2b²Σxy/√((1+2b²Σxx)(1+2b²Σyy))) + c²,
    E[φ'φ'] = a²b² (4/π)/√((1+2b²Σxx)(1+2b²Σyy) − 4b⁴Σxy²).
    """

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def __post_init__(self):
        for name in ("a", "b", "c"):
            object.__setattr__(self, name, check_param(name, getattr(self, name)))

    def fn(self, x):
        return self.a * D.erf(self.b * x) + self.c

    def deriv(self, x):
        xp = get_namespace(x)
        return self.a * self.b * (2 / math.sqrt(math.pi)) * xp.exp(-(self.b * x) ** 2)

    def dual_moments(self, m: D.Moments, need_dot: bool = True):
        xp = get_namespace(m.rho)
        a, b, c = self.a, self.b, self.c
        b2 = b * b
        d1 = xp.sqrt(1 + 2 * b2 * m.v1)
        d2 = xp.sqrt(1 + 2 * b2 * m.v2)
        arg = xp.clip(2 * b2 * m.rho * (m.s1 / d1) * (m.s2 / d2), -1, 1)
        nngp = a * a * (2 / math.pi) * xp.arcsin(arg) + c * c
        dot = None
        if need_dot:
            det = 1 + 2 * b2 * (m.v1 + m.v2) + 4 * b2 * b2 * (m.prod * m.sin) ** 2
            dot = a * a * b2 * (4 / math.pi) / xp.sqrt(det)
        return nngp, dot

    def hermite(self, var, degree: int):
        # a·erf(b x) + c = 2a Φ(√2 b x) − a + c ; φ' = 2√2 a b φ_N(√2 b x)
        xp = get_namespace(var)
        s = _SQRT2 * self.b * xp.sqrt(var)
        R = 2 * self.a * D.phi_cdf_moments(s, degree)
        R[..., 0] = self.c
        Rdot = 2 * _SQRT2 * self.a * self.b * D.phi_pdf_moments(s, degree)
        return R, Rdot
