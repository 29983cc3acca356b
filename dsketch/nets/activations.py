"""Elementwise nonlinearities: exact dual kernels, Hermite expansions, sketch faces.

Convention (neural-tangents ``stax``, ``parameterization="ntk"``): for an activation φ
applied to a Gaussian pre-activation with covariance [[Σxx, Σxy], [Σxy, Σyy]],

    Σ'(x, y) = E[φ(u) φ(v)],        Θ'(x, y) = Θ(x, y) · E[φ'(u) φ'(v)],

(u, v) ~ N(0, [[Σxx, Σxy], [Σxy, Σyy]]).  Inputs may lie anywhere in R^d: nothing assumes
unit variances.  Each activation supplies

- ``fn(x)`` / ``deriv(x)``: the function and its derivative, elementwise (NumPy or CuPy);
- ``dual(var1, var2, cov) -> (nngp, dot)``: E[φφ] and E[φ'φ'] (closed form where one is
  known, otherwise tensor Gauss–Hermite quadrature), robust to zero variances, |ρ| = 1 and
  huge norms (also in float32);
- ``kernel(k)``: the layer's exact face on a :class:`~dsketch.nets.base.Kernel` (the same
  map on the cross kernel and both self-kernels, per pixel pair);
- ``expansion(var, degree) -> (R, Rdot)``: radial Hermite factors with
  E[φφ] ≈ Σ_l R_l(Σxx) R_l(Σyy) ρ^l and E[φ'φ'] ≈ Σ_l Rdot_l(Σxx) Rdot_l(Σyy) ρ^l
  (closed forms for every built-in activation, quadrature for ``Elementwise``) and
  ``truncation_error(var, degree)``;
- ``sketch(...)``: the shared random-feature face (``activation_sketch.py``).

Derivatives of non-differentiable points follow the usual conventions: the ReLU family
uses the one-sided slopes, ``Sign``/``Step`` have zero derivative (Θ' = 0, as in
neural-tangents ``Sign``).  When a variance is 0 the correlation is taken as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Optional, Union

import numpy as np

from ..backend import get_namespace
from . import dual as D
from .base import FeatureShape, Kernel, Layer, SketchOptions
from .dense import check_param

__all__ = [
    "Activation", "ABRelu", "Relu", "LeakyRelu", "Abs", "Sign", "Step", "Identity", "Erf",
    "Gelu", "Sin", "Cos", "Exp", "Gaussian", "Monomial", "RectifiedMonomial", "Elementwise",
    "ACTIVATION_FUNCTIONS",
]

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2 * math.pi)
_EXPANSION_NODES = 256  # Gauss–Hermite nodes for quadrature-based Hermite coefficients


# ------------------------------------------------------------------------ special fns
def _erf(x):
    if type(x).__module__.split(".")[0] == "cupy":
        from cupyx.scipy.special import erf  # pragma: no cover - GPU only

        return erf(x)
    from scipy.special import erf

    return erf(x)


def _norm_cdf(x):
    return 0.5 * (1 + _erf(x / _SQRT2))


def _norm_pdf(x):
    xp = get_namespace(x)
    return xp.exp(-0.5 * x * x) / _SQRT2PI


def _full(value, like):
    """``value`` broadcast to the shape of ``like`` as a fresh array of its dtype."""
    xp = get_namespace(like)
    return xp.zeros(like.shape, dtype=like.dtype) + value


# ---------------------------------------------------------------------------- base
@dataclass(frozen=True)
class Activation(Layer):
    """Base of elementwise nonlinearities (see the module docstring for the maths).

    Subclasses implement ``fn``, ``deriv`` and, when they have closed forms, ``_dual``
    (on sanitized :class:`~dsketch.nets.dual.Moments`) and ``_radial`` (Hermite factors).
    The defaults integrate numerically with Gauss–Hermite quadrature.
    """

    #: Degree of positive homogeneity q (φ(cx) = c^q φ(x) for c > 0), or None.
    homogeneity: ClassVar[Optional[int]] = None
    #: Gauss–Hermite nodes per axis for the default (numerical) dual.
    quad_nodes: ClassVar[int] = 64

    # -------------------------------------------------------------- the function
    def fn(self, x):  # pragma: no cover - interface
        raise NotImplementedError

    def deriv(self, x):  # pragma: no cover - interface
        raise NotImplementedError

    def _dual_fn(self, x):
        """The function whose dual the kernel is (``fn`` except for ``Gelu(approximate)``)."""
        return self.fn(x)

    def _dual_deriv(self, x):
        return self.deriv(x)

    def output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    # ----------------------------------------------------------------- exact duals
    def _quad_degree(self) -> int:
        return self.quad_nodes

    def _dual(self, m: D.Moments, need_dot: bool):
        """(E[φ(u)φ(v)], E[φ'(u)φ'(v)] or None) for the sanitized moments ``m``."""
        pairs = [(self._dual_fn, self._dual_fn)]
        if need_dot:
            pairs.append((self._dual_deriv, self._dual_deriv))
        out = D.bivariate_expectations(pairs, m, self._quad_degree())
        return out[0], (out[1] if need_dot else None)

    def dual(self, var1, var2, cov):
        """Dual activation: ``(E[φ(u)φ(v)], E[φ'(u)φ'(v)])`` for
        (u, v) ~ N(0, [[var1, cov], [cov, var2]]), broadcasting the three arrays."""
        m = D.moments(var1, var2, cov)
        nngp, dot = self._dual(m, True)
        return _full(nngp, m.rho), _full(dot, m.rho)

    def kernel(self, k: Kernel) -> Kernel:
        """Exact face: Σ' = E[φφ], Θ' = Θ·E[φ'φ'] on every (pixel-)pair entry."""
        cross, self1, self2 = k.pair_variances()
        m = D.moments(*cross, k.nngp)
        nngp, dot = self._dual(m, True)
        nngp = _full(nngp, k.nngp)
        ntk = k.ntk * dot
        if k.diagonal:
            cov1, cov2 = nngp, None
        else:
            cov1 = _full(self._dual(D.moments(*self1, k.cov1), False)[0], k.cov1)
            cov2 = _full(self._dual(D.moments(*self2, k.cov2), False)[0], k.cov2)
        return k.replace(nngp=nngp, ntk=_full(ntk, k.ntk), cov1=cov1, cov2=cov2)

    # ----------------------------------------------------------- Hermite expansion
    def _radial(self, var, degree: int):
        """(R, Rdot), each ``var.shape + (degree+1,)`` (float64): Hermite radial factors."""
        R = D.hermite_radial(self._dual_fn, var, degree, _EXPANSION_NODES)
        Rdot = D.hermite_radial(self._dual_deriv, var, degree, _EXPANSION_NODES)
        return R, Rdot

    def expansion(self, var, degree: int):
        """Radial Hermite factors of φ and φ' at variances ``var``.

        Returns ``(R, Rdot)``, arrays ``var.shape + (degree + 1,)`` in float64 with
        E[φ(u)φ(v)] ≈ Σ_{l≤degree} R_l(var_u) R_l(var_v) ρ^l and likewise Rdot for φ'
        (exact as degree → ∞); R_l(v) = E[φ(√v z) He_l(z)]/√(l!).
        """
        degree = _check_degree(degree)
        xp = get_namespace(var)
        var = xp.maximum(xp.asarray(var, dtype=xp.float64), 0)
        return self._radial(var, degree)

    def diagonal(self, var, sign: int = 1):
        """(E[φ(u)φ(±u)], E[φ'(u)φ'(±u)]) for u ~ N(0, var), float64 (``sign`` = ±1).

        Closed forms where the activation has them; otherwise the same 1-D Gauss–Hermite
        rule as the numerical Hermite coefficients, so both stay consistent.
        """
        xp = get_namespace(var)
        var = xp.maximum(xp.asarray(var, dtype=xp.float64), 0)
        if type(self)._dual is Activation._dual:
            t, w = D.gauss_hermite(_EXPANSION_NODES, xp)
            s = xp.sqrt(var)[..., None] * t
            f, d = self._dual_fn, self._dual_deriv
            return (xp.einsum("...q,q->...", f(s) * f(sign * s), w),
                    xp.einsum("...q,q->...", d(s) * d(sign * s), w))
        s = xp.sqrt(var)
        rho = xp.full(var.shape, float(sign))
        total, total_dot = self._dual(D.Moments(var, var, s, s, rho), True)
        return _full(total, var), _full(total_dot, var)

    def truncation_error(self, var, degree: int):
        """E[φ(√v z)²] − Σ_{l≤degree} R_l(v)², and the same for φ' (per entry of ``var``).

        The diagonal mass the truncated expansion misses; it bounds the error of the
        truncated dual at every correlation: |Σ_{l>p} R_l(v1)R_l(v2)ρ^l| ≤ √(e(v1)e(v2)).
        """
        xp = get_namespace(var)
        var = xp.maximum(xp.asarray(var, dtype=xp.float64), 0)
        R, Rdot = self.expansion(var, degree)
        total, total_dot = self.diagonal(var)
        return total - xp.sum(R * R, axis=-1), total_dot - xp.sum(Rdot * Rdot, axis=-1)

    # ------------------------------------------------------------------- sketch face
    def sketch(self, shape: FeatureShape, options: SketchOptions, seed: int, path: tuple):
        from .activation_sketch import plan_activation_sketch

        return plan_activation_sketch(self, shape, options, seed, path)


def _check_degree(degree) -> int:
    if isinstance(degree, bool) or int(degree) != degree or degree < 0:
        raise ValueError(f"degree must be a non-negative integer, got {degree!r}")
    return int(degree)


def _check_int(name: str, value, lo: int = 0, hi: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be {rng}, got {value!r}")
    return int(value)


def _power(v, p: float):
    """v**p with v ≥ 0, p possibly 0 (giving 1 also at v = 0)."""
    return v ** p if p else v * 0 + 1


# ------------------------------------------------------------ homogeneous family
class _Homogeneous(Activation):
    """φ(cx) = c^q φ(x) for c > 0: duals are ‖x‖^q ‖y‖^q g(ρ) with a normalized g.

    Subclasses give ``_normalized(rho) -> (g, gdot)`` with Σ' = (v1 v2)^{q/2} g(ρ) and
    E[φ'φ'] = (v1 v2)^{(q−1)/2} gdot(ρ), and constant Hermite coefficients
    ``_coefficients(degree) -> (r, rdot)`` with R_l(v) = v^{q/2} r_l, Rdot_l = v^{(q−1)/2} rdot_l.
    """

    def _normalized(self, rho):  # pragma: no cover - interface
        raise NotImplementedError

    def _coefficients(self, degree: int):  # pragma: no cover - interface
        raise NotImplementedError

    def _dual(self, m: D.Moments, need_dot: bool):
        q = self.homogeneity
        g, gdot = self._normalized(m.rho)
        prod = m.prod
        nngp = _power(prod, q) * g
        if q == 0:  # φ(0) = 0 for Sign/Step: zero where a variance is zero
            nngp = nngp * (prod > 0)
        dot = None
        if need_dot:
            dot = gdot if q == 1 else (0 * prod if q == 0 else _power(prod, q - 1) * gdot)
        return nngp, dot

    def _radial(self, var, degree: int):
        xp = get_namespace(var)
        q = self.homogeneity
        r, rdot = self._coefficients(degree)
        r = xp.asarray(np.asarray(r, dtype=np.float64))
        rdot = xp.asarray(np.asarray(rdot, dtype=np.float64))
        scale = _power(var, q / 2)
        if q == 0:
            scale = scale * (var > 0)
        R = scale[..., None] * r
        if q == 0:
            Rdot = xp.zeros_like(R)
        else:
            Rdot = _power(var, (q - 1) / 2)[..., None] * rdot
        return R, Rdot


class _ReluFamily(_Homogeneous):
    """a·min(x, 0) + b·max(x, 0) (arc-cosine kernels of order 1 and 0)."""

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

    def _normalized(self, rho):
        xp = get_namespace(rho)
        a, b = self.slopes
        theta = xp.arccos(rho)
        sin = xp.sqrt(xp.maximum((1 - rho) * (1 + rho), 0))
        gdot = (a * a + b * b) / 2 - (a - b) ** 2 * theta / (2 * math.pi)
        g = (a - b) ** 2 / (2 * math.pi) * sin + gdot * rho
        return g, gdot

    def _coefficients(self, degree: int):
        a, b = self.slopes
        relu = D.relu_power_moments(1, degree)
        step = D.relu_power_moments(0, degree)
        r = [(b - a * (-1) ** l) * relu[l] for l in range(degree + 1)]
        rdot = [(b - a) * step[l] + (a if l == 0 else 0.0) for l in range(degree + 1)]
        return r, rdot


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


@dataclass(frozen=True)
class Relu(_ReluFamily):
    """``max(x, 0)``: Σ' = (1/2π)(√(Σxx Σyy − Σxy²) + (π − θ)Σxy), E[φ'φ'] = (π − θ)/2π."""

    @property
    def slopes(self):
        return 0.0, 1.0


