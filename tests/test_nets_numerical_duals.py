"""Numerical duals (``Elementwise`` and every activation without a closed form) at any scale.

- against closed forms (erf, GELU, ReLU, sin) for variances 1e-4 … 1e4 and correlations
  up to ±1 (within 1e-6 of it), errors relative to √(E φ(u)² E φ(v)²);
- against a high-order adaptive reference (nested ``scipy.integrate.quad``) for tanh, the
  activation the old fixed Gauss–Hermite rule got wrong at large variance;
- the exposed error estimate (``dual_error`` / ``pair_quadrature_error``) never understates
  the true error by more than 3× (oscillating sin/cos, jumps at |ρ| → 1 included);
- adaptive refinement: sin/cos at variance 10 and 100, step/sign at |ρ| = 1 − 1e-4 and
  1 − 1e-6 to 1e-6; at the work cap a ``NumericalDualWarning`` names the activation, the
  entries' range and the estimated error, and the estimate still bounds the error;
- the 1-D rule (Hermite factors, diagonals) at large variance; depth-2 nets on off-sphere
  inputs equal the closed-form nets.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from dsketch.nets import (Cos, Dense, Elementwise, Erf, Gelu, NumericalDualWarning, Relu, Sign, Sin,
                          Step, dual as D, serial)

VARS = np.array([1e-4, 1e-2, 1.0, 30.0, 1e3, 1e4])
RHOS = np.array([-1.0, -0.999999, -0.9, 0.0, 0.5, 0.9999, 1.0])


def _grid(variances=VARS):
    q1, q2, r = np.meshgrid(variances, variances, RHOS, indexing="ij")
    return q1, q2, r * np.sqrt(q1 * q2)


def _rel_errors(num, ref, q1, q2, c):
    """max |num − ref| / √(E φ(u)² E φ(v)²) for the NNGP and derivative duals."""
    a, ad = num.dual(q1, q2, c)
    b, bd = ref.dual(q1, q2, c)
    d1, d1d = ref.dual(q1, q1, q1)
    d2, d2d = ref.dual(q2, q2, q2)
    with np.errstate(invalid="ignore"):         # 0/0 for the derivative of step and sign
        return np.abs(a - b) / np.sqrt(d1 * d2), np.abs(ad - bd) / np.sqrt(d1d * d2d)


@pytest.mark.parametrize("name, closed", [("erf", Erf()), ("gelu", Gelu())], ids=["erf", "gelu"])
def test_smooth_duals_match_closed_forms_at_any_variance(name, closed):
    err, err_d = _rel_errors(Elementwise(name), closed, *_grid())
    assert err.max() < 1e-6 and err_d.max() < 1e-6, (err.max(), err_d.max())


def test_kinked_duals_match_relu_at_any_variance():
    """ReLU and its derivative (a jump) to 1e-6 at every variance and correlation."""
    err, err_d = _rel_errors(Elementwise("relu"), Relu(), *_grid())
    assert err.max() < 1e-6 and err_d.max() < 1e-6, (err.max(), err_d.max())


@pytest.mark.parametrize("name, closed", [("step", Step()), ("sign", Sign())], ids=["step", "sign"])
def test_jumps_are_resolved_near_perfect_correlation(name, closed):
    """Discontinuous f at |ρ| = 1 − 1e-4 and 1 − 1e-6: the u-rule resolves E[f(v) | u]."""
    v = np.array([1e-4, 1.0, 10.0, 1e4])
    q1, q2, r = np.meshgrid(v, v, [-0.999999, -0.9999, 0.9999, 0.999999], indexing="ij")
    err, _ = _rel_errors(Elementwise(name), closed, q1, q2, r * np.sqrt(q1 * q2))
    assert err.max() < 1e-6, err.max()


@pytest.mark.parametrize("name, closed", [("sin", Sin()), ("cos", Cos())], ids=["sin", "cos"])
def test_oscillating_duals_match_closed_forms_at_large_variance(name, closed):
    """sin/cos oscillate 1…30 times over the Gaussian's range at variance 10…100."""
    v = np.array([1.0, 10.0, 100.0])
    q1, q2, r = np.meshgrid(v, v, [-1.0, -0.9999, 0.0, 0.7, 0.999999], indexing="ij")
    c = r * np.sqrt(q1 * q2)
    act = Elementwise(name)
    err, err_d = _rel_errors(act, closed, q1, q2, c)
    assert err.max() < 1e-6 and err_d.max() < 1e-6, (err.max(), err_d.max())


