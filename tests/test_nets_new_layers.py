"""neural-tangents' remaining layer vocabulary against independent computations.

- ``Sigmoid_like``, ``Rbf``, ``ExpNormalized``, ``Polynomial``, ``Hermite``: neural-tangents'
  closed forms written out here, quadrature, and (``Hermite``) empirical NTKs of wide
  finite networks; their sketches against their exact kernels;
- ``parameterization="standard"`` of ``Dense`` and ``Conv``: empirical NTKs of wide finite
  networks in that parameterization (gradients written out by hand in NumPy), the NNGP
  unchanged, the sketch face against the exact face, specs round trip.
(The shared battery of tests/_activations.py also runs the new activations.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from dsketch import spec
from dsketch.nets import (
    Conv, Dense, Elementwise, Erf, ExpNormalized, Gelu, GlobalAvgPool, Hermite, Kernel, Polynomial, Rbf,
    Relu, Sigmoid_like, make_activation, serial,
)


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _grid():
    v = np.array([1e-3, 0.3, 1.0, 4.0])
    v1, v2 = np.meshgrid(v, v, indexing="ij")
    return v1[..., None], v2[..., None], np.array([-1.0, -0.4, 0.0, 0.7, 1.0])


# ------------------------------------------------------------------- activations
def test_sigmoid_like_is_neural_tangents_erf():
    x = np.linspace(-5, 5, 201)
    act = Sigmoid_like()
    np.testing.assert_allclose(act.fn(x), 0.5 * special.erf(x / 2.4020563531719796) + 0.5, atol=1e-15)
    assert np.abs(act.fn(x) - special.expit(x)).max() < 0.02   # it is sigmoid-like
    v1, v2, r = _grid()
    c = r * np.sqrt(v1 * v2)
    b = 1 / 2.4020563531719796
    # neural-tangents: Erf's kernel on b²-scaled covariances, times a², plus c²
    prod = (1 + 2 * b * b * v1) * (1 + 2 * b * b * v2)
    nngp = 0.25 * (2 / math.pi) * np.arctan2(2 * b * b * c, np.sqrt(prod - 4 * (b * b * c) ** 2)) + 0.25
    dot = 0.25 * b * b * (4 / math.pi) / np.sqrt(prod - 4 * (b * b * c) ** 2)
    got = act.dual(v1, v2, c)
    np.testing.assert_allclose(got[0], nngp, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got[1], dot, rtol=1e-12)
    assert make_activation("sigmoid_like") == act


@pytest.mark.parametrize("gamma", [0.3, 1.0, 2.5])
def test_rbf_is_the_rbf_kernel(gamma):
    v1, v2, r = _grid()
    c = r * np.sqrt(v1 * v2)
    nngp, dot = Rbf(gamma).dual(v1, v2, c)
    np.testing.assert_allclose(nngp, np.exp(-gamma * (v1 + v2 - 2 * c)), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dot, 2 * gamma * nngp, rtol=1e-12, atol=1e-15)
    x = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(Rbf(gamma).fn(x), math.sqrt(2) * np.sin(math.sqrt(2 * gamma) * x + math.pi / 4))
    # a net: Dense(1) then Rbf is exp(-γ‖x − y‖²/d)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5))
    k = serial(Dense(1.0), Rbf(gamma)).kernel(x)
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1) / 5
    np.testing.assert_allclose(k.nngp, np.exp(-gamma * d2), rtol=1e-12)


def test_exp_normalized_matches_neural_tangents_formula():
    v1, v2, r = _grid()
    c = r * np.sqrt(v1 * v2)
    for gamma, shift in ((1.0, -1.0), (0.5, 0.2), (2.0, -3.0)):
        act = ExpNormalized(gamma, shift)
        prod = np.sqrt(v1 * v2)
        e = np.exp(gamma * (c / prod + shift))
        nngp, dot = act.dual(v1, v2, c)
        np.testing.assert_allclose(nngp, prod * e, rtol=1e-12)
        np.testing.assert_allclose(dot, gamma * e, rtol=1e-12)
    # zero variance gives zero, as neural-tangents' 1e-30 floor does
    nngp, _ = ExpNormalized().dual(np.array(0.0), np.array(1.0), np.array(0.0))
    assert float(nngp) == 0.0


def test_exp_normalized_sketch_and_its_missing_function():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 16)) * rng.uniform(0.3, 3.0, (40, 1))
    net = serial(Dense(1.0, 0.1), ExpNormalized(), Dense(1.0, 0.1))
    exact = net.kernel(x)
    f = net.sketch((16,), 4096, seed=1, dtype="float64")(x)
    assert _rel(f.nngp @ f.nngp.T, exact.nngp) < 0.1
    assert _rel(f.ntk @ f.ntk.T, exact.ntk) < 0.1
    with pytest.raises(NotImplementedError, match="ExpNormalized has no finite-width function"):
        net.sketch((16,), 64, relu_method="random")(x)
    with pytest.raises(ValueError, match="gamma=-1.0.*no sketch face"):
        serial(Dense(1.0), ExpNormalized(gamma=-1.0)).sketch((16,), 64)(x)


def test_polynomial_is_its_own_quadrature_and_validates():
    p = Polynomial((0.3, -1.0, 0.0, 0.25, 0.0, 0.0))
    assert p.coef == (0.3, -1.0, 0.0, 0.25)            # trailing zeros dropped
    x = np.linspace(-2, 2, 9)
    np.testing.assert_allclose(p.fn(x), 0.3 - x + 0.25 * x ** 3)
    np.testing.assert_allclose(p.deriv(x), -1 + 0.75 * x ** 2)
    v1, v2, r = _grid()
    c = r * np.sqrt(v1 * v2)
    got = p.dual(v1, v2, c)
    ref = Elementwise(p.fn, deriv=p.deriv).dual(v1, v2, c)   # independent: numerical rule
    scale = np.sqrt(p.dual(v1, v1, v1)[0] * p.dual(v2, v2, v2)[0])
    assert np.abs(got[0] - ref[0]).max() / scale.max() < 1e-9
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-8, atol=1e-10)
    for bad, match in (((), "coef must be a non-empty"), ("12", "coef must be"),
                       ((1.0, float("nan")), r"coef\[1\] must be finite"), ((0.0,) * 34 + (1.0,), "degree must be <= 32")):
        with pytest.raises(ValueError, match=match):
            Polynomial(bad)


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_hermite_matches_neural_tangents_at_unit_variance(degree):
    rng = np.random.default_rng(degree)
    x = rng.standard_normal((7, 12))
    x *= math.sqrt(12) / np.linalg.norm(x, axis=1, keepdims=True)   # unit variance per row
    k = serial(Dense(1.0), Hermite(degree)).kernel(x)
    c = np.clip(x @ x.T / 12, -1, 1)
    np.testing.assert_allclose(k.nngp, c ** degree, atol=1e-12)
    np.testing.assert_allclose(k.ntk, degree * c ** (degree - 1) * c, atol=1e-12)
    t = np.linspace(-2, 2, 7)
    he = np.polynomial.hermite_e.hermeval(t, [0] * degree + [1]) / math.sqrt(math.factorial(degree))
    np.testing.assert_allclose(Hermite(degree).fn(t), he, atol=1e-12)
    with pytest.raises(ValueError, match="degree must be"):
        Hermite(0)


def test_hermite_ntk_matches_wide_finite_network():
    """Empirical NTK (hand-written gradients) of a 1-hidden-layer Hermite(3) NTK-param net."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 8)) * np.array([0.3, 0.4, 0.5, 0.5, 0.6])[:, None]   # light tails
    act = Hermite(3)
    exact = serial(Dense(1.1, 0.2), act, Dense(0.9, 0.1)).kernel(x)
    errs = []
    for rep in range(3):
        n = 8192
        r = np.random.default_rng(rep)
        W, b, V, c = (r.standard_normal(s) for s in ((n, 8), n, n, 1))
        z = 1.1 / math.sqrt(8) * x @ W.T + 0.2 * b
        h, dh = act.fn(z), act.deriv(z)
        delta = 0.9 / math.sqrt(n) * V * dh                       # ∂f/∂z
        ntk = (0.9 ** 2 / n) * h @ h.T + 0.1 ** 2 \
            + (delta @ delta.T) * (1.1 ** 2 * x @ x.T / 8 + 0.2 ** 2)
        errs.append(_rel(ntk, exact.ntk))
    assert np.mean(errs) < 0.05, errs


