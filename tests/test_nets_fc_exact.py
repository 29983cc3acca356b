"""Exact NNGP/NTK of fully-connected nets against independent references.

- an FC recursion written here whose dual activations are high-degree numerical integrals
  (Gauss–Hermite for smooth activations, piecewise Gauss–Legendre on the circle for
  positively homogeneous ones), depths 1–5, with and without bias, every activation;
- Monte-Carlo NNGP of wide random finite networks (NumPy), error shrinking with width;
- empirical NTK (Jacobian inner products by backprop in NumPy) of wide finite networks in
  NTK parameterization, 1 and 2 hidden layers, error shrinking with width;
- properties: symmetry, PSD, ReLU homogeneity, float32 robustness, diagonal mode;
- bad input raises ``ValueError``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss

from _activations import acts, fc_cases, ids
from dsketch.nets import (
    Dense, Elementwise, Erf, Exp, Monomial, RectifiedMonomial, Relu, fully_connected, serial,
)

# --------------------------------------------------------------- reference dual maps
_T, _W = hermegauss(200)
_W = _W / math.sqrt(2 * math.pi)
_Z1, _Z2 = np.meshgrid(_T, _T, indexing="ij")
_WW = np.outer(_W, _W)
_LX, _LW = leggauss(40)


def _gh_pair(f, v1, v2, c):
    s1, s2 = math.sqrt(v1), math.sqrt(v2)
    rho = 0.0 if s1 * s2 == 0 else min(1.0, max(-1.0, c / (s1 * s2)))
    return float(np.sum(_WW * f(s1 * _Z1) * f(s2 * (rho * _Z1 + math.sqrt(max(1 - rho * rho, 0)) * _Z2))))


def _polar_pair(f, q, v1, v2, c):
    if v1 == 0 or v2 == 0:
        return 0.0  # φ(0) = 0 for every homogeneous activation here
    s1, s2 = math.sqrt(v1), math.sqrt(v2)
    rho = min(1.0, max(-1.0, c / (s1 * s2)))
    beta = math.atan2(math.sqrt(max(1 - rho * rho, 0.0)), rho)
    cuts = sorted({0.0, 2 * math.pi} | {a % (2 * math.pi) for a in (
        math.pi / 2, 3 * math.pi / 2, beta + math.pi / 2, beta + 3 * math.pi / 2)})
    total = 0.0
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        if hi - lo > 1e-14:
            a = (hi - lo) / 2 * _LX + (hi + lo) / 2
            total += (hi - lo) / 2 * float(np.sum(_LW * f(s1 * np.cos(a)) * f(s2 * np.cos(a - beta))))
    return total * 2 ** q * math.factorial(q) / (2 * math.pi)


def ref_dual(act, v1, v2, c, derivative=False):
    f = act.deriv if derivative else act.fn
    q = act.homogeneity
    if q is not None:
        q = q - 1 if derivative else q
        if q < 0:
            return 0.0
        return _polar_pair(f, q, v1, v2, c)
    return _gh_pair(f, v1, v2, c)


def ref_fc(x, layers):
    """NNGP and NTK by the FC recursion, every dual by numerical integration."""
    d = x.shape[1]
    K = x @ x.T / d
    T = np.zeros_like(K)
    n = len(x)
    for layer in layers:
        if isinstance(layer, Dense):
            K = layer.W_std ** 2 * K + layer.b_std ** 2
            T = K + layer.W_std ** 2 * T
        else:
            v = np.diag(K).copy()
            newK = np.empty_like(K)
            dot = np.empty_like(K)
            for i in range(n):
                for j in range(i, n):
                    newK[i, j] = newK[j, i] = ref_dual(layer, v[i], v[j], K[i, j])
                    dot[i, j] = dot[j, i] = ref_dual(layer, v[i], v[j], K[i, j], True)
            K, T = newK, T * dot
    return K, T


# (activation, W_std, input norm scale) from the shared table: smooth ones keep
# pre-activation variances moderate so that the Gauss–Hermite reference itself is exact
# to ~1e-12.
FC_CASES = fc_cases()
_fc_ids = [repr(a) for a, _, _ in FC_CASES]


def _inputs(kind, n=5, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True) / math.sqrt(d)   # unit variance rows
    if kind == "wide":
        scales = np.array([1e-3, 1e-1, 1.0, 30.0, 1e3])[:n]
    elif kind == "mid":  # rectified monomials raise variances to the power q per layer
        scales = np.array([3e-2, 0.3, 1.0, 3.0, 10.0])[:n]
    else:
        scales = np.array([1e-3, 0.2, 0.7, 1.0, 1.3])[:n]
    x *= scales[:, None]
    x[-1] = x[2] * (scales[-1] / scales[2])  # a parallel pair: ρ = 1 off the diagonal
    return x


@pytest.mark.parametrize("bias", [0.0, 0.3], ids=["nobias", "bias"])
@pytest.mark.parametrize("case", FC_CASES, ids=_fc_ids)
def test_fc_kernels_match_reference_recursion(case, bias):
    act, w_std, kind = case
    x = _inputs(kind)
    for depth in range(1, 6):
        if isinstance(act, (Monomial, RectifiedMonomial)) and act.degree == 3 and depth > 3:
            continue  # the variance grows like v^(3^depth)
        layers = []
        for _ in range(depth):
            layers += [Dense(w_std, bias), act]
        layers.append(Dense(w_std, bias))
        got = serial(*layers).kernel(x)
        ref_n, ref_t = ref_fc(x, layers)
        for g, r in ((got.nngp, ref_n), (got.ntk, ref_t)):
            scale = np.sqrt(np.outer(np.abs(np.diag(r)), np.abs(np.diag(r))))
            err = np.abs(g - r) / np.maximum(scale, 1e-150)  # deep monomials underflow
            assert err.max() < 1e-6, (depth, err.max())


def test_fully_connected_preset_matches_serial():
    x = _inputs("moderate")
    a = fully_connected(3, Erf(), 1.3, 0.1).kernel(x)
    b = serial(Dense(1.3, 0.1), Erf(), Dense(1.3, 0.1), Erf(), Dense(1.3, 0.1), Erf(), Dense(1.3, 0.1)).kernel(x)
    np.testing.assert_array_equal(a.nngp, b.nngp)
    np.testing.assert_array_equal(a.ntk, b.ntk)


@pytest.mark.parametrize("same", [True, False])
def test_float32_output_is_the_float64_kernel_rounded_once(same):
    x = _inputs("moderate")
    net = fully_connected(2, Relu(), math.sqrt(2.0), 0.1)
    args = (x,) if same else (x[:5], x)
    ref = net.kernel(*args, get="ntk", block_size=4)
    out = net.kernel(*args, get="ntk", block_size=4, dtype=np.float32)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ref.astype(np.float32))


def test_elementwise_tanh_matches_reference_recursion():
    x = _inputs("moderate")
    act = Elementwise("tanh", quad_degree=128)
    layers = [Dense(1.2, 0.1), act, Dense(1.2, 0.1), act, Dense(1.0, 0.0)]
    got = serial(*layers).kernel(x)
    ref_n, ref_t = ref_fc(x, layers)
    np.testing.assert_allclose(got.nngp, ref_n, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(got.ntk, ref_t, rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------- finite random networks
def _finite_net(x, act, w_std, b_std, width, depth, rng):
    """One random NTK-parameterized MLP: returns (NNGP estimate, empirical NTK)."""
    posts = [x]
    pres = []
    mats = []
    a = x
    for _ in range(depth):
        n_in = a.shape[1]
        W = rng.standard_normal((width, n_in))
        b = rng.standard_normal(width)
        h = (w_std / math.sqrt(n_in)) * a @ W.T + b_std * b
        mats.append(W)
        pres.append(h)
        a = act.fn(h)
        posts.append(a)
    n_last = a.shape[1]
    w_out = rng.standard_normal(n_last)
    # NNGP: E over the readout weights of f(x) f(y) given the hidden layers
    nngp = (w_std ** 2 / n_last) * a @ a.T + b_std ** 2
    # NTK: Σ over layers (σ_W²/n_in ⟨δ,δ'⟩⟨a,a'⟩ + σ_b² ⟨δ,δ'⟩), δ = ∂f/∂(pre-activation)
    ntk = (w_std ** 2 / n_last) * a @ a.T + b_std ** 2           # readout layer, δ = 1
    delta = (w_std / math.sqrt(n_last)) * w_out[None, :] * act.deriv(pres[-1])
    for layer in range(depth - 1, -1, -1):
        a_in = posts[layer]
        dd = delta @ delta.T
        ntk += (w_std ** 2 / a_in.shape[1]) * dd * (a_in @ a_in.T) + b_std ** 2 * dd
        if layer > 0:
            delta = ((w_std / math.sqrt(a_in.shape[1])) * delta @ mats[layer]) * act.deriv(pres[layer - 1])
    return nngp, ntk


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


MC_ACTS = acts("mc")


@pytest.mark.parametrize("act", MC_ACTS, ids=ids(MC_ACTS))
def test_nngp_matches_wide_random_networks(act):
    x = np.random.default_rng(1).standard_normal((6, 10)) * np.array([0.3, 0.7, 1.0, 1.0, 1.5, 2.0])[:, None]
    net = serial(Dense(1.3, 0.2), act, Dense(1.1, 0.3), act, Dense(1.2, 0.1))
    exact = net.kernel(x).nngp
    errs = {}
    for width in (64, 4096):  # Monte-Carlo error ∝ 1/√width: expect a ratio near 1/8
        est = [_mc_nngp(x, act, width, np.random.default_rng(100 * rep + width)) for rep in range(3)]
        errs[width] = np.mean([_rel(e, exact) for e in est])
    assert errs[4096] < 0.1, errs
    assert errs[4096] < 0.35 * errs[64], errs


def _mc_nngp(x, act, width, rng):
    params = [(1.3, 0.2), (1.1, 0.3)]
    a = x
    for w_std, b_std in params:
        W = rng.standard_normal((width, a.shape[1]))
        b = rng.standard_normal(width)
        a = act.fn((w_std / math.sqrt(a.shape[1])) * a @ W.T + b_std * b)
    return (1.2 ** 2 / width) * a @ a.T + 0.1 ** 2


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("act", acts("ntk_mc"), ids=ids(acts("ntk_mc")))
def test_ntk_matches_empirical_ntk_of_wide_networks(act, depth):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 8)) * np.array([0.5, 1.0, 1.0, 1.5, 2.0])[:, None]
    w_std, b_std = 1.2, 0.3
    layers = []
    for _ in range(depth):
        layers += [Dense(w_std, b_std), act]
    exact = serial(*layers, Dense(w_std, b_std)).kernel(x)
    errs = {}
    for width in (64, 4096):
        e_n, e_t = [], []
        for rep in range(3):
            nngp, ntk = _finite_net(x, act, w_std, b_std, width, depth, np.random.default_rng(7 * rep + width))
            e_n.append(_rel(nngp, exact.nngp))
            e_t.append(_rel(ntk, exact.ntk))
        errs[width] = (np.mean(e_n), np.mean(e_t))
    assert errs[4096][1] < 0.06, errs
    assert errs[4096][1] < 0.35 * errs[64][1], errs
    assert errs[4096][0] < 0.1, errs


# ------------------------------------------------------------------------- properties
ALL_ACTS = [a for a, _, _ in FC_CASES] + acts("numeric")


@pytest.mark.parametrize("act", ALL_ACTS, ids=ids(ALL_ACTS))
def test_symmetric_psd_and_diagonal_mode(act):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((12, 6)) * rng.uniform(0.1, 1.5, size=(12, 1))
    x[5] = x[4]          # duplicate rows
    x[7] = -x[3]         # anti-parallel rows
    w = 0.7 if isinstance(act, (Monomial, Exp)) else 1.2
    net = serial(Dense(w, 0.1), act, Dense(w, 0.2), act, Dense(1.0, 0.0))
    k = net.kernel(x)
    for m in (k.nngp, k.ntk):
        np.testing.assert_allclose(m, m.T, rtol=0, atol=1e-12 * np.abs(m).max())
        assert np.linalg.eigvalsh(m).min() >= -1e-8 * np.trace(m)
    kd = net.kernel(x, diagonal=True)
    np.testing.assert_allclose(kd.nngp, np.diag(k.nngp), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(kd.ntk, np.diag(k.ntk), rtol=1e-12, atol=1e-300)
    # cross kernel blocks agree with the full kernel (which serial symmetrizes; the
    # numerical duals are symmetric only to quadrature accuracy)
    kc = net.kernel(x[:5], x[5:], block_size=3)
    tol = 1e-3 if isinstance(act, Elementwise) else 1e-12
    np.testing.assert_allclose(kc.nngp, k.nngp[:5, 5:], rtol=tol, atol=1e-14)
    np.testing.assert_allclose(kc.ntk, k.ntk[:5, 5:], rtol=tol, atol=1e-14)


@pytest.mark.parametrize("act", acts("relu_family"), ids=ids(acts("relu_family")))
def test_relu_family_homogeneity(act):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 5))
    y = rng.standard_normal((3, 5))
    net = serial(Dense(1.4), act, Dense(1.1), act, Dense(1.0))
    k = net.kernel(x, y)
    for c in (1e-3, 0.5, 7.0, 1e3):
        kc = net.kernel(c * x, y)
        np.testing.assert_allclose(kc.nngp, c * k.nngp, rtol=1e-10)
        np.testing.assert_allclose(kc.ntk, c * k.ntk, rtol=1e-10)


@pytest.mark.parametrize("act", ALL_ACTS, ids=ids(ALL_ACTS))
def test_float32_inputs_never_nan(act):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 4)).astype(np.float32)
    x[0] = 0                     # zero row
    x[1] *= 1e3 if not isinstance(act, (Exp, Monomial)) else 3.0   # huge norm
    x[2] = x[3]                  # duplicates: ρ = 1
    x[4] = -x[3]                 # ρ = −1
    x[5] *= 1e-3
    net = serial(Dense(1.0, 0.0), act, Dense(1.0, 0.1), act, Dense(1.0))
    k = net.kernel(x)
    assert not np.isnan(k.nngp).any() and not np.isnan(k.ntk).any()
    kd = net.kernel(x, diagonal=True)
    assert not np.isnan(kd.nngp).any() and not np.isnan(kd.ntk).any()


def test_relu_zero_row_and_duplicates():
    x = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0], [1.0, 2.0, 2.0]])
    k = serial(Dense(1.0), Relu(), Dense(1.0)).kernel(x)
    assert k.nngp[0].tolist() == [0.0, 0.0, 0.0]
    # duplicates: ρ = 1 exactly, Σ = v/2, NTK = Σ' + W²·Σ·(1/2) = v/2 + v/2
    assert k.nngp[1, 2] == pytest.approx(0.5 * 3.0, rel=1e-15)
    assert k.ntk[1, 2] == pytest.approx(3.0, rel=1e-15)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("x1, x2", [
    (np.zeros(3), None),                                   # 1-D
    (np.zeros((2, 3, 4)), None),                           # 3-D
    (np.zeros((2, 3)), np.zeros((2, 4))),                  # width mismatch
    (np.array([[1.0, np.nan]]), None),                     # NaN
    (np.array([[1.0, 2.0]]), np.array([[np.inf, 0.0]])),   # Inf in x2
    (np.array([["a", "b"]]), None),                        # non-numeric
    (np.zeros((0, 3)), None),                              # empty
])
def test_bad_inputs_raise(x1, x2):
    net = serial(Dense(1.0), Relu(), Dense(1.0))
    with pytest.raises(ValueError):
        net.kernel(x1, x2)


def test_bad_layers_and_options_raise():
    with pytest.raises(ValueError):
        serial(Dense(-1.0), Relu())
    with pytest.raises(ValueError):
        serial(Dense(1.0), "relu")
    net = serial(Dense(1.0), Relu(), Dense(1.0))
    with pytest.raises(ValueError):
        net.kernel(np.ones((2, 3)), np.ones((2, 3)), diagonal=True)
    with pytest.raises(ValueError):
        net.kernel(np.ones((2, 3)), block_size=0)
