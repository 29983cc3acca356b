"""The activation base classes: the one documented way to define an elementwise nonlinearity.

Convention (neural-tangents ``stax``, ``parameterization="ntk"``): for an activation φ
applied to a Gaussian pre-activation with covariance [[Σxx, Σxy], [Σxy, Σyy]],

    Σ'(x, y) = E[φ(u) φ(v)],        Θ'(x, y) = Θ(x, y) · E[φ'(u) φ'(v)],

(u, v) ~ N(0, [[Σxx, Σxy], [Σxy, Σyy]]).  Inputs may lie anywhere in R^d: nothing assumes
unit variances.  When a variance is 0 the correlation is taken as 0; at non-differentiable
points the derivative follows the usual one-sided conventions.

Defining an activation
----------------------
One file of this subpackage holds one activation (or family): a frozen dataclass derived
from :class:`Activation` and decorated with
:func:`~dsketch.nets.activations.registry.register_activation`.  It implements the public
hooks below; everything else (the exact kernel face, the Hermite expansion, the sketch
face) is shared code driven by them.

``fn(x)``, ``deriv(x)``
    The function and its derivative, elementwise on NumPy or CuPy arrays.  They also
    drive the Monte-Carlo sketch (``relu_method="random"`` for homogeneous activations).
``dual_moments(m, need_dot)`` — the exact face
    ``(E[φ(u)φ(v)], E[φ'(u)φ'(v)] or None)`` for sanitized
    :class:`~dsketch.nets.dual.Moments` ``m``; robust to zero variances, |ρ| = 1 and huge
    norms, also in float32.  Default: the split Gauss–Legendre rule of
    :func:`~dsketch.nets.dual.pair_expectations` on ``dual_fn`` / ``dual_deriv`` with
    :attr:`Activation.quad_degree` nodes per piece (two pieces per axis), refined per
    entry to 1e-6 relative (``dual.QUAD_RTOL``) for functions varying near 0 on the scale
    :attr:`Activation.quad_scale`; :meth:`Activation.dual_error` estimates its error.
``hermite(var, degree)`` — the sketch data
    Radial Hermite factors ``(R, Rdot)``, each ``var.shape + (degree + 1,)`` in float64,
    with E[φφ] = Σ_l R_l(Σxx) R_l(Σyy) ρ^l and likewise Rdot for φ'.  Default: 1-D
    four-piece Gauss–Legendre rule (:func:`~dsketch.nets.dual.hermite_radial`).
``dual_fn(x)``, ``dual_deriv(x)``
    The function whose dual the kernel is; ``fn``/``deriv`` unless the kernel is defined
    by another function (``Gelu(approximate=True)``).

An activation that *is* another one with fixed parameters (``Sigmoid_like`` is an ``Erf``)
derives from :class:`AliasActivation` and gives only ``target``.

A positively homogeneous activation (φ(cx) = c^q φ(x), c > 0) derives from
:class:`HomogeneousActivation` and gives, instead of the two faces above, the normalized
dual on correlations ``normalized_dual(rho)`` and constant Hermite coefficients
``hermite_coefficients(degree)``.  An activation with a better randomized map than the
shared Hermite sketch overrides ``sketch`` (e.g. ``Identity``).

Owns the base classes and the public faces built on the hooks (``dual``, ``kernel``,
``expansion``, ``diagonal``, ``truncation_error``, ``sketch``).  Must not import Dask nor
know any concrete activation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from ...backend import get_namespace
from .. import dual as D
from ..activation_sketch import plan_activation_sketch
from ..base import FeatureShape, Kernel, Layer, SketchOptions

__all__ = ["Activation", "HomogeneousActivation", "AliasActivation"]

_EXPANSION_NODES = 128  # Gauss–Legendre nodes per piece of the 1-D (Hermite, diagonal) rule


def _full(value, like):
    """``value`` broadcast to the shape of ``like`` as a fresh array of its dtype."""
    xp = get_namespace(like)
    return xp.zeros(like.shape, dtype=like.dtype) + value


def _check_degree(degree) -> int:
    if isinstance(degree, bool) or int(degree) != degree or degree < 0:
        raise ValueError(f"degree must be a non-negative integer, got {degree!r}")
    return int(degree)


def _sanitized_variance(var):
    xp = get_namespace(var)
    return xp.maximum(xp.asarray(var, dtype=xp.float64), 0)


@dataclass(frozen=True)
class Activation(Layer):
    """Base of elementwise nonlinearities (see the module docstring for the hooks).

    Attributes
    ----------
    homogeneity : int or None
        Degree q of positive homogeneity (φ(cx) = c^q φ(x) for c > 0), or None.
    quad_degree : int
        Gauss–Legendre nodes per piece of the default (numerical) exact face.
    quad_scale : float
        Width of the region near 0 where φ varies (node placement of the numerical face).
    """

    homogeneity: ClassVar[Optional[int]] = None
    quad_degree: ClassVar[int] = D.QUAD_NODES
    quad_scale: ClassVar[float] = 1.0

    # ------------------------------------------------------------------ hooks: function
    def fn(self, x):  # pragma: no cover - interface
        """φ(x), elementwise."""
        raise NotImplementedError

    def deriv(self, x):  # pragma: no cover - interface
        """φ'(x), elementwise."""
        raise NotImplementedError

    def dual_fn(self, x):
        """The function whose dual the kernel is (``fn`` unless overridden)."""
        return self.fn(x)

    def dual_deriv(self, x):
        """Derivative of :meth:`dual_fn` (``deriv`` unless overridden)."""
        return self.deriv(x)

    def dual_both(self, x):
        """``(dual_fn(x), dual_deriv(x))``, the same numbers; activations whose two share a
        costly part (GeLU's Φ) compute it once."""
        return self.dual_fn(x), self.dual_deriv(x)

    # ------------------------------------------------------------- hooks: the two faces
    def dual_moments(self, m: D.Moments, need_dot: bool = True):
        """Exact face: ``(E[φ(u)φ(v)], E[φ'(u)φ'(v)] or None)`` for sanitized moments ``m``.

        Default: :func:`~dsketch.nets.dual.pair_expectations` (``quad_degree`` nodes per piece).
        """
        out = D.pair_expectations(self._dual_pairs(need_dot), m, self.quad_degree, self.quad_scale)
        return out[0], (out[1] if need_dot else None)

    def _dual_pairs(self, need_dot: bool) -> list:
        pairs = [(self.dual_fn, self.dual_fn)]
        if need_dot:
            pairs.append((self.dual_deriv, self.dual_deriv))
        return pairs

    @property
    def numerical(self) -> bool:
        """True when the exact face is the numerical rule (no closed-form ``dual_moments``)."""
        return type(self).dual_moments is Activation.dual_moments

    def dual_error(self, var1, var2, cov):
        """Estimated absolute error of :meth:`dual` ``(nngp, dot)``, broadcast like ``dual``.

        Zero for closed forms; for the numerical face, the adaptive rule's gap to a rule of
        another panel structure (:func:`~dsketch.nets.dual.pair_quadrature_error`), an
        overestimate where the rule converges.  Costs one evaluation of :meth:`dual`.
        """
        m = D.moments(var1, var2, cov)
        if not self.numerical:
            return _full(0.0, m.rho), _full(0.0, m.rho)
        err = D.pair_quadrature_error(self._dual_pairs(True), m, self.quad_degree, self.quad_scale)
        return _full(err[0], m.rho), _full(err[1], m.rho)

    def hermite(self, var, degree: int):
        """Sketch data: radial Hermite factors ``(R, Rdot)`` at float64 variances ``var ≥ 0``.

        Each is ``var.shape + (degree + 1,)`` with R_l(v) = E[φ(√v z) He_l(z)]/√(l!).
        Default: the four-piece 1-D rule of :func:`~dsketch.nets.dual.hermite_radial`.
        """
        R = D.hermite_radial(self.dual_fn, var, degree, _EXPANSION_NODES, self.quad_scale)
        Rdot = D.hermite_radial(self.dual_deriv, var, degree, _EXPANSION_NODES, self.quad_scale)
        return R, Rdot

    # -------------------------------------------------------------------- public faces
    def output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def dual(self, var1, var2, cov):
        """Dual activation ``(E[φ(u)φ(v)], E[φ'(u)φ'(v)])`` for
        (u, v) ~ N(0, [[var1, cov], [cov, var2]]), broadcasting the three arrays."""
        m = D.moments(var1, var2, cov)
        nngp, dot = self.dual_moments(m, True)
        return _full(nngp, m.rho), _full(dot, m.rho)

    def kernel(self, k: Kernel) -> Kernel:
        """Exact face: Σ' = E[φφ], Θ' = Θ·E[φ'φ'] on every (pixel-)pair entry."""
        cross, self1, self2 = k.pair_variances()
        m = D.moments(*cross, k.nngp)
        nngp, dot = self.dual_moments(m, True)
        nngp = _full(nngp, k.nngp)
        ntk = k.ntk * dot
        if k.diagonal:
            cov1, cov2 = nngp, None
        else:
            cov1 = _full(self.dual_moments(D.moments(*self1, k.cov1), False)[0], k.cov1)
            cov2 = _full(self.dual_moments(D.moments(*self2, k.cov2), False)[0], k.cov2)
        return k.replace(nngp=nngp, ntk=_full(ntk, k.ntk), cov1=cov1, cov2=cov2)

    def expansion(self, var, degree: int):
        """Radial Hermite factors of φ and φ' at variances ``var``.

        Returns ``(R, Rdot)``, arrays ``var.shape + (degree + 1,)`` in float64 with
        E[φ(u)φ(v)] ≈ Σ_{l≤degree} R_l(var_u) R_l(var_v) ρ^l and likewise Rdot for φ'
        (exact as degree → ∞); R_l(v) = E[φ(√v z) He_l(z)]/√(l!).
        """
        degree = _check_degree(degree)
        return self.hermite(_sanitized_variance(var), degree)

    def diagonal(self, var, sign: int = 1):
        """(E[φ(u)φ(±u)], E[φ'(u)φ'(±u)]) for u ~ N(0, var), float64 (``sign`` = ±1).

        The exact face at ρ = ±1 where the activation has one in closed form; otherwise
        the same 1-D rule as the numerical Hermite factors, so both agree.
        """
        var = _sanitized_variance(var)
        if self.numerical:
            f, d = self.dual_fn, self.dual_deriv
            return tuple(D.gaussian_expectations(
                (lambda y, z: f(y) * f(sign * y), lambda y, z: d(y) * d(sign * y)),
                var, _EXPANSION_NODES, self.quad_scale))
        xp = get_namespace(var)
        s = xp.sqrt(var)
        rho = xp.full(var.shape, float(sign))
        total, total_dot = self.dual_moments(D.Moments(var, var, s, s, rho), True)
        return _full(total, var), _full(total_dot, var)

    def truncation_error(self, var, degree: int):
        """E[φ(√v z)²] − Σ_{l≤degree} R_l(v)², and the same for φ' (per entry of ``var``).

        The diagonal mass the truncated expansion misses; it bounds the error of the
        truncated dual at every correlation: |Σ_{l>p} R_l(v1)R_l(v2)ρ^l| ≤ √(e(v1)e(v2)).
        """
        xp = get_namespace(var)
        var = _sanitized_variance(var)
        R, Rdot = self.expansion(var, degree)
        total, total_dot = self.diagonal(var)
        return total - xp.sum(R * R, axis=-1), total_dot - xp.sum(Rdot * Rdot, axis=-1)

    def sketch(self, shape: FeatureShape, options: SketchOptions, seed: int, path: tuple):
        """Sketch face: the shared Hermite (or random-feature) map of ``activation_sketch``."""
        return plan_activation_sketch(self, shape, options, seed, path)


