"""``Polynomial`` (Σ coef[i]·x^i) and ``Hermite`` (He_d/√(d!), neural-tangents ``Hermite``).

Exact duals and Hermite factors in closed form: with R_l(v) = Σ_i coef[i] v^{i/2}
E[z^i He_l(z)]/√(l!) (:func:`~dsketch.nets.dual.monomial_moments`), the dual is the finite
sum E[φ(u)φ(v)] = Σ_{l ≤ deg} R_l(Σxx) R_l(Σyy) ρ^l, and likewise for φ'.
Must not import Dask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.polynomial import hermite_e

from ...backend import check_int, get_namespace
from .. import dual as D
from ..base import check_param
from .base import Activation, AliasActivation
from .registry import register_activation

__all__ = ["Polynomial", "Hermite"]

_MAX_DEGREE = 32


def _radial(coef: tuple, var, degree: int):
    """R_l(v) = E[p(√v z) He_l(z)]/√(l!), l = 0..degree, for p = Σ coef[i] x^i."""
    xp = get_namespace(var)
    s = xp.sqrt(xp.maximum(xp.asarray(var, dtype=xp.float64), 0))
    out = xp.zeros(s.shape + (degree + 1,), dtype=xp.float64)
    power = xp.ones_like(s)
    for i, c in enumerate(coef):
        if i:
            power = power * s
        if c:
            out += (c * power)[..., None] * xp.asarray(np.asarray(D.monomial_moments(i, degree)))
    return out


def _series(coef: tuple, m: D.Moments):
    """Σ_l R_l(v1) R_l(v2) ρ^l: the exact dual of the polynomial ``coef``."""
    deg = len(coef) - 1
    r1, r2 = _radial(coef, m.v1, deg), _radial(coef, m.v2, deg)
    out = 0 * m.rho
    for l in range(deg, -1, -1):
        out = out * m.rho + r1[..., l] * r2[..., l]
    return out


@register_activation()
@dataclass(frozen=True)
class Polynomial(Activation):
    """``Σ_i coef[i]·x^i`` (neural-tangents ``Polynomial``), degree ≤ 32, exact duals.

    Parameters
    ----------
    coef : sequence of float
        Coefficients in increasing degree (``(0, 0, 1)`` is x²); trailing zeros dropped.
    """

    coef: tuple = (0.0, 1.0)

    def __post_init__(self):
        coef = self.coef
        if isinstance(coef, (str, bytes)) or not hasattr(coef, "__len__") or len(coef) == 0:
            raise ValueError(f"coef must be a non-empty sequence of numbers, got {coef!r}")
        coef = [check_param(f"coef[{i}]", c) for i, c in enumerate(coef)]
        while len(coef) > 1 and coef[-1] == 0:
            coef.pop()
        if len(coef) - 1 > _MAX_DEGREE:
            raise ValueError(f"Polynomial degree must be <= {_MAX_DEGREE}, got {len(coef) - 1}")
        object.__setattr__(self, "coef", tuple(coef))

    @property
    def derivative_coef(self) -> tuple:
        return tuple(i * c for i, c in enumerate(self.coef))[1:] or (0.0,)

    @staticmethod
    def _eval(coef: tuple, x):
        out = 0 * x + coef[-1]
        for c in coef[-2::-1]:
            out = out * x + c
        return out

    def fn(self, x):
        return self._eval(self.coef, x)

    def deriv(self, x):
        return self._eval(self.derivative_coef, x)

    def dual_moments(self, m: D.Moments, need_dot: bool = True):
        dt = m.rho.dtype
        nngp = _series(self.coef, m).astype(dt, copy=False)
        return nngp, (_series(self.derivative_coef, m).astype(dt, copy=False) if need_dot else None)

    def hermite(self, var, degree: int):
        return _radial(self.coef, var, degree), _radial(self.derivative_coef, var, degree)


@register_activation()
@dataclass(frozen=True)
class Hermite(AliasActivation):
    """He_d(x)/√(d!), the normalized probabilists' Hermite polynomial (neural-tangents ``Hermite``),
    degree 1 … 32 (neural-tangents: 1 … 6).

    At unit input variance the duals are neural-tangents' Σ' = Σxy^d, Θ' = d Σxy^{d−1} Θ;
    neural-tangents assumes unit variances, here any variance gets the exact dual of
    the polynomial (a ``Polynomial``).
    """

    degree: int = 1

    def __post_init__(self):
        object.__setattr__(self, "degree",
                           check_int(self.degree, "degree", minimum=1, maximum=_MAX_DEGREE))

    @property
    def target(self) -> Activation:
        d = self.degree
        unit = np.zeros(d + 1)
        unit[d] = 1.0
        coef = hermite_e.herme2poly(unit) / math.sqrt(math.factorial(d))
        return Polynomial(tuple(float(c) for c in coef))