@pytest.mark.parametrize("act", [Sigmoid_like(), Rbf(0.5), Polynomial((0.1, 0.7, 0.2)), Hermite(2)],
                         ids=repr)
def test_new_activation_sketches_approach_their_kernels(act):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((40, 16)) * rng.uniform(0.3, 2.0, (40, 1))
    net = serial(Dense(1.0, 0.1), act, Dense(1.0, 0.1), act, Dense(1.0))
    exact = net.kernel(x)
    errs = {}
    for m in (256, 4096):
        f = net.sketch((16,), m, seed=2, dtype="float64")(x)
        errs[m] = _rel(f.ntk @ f.ntk.T, exact.ntk)
    assert errs[4096] < 0.15 and errs[4096] < errs[256], errs


# ------------------------------------------------------- standard parameterization
def _std_mlp_ntk(x, act, widths, params, rng):
    """Empirical NNGP draw and NTK of one finite standard-parameterized MLP (scalar output).

    Layer l: z = W a + b, W ~ N(0, σ_W²/N_in), b ~ N(0, σ_b²) (None: no bias); gradients by
    hand: ∂f/∂W_l = δ_l a_{l-1}ᵀ, ∂f/∂b_l = δ_l.
    """
    a, posts, pres, mats = x, [x], [], []
    dims = list(widths) + [1]
    for (w_std, b_std), n in zip(params, dims):
        W = rng.standard_normal((n, a.shape[1])) * w_std / math.sqrt(a.shape[1])
        b = rng.standard_normal(n) * (b_std or 0.0)
        z = a @ W.T + b
        mats.append(W)
        pres.append(z)
        if len(pres) < len(dims):
            a = act.fn(z)
            posts.append(a)
    out = pres[-1]
    ntk = np.zeros((x.shape[0],) * 2)
    delta = np.ones((x.shape[0], 1))
    for l in range(len(dims) - 1, -1, -1):
        bias = params[l][1] is not None
        ntk += (delta @ delta.T) * (posts[l] @ posts[l].T + float(bias))
        if l:
            delta = (delta @ mats[l]) * act.deriv(pres[l - 1])
    return out @ out.T, ntk