@dataclass(frozen=True)
class LeakyRelu(_ReluFamily):
    """``alpha·min(x, 0) + max(x, 0)`` (neural-tangents ``LeakyRelu(alpha)``)."""

    alpha: float

    def __post_init__(self):
        object.__setattr__(self, "alpha", check_param("alpha", self.alpha))

    @property
    def slopes(self):
        return self.alpha, 1.0


@dataclass(frozen=True)
class Abs(_ReluFamily):
    """``|x|`` (= ``ABRelu(-1, 1)``)."""

    @property
    def slopes(self):
        return -1.0, 1.0


@dataclass(frozen=True)
class Sign(_Homogeneous):
    """``sign(x)``: Σ' = (2/π) arcsin ρ (0 where a variance is 0); derivative 0 (Θ' = 0)."""

    homogeneity: ClassVar[int] = 0

    def fn(self, x):
        return get_namespace(x).sign(x)

    def deriv(self, x):
        return get_namespace(x).zeros_like(x)

    def _normalized(self, rho):
        xp = get_namespace(rho)
        return (2 / math.pi) * xp.arcsin(rho), None

    def _coefficients(self, degree: int):
        step = D.relu_power_moments(0, degree)
        r = [0.0] + [2 * s for s in step[1:]]
        return r, [0.0] * (degree + 1)


