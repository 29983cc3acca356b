"""Dual-activation numerics: Gaussian moments, quadrature at any variance, Hermite series.

Owns the pieces every activation's exact face and sketch face share:

- :func:`moments`: the variances, standard deviations and correlation of a pair of
  jointly Gaussian pre-activations, made safe for zero variances, ``|ρ| = 1`` and huge
  norms (correlation clipped to [-1, 1], zero products floored), in the arrays' dtype;
- :func:`gauss_hermite` and :func:`bivariate_expectation`: E[f(u) g(v)] for
  (u, v) ~ N(0, [[v1, c], [c, v2]]) by tensor Gauss–Hermite quadrature
  (``numpy.polynomial.hermite_e.hermegauss``), vectorized over any batch of pairs;
- the standard normal CDF/density and ``erf`` on NumPy or CuPy arrays (:func:`norm_cdf`,
  :func:`norm_pdf`, :func:`erf`);
- :func:`gaussian_rule`, :func:`pair_expectations`, :func:`pair_quadrature_error` and
  :func:`gaussian_expectations`: the numerical duals of any function at any variance
  (split Gauss–Legendre rules in t = asinh(x/scale), vectorized), refined adaptively per
  entry by composite panels, with an error estimate and :class:`NumericalDualWarning`
  where the work cap leaves an entry above the tolerance;
- :func:`hermite_radial`: the radial Hermite factors R_l(v) = E[f(√v z) He_l(z)]/√(l!)
  of a function, so that E[f(u) f(v)] = Σ_l R_l(v1) R_l(v2) ρ^l;
- re-exported from :mod:`.hermite_moments`: closed-form Hermite moments
  (:func:`phi_cdf_moments`, :func:`phi_pdf_moments`, :func:`relu_power_moments`,
  :func:`monomial_moments`) and the exact dual of a rectified monomial
  (:func:`rectified_monomial_dual`).

Everything takes and returns arrays of the caller's module (NumPy or CuPy); only the
tiny node/coefficient tables are built on the host.  Knows no activation class; no Dask
and no random state here.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Callable, NamedTuple

import numpy as np
from numpy.polynomial import hermite_e, legendre

from scipy import special

from ..backend import get_namespace, is_cupy, to_namespace
from .hermite_moments import (double_factorial_ratio, half_normal_moment, monomial_moments,
                              phi_cdf_moments, phi_pdf_moments, rectified_monomial_dual,
                              relu_power_moments, safe_power)

__all__ = [
    "Moments", "moments", "gauss_hermite", "bivariate_expectation", "hermite_radial",
    "normalized_hermite", "bivariate_expectations", "gaussian_rule", "pair_expectations",
    "pair_quadrature_error", "gaussian_expectations", "QUAD_NODES", "QUAD_ZMAX", "QUAD_RTOL",
    "QUAD_PANEL_NODES", "QUAD_MAX_PANELS", "NumericalDualWarning", "phi_cdf_moments",
    "phi_pdf_moments", "relu_power_moments",
    "monomial_moments", "rectified_monomial_dual", "half_normal_moment", "double_factorial_ratio",
    "erf", "norm_cdf", "norm_pdf", "safe_power", "MAX_QUAD_DEGREE",
]

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2 * math.pi)


# --------------------------------------------------------------------- special functions
def erf(x):
    """The error function, elementwise, on the device of ``x`` (SciPy or cupyx)."""
    if is_cupy(x):  # pragma: no cover - GPU only
        from cupyx.scipy.special import erf as cupy_erf

        return cupy_erf(x)
    return special.erf(x)


def norm_cdf(x):
    """Standard normal CDF Φ(x) = (1 + erf(x/√2))/2."""
    return 0.5 * (1 + erf(x / _SQRT2))


def norm_pdf(x):
    """Standard normal density φ_N(x) = exp(−x²/2)/√(2π)."""
    xp = get_namespace(x)
    return xp.exp(-0.5 * x * x) / _SQRT2PI


# ------------------------------------------------------------------------------ moments
class Moments(NamedTuple):
    """Second moments of a Gaussian pair, sanitized (see :func:`moments`)."""

    v1: object   # variance of u (≥ 0)
    v2: object   # variance of v (≥ 0)
    s1: object   # √v1
    s2: object   # √v2
    rho: object  # correlation in [-1, 1]; 0 where a variance is 0
    sqrt_prod: object = None  # √(v1 v2) when :func:`moments` computed it (else derived)

    @property
    def prod(self):
        """√(v1 v2), computed without overflow (exactly v1 where v1 == v2)."""
        if self.sqrt_prod is not None:
            return self.sqrt_prod
        return _sqrt_prod(self.v1, self.v2, self.s1, self.s2)

    @property
    def cov(self):
        """Covariance consistent with the clipped correlation: ρ √(v1 v2)."""
        return self.rho * self.prod

    @property
    def sin(self):
        """√(1 − ρ²), computed as √((1 − ρ)(1 + ρ)) to keep precision near |ρ| = 1."""
        xp = get_namespace(self.rho)
        return xp.sqrt(xp.maximum((1 - self.rho) * (1 + self.rho), 0))


def _sqrt_prod(v1, v2, s1, s2):
    """√(v1 v2) as s1·s2, exactly v1 where v1 == v2 (so ρ = 1 exactly on diagonals)."""
    xp = get_namespace(v1, v2)
    prod = s1 * s2
    if xp is np:  # in place: the (n1, n2) arrays are the exact kernel's main cost
        prod = np.array(np.broadcast_to(prod, np.broadcast_shapes(prod.shape, v1.shape, v2.shape)))
        np.copyto(prod, v1, where=(v1 == v2))
        return prod
    return xp.where(v1 == v2, v1, prod)


def moments(var1, var2, cov) -> Moments:
    """Broadcast and sanitize the moments of (u, v) ~ N(0, [[var1, cov], [cov, var2]]).

    Negative variances (round-off) are clipped to 0, the correlation ρ = cov/√(var1 var2)
    is clipped to [-1, 1] (and snapped to ±1 within 4 ulps) and set to 0 where
    √(var1 var2) underflows to 0. The result keeps
    the floating dtype of the inputs (float32 stays float32).
    """
    xp = get_namespace(var1, var2, cov)
    var1, var2, cov = (xp.asarray(a) for a in (var1, var2, cov))
    dt = np.result_type(var1.dtype, var2.dtype, cov.dtype)
    if dt.kind != "f":
        dt = np.dtype(np.float64)
    var1, var2, cov = (a.astype(dt, copy=False) for a in (var1, var2, cov))
    v1 = xp.maximum(var1, 0)
    v2 = xp.maximum(var2, 0)
    s1 = xp.sqrt(v1)
    s2 = xp.sqrt(v2)
    prod = _sqrt_prod(v1, v2, s1, s2)
    tiny = np.finfo(dt).tiny
    # Within a few ulps of ±1 the correlation is round-off (e.g. a Gram diagonal from a
    # matmul next to variances from a row sum): snap it, so that arccos-type duals, whose
    # slope is infinite at ±1, do not turn 1e-16 into 1e-8.
    snap = 1 - 4 * np.finfo(dt).eps
    shape = np.broadcast_shapes(v1.shape, v2.shape, cov.shape)
    if xp is np:  # the same steps in place (a third of the passes over (n1, n2) arrays)
        ok = prod > tiny
        rho = np.zeros(shape, dtype=dt)
        np.divide(cov, prod, out=rho, where=ok)
        np.clip(rho, -1, 1, out=rho)
        np.copyto(rho, 1, where=rho >= snap)
        np.copyto(rho, -1, where=rho <= -snap)
        prod = np.broadcast_to(prod, shape) if prod.shape != shape else prod
        return Moments(v1, v2, s1, s2, rho, prod)
    ok = prod > tiny
    rho = xp.where(ok, cov / xp.where(ok, prod, 1), 0)
    rho = xp.clip(rho, -1, 1)
    rho = xp.where(rho >= snap, 1, xp.where(rho <= -snap, -1, rho)).astype(dt, copy=False)
    rho = xp.broadcast_to(rho, shape)
    return Moments(v1, v2, s1, s2, rho)


# --------------------------------------------------------------------------- quadrature
MAX_QUAD_DEGREE = 300  # hermegauss weights underflow beyond ~350 nodes


@functools.lru_cache(maxsize=64)
def _gauss_hermite_host(degree: int):
    t, w = hermite_e.hermegauss(degree)
    w = w / math.sqrt(2 * math.pi)
    t.setflags(write=False)
    w.setflags(write=False)
    return t, w


def gauss_hermite(degree: int, xp=np, dtype=np.float64):
    """Nodes and weights with Σ w_i f(t_i) ≈ E f(z), z ~ N(0, 1) (``hermegauss``, normalized)."""
    if int(degree) != degree or not 1 <= degree <= MAX_QUAD_DEGREE:
        raise ValueError(f"quadrature degree must be an integer in [1, {MAX_QUAD_DEGREE}], "
                         f"got {degree!r}")
    t, w = _gauss_hermite_host(int(degree))
    return to_namespace(t.astype(dtype), xp), to_namespace(w.astype(dtype), xp)


def bivariate_expectation(f: Callable, g: Callable, m: Moments, degree: int):
    """E[f(u) g(v)] for the Gaussian pair described by ``m``, by Gauss–Hermite quadrature.

    Uses u = √v1 z1, v = √v2 (ρ z1 + √(1−ρ²) z2), exact for polynomials f·g of degree
    < 2·``degree`` in (z1, z2). Memory is O(batch · degree) (the outer sum is a loop).
    """
    return bivariate_expectations(((f, g),), m, degree)[0]


def bivariate_expectations(pairs, m: Moments, degree: int) -> list:
    """[E[f(u) g(v)] for (f, g) in pairs], sharing the quadrature nodes' arguments."""
    xp = get_namespace(m.rho)
    dt = m.rho.dtype
    t, w = gauss_hermite(degree, xp, dt)
    shape = m.rho.shape
    s1 = xp.broadcast_to(m.s1, shape)[..., None]
    s2 = xp.broadcast_to(m.s2, shape)[..., None]
    rho = m.rho[..., None]
    sin_t = m.sin[..., None] * t                      # (..., degree)
    outer = [f(s1 * t) for f, _ in pairs]             # (..., degree)
    outs = [xp.zeros(shape, dtype=dt) for _ in pairs]
    for i in range(int(degree)):
        arg = s2 * (rho * t[i] + sin_t)               # v at z1 = t_i, all z2 nodes
        for j, (_, g) in enumerate(pairs):
            outs[j] += (w[i] * outer[j][..., i]) * (g(arg) @ w)
    return outs


