"""``Gelu``: x·Φ(x) (neural-tangents ``Gelu``), exact dual and Hermite factors in closed form.

Owns the one implementation of the GeLU function, its tanh approximation and their
derivatives (:func:`gelu`, :func:`gelu_deriv`, :func:`gelu_both`, :func:`gelu_tanh`,
:func:`gelu_tanh_deriv`; ``Elementwise("gelu")`` uses them too).  Must not import Dask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...backend import get_namespace
from .. import dual as D
from .base import Activation
from .registry import register_activation

__all__ = ["Gelu"]

_TANH_SCALE = math.sqrt(2 / math.pi)
_TANH_CUBIC = 0.044715


def gelu(x):
    """x·Φ(x), Φ the standard normal CDF."""
    return x * D.norm_cdf(x)


def gelu_deriv(x):
    """Φ(x) + x·φ_N(x)."""
    return D.norm_cdf(x) + x * D.norm_pdf(x)


def gelu_both(x):
    """``(gelu(x), gelu_deriv(x))`` with Φ(x) computed once (the same numbers)."""
    cdf = D.norm_cdf(x)
    return x * cdf, cdf + x * D.norm_pdf(x)


def gelu_tanh(x):
    """The tanh approximation ½x(1 + tanh(√(2/π)(x + 0.044715x³)))."""
    xp = get_namespace(x)
    return 0.5 * x * (1 + xp.tanh(_TANH_SCALE * (x + _TANH_CUBIC * x ** 3)))


def gelu_tanh_deriv(x):
    """Derivative of :func:`gelu_tanh`."""
    xp = get_namespace(x)
    t = xp.tanh(_TANH_SCALE * (x + _TANH_CUBIC * x ** 3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _TANH_SCALE * (1 + 3 * _TANH_CUBIC * x * x)


@register_activation("gelu")
@dataclass(frozen=True)
class Gelu(Activation):
    """``x·Φ(x)`` (neural-tangents ``Gelu``), exact closed-form dual.

    With P = (1+Σxx)(1+Σyy), Δ = √(P − Σxy²), q = ΣxxΣyy:
    Σ' = Σxy/4 + Σxy·arcsin(Σxy/√P)/2π + (q + Σxy²(1−q)/P)/(2πΔ),
    E[φ'φ'] = 1/4 + arcsin(Σxy/√P)/2π + Σxy(1 + (1−q)/P + 1/Δ²)/(2πΔ).

    ``approximate=True`` makes ``fn`` the tanh approximation (for finite networks); as in
    neural-tangents, the kernel stays that of the exact Gelu.
    """

    approximate: bool = False

    def __post_init__(self):
        if not isinstance(self.approximate, (bool, np.bool_)):
            raise ValueError(f"approximate must be a bool, got {self.approximate!r}")
        object.__setattr__(self, "approximate", bool(self.approximate))

    def fn(self, x):
        return gelu_tanh(x) if self.approximate else gelu(x)

    def deriv(self, x):
        return gelu_tanh_deriv(x) if self.approximate else gelu_deriv(x)

    def dual_fn(self, x):
        return gelu(x)

    def dual_deriv(self, x):
        return gelu_deriv(x)

    def dual_both(self, x):
        return gelu_both(x)

    def dual_moments(self, m: D.Moments, need_dot: bool = True):
        xp = get_namespace(m.rho)
        cov = m.cov
        q = m.prod * m.prod
        sp1 = xp.sqrt(1 + m.v1) * xp.sqrt(1 + m.v2)            # √P
        P = sp1 * sp1
        delta2 = 1 + m.v1 + m.v2 + (m.prod * m.sin) ** 2          # P − Σxy² ≥ 1
        delta = xp.sqrt(delta2)
        angle = xp.arcsin(xp.clip(cov / sp1, -1, 1))
        nngp = cov / 4 + cov * angle / (2 * math.pi) + (q + cov * cov * (1 - q) / P) / (2 * math.pi * delta)
        dot = None
        if need_dot:
            dot = 0.25 + angle / (2 * math.pi) + cov * (1 + (1 - q) / P + 1 / delta2) / (2 * math.pi * delta)
        return nngp, dot

    def hermite(self, var, degree: int):
        # φ(sz) = s z Φ(sz): z He_l = He_{l+1} + l He_{l−1}
        xp = get_namespace(var)
        s = xp.sqrt(var)
        G = D.phi_cdf_moments(s, degree + 1)
        Pn = D.phi_pdf_moments(s, degree + 1)
        R = xp.zeros(var.shape + (degree + 1,), dtype=xp.float64)
        Rdot = xp.zeros_like(R)
        for l in range(degree + 1):
            up = math.sqrt(l + 1)
            down = math.sqrt(l)
            R[..., l] = s * (up * G[..., l + 1] + (down * G[..., l - 1] if l else 0))
            Rdot[..., l] = G[..., l] + s * (up * Pn[..., l + 1] + (down * Pn[..., l - 1] if l else 0))
        return R, Rdot