@dataclass(frozen=True)
class HomogeneousActivation(Activation):
    """φ(cx) = c^q φ(x) for c > 0 (q = ``homogeneity``): duals are ‖x‖^q ‖y‖^q g(ρ).

    Subclasses set ``homogeneity`` and implement two hooks instead of ``dual_moments`` /
    ``hermite``:

    ``normalized_dual(rho) -> (g, gdot)``
        Σ' = (v1 v2)^{q/2} g(ρ) and E[φ'φ'] = (v1 v2)^{(q−1)/2} gdot(ρ) (``gdot`` may be
        None when q = 0: the derivative is 0).
    ``hermite_coefficients(degree) -> (r, rdot)``
        Constant Hermite coefficients, sequences of length ``degree + 1``, with
        R_l(v) = v^{q/2} r_l and Rdot_l(v) = v^{(q−1)/2} rdot_l.

    For q = 0 (``Sign``, ``Step``) φ(0) = 0 is assumed: the dual is 0 where a variance is.
    """

    def normalized_dual(self, rho):  # pragma: no cover - interface
        """``(g, gdot)``: the duals at unit variances and correlation ``rho``."""
        raise NotImplementedError

    def hermite_coefficients(self, degree: int):  # pragma: no cover - interface
        """``(r, rdot)``: Hermite coefficients of φ and φ' at unit variance."""
        raise NotImplementedError

    def dual_moments(self, m: D.Moments, need_dot: bool = True):
        q = self.homogeneity
        g, gdot = self.normalized_dual(m.rho)
        prod = m.prod
        nngp = D.safe_power(prod, q) * g
        if q == 0:  # φ(0) = 0 for Sign/Step: zero where a variance is zero
            nngp = nngp * (prod > 0)
        dot = None
        if need_dot:
            dot = gdot if q == 1 else (0 * prod if q == 0 else D.safe_power(prod, q - 1) * gdot)
        return nngp, dot

    def hermite(self, var, degree: int):
        xp = get_namespace(var)
        q = self.homogeneity
        r, rdot = self.hermite_coefficients(degree)
        r = xp.asarray(np.asarray(r, dtype=np.float64))
        rdot = xp.asarray(np.asarray(rdot, dtype=np.float64))
        scale = D.safe_power(var, q / 2)
        if q == 0:
            scale = scale * (var > 0)
        R = scale[..., None] * r
        if q == 0:
            Rdot = xp.zeros_like(R)
        else:
            Rdot = D.safe_power(var, (q - 1) / 2)[..., None] * rdot
        return R, Rdot


@dataclass(frozen=True)
class AliasActivation(Activation):
    """An activation equal to another one with derived parameters (``target``).

    Subclasses keep their own (neural-tangents) parameters as fields and implement the
    ``target`` property; every hook delegates to it, so both faces are the target's.
    """

    @property
    def target(self) -> Activation:  # pragma: no cover - interface
        """The activation this one equals."""
        raise NotImplementedError

    @property
    def numerical(self) -> bool:
        return self.target.numerical

    def fn(self, x):
        return self.target.fn(x)

    def deriv(self, x):
        return self.target.deriv(x)

    def dual_fn(self, x):
        return self.target.dual_fn(x)

    def dual_deriv(self, x):
        return self.target.dual_deriv(x)

    def dual_both(self, x):
        return self.target.dual_both(x)

    def dual_moments(self, m: D.Moments, need_dot: bool = True):
        return self.target.dual_moments(m, need_dot)

    def hermite(self, var, degree: int):
        return self.target.hermite(var, degree)

    def diagonal(self, var, sign: int = 1):
        return self.target.diagonal(var, sign)

    def dual_error(self, var1, var2, cov):
        return self.target.dual_error(var1, var2, cov)