@pytest.mark.parametrize("act", [Relu(), Erf()], ids=repr)
def test_standard_dense_matches_wide_finite_networks(act):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 6)) * np.array([0.5, 1.0, 1.0, 1.5, 2.0])[:, None]
    params = [(1.3, 0.2), (1.1, None), (0.9, 0.0)]
    width = 2048
    net = serial(Dense(*params[0], parameterization="standard", out_dim=width), act,
                 Dense(*params[1], parameterization="standard", out_dim=width), act,
                 Dense(*params[2], parameterization="standard", out_dim=1))
    exact = net.kernel(x)
    ntks = [_std_mlp_ntk(x, act, (width, width), params, np.random.default_rng(r))[1] for r in range(8)]
    assert _rel(np.mean(ntks, axis=0), exact.ntk) < 0.04   # measured 0.054 / 0.022 / 0.013 at 512 / 2048 / 4096
    # the NNGP is the NTK parameterization's
    ntk_net = serial(Dense(1.3, 0.2), act, Dense(1.1), act, Dense(0.9))
    np.testing.assert_allclose(exact.nngp, ntk_net.kernel(x).nngp, rtol=1e-12)
    # the NTK grows with the hidden width (Θ' = N Σ + ...)
    wide = serial(*(Dense(l.W_std, l.b_std, parameterization="standard", out_dim=(2 * width if l.out_dim == width else 1))
                    if isinstance(l, Dense) else l for l in net.layers)).kernel(x)
    assert (np.diag(wide.ntk) > 1.5 * np.diag(exact.ntk)).all()


