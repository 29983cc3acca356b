"""``Sin`` and ``Cos``: a·sin(b·x + c), exact dual and Hermite factors in closed form.

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

__all__ = ["Sin", "Cos"]


@dataclass(frozen=True)
class _Sinusoid(Activation):
    """``a·sin(b·x + phase)``; the subclass gives the phase."""

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def __post_init__(self):
        for name in ("a", "b", "c"):
            object.__setattr__(self, name, check_param(name, getattr(self, name)))

    @property
    def phase(self) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def fn(self, x):
        return self.a * get_namespace(x).sin(self.b * x + self.phase)

    def deriv(self, x):
        return self.a * self.b * get_namespace(x).cos(self.b * x + self.phase)

    def dual_moments(self, m: D.Moments, need_dot: bool = True):
        xp = get_namespace(m.rho)
        b2 = self.b ** 2
        gap = (m.s1 - m.s2) ** 2
        e_minus = xp.exp(-b2 * (gap + 2 * m.prod * (1 - m.rho)) / 2)   # exp(−b²(v1+v2−2c)/2)
        e_plus = xp.exp(-b2 * (gap + 2 * m.prod * (1 + m.rho)) / 2)    # exp(−b²(v1+v2+2c)/2)
        c2 = math.cos(2 * self.phase)
        half = self.a ** 2 / 2
        nngp = half * (e_minus - c2 * e_plus)
        dot = half * b2 * (e_minus + c2 * e_plus) if need_dot else None
        return nngp, dot

    def hermite(self, var, degree: int):
        # E[sin(s z + c) He_l(z)] = s^l e^{−s²/2} sin(c + lπ/2)
        xp = get_namespace(var)
        s = self.b * xp.sqrt(var)
        damp = xp.exp(-s * s / 2)
        R = xp.zeros(var.shape + (degree + 1,), dtype=xp.float64)
        Rdot = xp.zeros_like(R)
        base = damp                                   # s^l e^{−s²/2}/√(l!)
        for l in range(degree + 1):
            if l:
                base = base * s / math.sqrt(l)
            R[..., l] = self.a * math.sin(self.phase + l * math.pi / 2) * base
            Rdot[..., l] = self.a * self.b * math.cos(self.phase + l * math.pi / 2) * base
        return R, Rdot


@register_activation("sin")
@dataclass(frozen=True)
class Sin(_Sinusoid):
    """``a·sin(b·x + c)``: Σ' = (a²/2) e^{−b²(Σxx+Σyy)/2}(e^{b²Σxy} − cos(2c) e^{−b²Σxy})."""

    @property
    def phase(self) -> float:
        return self.c


@register_activation("cos")
@dataclass(frozen=True)
class Cos(_Sinusoid):
    """``a·cos(b·x + c)`` (= ``Sin(a, b, c + π/2)``)."""

    @property
    def phase(self) -> float:
        return self.c + math.pi / 2