# ------------------------------------------------- Gaussian quadrature at any variance
#: Half-width of the Gaussian range integrated, in standard deviations (mass outside ≈ 1e-15).
QUAD_ZMAX = 8.0
#: Gauss–Legendre nodes per piece of the first numerical-dual rule (two pieces per axis).
QUAD_NODES = 28
#: Default tolerance of the numerical duals, relative to √(E f(u)² E g(v)²).
QUAD_RTOL = 1e-6
#: Gauss–Legendre nodes per panel of the refined (composite) rules.
QUAD_PANEL_NODES = 16
#: Work cap of the refinement: at most QUAD_MAX_PANELS panels per piece, i.e.
#: (2·64·QUAD_PANEL_NODES)² ≈ 4.2e6 evaluations per entry and pair at the last step.
QUAD_MAX_PANELS = 64
#: Panels per piece of the refinement steps (ratio ≈ √2: each step's gap to the previous
#: one measures the previous step's error, so a small ratio wastes little).
_PANEL_LADDER = (2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256)


# The estimate: 3× the gap between two rules (their errors may share a sign) plus 1e-9
# relative (its resolution: gaps below it are round-off or correlated rule errors).
_EST_SAFETY = 3.0
_EST_FLOOR = 1e-9


class NumericalDualWarning(RuntimeWarning):
    """A numerical dual stopped at the work cap with an error estimate above its tolerance."""