# Parity with neural-tangents (issue 21).  Values of ``stax.serial(...)[2](x, x)`` from
# neural-tangents 0.6.5 (float64) for x = default_rng(21).standard_normal((3, 16)), upper
# triangles row by row; the last ``stax.Dense(1, parameterization="standard")`` takes NT's
# defaults (W_std=1, b_std=None: no bias).
NT_STD = {
    "relu": ([1.3183252898338782, 0.7798639806545179, 0.4566353932805596, 0.9504654371808219,
              0.35414871389753555, 0.5389001061186924],
             [1024.0204249110893, 530.7572453869442, 288.4668645004976, 738.5611792523177,
              217.19582904419195, 419.1864823481053]),
    "gelu": ([0.07438730462011434, 0.032737241939398594, 0.012111886006110035,
              0.04470063854964319, 0.007172993539309956, 0.018666180512462792],
             [124.07384585615226, 46.91254961465775, 15.517223583404885, 74.14163528583238,
              8.758249282598785, 30.652115422775104]),
}


def _issue_net(name, **last):
    """The issue's nets: Dense(512, W_std, b_std=0, standard) → act, ×2 (ReLU, W_std=√2) or
    ×3 (GeLU, W_std=1), then Dense(out_dim=1, standard) with dsketch's defaults + ``last``."""
    act, w, depth = (Relu(), math.sqrt(2.0), 2) if name == "relu" else (Gelu(), 1.0, 3)
    layers = []
    for _ in range(depth):
        layers += [Dense(w, 0.0, parameterization="standard", out_dim=512), act]
    return serial(*layers, Dense(parameterization="standard", out_dim=1, **last))


def _gauss_2d(fn, k11, k12, k22, nodes=120):
    """E[fn(u) fn(v)], (u, v) ~ N(0, [[k11, k12], [k12, k22]]), by a tensor Gauss–Hermite rule
    (independent of dsketch's quadrature and closed forms)."""
    t, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    a = math.sqrt(k11)
    b = k12 / a
    c = math.sqrt(max(k22 - b * b, 0.0))
    u = a * t[:, None]
    v = b * t[:, None] + c * t[None, :]
    return float(np.sum(w[:, None] * w[None, :] * fn(u) * fn(v)))


def _std_reference(x, name):
    """The standard-parameterization recursion written out: per layer with fan-in N,
    Θ' = N·Σ + W²·Θ·E[φ'φ'] (+1 for a bias), Σ' = W²·E[φφ] (+ b²); the first Σ = x·y/d."""
    if name == "relu":
        def phi(z):
            return np.maximum(z, 0)

        def dphi(z):
            return (z > 0).astype(float)
        w2, depth = 2.0, 2
    else:
        def phi(z):
            return z * special.ndtr(z)

        def dphi(z):
            return special.ndtr(z) + z * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
        w2, depth = 1.0, 3
    n = len(x)
    S = x @ x.T / x.shape[1]
    T = np.zeros((n, n))
    fan_in = x.shape[1]
    for _ in range(depth):
        T = fan_in * S + w2 * T + 1.0          # Dense(512, W, b_std=0): a trained bias
        S = w2 * S                              # + b_std² = 0
        E = np.array([[_gauss_2d(phi, S[i, i], S[i, j], S[j, j]) for j in range(n)] for i in range(n)])
        D = np.array([[_gauss_2d(dphi, S[i, i], S[i, j], S[j, j]) for j in range(n)] for i in range(n)])
        S, T, fan_in = E, T * D, 512
    return S, fan_in * S + T                    # Dense(1): W_std = 1, no bias