def _true_and_estimate(act, closed, q1, q2, c):
    """(true, estimated) absolute errors of both duals, stacked."""
    a, ad = act.dual(q1, q2, c)
    b, bd = closed.dual(q1, q2, c)
    est, est_d = act.dual_error(q1, q2, c)
    return np.stack([np.abs(a - b), np.abs(ad - bd)]), np.stack([est, est_d])


def test_error_estimate_is_honest_for_smooth_kinked_jumping_and_oscillating_functions():
    v = np.array([1e-4, 1.0, 10.0, 100.0])
    q1, q2, r = np.meshgrid(v, v, [-1.0, -0.999999, -0.9, 0.0, 0.9999, 1.0], indexing="ij")
    c = r * np.sqrt(q1 * q2)
    for name, closed in (("erf", Erf()), ("relu", Relu()), ("step", Step()), ("sin", Sin())):
        true, est = _true_and_estimate(Elementwise(name), closed, q1, q2, c)
        assert (true <= 3 * est + 1e-15).all(), name


def test_work_cap_warns_with_the_range_and_an_estimate_that_bounds_the_error():
    """sin at variance 1e4 (≈ 290 periods in ±9σ) is beyond the default cap."""
    act = Elementwise("sin")
    q1, q2, c = np.array([1e4, 1e4]), np.array([1e4, 1e4]), np.array([1e4 - 30.0, -5e3])
    with pytest.warns(NumericalDualWarning) as rec:
        true, est = _true_and_estimate(act, Sin(), q1, q2, c)
    msg = str(rec[0].message)
    assert "Elementwise('sin'" in msg and "variances [1e+04, 1e+04]" in msg
    assert "correlation [" in msg and "estimated error up to" in msg and "work cap" in msg
    assert issubclass(NumericalDualWarning, RuntimeWarning)
    assert (true <= est).all() and (est > 1e-6).any()
    # a smaller cap through the function form: the same warning, the estimate still bounds
    m = D.moments(np.array(100.0), np.array(100.0), np.array(99.0))
    with pytest.warns(NumericalDualWarning, match=r"\(4 panels per piece"):
        (val,), (err,) = D.pair_expectations([(np.sin, np.sin)], m, max_panels=4, with_error=True)
    ref = Sin().dual(100.0, 100.0, 99.0)[0]
    assert abs(float(val) - float(ref)) <= err


def _reference(f, q1, q2, c):
    """E[f(u) f(v)] by nested adaptive quadrature in x-space: u, then v | u."""
    s1 = math.sqrt(q1)
    k = c / q1
    tau = math.sqrt(max(q2 - c * c / q1, 0.0))

    def inner(x):
        mu = k * x
        if tau == 0:
            return f(mu)
        pts = [0.0] if abs(mu) < 12 * tau else None
        val, _ = integrate.quad(lambda y: f(y) * math.exp(-0.5 * ((y - mu) / tau) ** 2),
                                mu - 12 * tau, mu + 12 * tau, points=pts, limit=400,
                                epsabs=1e-14, epsrel=1e-12)
        return val / (tau * math.sqrt(2 * math.pi))

    val, _ = integrate.quad(lambda x: f(x) * inner(x) * math.exp(-0.5 * (x / s1) ** 2),
                            -12 * s1, 12 * s1, points=[0.0, -1.0, 1.0] if s1 > 0.1 else None,
                            limit=400, epsabs=1e-14, epsrel=1e-12)
    return val / (s1 * math.sqrt(2 * math.pi))


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")  # the reference's own
@pytest.mark.parametrize("q1, q2, rho", [(1e-4, 1e-4, 0.3), (0.5, 2.0, -0.6), (10.0, 10.0, 0.8),
                                         (100.0, 3.0, 0.95), (1e4, 1e4, 0.5), (1e4, 1.0, -0.99)])
