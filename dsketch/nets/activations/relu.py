"""The rectifier family: ReLU-like, sign/step and rectified monomials (arc-cosine kernels).

All are positively homogeneous, so each gives its normalized dual g(ρ) and constant
Hermite coefficients (:class:`~.base.HomogeneousActivation`):

- ``a·min(x, 0) + b·max(x, 0)`` (``ABRelu``, ``Relu``, ``LeakyRelu``, ``Abs``): order-1 and
  order-0 arc-cosine kernels, through :func:`dsketch.sketch.arccos.arccos_J`;
- ``Sign``, ``Step``: homogeneous of degree 0, derivative 0 (Θ' = 0, as in
  neural-tangents ``Sign``);
- ``RectifiedMonomial(q)``: ``max(x, 0)^q``, arc-cosine kernel of order q in closed form.

Derivatives at 0 use the one-sided slopes.  Must not import Dask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ...backend import check_int, get_namespace
from ...sketch.arccos import arccos_J
from .. import dual as D
from ..base import check_param
from .base import HomogeneousActivation
from .registry import register_activation

__all__ = ["ABRelu", "Relu", "LeakyRelu", "Abs", "Sign", "Step", "RectifiedMonomial"]


class _ReluFamily(HomogeneousActivation):
    """``a·min(x, 0) + b·max(x, 0)`` with ``(a, b) = slopes``.

    With θ = arccos ρ and Cho & Saul's J_0 = π − θ, J_1 = sin θ + (π − θ) cos θ:
    g = (a−b)² J_1/2π + ab ρ and gdot = (a−b)² J_0/2π + ab.
    """

    homogeneity: ClassVar[int] = 1

    @property
    def slopes(self) -> tuple:  # pragma: no cover - interface
        raise NotImplementedError

    def fn(self, x):
        a, b = self.slopes
        xp = get_namespace(x)
        return a * xp.minimum(x, 0) + b * xp.maximum(x, 0)

    def deriv(self, x):
        a, b = self.slopes
        xp = get_namespace(x)
        return xp.where(x > 0, b, a) * xp.ones_like(x)

    def normalized_dual(self, rho):
        xp = get_namespace(rho)
        a, b = self.slopes
        theta = xp.arccos(rho)
        kink = (a - b) ** 2 / (2 * math.pi)   # the ReLU part; a·b is the linear part
        g = kink * arccos_J(1, theta, xp, cos=rho) + a * b * rho
        gdot = kink * arccos_J(0, theta, xp) + a * b
        return g, gdot

    def hermite_coefficients(self, degree: int):
        a, b = self.slopes
        relu = D.relu_power_moments(1, degree)
        step = D.relu_power_moments(0, degree)
        r = [(b - a * (-1) ** l) * relu[l] for l in range(degree + 1)]
        rdot = [(b - a) * step[l] + (a if l == 0 else 0.0) for l in range(degree + 1)]
        return r, rdot


@register_activation()
@dataclass(frozen=True)
class ABRelu(_ReluFamily):
    """``a·min(x, 0) + b·max(x, 0)`` (neural-tangents ``ABRelu(a, b)``).

    Σ' = ((a−b)²/2π)√(Σxx Σyy − Σxy²) + ((a²+b²)/2 − (a−b)² θ/2π) Σxy,
    E[φ'φ'] = (a²+b²)/2 − (a−b)² θ/2π, θ = arccos ρ.
    """

    a: float
    b: float

    def __post_init__(self):
        object.__setattr__(self, "a", check_param("a", self.a))
        object.__setattr__(self, "b", check_param("b", self.b))

    @property
    def slopes(self):
        return self.a, self.b


@register_activation("relu")
@dataclass(frozen=True)
class Relu(_ReluFamily):
    """``max(x, 0)``: Σ' = (1/2π)(√(Σxx Σyy − Σxy²) + (π − θ)Σxy), E[φ'φ'] = (π − θ)/2π."""

    @property
    def slopes(self):
        return 0.0, 1.0


