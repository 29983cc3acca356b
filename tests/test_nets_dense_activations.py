"""Dense and activation layers: dual kernels, Hermite expansions, validation.

Every closed form is checked against numerical integration written here, independently
of dsketch's own quadrature helpers:

- smooth activations: tensor Gauss–Hermite quadrature of high degree (``hermegauss``);
- positively homogeneous activations (ReLU family, Sign, Step, rectified monomials):
  E[f(u) g(v)] = 2^q q!/(2π) ∫_0^{2π} f(û(α)) g(v̂(α)) dα with (û, v̂) the unit-radius
  pair, integrated by Gauss–Legendre on the arcs between the kinks: exact to round-off at
  any norm, also where Gauss–Hermite converges slowly.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss

from _activations import acts, ids
from dsketch.nets import (
    ABRelu, Abs, Activation, Dense, Elementwise, Erf, Exp, Gaussian, Gelu, Identity, Kernel,
    LeakyRelu, Monomial, RectifiedMonomial, Relu, Sign, Sin,
)
from dsketch.nets.activations import ACTIVATION_FUNCTIONS

# ----------------------------------------------------------------- reference integrals
_GH = {}


def _gh(deg):
    if deg not in _GH:
        t, w = hermegauss(deg)
        _GH[deg] = (t, w / math.sqrt(2 * math.pi))
    return _GH[deg]


def ref_gh2(f, g, v1, v2, c, deg=240):
    """E[f(u) g(v)] by a deg×deg Gauss–Hermite product rule (scalars)."""
    t, w = _gh(deg)
    s1, s2 = math.sqrt(v1), math.sqrt(v2)
    rho = 0.0 if s1 * s2 == 0 else min(1.0, max(-1.0, c / (s1 * s2)))
    z1, z2 = np.meshgrid(t, t, indexing="ij")
    u = s1 * z1
    v = s2 * (rho * z1 + math.sqrt(max(1 - rho * rho, 0.0)) * z2)
    return float(np.sum(np.outer(w, w) * f(u) * g(v)))


def ref_polar(f, g, q, v1, v2, c, n=48):
    """E[f(u) g(v)] for f, g positively homogeneous of degree q (v1, v2 > 0)."""
    s1, s2 = math.sqrt(v1), math.sqrt(v2)
    rho = min(1.0, max(-1.0, c / (s1 * s2)))
    beta = math.atan2(math.sqrt(max(1 - rho * rho, 0.0)), rho)   # v ∝ cos(α − β)
    cuts = {0.0, 2 * math.pi}
    for a in (math.pi / 2, 3 * math.pi / 2, beta + math.pi / 2, beta + 3 * math.pi / 2):
        cuts.add(a % (2 * math.pi))
    cuts = sorted(cuts)
    x, w = leggauss(n)
    total = 0.0
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        if hi - lo < 1e-14:
            continue
        a = (hi - lo) / 2 * x + (hi + lo) / 2
        total += (hi - lo) / 2 * float(np.sum(w * f(s1 * np.cos(a)) * g(s2 * np.cos(a - beta))))
    return total * 2 ** q * math.factorial(q) / (2 * math.pi)


def ref_moment(f, v, deg=300):
    """E[f(√v z)²]."""
    t, w = _gh(deg)
    return float(np.sum(w * f(math.sqrt(v) * t) ** 2))


# ------------------------------------------------------------------- the activations
# from the shared table (tests/_activations.py)
CLOSED = acts("closed")
SMOOTH = [a for a in CLOSED if a.homogeneity is None]
NUMERIC = acts("numeric")
_ids = ids(CLOSED)

RHOS = [-1.0, -0.7, 0.0, 0.3, 0.9, 0.999, 1.0]
SMOOTH_VARS = [1e-6, 1e-3, 0.3, 2.0]
HOMOG_VARS = [1e-6, 1e-3, 1.0, 1e3, 1e6]


def _reference(act, fn, v1, v2, c, q):
    if q is not None:
        if q < 0:
            return 0.0
        return ref_polar(fn, fn, q, v1, v2, c)
    return ref_gh2(fn, fn, v1, v2, c)


def _deriv_q(act):
    q = act.homogeneity
    return None if q is None else q - 1


@pytest.mark.parametrize("act", CLOSED, ids=_ids)
def test_closed_form_duals_match_integration(act):
    q = act.homogeneity
    variances = SMOOTH_VARS if q is None else HOMOG_VARS
    if q is None:
        mom = {v: (ref_moment(act.fn, v), ref_moment(act.deriv, v)) for v in variances}
    else:
        mom = {v: (ref_polar(act.fn, act.fn, q, v, v, v),
                   0.0 if q == 0 else ref_polar(act.deriv, act.deriv, q - 1, v, v, v)) for v in variances}
    worst_n = worst_d = 0.0
    for v1 in variances:
        for v2 in variances:
            scale_n = math.sqrt(mom[v1][0] * mom[v2][0])
            scale_d = math.sqrt(mom[v1][1] * mom[v2][1])
            for r in RHOS:
                c = r * math.sqrt(v1 * v2)
                nngp, dot = act.dual(np.array(v1), np.array(v2), np.array(c))
                ref_n = _reference(act, act.fn, v1, v2, c, q)
                ref_d = _reference(act, act.deriv, v1, v2, c, _deriv_q(act))
                worst_n = max(worst_n, abs(float(nngp) - ref_n) / max(scale_n, 1e-300))
                if scale_d > 0:
                    worst_d = max(worst_d, abs(float(dot) - ref_d) / scale_d)
                else:
                    assert float(dot) == 0.0
    assert worst_n < 1e-9, worst_n
    assert worst_d < 1e-9, worst_d


@pytest.mark.parametrize("act", CLOSED, ids=_ids)
def test_zero_variance_rows(act):
    """A zero row (u ≡ 0): E[φ(0)φ(v)] = φ(0)·E[φ(v)]; the derivative map stays finite."""
    for v2 in (0.0, 1e-3, 0.7, 2.0):
        nngp, dot = act.dual(np.array(0.0), np.array(v2), np.array(0.0))
        phi0 = float(act.fn(np.array(0.0)))
        t, w = _gh(160)
        mean = float(np.sum(w * act.fn(math.sqrt(v2) * t))) if v2 > 0 else phi0
        assert float(nngp) == pytest.approx(phi0 * mean, abs=1e-12)
        assert np.isfinite(dot)
        if act.homogeneity is None:  # smooth: E[φ'(0)φ'(v)]
            dmean = float(np.sum(w * act.deriv(math.sqrt(v2) * t))) if v2 > 0 else float(act.deriv(np.array(0.0)))
            assert float(dot) == pytest.approx(float(act.deriv(np.array(0.0))) * dmean, abs=1e-12)


def test_huge_norm_limits():
    """At large variance Gelu → ReLU and a·erf(b·) + c → a·sign + c (independent closed forms)."""
    v = np.array([1e4, 1e6, 1e8])
    for r in (-0.9, 0.0, 0.5, 1.0):
        g, gd = Gelu().dual(v, v, r * v)
        rl, rld = Relu().dual(v, v, r * v)
        np.testing.assert_allclose(g, rl, rtol=2e-3, atol=1e-3)
        np.testing.assert_allclose(gd, rld, rtol=0, atol=1e-2)
        e, _ = Erf(1.5, 2.0, 0.1).dual(v, v, r * v)
        s, _ = Sign().dual(v, v, r * v)
        np.testing.assert_allclose(e, 1.5 ** 2 * s + 0.1 ** 2, atol=1e-2)
        sn, sd = Sin().dual(v, v, r * v)
        if r < 1:
            np.testing.assert_allclose(sn, 0.0, atol=1e-12)
        else:
            np.testing.assert_allclose(sn, 0.5, atol=1e-12)   # E sin² → 1/2


@pytest.mark.parametrize("act", CLOSED + NUMERIC + acts("dual_nan"),
                         ids=ids(CLOSED + NUMERIC + acts("dual_nan")))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_duals_never_nan(act, dtype):
    """Zero variances, |ρ| = 1 (and round-off past it), huge and tiny norms: no NaN."""
    big = 1e12 if dtype == np.float64 else 1e6
    if isinstance(act, Exp):
        big = 10.0
    v = np.array([0.0, 1e-30, 1e-6, 1.0, big], dtype=dtype)
    v1, v2 = np.meshgrid(v, v, indexing="ij")
    prod = np.sqrt(v1) * np.sqrt(v2)
    for factor in (-1.0000001, -1.0, 0.0, 0.5, 1.0, 1.0000001):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            nngp, dot = act.dual(v1, v2, (factor * prod).astype(dtype))
        assert nngp.dtype == dtype and dot.dtype == dtype
        assert not np.isnan(nngp).any() and not np.isnan(dot).any(), (factor, nngp, dot)


def test_dual_broadcasts_and_keeps_float32():
    v1 = np.array([[1.0], [2.0]], dtype=np.float32)
    v2 = np.array([[0.5, 1.5, 3.0]], dtype=np.float32)
    c = np.zeros((2, 3), dtype=np.float32) + 0.1
    for act in CLOSED + NUMERIC:
        n, d = act.dual(v1, v2, c)
        assert n.shape == d.shape == (2, 3)
        assert n.dtype == d.dtype == np.float32


# ------------------------------------------------------------------ Hermite expansion
EXPANDED = CLOSED + NUMERIC


@pytest.mark.parametrize("act", EXPANDED, ids=ids(EXPANDED))
def test_expansion_converges_to_dual(act):
    v = np.array([0.0, 1e-3, 0.3, 1.0, 2.5])
    v1, v2 = np.meshgrid(v, v, indexing="ij")
    diag, diag_d = act.dual(v, v, v)
    scale, scale_d = max(diag.max(), 1e-12), max(diag_d[1:].max(), 1e-12)
    prev = None
    for degree in (4, 16, 64):
        R, Rd = act.expansion(v, degree)
        assert R.shape == Rd.shape == (5, degree + 1)
        err = np.zeros(2)
        for rho in (-0.8, 0.0, 0.6, 1.0):
            powers = rho ** np.arange(degree + 1)
            series = np.einsum("il,jl,l->ij", R, R, powers)
            series_d = np.einsum("il,jl,l->ij", Rd, Rd, powers)
            exact, exact_d = act.dual(v1, v2, rho * np.sqrt(v1 * v2))
            # the zero-variance derivative is a convention (ρ = 0); compare v > 0 there
            err = np.maximum(err, [np.abs(series - exact).max() / scale,
                                   np.abs(series_d - exact_d)[1:, 1:].max() / scale_d])
        if prev is not None:
            assert (err <= prev + 1e-12).all()
        prev = err
    # kinks converge slowly (the step's tail mass decays like degree^{-1/2})
    limit = 0.1 if act.homogeneity == 0 else 0.02  # Sign/Step are themselves steps
    assert prev[0] < limit and prev[1] < 0.1, prev


@pytest.mark.parametrize("act", EXPANDED, ids=ids(EXPANDED))
def test_truncation_error_is_the_missing_diagonal(act):
    v = np.array([1e-3, 0.3, 1.0, 2.5])
    for degree in (2, 8, 24):
        R, Rd = act.expansion(v, degree)
        e, ed = act.truncation_error(v, degree)
        if isinstance(act, Elementwise):  # numerical dual: compare with the 1-D moments
            exact = np.array([ref_moment(act.fn, x) for x in v])
            exact_d = np.array([ref_moment(act.deriv, x) for x in v])
        else:
            exact, exact_d = act.dual(v, v, v)
        np.testing.assert_allclose(e, exact - (R ** 2).sum(-1), atol=1e-9)
        np.testing.assert_allclose(ed, exact_d - (Rd ** 2).sum(-1), atol=1e-9)
        assert (e > -1e-9).all() and (ed > -1e-9).all()


@pytest.mark.parametrize("act", SMOOTH, ids=ids(SMOOTH))
def test_closed_form_hermite_coefficients(act):
    """R_l(v) = E[φ(√v z) He_l(z)]/√(l!), checked by direct quadrature here."""
    t, w = _gh(200)
    he = [np.ones_like(t), t]
    for l in range(1, 12):
        he.append(t * he[l] - l * he[l - 1])
    for v in (0.0, 1e-3, 0.5, 2.0):
        R, Rd = act.expansion(np.array([v]), 12)
        for l in range(13):
            ref = np.sum(w * act.fn(math.sqrt(v) * t) * he[l]) / math.sqrt(math.factorial(l))
            ref_d = np.sum(w * act.deriv(math.sqrt(v) * t) * he[l]) / math.sqrt(math.factorial(l))
            assert R[0, l] == pytest.approx(ref, abs=1e-10)
            assert Rd[0, l] == pytest.approx(ref_d, abs=1e-10)


def test_relu_hermite_coefficients_match_reference_formula():
    """c_0 = 1/√(2π), c_1 = 1/2, c_i = (−1)^{i/2−1}/(√(2π) i(i−1)(i−2)!!) for even i, 0 odd i > 1."""
    def dfact(k):
        return 1 if k <= 0 else k * dfact(k - 2)

    R, _ = Relu().expansion(np.array([1.0]), 20)
    for i in range(21):
        if i == 0:
            c = 1 / math.sqrt(2 * math.pi)
        elif i == 1:
            c = 0.5
        elif i % 2:
            c = 0.0
        else:
            c = (-1) ** (i // 2 - 1) / (math.sqrt(2 * math.pi) * i * (i - 1) * dfact(i - 2))
        assert R[0, i] == pytest.approx(c * math.sqrt(math.factorial(i)), abs=1e-14)
    # homogeneity: R_l(v) = √v R_l(1)
    R4, Rd4 = Relu().expansion(np.array([4.0]), 20)
    R1, Rd1 = Relu().expansion(np.array([1.0]), 20)
    np.testing.assert_allclose(R4, 2 * R1, rtol=1e-14)
    np.testing.assert_allclose(Rd4, Rd1, rtol=1e-14)


def _has_function(act) -> bool:
    try:
        act.dual_fn(np.zeros(1))
    except NotImplementedError:  # kernel-only activations (ExpNormalized)
        return False
    return True


FUNCTIONAL = [a for a in acts("closed", "numeric") if _has_function(a)]


@pytest.mark.parametrize("act", FUNCTIONAL, ids=ids(FUNCTIONAL))
def test_dual_both_is_the_pair_bit_for_bit(act):
    """``dual_both`` (one pass where the two share work, e.g. GeLU's Φ) gives exactly
    ``dual_fn`` and ``dual_deriv``: the sketches' Monte-Carlo blocks use it."""
    x = np.random.default_rng(5).normal(size=(7, 13)) * 2.0
    want = (act.dual_fn(x), act.dual_deriv(x))
    got = act.dual_both(x)
    assert len(got) == 2
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


# --------------------------------------------------------------------------- Elementwise
@pytest.mark.parametrize("name", sorted(ACTIVATION_FUNCTIONS))
def test_registry_derivatives(name):
    f, d = ACTIVATION_FUNCTIONS[name]
    x = np.linspace(-4, 4, 81) + 0.0123  # avoid the kinks
    h = 1e-6
    num = (f(x + h) - f(x - h)) / (2 * h)
    np.testing.assert_allclose(d(x), num, atol=1e-5)


def test_elementwise_matches_closed_forms():
    """Elementwise quadrature reproduces closed forms for smooth functions."""
    v = np.array([0.0, 0.05, 0.5, 1.5])
    v1, v2 = np.meshgrid(v, v, indexing="ij")
    for name, closed in (("erf", Erf()), ("sin", Sin()), ("gelu", Gelu()), ("identity", Identity())):
        for rho in (-1.0, -0.3, 0.4, 1.0):
            c = rho * np.sqrt(v1 * v2)
            a, ad = Elementwise(name, quad_degree=64).dual(v1, v2, c)
            b, bd = closed.dual(v1, v2, c)
            np.testing.assert_allclose(a, b, atol=1e-9)
            np.testing.assert_allclose(ad, bd, atol=1e-9)


def test_elementwise_callable_and_numerical_derivative():
    act = Elementwise(np.tanh)
    named = Elementwise("tanh")
    v1, v2 = np.array([0.3, 1.0]), np.array([0.8, 1.2])
    c = np.array([0.1, -0.9])
    a, ad = act.dual(v1, v2, c)
    b, bd = named.dual(v1, v2, c)
    np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_allclose(ad, bd, atol=1e-8)
    # against a high-degree reference at moderate variance
    for i in range(2):
        ref = ref_gh2(np.tanh, np.tanh, v1[i], v2[i], c[i], 200)
        assert a[i] == pytest.approx(ref, abs=1e-7)
    # explicit derivative is used
    act2 = Elementwise(np.tanh, deriv=lambda x: 1 - np.tanh(x) ** 2)
    np.testing.assert_allclose(act2.dual(v1, v2, c)[1], bd, atol=1e-13)


def test_elementwise_spec_values():
    assert Elementwise("TANH") == Elementwise("tanh")
    assert hash(Elementwise("tanh")) == hash(Elementwise("tanh"))
    assert Elementwise("tanh") != Elementwise("tanh", quad_degree=20)
    assert Elementwise("tanh").function == "tanh"
    assert "tanh" in repr(Elementwise("tanh"))
    with pytest.raises(ValueError, match="unknown activation"):
        Elementwise("no-such-fn")
    with pytest.raises(ValueError):
        Elementwise(3.0)
    with pytest.raises(ValueError):
        Elementwise("tanh", deriv="x")
    with pytest.raises(ValueError):
        Elementwise("tanh", quad_degree=1)
    with pytest.raises(ValueError):
        Elementwise("tanh", quad_degree=10_000)


# ------------------------------------------------------------------------- layer maps
def _record(n=4, seed=0, diagonal=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    y = rng.standard_normal((n + 1, 3))
    if diagonal:
        cov = (x * x).sum(1) / 3
        return Kernel(nngp=cov, ntk=0.3 * cov, cov1=cov, cov2=None, diagonal=True)
    return Kernel(nngp=x @ y.T / 3, ntk=0.2 * (x @ y.T / 3) + 0.1, cov1=(x * x).sum(1) / 3,
                  cov2=(y * y).sum(1) / 3)


def test_dense_kernel_map():
    k = _record()
    out = Dense(1.7, 0.3).kernel(k)
    np.testing.assert_allclose(out.nngp, 1.7 ** 2 * k.nngp + 0.09)
    np.testing.assert_allclose(out.ntk, out.nngp + 1.7 ** 2 * k.ntk)
    np.testing.assert_allclose(out.cov1, 1.7 ** 2 * k.cov1 + 0.09)
    np.testing.assert_allclose(out.cov2, 1.7 ** 2 * k.cov2 + 0.09)
    kd = _record(diagonal=True)
    outd = Dense(1.7, 0.3).kernel(kd)
    assert outd.cov1 is outd.nngp and outd.cov2 is None


@pytest.mark.parametrize("act", CLOSED + NUMERIC, ids=ids(CLOSED + NUMERIC))
def test_activation_kernel_map(act):
    k = _record()
    out = act.kernel(k)
    n, d = act.dual(k.cov1[:, None], k.cov2[None, :], k.nngp)
    np.testing.assert_allclose(out.nngp, n)
    np.testing.assert_allclose(out.ntk, k.ntk * d)
    np.testing.assert_allclose(out.cov1, act.dual(k.cov1, k.cov1, k.cov1)[0])
    np.testing.assert_allclose(out.cov2, act.dual(k.cov2, k.cov2, k.cov2)[0])
    kd = _record(diagonal=True)
    outd = act.kernel(kd)
    np.testing.assert_allclose(outd.nngp, act.dual(kd.cov1, kd.cov1, kd.cov1)[0])
    assert outd.cov2 is None and outd.cov1.shape == kd.cov1.shape


def test_activation_kernel_map_on_pixel_pairs():
    """Images: the map is pointwise over pixel pairs with per-pixel variances."""
    rng = np.random.default_rng(1)
    n1, n2, h, w, c = 2, 3, 2, 3, 4
    x1 = rng.standard_normal((n1, h * w, c))
    x2 = rng.standard_normal((n2, h * w, c))
    nngp = np.einsum("ipc,jqc->ijpq", x1, x2).reshape(n1, n2, h, w, h, w) / c
    cov1 = np.einsum("ipc,iqc->ipq", x1, x1).reshape(n1, h, w, h, w) / c
    cov2 = np.einsum("ipc,iqc->ipq", x2, x2).reshape(n2, h, w, h, w) / c
    k = Kernel(nngp=nngp, ntk=nngp * 0.5, cov1=cov1, cov2=cov2, spatial=(h, w))
    out = Erf().kernel(k)
    var1 = np.einsum("ipc,ipc->ip", x1, x1) / c
    var2 = np.einsum("ipc,ipc->ip", x2, x2) / c
    p, q = 4, 1
    i, j = 1, 2
    ref_n, ref_d = Erf().dual(var1[i, p], var2[j, q], nngp.reshape(n1, n2, h * w, h * w)[i, j, p, q])
    assert out.nngp.reshape(n1, n2, h * w, h * w)[i, j, p, q] == pytest.approx(float(ref_n))
    assert out.ntk.reshape(n1, n2, h * w, h * w)[i, j, p, q] == pytest.approx(0.5 * float(ref_d) * nngp.reshape(
        n1, n2, h * w, h * w)[i, j, p, q])
    assert out.cov1.shape == cov1.shape and out.cov2.shape == cov2.shape


# -------------------------------------------------------------------------- validation
@pytest.mark.parametrize("make", [
    lambda: Dense(-1.0), lambda: Dense(1.0, -0.1), lambda: Dense(float("nan")), lambda: Dense(1.0, float("inf")),
    lambda: Dense("1"), lambda: Dense(True), lambda: Dense(None),
    lambda: LeakyRelu(float("nan")), lambda: ABRelu(0.0, "b"), lambda: Erf(a=float("inf")),
    lambda: Sin(b=None), lambda: Gaussian(b=float("nan")), lambda: Monomial(-1), lambda: Monomial(2.5),
    lambda: Monomial(True), lambda: RectifiedMonomial(-2), lambda: Gelu(approximate="yes"),
])
def test_bad_parameters_raise(make):
    with pytest.raises(ValueError):
        make()


def test_expansion_rejects_bad_degree():
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError):
            Relu().expansion(np.array([1.0]), bad)


def test_layers_are_small_hashable_values():
    for a, b in ((Relu(), Relu()), (Dense(1.0, 0.1), Dense(1, 0.1)), (Erf(1, 2, 3), Erf(1.0, 2.0, 3.0)),
                 (Monomial(3), Monomial(3)), (LeakyRelu(0.2), LeakyRelu(0.2))):
        assert a == b and hash(a) == hash(b)
    assert Relu() != Abs() and LeakyRelu(0.1) != LeakyRelu(0.2)
    assert isinstance(Relu(), Activation)
    with pytest.raises(Exception):
        Dense().W_std = 2.0  # frozen
    assert Dense().output_shape((5,)) == (5,) and Relu().output_shape((4, 4, 3)) == (4, 4, 3)
    with pytest.raises(ValueError):
        Dense().output_shape((2, 3))


def test_gelu_approximate_changes_only_the_function():
    x = np.linspace(-3, 3, 13)
    assert np.abs(Gelu(approximate=True).fn(x) - Gelu().fn(x)).max() < 1e-3
    assert np.abs(Gelu(approximate=True).fn(x) - Gelu().fn(x)).max() > 0
    v = np.array([0.5, 2.0])
    np.testing.assert_array_equal(Gelu(approximate=True).dual(v, v, v)[0], Gelu().dual(v, v, v)[0])
