"""Numerical duals: Gaussian expectations of any function at any variance, with error estimates.

Owns the quadrature behind every activation without a closed-form dual:

- :func:`gaussian_rule`: split Gauss–Legendre rules in t = asinh(x/scale) for E h(mean + std·z),
  accurate from tiny to huge standard deviations;
- :func:`pair_expectations` (and :func:`pair_quadrature_error`): E[f(u) g(v)] for Gaussian
  pairs by nested rules, refined adaptively per entry by composite panels, with an error
  estimate and :class:`NumericalDualWarning` where the work cap leaves an entry above the
  tolerance;
- :func:`gaussian_expectations`: 1-D expectations E h(√var z) (the Hermite factors' rule).

Arrays of the caller's module (NumPy or CuPy); only node tables are built on the host.  Knows
no activation class; no Dask, no random state.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
from numpy.polynomial import legendre

from ..backend import get_namespace, to_namespace
from .moments import Moments

__all__ = ["gaussian_rule", "pair_expectations", "pair_quadrature_error", "gaussian_expectations",
           "NumericalDualWarning", "QUAD_NODES", "QUAD_ZMAX", "QUAD_RTOL", "QUAD_PANEL_NODES",
           "QUAD_MAX_PANELS", "MAX_QUAD_DEGREE"]

_SQRT2PI = math.sqrt(2 * math.pi)

#: Largest ``quad_degree`` (Gauss–Legendre nodes per piece of the first rule of
#: :func:`pair_expectations`) an activation accepts.
MAX_QUAD_DEGREE = 300

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