@functools.lru_cache(maxsize=64)
def _legendre_host(n: int, panels: int = 1):
    """Composite Gauss–Legendre table on [-1, 1]: ``panels`` equal panels of ``n`` nodes."""
    x, w = legendre.leggauss(int(n))
    if panels > 1:
        left = np.arange(panels)[:, None] * (2.0 / panels) - 1
        x = (left + (x + 1) / panels).reshape(-1)
        w = np.tile(w / panels, panels)
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


def _asinh_diff(p, q, diff, xp):
    """asinh(p) − asinh(q) given ``diff`` = p − q exactly, without cancellation."""
    same = p * q > 0
    den = p * xp.sqrt(1 + q * q) + q * xp.sqrt(1 + p * p)
    stable = xp.arcsinh(diff * (p + q) / xp.where(same, den, 1))
    return xp.where(same, stable, xp.arcsinh(p) - xp.arcsinh(q))


def gaussian_rule(mean, std, nodes: int = QUAD_NODES, scale=1.0, zmax: float = QUAD_ZMAX,
                  panels: int = 1):
    """Nodes ``y`` and weights ``w``, each ``mean.shape + (2·panels·nodes,)``, with
    Σ_j w_j h(y_j) ≈ E h(mean + std·z), z ~ N(0, 1), accurate at any ``std`` and ``mean``.

    The range mean ± zmax·std is split at y = 0 (where kinks of ReLU-like functions sit)
    and each piece gets ``panels`` equal panels of ``nodes`` Gauss–Legendre nodes in
    t = asinh(y/scale): nodes are dense (spacing ∝ scale) where the function varies near 0
    and thin out geometrically towards the Gaussian tails, so one rule serves std from
    1e-4 to 1e4 and beyond.  ``scale`` (a scalar or one per row) is the width of the region
    where h varies (1 for tanh, erf, GELU, ...).  Float64; ``std = 0`` gives h(mean).
    """
    xp = get_namespace(mean, std)
    f64 = xp.float64
    mean = xp.asarray(mean, dtype=f64)[..., None]
    scale = xp.asarray(scale, dtype=f64)
    scale = scale[..., None] if scale.ndim else scale
    std = xp.asarray(std, dtype=f64)[..., None]
    std = xp.maximum(std, 1e-30 * (scale + xp.abs(mean)))
    xi, gw = (to_namespace(a, xp) for a in _legendre_host(nodes, panels))
    p, ps = mean / scale, std / scale
    tc = xp.arcsinh(p)
    etc = xp.exp(tc)
    lo_all = _asinh_diff(p - zmax * ps, p, -zmax * ps, xp)   # t − tc at the two ends
    hi_all = _asinh_diff(p + zmax * ps, p, zmax * ps, xp)
    ratio = scale / std
    ys, ws = [], []
    for lo, hi in ((lo_all, xp.minimum(hi_all, -tc)), (xp.maximum(lo_all, -tc), hi_all)):
        hi = xp.maximum(hi, lo)                   # an empty piece gets zero weights
        half = (hi - lo) / 2
        d = (lo + hi) / 2 + half * xi             # t − tc at the nodes
        # one expm1 per node: q = e^{d/2} − 1 gives sinh(d/2) and e^{tc + d/2} = e^{tc}(1 + q)
        q = xp.expm1(d * 0.5)
        one_q = q + 1
        e_mid = etc * one_q                       # e^{tc + d/2}
        # z = (y − mean)/std = 2·scale·cosh(tc + d/2)·sinh(d/2)/std, without cancellation
        z = (e_mid + 1 / e_mid) * (q * (q + 2) / one_q) * (0.5 * ratio)
        e_mid *= one_q                            # e^{tc + d}
        w = (half * ratio / (2 * _SQRT2PI)) * gw * (e_mid + 1 / e_mid)
        w *= xp.exp(-0.5 * z * z)
        ys.append(mean + std * z)
        ws.append(w)
    return xp.concatenate(ys, axis=-1), xp.concatenate(ws, axis=-1)