@pytest.mark.parametrize("name", ["relu", "gelu"])
def test_standard_parameterization_matches_neural_tangents(name):
    """Both issue-21 nets agree with neural-tangents' stax to 1e-6 (measured 1e-16; with the
    old default ``b_std=0.0`` of the last Dense — a trained bias, +1 — 1.7e-3 / 1.6e-2)."""
    x = np.random.default_rng(21).standard_normal((3, 16))
    iu = np.triu_indices(3)
    k = _issue_net(name).kernel(x)
    nt_nngp, nt_ntk = (np.array(v) for v in NT_STD[name])
    assert _rel(np.asarray(k.nngp)[iu], nt_nngp) < 1e-6
    assert _rel(np.asarray(k.ntk)[iu], nt_ntk) < 1e-6
    # ... and the recursion written out here (ReLU: exact quadrature of a kink is only
    # ~1e-4, so the ReLU reference uses the arc-cosine closed form below)
    if name == "gelu":
        S, T = _std_reference(x, name)
        assert _rel(np.asarray(k.nngp), S) < 1e-6 and _rel(np.asarray(k.ntk), T) < 1e-6
    # the old default (a zero-initialized, trained bias in the last layer) is +1 on every entry
    old = _issue_net(name, b_std=0.0).kernel(x)
    np.testing.assert_allclose(np.asarray(old.ntk), np.asarray(k.ntk) + 1.0, rtol=1e-12)
    assert _rel(np.asarray(old.ntk)[iu], nt_ntk) > 1e-4


def test_standard_relu_closed_form_recursion():
    """ReLU with the arc-cosine closed form (Cho & Saul) written out: fan-in N_l of each
    layer (d = 16, then 512, 512), not its own out_dim, multiplies Σ in the NTK."""
    x = np.random.default_rng(21).standard_normal((3, 16))
    S, T, fan_in = x @ x.T / 16, np.zeros((3, 3)), 16
    for _ in range(2):
        T = fan_in * S + 2.0 * T + 1.0
        S = 2.0 * S
        d = np.sqrt(np.diag(S))
        rho = np.clip(S / np.outer(d, d), -1, 1)
        th = np.arccos(rho)
        E = np.outer(d, d) * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi)
        D = (np.pi - th) / (2 * np.pi)
        S, T, fan_in = E, T * D, 512
    k = _issue_net("relu").kernel(x)
    assert _rel(np.asarray(k.nngp), S) < 1e-6 and _rel(np.asarray(k.ntk), fan_in * S + T) < 1e-6


def test_defaults_are_neural_tangents_defaults():
    assert Dense().b_std is None and Dense().W_std == 1.0 and Conv().b_std is None
    x = np.random.default_rng(1).standard_normal((4, 3))
    # under "ntk", no bias and b_std = 0 are the same kernel and the same features
    a, b = serial(Dense(), Relu(), Dense()), serial(Dense(b_std=0.0), Relu(), Dense(b_std=0.0))
    np.testing.assert_allclose(a.kernel(x).ntk, b.kernel(x).ntk, rtol=1e-14)
    fa, fb = a.sketch((3,), 64, seed=0)(x), b.sketch((3,), 64, seed=0)(x)
    np.testing.assert_array_equal(fa.ntk, fb.ntk)


def test_standard_dense_conventions_and_errors():
    x = np.random.default_rng(1).standard_normal((4, 3))
    # first layer: Θ = x·y + 1 with a bias (even b_std = 0), x·y without one
    with_b = serial(Dense(2.0, 0.0, parameterization="standard")).kernel(x)
    no_b = serial(Dense(2.0, None, parameterization="standard")).kernel(x)
    np.testing.assert_allclose(with_b.ntk, x @ x.T + 1, rtol=1e-12)
    np.testing.assert_allclose(no_b.ntk, x @ x.T, rtol=1e-12)
    np.testing.assert_allclose(with_b.nngp, 4 * x @ x.T / 3, rtol=1e-12)
    assert Dense(1.0, parameterization="STANDARD").parameterization == "standard"
    assert Dense(1.0, out_dim=7).output_shape((3,)) == (7,)
    with pytest.raises(ValueError, match="Dense: parameterization must be 'ntk' or 'standard'"):
        Dense(1.0, parameterization="mup")
    with pytest.raises(ValueError, match="out_dim must be"):
        Dense(1.0, out_dim=0)
    with pytest.raises(ValueError, match="needs its input width"):
        Dense(1.0, parameterization="standard").kernel(_kernel_record(x))