@dataclass(frozen=True)
class Step(_Homogeneous):
    """Heaviside step ``1(x > 0)``: Σ' = (π − θ)/2π (0 where a variance is 0); Θ' = 0."""

    homogeneity: ClassVar[int] = 0

    def fn(self, x):
        xp = get_namespace(x)
        return (x > 0).astype(x.dtype if x.dtype.kind == "f" else xp.float64)

    def deriv(self, x):
        return get_namespace(x).zeros_like(x)

    def _normalized(self, rho):
        xp = get_namespace(rho)
        return 0.25 + xp.arcsin(rho) / (2 * math.pi), None

    def _coefficients(self, degree: int):
        return list(D.relu_power_moments(0, degree)), [0.0] * (degree + 1)


@dataclass(frozen=True)
class RectifiedMonomial(_Homogeneous):
    """``max(x, 0)^degree`` (degree 0: the step ``1(x > 0)``, degree 1: ReLU).

    Exact arc-cosine kernel of order q: Σ' = (Σxx Σyy)^{q/2} k_q(ρ) with k_q built in closed
    form (polynomials in ρ times 1, arcsin ρ and √(1−ρ²)) from Price's theorem
    dk_q/dρ = q² k_{q−1}; E[φ'φ'] = q² (Σxx Σyy)^{(q−1)/2} k_{q−1}(ρ).
    """

    degree: int = 1

    def __post_init__(self):
        object.__setattr__(self, "degree", _check_int("degree", self.degree, 0, 16))

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

    def _normalized(self, rho):
        q = self.degree
        g = D.rectified_monomial_dual(q, rho)
        gdot = q * q * D.rectified_monomial_dual(q - 1, rho) if q >= 1 else None
        return g, gdot

    def _coefficients(self, degree: int):
        q = self.degree
        r = list(D.relu_power_moments(q, degree))
        rdot = [q * c for c in D.relu_power_moments(q - 1, degree)] if q >= 1 else [0.0] * (degree + 1)
        return r, rdot


