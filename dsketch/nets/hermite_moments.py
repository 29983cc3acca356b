"""Closed-form Hermite moments and rectified-monomial duals (re-exported by :mod:`.dual`).

Owns the exact Gaussian moments activations with known expansions use:
:func:`phi_cdf_moments`, :func:`phi_pdf_moments`, :func:`relu_power_moments`,
:func:`monomial_moments`, :func:`half_normal_moment`, :func:`double_factorial_ratio`, the
exact dual of a rectified monomial (:func:`rectified_monomial_dual`) and
:func:`safe_power`.  Host tables plus NumPy/CuPy array arithmetic; no quadrature, no
activation classes, no Dask, no random state.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.polynomial import polynomial as P

from ..backend import get_namespace

__all__ = [
    "double_factorial_ratio", "phi_pdf_moments", "phi_cdf_moments", "half_normal_moment",
    "relu_power_moments", "monomial_moments", "rectified_monomial_dual", "safe_power",
]


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