def _kernel_record(x):
    cov = (x * x).sum(-1) / x.shape[1]
    return Kernel(nngp=x @ x.T / x.shape[1], ntk=np.zeros((len(x),) * 2), cov1=cov, cov2=cov)


def _conv_std_ntk(x, params, width, rng):
    """Empirical NTK of Conv(3x3, SAME, standard) -> ReLU -> GlobalAvgPool -> Dense(standard)."""
    (w1, b1), (w2, b2) = params
    n, h, wd, c = x.shape
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = np.stack([pad[:, i:i + h, j:j + wd, :] for i in range(3) for j in range(3)], axis=3)
    patches = patches.reshape(n, h * wd, 9 * c)                      # (n, P, |F| C)
    W = rng.standard_normal((9 * c, width)) * w1 / math.sqrt(9 * c)
    b = rng.standard_normal(width) * b1
    z = patches @ W + b                                               # (n, P, width)
    g = np.maximum(z, 0).mean(axis=1)                                 # GAP
    V = rng.standard_normal(width) * w2 / math.sqrt(width)
    a = V[None, None, :] * (z > 0) / (h * wd)                         # ∂f/∂z
    gw = np.einsum("npk,npo->nko", patches, a).reshape(n, -1)        # ∂f/∂W
    gb = a.sum(axis=1)
    return g @ g.T + 1.0 + gw @ gw.T + gb @ gb.T


def test_standard_conv_matches_wide_finite_network_and_sketch():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 5, 5, 2))
    params = ((1.4, 0.3), (1.0, 0.2))
    width = 1024
    net = serial(Conv((3, 3), *params[0], parameterization="standard", out_chan=width), Relu(),
                 GlobalAvgPool(), Dense(*params[1], parameterization="standard", out_dim=1))
    exact = net.kernel(x)
    emp = np.mean([_conv_std_ntk(x, params, width, np.random.default_rng(r)) for r in range(4)], axis=0)
    assert _rel(emp, exact.ntk) < 0.03
    ntk_net = serial(Conv((3, 3), *params[0]), Relu(), GlobalAvgPool(), Dense(*params[1]))
    np.testing.assert_allclose(exact.nngp, ntk_net.kernel(x).nngp, rtol=1e-12)
    f = net.sketch((5, 5, 2), 4096, seed=3, dtype="float64")(x)
    assert _rel(f.ntk @ f.ntk.T, exact.ntk) < 0.05
    assert _rel(f.nngp @ f.nngp.T, exact.nngp) < 0.1
    with pytest.raises(ValueError, match="Conv: parameterization must be"):
        Conv((3, 3), parameterization="other")


def test_standard_dense_sketch_is_exact_on_a_linear_net():
    x = np.random.default_rng(2).standard_normal((6, 4))
    net = serial(Dense(1.2, 0.1, parameterization="standard", out_dim=9),
                 Dense(0.8, None, parameterization="standard", out_dim=3))
    exact = net.kernel(x)
    f = net.sketch((4,), 64, dtype="float64")(x)
    np.testing.assert_allclose(f.ntk @ f.ntk.T, exact.ntk, rtol=1e-10)
    np.testing.assert_allclose(f.nngp @ f.nngp.T, exact.nngp, rtol=1e-10)


@pytest.mark.parametrize("layer", [
    Dense(1.3, None, parameterization="standard", out_dim=16), Dense(0.5, 0.1, out_dim=4),
    Conv((3, 3), 1.2, None, parameterization="standard", out_chan=8), Conv((2, 2), 1.0, 0.1),
    Sigmoid_like(), Rbf(0.4), ExpNormalized(0.5, 0.1, True), Polynomial((1.0, 0.0, 2.0)), Hermite(4),
], ids=repr)
def test_specs_round_trip(layer):
    back = spec.from_spec(spec.to_spec(layer))
    assert back == layer and type(back) is type(layer)
    net = serial(layer) if not isinstance(layer, Conv) else serial(layer, GlobalAvgPool())
    assert spec.from_spec(spec.to_spec(net)) == net