def _rho_quantities(m: Moments, xp):
    f64 = xp.float64
    shape = m.rho.shape
    s1 = xp.broadcast_to(xp.asarray(m.s1, dtype=f64), shape)
    s2 = xp.broadcast_to(xp.asarray(m.s2, dtype=f64), shape)
    rho = xp.asarray(m.rho, dtype=f64)
    sin = xp.sqrt(xp.maximum((1 - rho) * (1 + rho), 0))
    ok = s1 > 0
    k = xp.where(ok, rho * s2 / xp.where(ok, s1, 1), 0)       # E[v | u] = k u
    return s1, s2, sin, k


def pair_expectations(pairs, m: Moments, nodes: int = QUAD_NODES, scale: float = 1.0,
                      with_error: bool = False, rtol: float = QUAD_RTOL,
                      max_panels: int = QUAD_MAX_PANELS):
    """[E[f(u) g(v)] for (f, g) in pairs] for the Gaussian pair ``m``, at any variances.

    Nested :func:`gaussian_rule`: u over its own rule, then for every u-node
    v | u ~ N(k u, v2 (1 − ρ²)) over a rule centred on k u (k the slope of E[v | u]), in
    cache-sized blocks on NumPy (large blocks on CuPy).  Adaptive per entry:

    1. ``nodes`` per piece and axis (one panel), checked against a cheaper rule of another
       structure — 2 panels of ⌈0.4·nodes⌉ per piece whose u-rule also resolves the inner
       expectation's width √(v2 (1 − ρ²))/|k| (jumps of f, g at 0 when |ρ| → 1); being
       the less accurate, the check's gap overestimates the first rule's error;
    2. entries whose estimate exceeds ``rtol``·√(E f(u)² E g(v)²) get 2, 3, 4, 6, 8, …,
       ``max_panels`` panels of :data:`QUAD_PANEL_NODES` per piece (estimate: the gap to
       the previous step) until it meets the tolerance.  Composite panels of different
       counts share no node family, so oscillating f (sin at large variance) cannot fool
       the estimate by aliasing.

    The estimate is three times the gap plus min(1e-9, rtol/10)·√(E f(u)² E g(v)²) (its
    resolution);
    entries still above the tolerance at the cap keep the last value and raise a
    :class:`NumericalDualWarning` naming the function, the entries' variance/correlation
    range and the estimated error.  With ``with_error`` returns ``(values, errors)``.
    """
    xp = get_namespace(m.rho)
    dt = m.rho.dtype
    shape = m.rho.shape
    s1, s2, sin, k = (a.reshape(-1) for a in _rho_quantities(m, xp))
    tau = s2 * sin
    vals, _ = _nested_rule(pairs, s1, tau, k, nodes, 1, scale, False)
    check, _ = _nested_rule(pairs, s1, tau, k, max(4, -(-2 * int(nodes) // 5)), 2, scale, True)
    norms = _pair_norms(pairs, s1, s2, nodes, scale, xp)
    floor_rel = min(_EST_FLOOR, rtol / 10)
    floor = [floor_rel * nrm for nrm in norms]
    errs = [_EST_SAFETY * xp.abs(a - b) + fl for a, b, fl in zip(vals, check, floor)]
    todo = _over_tolerance(errs, norms, rtol, xp)
    prev = check
    for panels in (p for p in _PANEL_LADDER if p <= max_panels):
        if not todo.size:
            break
        sub = (s1[todo], tau[todo], k[todo])
        new, new_norms = _nested_rule(pairs, *sub, QUAD_PANEL_NODES, panels, scale, True, True)
        for j, v in enumerate(new):
            norms[j][todo] = new_norms[j]              # the 1-D first rule aliases sin² too
            floor[j][todo] = floor_rel * new_norms[j]
            errs[j][todo] = _EST_SAFETY * xp.abs(v - prev[j][todo]) + floor[j][todo]
            vals[j][todo] = v
            prev[j][todo] = v
        todo = todo[_over_tolerance([e[todo] for e in errs], [n[todo] for n in norms],
                                    rtol, xp)]
    if todo.size:
        _warn_unresolved(pairs, todo, s1, s2, sin, k, errs, norms, rtol, max_panels, xp)
    out = [v.reshape(shape).astype(dt, copy=False) for v in vals]
    if not with_error:
        return out
    return out, [e.reshape(shape) for e in errs]


def _over_tolerance(errs, norms, rtol, xp):
    """Indices of the entries where some pair's estimate exceeds ``rtol`` relative."""
    bad = xp.zeros(errs[0].shape, dtype=bool)
    for e, nrm in zip(errs, norms):
        bad |= e > rtol * nrm
    return xp.nonzero(bad)[0]


def _warn_unresolved(pairs, todo, s1, s2, sin, k, errs, norms, rtol, max_panels, xp):
    f = pairs[0][0]
    owner = getattr(f, "__self__", None)
    what = repr(owner) if owner is not None else getattr(f, "__name__", repr(f))
    v1, v2 = s1[todo] ** 2, s2[todo] ** 2
    rho = xp.where((s1[todo] > 0) & (s2[todo] > 0), xp.sign(k[todo]) * xp.sqrt(1 - sin[todo] ** 2), 0)
    rel = max(float(xp.max(e[todo] / xp.maximum(n[todo], 1e-300))) for e, n in zip(errs, norms))
    absolute = max(float(xp.max(e[todo])) for e in errs)
    cells = (2 * QUAD_PANEL_NODES * int(max_panels)) ** 2
    warnings.warn(NumericalDualWarning(
        f"numerical dual of {what}: {todo.size} of {s1.size} entries stopped at the work cap "
        f"({int(max_panels)} panels per piece, {cells:.2g} evaluations per entry) with an "
        f"estimated error above rtol={rtol:g}: variances [{float(v1.min()):.3g}, "
        f"{float(v1.max()):.3g}] x [{float(v2.min()):.3g}, {float(v2.max()):.3g}], correlation "
        f"[{float(rho.min()):.6g}, {float(rho.max()):.6g}]; estimated error up to "
        f"{absolute:.3g} ({rel:.3g} relative to sqrt(E f(u)^2 E g(v)^2))"), stacklevel=3)


def _pair_norms(pairs, s1, s2, nodes: int, scale: float, xp) -> list:
    """√(E f(u)² E g(v)²) per entry and pair (1-D rules): the scale of the tolerance."""
    x, wx = gaussian_rule(0 * s1, s1, nodes, scale)
    y, wy = gaussian_rule(0 * s2, s2, nodes, scale)
    return [xp.sqrt(xp.sum(f(x) ** 2 * wx, axis=-1) * xp.sum(g(y) ** 2 * wy, axis=-1))
            for f, g in pairs]


def _nested_rule(pairs, s1, tau, k, nodes: int, panels: int, scale: float, fine: bool,
                 with_norms: bool = False):
    """The nested rule of :func:`pair_expectations` on flat arrays (std of u, of v | u, slope
    of E[v | u]): ``([E f(u) g(v)], [√(E f(u)² E g(v)²)] or None)`` per pair.  ``fine``
    narrows the u-rule's node scale to the inner expectation's width τ/|k| (unless below
    1e-7·√v1)."""
    xp = get_namespace(s1)
    q = 2 * int(nodes) * int(panels)
    budget = (1 << 22) if xp is not np else (1 << 16)
    step = max(1, budget // (q * q))                   # entries per block
    block = q if q * q <= budget else max(1, budget // q)   # u-nodes per block
    n = s1.shape[0]
    outs = [xp.zeros(n, dtype=xp.float64) for _ in pairs]
    norms = [xp.zeros(n, dtype=xp.float64) for _ in pairs] if with_norms else None
    for lo in range(0, n, step):
        sl = slice(lo, lo + step)
        kk, ak = k[sl], xp.abs(k[sl])
        oscale = scale / xp.maximum(1, ak)
        if fine:  # a transition narrower than 1e-7·√v1 moves the mean by < 1e-7: ignore it
            width = tau[sl] / xp.where(ak > 0, ak, 1)
            narrow = (ak > 0) & (width >= 1e-7 * s1[sl])
            oscale = xp.where(narrow, xp.minimum(oscale, width), oscale)
        x, wx = gaussian_rule(0 * kk, s1[sl], nodes, oscale, panels=panels)
        inner = [xp.empty_like(x) for _ in pairs]
        inner2 = [xp.empty_like(x) for _ in pairs] if with_norms else None
        for b in range(0, q, block):
            xb = x[:, b:b + block]
            y, wy = gaussian_rule(kk[:, None] * xb, tau[sl, None] + 0 * xb, nodes, scale,
                                  panels=panels)
            for j, (_, g) in enumerate(pairs):
                gy = g(y)
                gw = gy * wy
                inner[j][:, b:b + block] = xp.sum(gw, axis=-1)   # E[g(v) | u = x_i]
                if with_norms:
                    inner2[j][:, b:b + block] = xp.sum(gw * gy, axis=-1)
        for j, (f, _) in enumerate(pairs):
            fw = f(x) * wx
            outs[j][sl] = xp.sum(fw * inner[j], axis=-1)
            if with_norms:
                nf = xp.sum(fw * f(x), axis=-1)
                ng = xp.sum(wx * inner2[j], axis=-1)
                norms[j][sl] = xp.sqrt(xp.maximum(nf, 0) * xp.maximum(ng, 0))
    return outs, norms


def pair_quadrature_error(pairs, m: Moments, nodes: int = QUAD_NODES, scale: float = 1.0) -> list:
    """Estimated absolute errors of :func:`pair_expectations` (its ``with_error`` output)."""
    return pair_expectations(pairs, m, nodes, scale, with_error=True)[1]


def gaussian_expectations(fns, var, nodes: int = 128, scale: float = 1.0, zmax: float = 12.0) -> list:
    """[E h(√var z) for h in fns], each ``var.shape + h's trailing axes``, at any variance.

    A 1-D rule in four pieces: |z| ≤ 1 in t = asinh(√var z/scale) (the region where h
    varies) and 1 ≤ |z| ≤ zmax plain Gauss–Legendre (room for Hermite polynomials of high
    degree).  ``fns`` take ``(y, z)``: the argument and the standard-normal node.
    """
    xp = get_namespace(var)
    s = xp.sqrt(xp.maximum(xp.asarray(var, dtype=xp.float64), 0))[..., None]
    xi, gw = (to_namespace(a, xp) for a in _legendre_host(nodes))
    zs, ws = [], []
    # |z| ≤ 1: sinh map
    tmax = xp.arcsinh(s / scale)
    safe = xp.where(s > 0, s, 1)
    for sign in (-1.0, 1.0):
        t = tmax * (xi + 1) / 2
        z = xp.where(s > 0, scale * xp.sinh(t) / safe, (xi + 1) / 2)
        jac = xp.where(s > 0, scale * xp.cosh(t) * tmax / (2 * safe), 0.5 + 0 * t)
        zs.append(sign * z)
        ws.append(gw * jac * xp.exp(-0.5 * z * z) / _SQRT2PI)
        zl = 1 + (zmax - 1) * (xi + 1) / 2
        zs.append(sign * zl + 0 * s)
        ws.append(gw * (zmax - 1) / 2 * xp.exp(-0.5 * zl * zl) / _SQRT2PI + 0 * s)
    z = xp.concatenate(zs, axis=-1)
    w = xp.concatenate(ws, axis=-1)
    y = s * z
    return [_weighted_sum(h(y, z), w, xp) for h in fns]


def _weighted_sum(vals, w, xp):
    """Σ_q w[..., q] vals[..., q, *tail]  (vals has the node axis at w's last position)."""
    nd = w.ndim
    extra = vals.ndim - nd
    return xp.sum(vals * w.reshape(w.shape + (1,) * extra), axis=nd - 1)


# ----------------------------------------------------------------------- Hermite series
def normalized_hermite(t, degree: int):
    """h_l(t) = He_l(t)/√(l!) for l = 0..degree, stacked on a new last axis.

    Uses the stable recurrence h_{l+1} = (t h_l − √l h_{l−1})/√(l+1).
    """
    xp = get_namespace(t)
    out = [xp.ones_like(t)]
    if degree >= 1:
        out.append(t)
    for l in range(1, degree):
        out.append((t * out[l] - math.sqrt(l) * out[l - 1]) / math.sqrt(l + 1))
    return xp.stack(out, axis=-1)


def hermite_radial(f: Callable, var, degree: int, quad_degree: int = 128, scale: float = 1.0):
    """R_l(v) = E[f(√v z) He_l(z)]/√(l!), l = 0..degree, by :func:`gaussian_expectations`.

    Returns an array ``var.shape + (degree + 1,)`` (``quad_degree`` Gauss–Legendre nodes per
    piece of the four-piece rule, accurate at any variance); with these,
    E[f(u) f(v)] = Σ_l R_l(v1) R_l(v2) ρ^l (Mehler's formula).
    """
    xp = get_namespace(var)
    var = xp.asarray(var)
    dt = var.dtype if var.dtype.kind == "f" else xp.float64

    def h(y, z):
        return f(y)[..., None] * normalized_hermite(z, degree)

    return gaussian_expectations((h,), var, quad_degree, scale)[0].astype(dt, copy=False)