@dataclass(frozen=True)
class Monomial(Activation):
    """``x^degree``: Σ' = Σ_l (E[z^q He_l]²/l!) Σxy^l (Σxx Σyy)^{(q−l)/2} (exact, finite)."""

    degree: int = 1

    def __post_init__(self):
        object.__setattr__(self, "degree", _check_int("degree", self.degree, 0, 32))

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
        return _power(m.prod, q) * out

    def _dual(self, m: D.Moments, need_dot: bool):
        q = self.degree
        nngp = self._series(q, m)
        dot = None
        if need_dot:
            dot = q * q * self._series(q - 1, m) if q >= 1 else 0 * m.rho
        return nngp, dot

    def _radial(self, var, degree: int):
        xp = get_namespace(var)
        q = self.degree
        r = xp.asarray(np.asarray(D.monomial_moments(q, degree)))
        R = _power(var, q / 2)[..., None] * r
        if q == 0:
            return R, xp.zeros_like(R)
        rdot = xp.asarray(q * np.asarray(D.monomial_moments(q - 1, degree)))
        return R, _power(var, (q - 1) / 2)[..., None] * rdot


@dataclass(frozen=True)
class Identity(Activation):
    """``x``: Σ' = Σ, Θ' = Θ."""

    def fn(self, x):
        return x

    def deriv(self, x):
        return get_namespace(x).ones_like(x)

    def _dual(self, m: D.Moments, need_dot: bool):
        return m.cov, (1 + 0 * m.rho) if need_dot else None

    def _radial(self, var, degree: int):
        xp = get_namespace(var)
        R = xp.zeros(var.shape + (degree + 1,), dtype=xp.float64)
        Rdot = xp.zeros_like(R)
        if degree >= 1:
            R[..., 1] = xp.sqrt(var)
        Rdot[..., 0] = 1
        return R, Rdot