@register_activation()
@dataclass(frozen=True)
class LeakyRelu(_ReluFamily):
    """``alpha·min(x, 0) + max(x, 0)`` (neural-tangents ``LeakyRelu(alpha)``)."""

    alpha: float

    def __post_init__(self):
        object.__setattr__(self, "alpha", check_param("alpha", self.alpha))

    @property
    def slopes(self):
        return self.alpha, 1.0


@register_activation("abs")
@dataclass(frozen=True)
class Abs(_ReluFamily):
    """``|x|`` (= ``ABRelu(-1, 1)``)."""

    @property
    def slopes(self):
        return -1.0, 1.0


@register_activation("sign")
@dataclass(frozen=True)
class Sign(HomogeneousActivation):
    """``sign(x)``: Σ' = (2/π) arcsin ρ (0 where a variance is 0); derivative 0 (Θ' = 0)."""

    homogeneity: ClassVar[int] = 0

    def fn(self, x):
        return get_namespace(x).sign(x)

    def deriv(self, x):
        return get_namespace(x).zeros_like(x)

    def normalized_dual(self, rho):
        xp = get_namespace(rho)
        return (2 / math.pi) * xp.arcsin(rho), None

    def hermite_coefficients(self, degree: int):
        step = D.relu_power_moments(0, degree)
        r = [0.0] + [2 * s for s in step[1:]]
        return r, [0.0] * (degree + 1)


@register_activation("step")
@dataclass(frozen=True)
class Step(HomogeneousActivation):
    """Heaviside step ``1(x > 0)``: Σ' = (π − θ)/2π (0 where a variance is 0); Θ' = 0."""

    homogeneity: ClassVar[int] = 0

    def fn(self, x):
        xp = get_namespace(x)
        return (x > 0).astype(x.dtype if x.dtype.kind == "f" else xp.float64)

    def deriv(self, x):
        return get_namespace(x).zeros_like(x)

    def normalized_dual(self, rho):
        xp = get_namespace(rho)
        return 0.25 + xp.arcsin(rho) / (2 * math.pi), None

    def hermite_coefficients(self, degree: int):
        return list(D.relu_power_moments(0, degree)), [0.0] * (degree + 1)


@register_activation()
@dataclass(frozen=True)
class RectifiedMonomial(HomogeneousActivation):
    """``max(x, 0)^degree`` (degree 0: the step ``1(x > 0)``, degree 1: ReLU).

    Exact arc-cosine kernel of order q: Σ' = (Σxx Σyy)^{q/2} k_q(ρ) with k_q built in closed
    form (polynomials in ρ times 1, arcsin ρ and √(1−ρ²)) from Price's theorem
    dk_q/dρ = q² k_{q−1}; E[φ'φ'] = q² (Σxx Σyy)^{(q−1)/2} k_{q−1}(ρ).
    """

    degree: int = 1

    def __post_init__(self):
        object.__setattr__(self, "degree",
                           check_int(self.degree, "degree", minimum=0, maximum=16))

    @property
    def homogeneity(self) -> int:  # type: ignore[override]
        return self.degree

    def fn(self, x):
        xp = get_namespace(x)
        if self.degree == 0:
            return (x > 0).astype(x.dtype)
        return xp.maximum(x, 0) ** self.degree

    def deriv(self, x):
        xp = get_namespace(x)
        q = self.degree
        if q == 0:
            return xp.zeros_like(x)
        if q == 1:
            return (x > 0).astype(x.dtype)
        return q * xp.maximum(x, 0) ** (q - 1)

    def normalized_dual(self, rho):
        q = self.degree
        g = D.rectified_monomial_dual(q, rho)
        gdot = q * q * D.rectified_monomial_dual(q - 1, rho) if q >= 1 else None
        return g, gdot

    def hermite_coefficients(self, degree: int):
        q = self.degree
        r = list(D.relu_power_moments(q, degree))
        rdot = [q * c for c in D.relu_power_moments(q - 1, degree)] if q >= 1 else [0.0] * (degree + 1)
        return r, rdot