def test_tanh_matches_adaptive_reference(q1, q2, rho):
    """The issue's case: tanh's derivative dual at variance ≥ 10 was off by 0.17 and more."""
    act = Elementwise("tanh")
    c = rho * math.sqrt(q1 * q2)
    nngp, dot = act.dual(np.array(q1), np.array(q2), np.array(c))
    tanh = math.tanh

    def dtanh(x):
        return 1.0 - math.tanh(x) ** 2

    for got, f in ((float(nngp), tanh), (float(dot), dtanh)):
        ref = _reference(f, q1, q2, c)
        scale = math.sqrt(_reference(f, q1, q1, q1) * _reference(f, q2, q2, q2))
        assert abs(got - ref) <= 1e-6 * scale, (got, ref, scale)


def test_error_estimate_bounds_the_error_and_is_zero_for_closed_forms():
    q1, q2, c = _grid()
    for name, closed in (("erf", Erf()), ("gelu", Gelu())):
        true, est = _true_and_estimate(Elementwise(name), closed, q1, q2, c)
        assert est.shape == (2,) + q1.shape
        assert (true <= 3 * est + 1e-15).all()
        # and it is small where the rule converges (relative to the duals' scale)
        assert est.max() < 1e-5 * np.abs(closed.dual(q1, q2, c)[0]).max()
    zero = Erf().dual_error(q1, q2, c)
    assert not zero[0].any() and not zero[1].any()
    # the function form exposes the same numbers
    m = D.moments(q1, q2, c)
    e = D.pair_quadrature_error([(np.tanh, np.tanh)], m)
    assert e[0].shape == q1.shape and np.isfinite(e[0]).all()


def test_hermite_factors_and_diagonal_at_large_variance():
    v = np.array([0.0, 1e-4, 1.0, 1e2, 1e4])
    num, closed = Elementwise("erf"), Erf()
    R, Rd = num.expansion(v, 12)
    Rc, Rdc = closed.expansion(v, 12)
    np.testing.assert_allclose(R, Rc, atol=1e-10)
    np.testing.assert_allclose(Rd, Rdc, atol=1e-10)
    for sign in (1, -1):
        got = num.diagonal(v, sign)
        ref = closed.dual(v, v, sign * v)
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-9, atol=1e-14)


def test_deep_net_on_off_sphere_inputs_equals_closed_form_net():
    """Rows with norms ~1 … 16·√d (variances up to ~300): numerical erf net = Erf net."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 32)) * np.geomspace(0.1, 16, 12)[:, None]
    layers = lambda act: serial(Dense(1.0, 0.1), act, Dense(1.0, 0.1), act, Dense(1.0))  # noqa: E731
    got = layers(Elementwise("erf")).kernel(x)
    ref = layers(Erf()).kernel(x)
    for a, b in ((got.nngp, ref.nngp), (got.ntk, ref.ntk)):
        assert np.abs(a - b).max() / np.abs(b).max() < 1e-6


def test_gaussian_rule_integrates_gaussian_moments_at_any_scale():
    mean = np.array([0.0, 3.0, -1e3, 5e2, 0.0])
    std = np.array([1e-4, 1.0, 10.0, 1e3, 0.0])
    assert D.gaussian_rule(mean, std)[0].shape == (5, 2 * D.QUAD_NODES)
    y, w = D.gaussian_rule(mean, std, 40)
    assert y.shape == w.shape == (5, 80)
    y8, w8 = D.gaussian_rule(mean, std, 16, panels=8)             # composite panels
    assert y8.shape == (5, 256)
    np.testing.assert_allclose(w8.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose((w8 * y8).sum(-1), mean, rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-10)
    np.testing.assert_allclose((w * y).sum(-1), mean, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose((w * (y - mean[:, None]) ** 2).sum(-1), std ** 2, rtol=1e-8, atol=1e-50)