# ------------------------------------------------------------------- smooth closed forms
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
        return self.a * _erf(self.b * x) + self.c

    def deriv(self, x):
        xp = get_namespace(x)
        return self.a * self.b * (2 / math.sqrt(math.pi)) * xp.exp(-(self.b * x) ** 2)

    def _dual(self, m: D.Moments, need_dot: bool):
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

    def _radial(self, var, degree: int):
        # a·erf(b x) + c = 2a Φ(√2 b x) − a + c ; φ' = 2√2 a b φ_N(√2 b x)
        xp = get_namespace(var)
        s = _SQRT2 * self.b * xp.sqrt(var)
        R = 2 * self.a * D.phi_cdf_moments(s, degree)
        R[..., 0] = self.c
        Rdot = 2 * _SQRT2 * self.a * self.b * D.phi_pdf_moments(s, degree)
        return R, Rdot


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
        if self.approximate:
            xp = get_namespace(x)
            return 0.5 * x * (1 + xp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
        return x * _norm_cdf(x)

    def deriv(self, x):
        if self.approximate:
            xp = get_namespace(x)
            k = math.sqrt(2 / math.pi)
            t = xp.tanh(k * (x + 0.044715 * x ** 3))
            return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)
        return _norm_cdf(x) + x * _norm_pdf(x)

    def _dual_fn(self, x):
        return x * _norm_cdf(x)

    def _dual_deriv(self, x):
        return _norm_cdf(x) + x * _norm_pdf(x)

    def _dual(self, m: D.Moments, need_dot: bool):
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

    def _radial(self, var, degree: int):
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


@dataclass(frozen=True)
class _Sinusoid(Activation):
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

    def _dual(self, m: D.Moments, need_dot: bool):
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

    def _radial(self, var, degree: int):
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


@dataclass(frozen=True)
class Sin(_Sinusoid):
    """``a·sin(b·x + c)``: Σ' = (a²/2) e^{−b²(Σxx+Σyy)/2}(e^{b²Σxy} − cos(2c) e^{−b²Σxy})."""

    @property
    def phase(self) -> float:
        return self.c


