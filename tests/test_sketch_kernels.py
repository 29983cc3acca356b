"""Tests of dsketch.sketch.kernels, .arccos and .ntk_random_features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from dsketch.sketch import (
    ArcCosineFeatures,
    GaussianMaclaurin,
    NTKRandomFeatures,
    PolynomialSketch,
    RandomFourierFeatures,
    arccos_kernel,
    relu_ntk,
)
from dsketch.sketch.arccos import arccos_J

D = 10


def _data(n=40, d=D, seed=0, scale=None):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x / math.sqrt(d) if scale is None else x * scale


def _relerr(f, k):
    f = np.asarray(f, dtype=np.float64)
    return np.linalg.norm(f @ f.T - k) / np.linalg.norm(k)


MAPS = [
    ("poly", lambda s, m=64, **kw: PolynomialSketch(D, m, 3, gamma=0.5, coef0=1.0, seed=s, **kw)),
    ("poly-append", lambda s, m=64, **kw: PolynomialSketch(D, m, 3, gamma=0.5, coef0=1.0,
                                                           expansion="append", seed=s, **kw)),
    ("poly-ctr", lambda s, m=64, **kw: PolynomialSketch(D, m, 3, coef0=0.5, method="ctr", seed=s,
                                                        **kw)),
    ("poly-ts", lambda s, m=64, **kw: PolynomialSketch(D, m, 3, method="tensorsketch", seed=s,
                                                       **kw)),
    ("poly-cs", lambda s, m=64, **kw: PolynomialSketch(D, m, 2, leaf="countsketch", seed=s, **kw)),
    ("rff", lambda s, m=64, **kw: RandomFourierFeatures(D, m, gamma=0.7, seed=s, **kw)),
    ("maclaurin", lambda s, m=64, **kw: GaussianMaclaurin(D, m, gamma=0.5, degree=6, seed=s,
                                                          **kw)),
    ("maclaurin-ctr", lambda s, m=64, **kw: GaussianMaclaurin(D, m, 0.5, 6, seed=s, method="ctr",
                                                              **kw)),
    ("arccos0", lambda s, m=64, **kw: ArcCosineFeatures(D, m, 0, seed=s, **kw)),
    ("arccos1", lambda s, m=64, **kw: ArcCosineFeatures(D, m, 1, seed=s, **kw)),
    ("arccos3", lambda s, m=64, **kw: ArcCosineFeatures(D, m, 3, seed=s, **kw)),
    ("ntk", lambda s, m=64, **kw: NTKRandomFeatures(D, m, 1, seed=s, **kw)),
    ("ntk-deep", lambda s, m=64, **kw: NTKRandomFeatures(D, m, 3, W_std=1.4, b_std=0.3, seed=s,
                                                         **kw)),
    ("ntk-nolev", lambda s, m=64, **kw: NTKRandomFeatures(D, m, 2, b_std=0.1, leverage=False,
                                                          seed=s, **kw)),
]
IDS = [m[0] for m in MAPS]


@pytest.mark.parametrize("name,make", MAPS, ids=IDS)
def test_protocol_shape_dtype_width(name, make):
    x = _data(7)
    for m in (64, 33):  # even and odd widths
        fmap = make(0, m)
        f = fmap(x)
        assert f.shape == (7, m) and f.dtype == np.float32
        assert fmap.n_features == m and fmap.input_shape == (D,) and fmap.output_shape == (m,)
        assert fmap.dtype == np.dtype(np.float32) and isinstance(fmap.dtype, np.dtype)
        assert np.isfinite(f).all()
        f64 = make(0, m, dtype="float64")(x)
        assert f64.dtype == np.float64 and f64.shape == (7, m)
        np.testing.assert_allclose(f, f64, rtol=1e-3, atol=2e-4 * np.abs(f64).max())
    assert hash(make(0)) == hash(make(0)) and make(0) == make(0) and make(0) != make(1)
    k = make(0).kernel(x)
    assert k.shape == (7, 7) and k.dtype == np.float64
    np.testing.assert_allclose(k, k.T, rtol=1e-12, atol=1e-14)
    assert make(0).kernel(x[:3], x[3:]).shape == (3, 4)


@pytest.mark.parametrize("name,make", MAPS, ids=IDS)
def test_determinism_and_chunk_invariance(name, make):
    x = _data(9, seed=1)
    for dtype, tol in (("float64", 1e-12), ("float32", 1e-5)):
        fmap = make(5, dtype=dtype)
        whole = fmap(x)
        make(5).__class__._params_f32.cache_clear()
        np.testing.assert_array_equal(make(5, dtype=dtype)(x), whole)
        halves = np.concatenate([fmap(x[:4]), fmap(x[4:])])
        rows = np.concatenate([fmap(x[i:i + 1]) for i in range(len(x))])
        scale = np.abs(whole).max()
        np.testing.assert_allclose(halves, whole, rtol=tol, atol=tol * scale)
        np.testing.assert_allclose(rows, whole, rtol=tol, atol=tol * scale)
    assert not np.allclose(make(6)(x), make(5)(x))


@pytest.mark.parametrize("name,make", MAPS, ids=IDS)
def test_bad_input(name, make):
    fmap = make(0)
    x = _data(5)
    with pytest.raises(ValueError, match="input_dim=10"):
        fmap(np.ones((5, D + 1)))
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf.*row 2"):
        fmap(bad)
    with pytest.raises(ValueError, match="NaN or Inf"):
        fmap.kernel(bad)
    with pytest.raises(ValueError, match="input_dim=10"):
        fmap.kernel(x, np.ones((2, 3)))
    # sparse rows are taken by every map, with the features of their dense copy
    np.testing.assert_allclose(fmap(sp.csr_matrix(x)), fmap(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls,kwargs", [
    (PolynomialSketch, dict(input_dim=4, n_features=8, degree=0)),
    (PolynomialSketch, dict(input_dim=4, n_features=8, degree=2, gamma=0.0)),
    (PolynomialSketch, dict(input_dim=4, n_features=8, degree=2, coef0=-1.0)),
    (PolynomialSketch, dict(input_dim=4, n_features=8, degree=2, method="nystrom")),
    (PolynomialSketch, dict(input_dim=4, n_features=8, degree=2, dtype="float16")),
    (PolynomialSketch, dict(input_dim=4, n_features=0, degree=2)),
    (PolynomialSketch, dict(input_dim=4, n_features=8, degree=2, expansion="taylor")),
    (PolynomialSketch, dict(input_dim=4, n_features=8, degree=2, method="ctr",
                            leaf="countsketch")),
    (RandomFourierFeatures, dict(input_dim=0, n_features=8)),
    (RandomFourierFeatures, dict(input_dim=4, n_features=8, gamma=float("inf"))),
    (RandomFourierFeatures, dict(input_dim=4, n_features=8, seed=-3)),
    (GaussianMaclaurin, dict(input_dim=4, n_features=1)),
    (GaussianMaclaurin, dict(input_dim=4, n_features=8, degree=0)),
    (ArcCosineFeatures, dict(input_dim=4, n_features=8, order=-1)),
    (ArcCosineFeatures, dict(input_dim=4, n_features=8, order=1.5)),
    (NTKRandomFeatures, dict(input_dim=4, n_features=8, depth=0)),
    (NTKRandomFeatures, dict(input_dim=4, n_features=2, b_std=0.1)),
    (NTKRandomFeatures, dict(input_dim=4, n_features=8, W_std=0.0)),
    (NTKRandomFeatures, dict(input_dim=4, n_features=8, leverage="yes")),
    (NTKRandomFeatures, dict(input_dim=4, n_features=8, nngp_features=8)),
])
def test_bad_spec(cls, kwargs):
    with pytest.raises(ValueError):
        cls(**kwargs)


# ----------------------------------------------------------------------- exact kernels
def test_arccos_quadrature_matches_closed_forms_and_moments():
    theta = np.linspace(0.0, math.pi, 50)
    for order in (0, 1, 2):
        np.testing.assert_allclose(arccos_J(order, theta, np, quadrature=True),
                                   arccos_J(order, theta, np), rtol=1e-12, atol=1e-12)
    # k_n(x, x) = (2n − 1)!! ‖x‖^{2n}
    x = _data(3, seed=2, scale=1.0)
    sq = (x * x).sum(1)
    for order in range(6):
        dfact = float(np.prod(np.arange(2 * order - 1, 0, -2))) if order else 1.0
        np.testing.assert_allclose(np.diag(arccos_kernel(x, x, order)), dfact * sq**order,
                                   rtol=1e-10)
    # k_1 = ‖x‖‖y‖κ1(ρ) and homogeneity
    k1 = arccos_kernel(x, x, 1)
    np.testing.assert_allclose(arccos_kernel(2 * x, x, 3), 8 * arccos_kernel(x, x, 3),
                               rtol=1e-12)
    assert np.all(k1 > -1e-12)


def test_arccos_order3_matches_monte_carlo():
    rng = np.random.default_rng(0)
    x = _data(4, d=3, seed=3, scale=1.0)
    w = rng.normal(size=(3, 400_000))
    z = np.maximum(x @ w, 0) ** 3
    mc = 2 * z @ z.T / w.shape[1]
    np.testing.assert_allclose(arccos_kernel(x, x, 3), mc, rtol=0.03, atol=0.03 * mc.max())


def test_relu_ntk_matches_finite_width_network():
    """Empirical NTK of a wide 1-hidden-layer ReLU net (NTK param.) vs the closed form."""
    rng = np.random.default_rng(0)
    d, n = 5, 300_000
    x = rng.normal(size=(4, d))
    w_std, b_std = 1.3, 0.4
    w1, b1, v = rng.normal(size=(d, n)), rng.normal(size=n), rng.normal(size=n)
    h = w_std * x @ w1 / math.sqrt(d) + b_std * b1
    a, s = np.maximum(h, 0), (h > 0) * 1.0
    nngp = w_std**2 / n * a @ a.T + b_std**2
    ntk = nngp + w_std**2 / n * (s * v**2) @ s.T * (w_std**2 * x @ x.T / d + b_std**2)
    e_nngp, e_ntk = relu_ntk(x, None, 1, w_std, b_std)
    np.testing.assert_allclose(e_ntk, ntk, rtol=0.02)
    np.testing.assert_allclose(e_nngp, nngp, rtol=0.02)


def test_relu_ntk_known_values():
    # depth 1, W=1, b=0: Θ(x, x) = ‖x‖²/d (half from each layer)
    x = _data(5, seed=4, scale=1.0)
    _, ntk = relu_ntk(x, None, 1, 1.0, 0.0)
    np.testing.assert_allclose(np.diag(ntk), (x * x).sum(1) / D, rtol=1e-12)
    # W = √2 keeps the diagonal NNGP: Σ^L(x, x) = 2‖x‖²/d, Θ^L(x, x) = (L + 1)·Σ
    for depth in (1, 2, 4):
        nngp, ntk = relu_ntk(x, None, depth, math.sqrt(2), 0.0)
        np.testing.assert_allclose(np.diag(nngp), 2 * (x * x).sum(1) / D, rtol=1e-12)
        # (arccos near 1 amplifies rounding: θ ≈ √(2·eps))
        np.testing.assert_allclose(np.diag(ntk), (depth + 1) * np.diag(nngp), rtol=1e-7)
    assert NTKRandomFeatures(D, 8, 2, 1.5, 0.1).kernel(x).shape == (5, 5)


def test_ntk_kernel_equals_nets_fully_connected():
    try:
        from dsketch.nets import Relu, fully_connected
    except ImportError:
        pytest.skip("dsketch.nets.presets not available yet")
    x = _data(12, seed=5, scale=1.0)
    for depth, w_std, b_std in [(1, 1.0, 0.0), (2, 1.5, 0.1), (3, math.sqrt(2), 0.5)]:
        fmap = NTKRandomFeatures(D, 8, depth, w_std, b_std)
        ref = fully_connected(depth, Relu(), w_std, b_std).kernel(x)
        np.testing.assert_allclose(fmap.kernel(x), np.asarray(ref.ntk), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(fmap.exact(x)[0], np.asarray(ref.nngp), rtol=1e-8,
                                   atol=1e-10)


def test_maclaurin_truncation_and_large_norms():
    x = _data(20, seed=6)
    g = GaussianMaclaurin(D, 64, gamma=0.5, degree=24)
    np.testing.assert_allclose(g.truncated_kernel(x), g.kernel(x), rtol=1e-9)
    f = GaussianMaclaurin(D, 64, gamma=0.5, degree=12)(x * 300.0)  # no overflow in float32
    assert np.isfinite(f).all()
    z = GaussianMaclaurin(D, 16, gamma=0.5, degree=4)(np.zeros((2, D)))
    np.testing.assert_allclose(z @ z.T, np.ones((2, 2)), rtol=1e-6)


# -------------------------------------------------------------------------- statistics
UNBIASED = [
    ("rff", lambda s: RandomFourierFeatures(D, 9, gamma=0.7, seed=s, dtype="float64"), "kernel"),
    ("poly", lambda s: PolynomialSketch(D, 9, 3, gamma=0.8, coef0=0.5, seed=s,
                                        dtype="float64"), "kernel"),
    ("poly-append", lambda s: PolynomialSketch(D, 9, 3, gamma=0.8, coef0=0.5, seed=s,
                                               expansion="append", dtype="float64"),
     "kernel"),
    ("poly-ctr", lambda s: PolynomialSketch(D, 9, 3, coef0=0.5, method="ctr", seed=s,
                                            dtype="float64"), "kernel"),
    ("poly-ts", lambda s: PolynomialSketch(D, 9, 3, method="tensorsketch", seed=s,
                                           dtype="float64"), "kernel"),
    ("maclaurin", lambda s: GaussianMaclaurin(D, 9, 0.5, 5, seed=s, dtype="float64"),
     "truncated_kernel"),
    ("arccos0", lambda s: ArcCosineFeatures(D, 9, 0, seed=s, dtype="float64"), "kernel"),
    ("arccos2", lambda s: ArcCosineFeatures(D, 9, 2, seed=s, dtype="float64"), "kernel"),
    ("ntk", lambda s: NTKRandomFeatures(D, 9, 1, 1.2, 0.2, seed=s, dtype="float64"), "kernel"),
    ("ntk-nolev", lambda s: NTKRandomFeatures(D, 9, 1, leverage=False, seed=s,
                                              dtype="float64"), "kernel"),
]


@pytest.mark.parametrize("name,make,which", UNBIASED, ids=[u[0] for u in UNBIASED])
def test_unbiased_within_clt_band(name, make, which):
    """Mean over seeds of F Fᵀ within 4 standard errors of the exact kernel, entrywise.

    (Depth-1 NTK features are unbiased; deeper ones are only asymptotically so, since
    each layer's features feed a nonlinear map of the previous estimate.)
    """
    x = _data(4, seed=7)
    x[1] = 0.9 * x[0] + 0.1 * x[1]
    k = getattr(make(0), which)(x)
    est = np.array([(lambda f: f @ f.T)(make(s)(x)) for s in range(400)])
    se = est.std(axis=0) / math.sqrt(len(est))
    assert np.all(np.abs(est.mean(axis=0) - k) <= 4 * se + 1e-10), (est.mean(0), k, se)


@pytest.mark.parametrize("name,make", MAPS, ids=IDS)
def test_error_shrinks_with_width(name, make):
    x = _data(50, seed=8)
    fmap = make(0)
    k = fmap.truncated_kernel(x) if isinstance(fmap, GaussianMaclaurin) else fmap.kernel(x)
    errs = [np.mean([_relerr(make(s, m)(x), k) for s in range(2)]) for m in (128, 2048)]
    assert errs[1] < 0.5 * errs[0], errs


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_ntk_features_reference_tolerance(depth):
    """NT PR #142 level: relative Frobenius error ≤ 0.2 at m = 4096 (n = 4, d = 256)."""
    x = np.random.default_rng(depth).normal(size=(4, 256))
    for b_std in (0.0, 0.1):
        fmap = NTKRandomFeatures(256, 4096, depth, W_std=1.0, b_std=b_std, seed=depth)
        err = _relerr(fmap(x), fmap.kernel(x))
        assert err <= 0.2, (depth, b_std, err)


def test_rff_no_worse_than_sklearn_rbfsampler():
    from sklearn.kernel_approximation import RBFSampler

    x = _data(200, d=16, seed=9, scale=0.3)
    gamma = 0.5
    k = RandomFourierFeatures(16, 8, gamma=gamma).kernel(x)
    for m in (256, 1024):
        ours = np.mean([_relerr(RandomFourierFeatures(16, m, gamma, seed=s)(x), k)
                        for s in range(4)])
        theirs = np.mean([_relerr(RBFSampler(gamma=gamma, n_components=m, random_state=s)
                                  .fit(x).transform(x), k) for s in range(4)])
        assert ours <= 1.05 * theirs, (m, ours, theirs)


@pytest.mark.parametrize("coef0", [0.0, 1.0])
def test_polynomial_no_worse_than_sklearn_polynomialcountsketch(coef0):
    from sklearn.kernel_approximation import PolynomialCountSketch

    rng = np.random.default_rng(10)
    centers = rng.normal(size=(10, 64))
    x = centers[rng.integers(0, 10, 200)] + 0.7 * rng.normal(size=(200, 64))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    k = PolynomialSketch(64, 8, 4, coef0=coef0).kernel(x)
    for m in (256, 1024):
        ours = np.mean([_relerr(PolynomialSketch(64, m, 4, coef0=coef0, seed=s)(x), k)
                        for s in range(4)])
        theirs = np.mean([_relerr(PolynomialCountSketch(gamma=1.0, degree=4, coef0=coef0,
                                                        n_components=m, random_state=s)
                                  .fit(x).transform(x), k) for s in range(4)])
        assert ours <= 1.1 * theirs, (m, ours, theirs)


def test_polynomial_sparse_input_equals_dense():
    x = sp.random(12, D, density=0.4, random_state=0, format="csr")
    for method, leaf, expansion in (("tensorsketch", "srht", "binomial"),
                                    ("polysketch", "countsketch", "binomial"),
                                    ("polysketch", "countsketch", "append")):
        fmap = PolynomialSketch(D, 32, 3, coef0=1.0, method=method, leaf=leaf, seed=1,
                                expansion=expansion)
        np.testing.assert_allclose(fmap(x), fmap(x.toarray()), rtol=1e-5, atol=1e-6)
        assert fmap(x).dtype == np.float32 and fmap(x).shape == (12, 32)
    np.testing.assert_allclose(PolynomialSketch(D, 32, 3)(x), PolynomialSketch(D, 32, 3)(x.toarray()),
                               rtol=1e-5, atol=1e-6)  # srht leaves: densified chunk by chunk


def test_spec_round_trip():
    spec = pytest.importorskip("dsketch.spec")
    for _, make in MAPS:
        fmap = make(3)
        back = spec.from_spec(spec.to_spec(fmap))
        assert back == fmap and hash(back) == hash(fmap)
        np.testing.assert_array_equal(back(_data(3)), fmap(_data(3)))


# ------------------------------------------------------------------------- slow tables
@pytest.mark.slow
@pytest.mark.parametrize("name,make", MAPS, ids=IDS)
def test_error_table_slow(name, make):
    x = _data(500, seed=11)
    fmap = make(0)
    k = fmap.truncated_kernel(x) if isinstance(fmap, GaussianMaclaurin) else fmap.kernel(x)
    errs = [_relerr(make(0, m)(x), k) for m in (512, 2048, 8192)]
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 0.4 * errs[0], errs


@pytest.mark.gpu
def test_gpu_matches_cpu():
    try:
        import cupy as cp

        cp.cuda.runtime.getDeviceCount()
    except Exception:
        pytest.skip("needs CuPy and a CUDA device")
    x = _data(9, seed=12)
    for _, make in MAPS:
        for dtype, tol in (("float64", 1e-9), ("float32", 1e-4)):
            fmap = make(2, dtype=dtype)
            cpu = fmap(x)
            gpu = fmap(cp.asarray(x))
            assert gpu.dtype == np.dtype(dtype)
            np.testing.assert_allclose(cp.asnumpy(gpu), cpu, rtol=tol,
                                       atol=tol * np.abs(cpu).max())
            np.testing.assert_allclose(cp.asnumpy(fmap.kernel(cp.asarray(x))), fmap.kernel(x),
                                       rtol=1e-10)
