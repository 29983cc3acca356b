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
  (split Gauss–Legendre rules in t = asinh(x/scale), vectorized) and their error estimate;
- :func:`hermite_radial`: the radial Hermite factors R_l(v) = E[f(√v z) He_l(z)]/√(l!)
  of a function, so that E[f(u) f(v)] = Σ_l R_l(v1) R_l(v2) ρ^l;
- closed-form Hermite moments used by activations with known expansions
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
from typing import Callable, NamedTuple

import numpy as np
from numpy.polynomial import hermite_e, legendre
from numpy.polynomial import polynomial as P

from scipy import special

from ..backend import get_namespace, is_cupy, to_namespace

__all__ = [
    "Moments", "moments", "gauss_hermite", "bivariate_expectation", "hermite_radial",
    "normalized_hermite", "bivariate_expectations", "gaussian_rule", "pair_expectations",
    "pair_quadrature_error", "gaussian_expectations", "QUAD_NODES", "QUAD_ZMAX", "phi_cdf_moments", "phi_pdf_moments", "relu_power_moments",
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
#: Gauss–Legendre nodes per piece of the default numerical duals (two pieces per axis).
QUAD_NODES = 40


@functools.lru_cache(maxsize=64)
def _legendre_host(n: int):
    x, w = legendre.leggauss(int(n))
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


def _asinh_diff(p, q, diff, xp):
    """asinh(p) − asinh(q) given ``diff`` = p − q exactly, without cancellation."""
    same = p * q > 0
    den = p * xp.sqrt(1 + q * q) + q * xp.sqrt(1 + p * p)
    stable = xp.arcsinh(diff * (p + q) / xp.where(same, den, 1))
    return xp.where(same, stable, xp.arcsinh(p) - xp.arcsinh(q))


def gaussian_rule(mean, std, nodes: int = QUAD_NODES, scale=1.0, zmax: float = QUAD_ZMAX):
    """Nodes ``y`` and weights ``w``, each ``mean.shape + (2·nodes,)``, with
    Σ_j w_j h(y_j) ≈ E h(mean + std·z), z ~ N(0, 1), accurate at any ``std`` and ``mean``.

    The range mean ± zmax·std is split at y = 0 (where kinks of ReLU-like functions sit)
    and each piece gets ``nodes`` Gauss–Legendre nodes in t = asinh(y/scale): nodes are
    dense (spacing ∝ scale) where the function varies near 0 and thin out geometrically
    towards the Gaussian tails, so one rule serves std from 1e-4 to 1e4 and beyond.
    ``scale`` is the width of the region where h varies (1 for tanh, erf, GELU, ...).
    Float64; ``std = 0`` gives h(mean).
    """
    xp = get_namespace(mean, std)
    f64 = xp.float64
    mean = xp.asarray(mean, dtype=f64)[..., None]
    scale = xp.asarray(scale, dtype=f64)
    scale = scale[..., None] if scale.ndim else scale
    std = xp.asarray(std, dtype=f64)[..., None]
    std = xp.maximum(std, 1e-30 * (scale + xp.abs(mean)))
    xi, gw = (to_namespace(a, xp) for a in _legendre_host(nodes))
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
                      with_error: bool = False):
    """[E[f(u) g(v)] for (f, g) in pairs] for the Gaussian pair ``m``, at any variances.

    Nested :func:`gaussian_rule`: u over its own rule (node scale shrunk by the slope k of
    E[v | u] = k u, so that the inner expectation's transition is resolved too), then for
    every u-node v | u ~ N(k u, v2 (1 − ρ²)) over a rule centred on k u: (2·nodes)²
    evaluations per entry, in cache-sized chunks of entries on NumPy (one large chunk on
    CuPy).  Accurate to ~1e-7 relative to √(E f(u)² E g(v)²) at the default 40 nodes for
    variances 1e-4…1e4 and every ρ, for functions that vary near 0 on ``scale`` and grow at
    most polynomially, kinks at 0 included; oscillating functions (sin) converge slowly
    beyond variance ~1, which the error estimate flags (it may understate such errors up
    to ~100×); a jump (step) is resolved only to
    ~1e-3 at |ρ| > 1 − 1e-4, which it does not show (use the closed forms ``Step``/``Sign``).

    With ``with_error`` returns ``(values, errors)``: |Q(nodes) − Q(⌈0.7·nodes⌉)|, an
    overestimate wherever the rule converges (its cost: about half again).
    """
    xp = get_namespace(m.rho)
    dt = m.rho.dtype
    shape = m.rho.shape
    s1, s2, sin, k = (a.reshape(-1) for a in _rho_quantities(m, xp))
    args = (s1, s2 * sin, k)
    vals = _split_rule(pairs, *args, nodes, scale)
    out = [v.reshape(shape).astype(dt, copy=False) for v in vals]
    if not with_error:
        return out
    low = _split_rule(pairs, *args, max(2, -(-7 * int(nodes) // 10)), scale)
    return out, [xp.abs(a - b).reshape(shape) for a, b in zip(vals, low)]


def _split_rule(pairs, s1, tau, k, nodes: int, scale: float) -> list:
    """The nested split rule of :func:`pair_expectations` on flat arrays (std of u, of v | u,
    slope of E[v | u])."""
    xp = get_namespace(s1)
    q = 2 * int(nodes)
    step = max(1, (1 << 22 if xp is not np else 1 << 16) // (q * q))
    outs = [xp.zeros(s1.shape, dtype=xp.float64) for _ in pairs]
    for lo in range(0, s1.shape[0], step):
        sl = slice(lo, lo + step)
        kk = k[sl]
        x, wx = gaussian_rule(0 * kk, s1[sl], nodes, scale / xp.maximum(1, xp.abs(kk)))
        y, wy = gaussian_rule(kk[:, None] * x, tau[sl, None] + 0 * x, nodes, scale)
        for j, (f, g) in enumerate(pairs):
            inner = xp.sum(g(y) * wy, axis=-1)                  # (chunk, q): E[g(v) | u = x_i]
            outs[j][sl] = xp.sum(f(x) * wx * inner, axis=-1)
    return outs


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


def double_factorial_ratio(k: int) -> float:
    """(k−1)!!/√(k!) for even k ≥ 0 (= √((k−1)!!/k!!))."""
    r = 1.0
    for j in range(2, k + 1, 2):
        r *= (j - 1) / j
    return math.sqrt(r)


def phi_pdf_moments(s, degree: int):
    """E[φ_N(s z) He_k(z)]/√(k!) for k = 0..degree, φ_N the standard normal density.

    Closed form: nonzero only for even k, (−1)^{k/2} (k−1)!! s^k (1+s²)^{−(k+1)/2}/√(2π),
    stable for s → 0 and s → ∞. ``s`` is any array; output ``s.shape + (degree+1,)``.
    """
    xp = get_namespace(s)
    s = xp.asarray(s, dtype=xp.float64)
    q = 1.0 / (1.0 + s * s)
    ratio = s * s * q                                   # s²/(1+s²) ∈ [0, 1)
    base = xp.sqrt(q) / math.sqrt(2 * math.pi)
    out = []
    for k in range(degree + 1):
        if k % 2:
            out.append(xp.zeros_like(s))
        else:
            c = (-1) ** (k // 2) * double_factorial_ratio(k)
            out.append(c * base * ratio ** (k // 2))
    return xp.stack(out, axis=-1)


def phi_cdf_moments(s, degree: int):
    """E[Φ(s z) He_k(z)]/√(k!) for k = 0..degree, Φ the standard normal CDF.

    k = 0 gives 1/2; odd k = 2i+1 give (−1)^i (2i−1)!! s^k (1+s²)^{−k/2}/(√(2π) √(k!));
    even k ≥ 2 give 0 (Stein's identity applied k times).
    """
    xp = get_namespace(s)
    s = xp.asarray(s, dtype=xp.float64)
    q = 1.0 / (1.0 + s * s)
    unit = s * xp.sqrt(q)                               # s/√(1+s²) ∈ [0, 1)
    out = [xp.full_like(s, 0.5)]
    for k in range(1, degree + 1):
        if k % 2 == 0:
            out.append(xp.zeros_like(s))
            continue
        i = (k - 1) // 2
        # (2i−1)!!/√(k!) = (2i−1)!!/√((2i)! (2i+1)) = ratio(2i)/√(2i+1)
        c = (-1) ** i * double_factorial_ratio(2 * i) / math.sqrt(k) / math.sqrt(2 * math.pi)
        out.append(c * unit ** k)
    return xp.stack(out, axis=-1)


def half_normal_moment(k: int) -> float:
    """E[z^k 1(z > 0)] for z ~ N(0, 1) (= 1/2 for k = 0)."""
    return 2.0 ** (k / 2 - 1) * math.gamma((k + 1) / 2) / math.sqrt(math.pi)


@functools.lru_cache(maxsize=128)
def relu_power_moments(q: int, degree: int) -> tuple:
    """E[max(z,0)^q He_l(z)]/√(l!) for l = 0..degree (max(z,0)^0 = Heaviside step).

    Stein's identity E[f He_l] = E[f' He_{l−1}] gives q!/(q−l)! E[max(z,0)^{q−l}] for
    l ≤ q and q! φ_N(0) He_{l−q−1}(0) for l > q.
    """
    out = []
    for l in range(degree + 1):
        if l <= q:
            a = math.exp(math.lgamma(q + 1) - math.lgamma(q - l + 1) - 0.5 * math.lgamma(l + 1))
            out.append(a * half_normal_moment(q - l))
        else:
            j = l - q - 1                                   # He_j(0)
            if j % 2:
                out.append(0.0)
                continue
            # q! (j−1)!! (−1)^{j/2} / (√(2π) √(l!))
            logv = (math.lgamma(q + 1) + _log_double_factorial(j - 1)
                    - 0.5 * math.lgamma(l + 1) - 0.5 * math.log(2 * math.pi))
            out.append((-1) ** (j // 2) * math.exp(logv))
    return tuple(out)


def _log_double_factorial(k: int) -> float:
    """log(k!!) for k ≥ −1 (with (−1)!! = 0!! = 1)."""
    return sum(math.log(j) for j in range(k, 0, -2)) if k > 0 else 0.0


@functools.lru_cache(maxsize=128)
def monomial_moments(q: int, degree: int) -> tuple:
    """E[z^q He_l(z)]/√(l!) for l = 0..degree: q!/(q−l)! (q−l−1)!!/√(l!) if q−l even ≥ 0."""
    out = []
    for l in range(degree + 1):
        if l > q or (q - l) % 2:
            out.append(0.0)
        else:
            logv = (math.lgamma(q + 1) - math.lgamma(q - l + 1) + _log_double_factorial(q - l - 1)
                    - 0.5 * math.lgamma(l + 1))
            out.append(math.exp(logv))
    return tuple(out)


# ------------------------------------------------------------ rectified monomial duals
def _arcsin_sqrt_integral(n: int):
    """Antiderivative of t^n/√(1−t²) as (Q, R): Q·arcsin(t) + R(t)·√(1−t²), Q a constant."""
    if n == 0:
        return 1.0, np.zeros(1)
    if n == 1:
        return 0.0, np.array([-1.0])
    q_prev, r_prev = _arcsin_sqrt_integral(n - 2)
    r = np.zeros(n)
    r[n - 1] = -1.0 / n
    r = P.polyadd(r, (n - 1) / n * r_prev)
    return (n - 1) / n * q_prev, r


def _integrate_triple(p, q, r):
    """∫_0^t [p(s) + q(s) arcsin s + r(s) √(1−s²)] ds as a triple (p', q', r') of polynomials."""
    # polynomial part
    pi = P.polyint(p)
    # ∫ s^n arcsin s = s^{n+1}/(n+1) arcsin s − 1/(n+1) ∫ s^{n+1}/√(1−s²)
    qi = P.polyint(q)
    extra_q, extra_r = 0.0, np.zeros(1)
    for n, coef in enumerate(q):
        if coef == 0:
            continue
        aq, ar = _arcsin_sqrt_integral(n + 1)
        extra_q -= coef / (n + 1) * aq
        extra_r = P.polyadd(extra_r, -coef / (n + 1) * ar)
    # ∫ s^n √(1−s²) = ∫ (s^n − s^{n+2})/√(1−s²)
    for n, coef in enumerate(r):
        if coef == 0:
            continue
        for m, sgn in ((n, 1.0), (n + 2, -1.0)):
            aq, ar = _arcsin_sqrt_integral(m)
            extra_q += sgn * coef * aq
            extra_r = P.polyadd(extra_r, sgn * coef * ar)
    qi = P.polyadd(qi, [extra_q])
    ri = extra_r
    # value at 0: p(0) + q(0)·0 + r(0)·1 -> subtract to start the integral at 0
    pi = P.polysub(pi, [pi[0] + ri[0]])
    return pi, qi, ri


@functools.lru_cache(maxsize=32)
def _rectified_monomial_triple(q: int):
    """k_q(ρ) = E[max(z1,0)^q max(z2,0)^q] for unit-variance z with correlation ρ, as
    P(ρ) + Q(ρ) arcsin ρ + R(ρ) √(1−ρ²) (coefficients ascending).

    Built from k_0(ρ) = 1/4 + arcsin(ρ)/(2π) by Price's theorem, dk_q/dρ = q² k_{q−1},
    k_q(0) = E[max(z,0)^q]².
    """
    if q == 0:
        return np.array([0.25]), np.array([1 / (2 * math.pi)]), np.zeros(1)
    p0, q0, r0 = _rectified_monomial_triple(q - 1)
    pi, qi, ri = _integrate_triple(p0, q0, r0)
    pi = P.polyadd(q * q * pi, [half_normal_moment(q) ** 2])
    return pi, q * q * qi, q * q * ri


def rectified_monomial_dual(q: int, rho):
    """Normalized dual E[max(z1,0)^q max(z2,0)^q], unit variances, correlation ``rho``."""
    xp = get_namespace(rho)
    p, qq, r = _rectified_monomial_triple(int(q))
    sin = xp.sqrt(xp.maximum((1 - rho) * (1 + rho), 0))
    return _polyval(p, rho) + _polyval(qq, rho) * xp.arcsin(rho) + _polyval(r, rho) * sin


def safe_power(v, p: float):
    """``v ** p`` for ``v ≥ 0``; ``p = 0`` gives 1 also at ``v = 0`` (an array like ``v``)."""
    return v ** p if p else v * 0 + 1


def _polyval(coefs, x):
    out = 0 * x + float(coefs[-1])
    for c in coefs[-2::-1]:
        out = out * x + float(c)
    return out