@dataclass(frozen=True)
class Cos(_Sinusoid):
    """``a·cos(b·x + c)`` (= ``Sin(a, b, c + π/2)``)."""

    @property
    def phase(self) -> float:
        return self.c + math.pi / 2


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

    def _dual(self, m: D.Moments, need_dot: bool):
        xp = get_namespace(m.rho)
        b2 = self.b ** 2
        nngp = self.a ** 2 * xp.exp(b2 * ((m.s1 - m.s2) ** 2 + 2 * m.prod * (1 + m.rho)) / 2)
        return nngp, (b2 * nngp if need_dot else None)

    def _radial(self, var, degree: int):
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

    def _dual(self, m: D.Moments, need_dot: bool):
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

    def _radial(self, var, degree: int):
        # E[e^{βz²} He_{2i}(z)] = (1−2β)^{−1/2} (2i−1)!! (2β/(1−2β))^i, β = b v
        xp = get_namespace(var)
        beta = self.b * var
        den = 1 - 2 * beta
        ok = den > 0
        den = xp.where(ok, den, 1)
        ratio = 2 * beta / den
        E = xp.zeros(var.shape + (degree + 2,), dtype=xp.float64)
        for k in range(0, degree + 2, 2):
            E[..., k] = D._double_factorial_ratio(k) * ratio ** (k // 2) / xp.sqrt(den)
        R = self.a * E[..., : degree + 1]
        Rdot = xp.zeros_like(R)
        s = xp.sqrt(var)
        for l in range(degree + 1):
            Rdot[..., l] = 2 * self.a * self.b * s * (
                math.sqrt(l + 1) * E[..., l + 1] + (math.sqrt(l) * E[..., l - 1] if l else 0))
        bad = ~ok[..., None]  # E[φ²] diverges (b > 0, 2bv ≥ 1)
        return xp.where(bad, xp.inf, R), xp.where(bad, xp.inf, Rdot)


# -------------------------------------------------------------------- any callable
def _sigmoid(x):
    xp = get_namespace(x)
    return 0.5 * (1 + xp.tanh(0.5 * x))


def _softplus(x):
    xp = get_namespace(x)
    return xp.logaddexp(0, x)


_SELU_L, _SELU_A = 1.0507009873554805, 1.6732632423543772


def _registry():
    def xpf(name):
        return lambda x: getattr(get_namespace(x), name)(x)

    def where(cond, a, b):
        return get_namespace(cond).where(cond, a, b)

    def softsign(x):
        return x / (1 + get_namespace(x).abs(x))

    def mish(x):
        return x * get_namespace(x).tanh(_softplus(x))

    def mish_d(x):
        xp = get_namespace(x)
        t = xp.tanh(_softplus(x))
        return t + x * (1 - t * t) * _sigmoid(x)

    def gelu_tanh(x):
        return Gelu(approximate=True).fn(x)

    def gelu_tanh_d(x):
        return Gelu(approximate=True).deriv(x)

    def hard_sigmoid(x):
        return get_namespace(x).clip(x / 6 + 0.5, 0, 1)

    return {
        "identity": (lambda x: x, lambda x: get_namespace(x).ones_like(x)),
        "tanh": (xpf("tanh"), lambda x: 1 - get_namespace(x).tanh(x) ** 2),
        "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x))),
        "softplus": (_softplus, _sigmoid),
        "silu": (lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x)))),
        "swish": (lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x)))),
        "elu": (lambda x: where(x > 0, x, get_namespace(x).expm1(get_namespace(x).minimum(x, 0))),
                lambda x: where(x > 0, 1.0, get_namespace(x).exp(get_namespace(x).minimum(x, 0)))),
        "selu": (lambda x: _SELU_L * where(x > 0, x, _SELU_A * get_namespace(x).expm1(get_namespace(x).minimum(x, 0))),
                 lambda x: _SELU_L * where(x > 0, 1.0, _SELU_A * get_namespace(x).exp(get_namespace(x).minimum(x, 0)))),
        "relu": (lambda x: get_namespace(x).maximum(x, 0), lambda x: (x > 0) * 1.0),
        "leaky_relu": (lambda x: where(x > 0, x, 0.01 * x), lambda x: where(x > 0, 1.0, 0.01)),
        "relu6": (lambda x: get_namespace(x).clip(x, 0, 6), lambda x: ((x > 0) & (x < 6)) * 1.0),
        "abs": (xpf("abs"), xpf("sign")),
        "hard_tanh": (lambda x: get_namespace(x).clip(x, -1, 1), lambda x: ((x > -1) & (x < 1)) * 1.0),
        "hard_sigmoid": (hard_sigmoid, lambda x: ((x > -3) & (x < 3)) / 6.0),
        "hard_swish": (lambda x: x * hard_sigmoid(x),
                       lambda x: hard_sigmoid(x) + x * (((x > -3) & (x < 3)) / 6.0)),
        "softsign": (softsign, lambda x: 1 / (1 + get_namespace(x).abs(x)) ** 2),
        "mish": (mish, mish_d),
        "log_sigmoid": (lambda x: -_softplus(-x), lambda x: _sigmoid(-x)),
        "gelu": (lambda x: x * _norm_cdf(x), lambda x: _norm_cdf(x) + x * _norm_pdf(x)),
        "gelu_tanh": (gelu_tanh, gelu_tanh_d),
        "erf": (_erf, lambda x: (2 / math.sqrt(math.pi)) * get_namespace(x).exp(-x * x)),
        "sin": (xpf("sin"), xpf("cos")),
        "cos": (xpf("cos"), lambda x: -get_namespace(x).sin(x)),
        "exp": (xpf("exp"), xpf("exp")),
        "gaussian": (lambda x: get_namespace(x).exp(-0.5 * x * x), lambda x: -x * get_namespace(x).exp(-0.5 * x * x)),
        "sign": (xpf("sign"), lambda x: get_namespace(x).zeros_like(x)),
        "step": (lambda x: (x > 0) * 1.0, lambda x: get_namespace(x).zeros_like(x)),
    }


#: Named activations accepted by ``Elementwise(fn="name")``: name -> (fn, derivative).
ACTIVATION_FUNCTIONS = _registry()


def _numerical_derivative(fn: Callable) -> Callable:
    def deriv(x):
        xp = get_namespace(x)
        h = 6e-6 * xp.maximum(xp.abs(x), 1.0)
        return (fn(x + h) - fn(x - h)) / (2 * h)

    return deriv


@dataclass(frozen=True)
class Elementwise(Activation):
    """Any elementwise function, dual by Gauss–Hermite quadrature.

    Parameters
    ----------
    fn : str or callable
        A name from :data:`ACTIVATION_FUNCTIONS` (``"tanh"``, ``"sigmoid"``, ``"softplus"``,
        ``"silu"``/``"swish"``, ``"elu"``, ``"selu"``, ``"mish"``, …; serializable) or a
        vectorized callable on NumPy/CuPy arrays.
    deriv : callable, optional
        Derivative of ``fn``; defaults to the registry's analytic one for names and to a
        central finite difference for callables.
    quad_degree : int
        Gauss–Hermite nodes per axis of the 2-D quadrature (cost ∝ quad_degree² per
        kernel entry). Smooth functions converge fast; kinks (ReLU-like) slowly — prefer
        the closed-form layers for those.
    """

    function: Union[str, Callable] = None  # type: ignore[assignment]
    derivative: Optional[Callable] = None
    quad_degree: int = 48

    def __init__(self, fn: Union[str, Callable], deriv: Optional[Callable] = None, quad_degree: int = 48):
        if isinstance(fn, str):
            key = fn.lower()
            if key not in ACTIVATION_FUNCTIONS:
                raise ValueError(f"unknown activation name {fn!r}; known: {sorted(ACTIVATION_FUNCTIONS)}")
            fn = key
        elif not callable(fn):
            raise ValueError(f"fn must be a callable or an activation name, got {fn!r}")
        if deriv is not None and not callable(deriv):
            raise ValueError(f"deriv must be callable, got {deriv!r}")
        object.__setattr__(self, "function", fn)
        object.__setattr__(self, "derivative", deriv)
        object.__setattr__(self, "quad_degree", _check_int("quad_degree", quad_degree, 2, D.MAX_QUAD_DEGREE))

    def __repr__(self) -> str:
        return f"Elementwise({self.name!r}, quad_degree={self.quad_degree})"

    @property
    def name(self) -> str:
        f = self.function
        return f if isinstance(f, str) else getattr(f, "__name__", "callable")

    def _functions(self):
        f, d = self.function, self.derivative
        if isinstance(f, str):
            named_f, named_d = ACTIVATION_FUNCTIONS[f]
            return named_f, (d or named_d)
        return f, (d or _numerical_derivative(f))

    def fn(self, x):
        return self._functions()[0](x)

    def deriv(self, x):
        return self._functions()[1](x)

    def _quad_degree(self) -> int:
        return self.quad_degree
