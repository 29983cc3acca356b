"""NeuralNystroem / NystroemMap: Nyström features of exact network kernels.

Checked against the exact kernel (error shrinking as landmarks grow, exact on the
landmarks), for chunk invariance, seeds, leverage-score landmarks, dask input on a real
2-process cluster and a Zarr store, the graph carrying the landmarks once, model files, and
bad input.
"""

from __future__ import annotations

import numpy as np
import pytest

import dask.array as da

from dsketch import NeuralNystroem, SketchRidge, load_model, save_model
from dsketch.backend import InvalidInputError
from dsketch.nets import Erf, Relu, fully_connected
from dsketch.nets.nystroem import (NystroemMap, inverse_sqrt, ridge_leverage_scores,
                                   sample_landmarks)

NET = fully_connected(2, Relu(), W_std=1.4, b_std=0.1)


def _data(n=400, d=12, seed=0):
    rng = np.random.default_rng(seed)
    # rows anywhere in R^d: norms spread over two orders of magnitude
    return rng.normal(size=(n, d)) * rng.uniform(0.1, 10.0, size=(n, 1))


def _rel(F, K):
    return np.linalg.norm(F @ F.T - K) / np.linalg.norm(K)


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
@pytest.mark.parametrize("net", [NET, fully_connected(2, Erf(), W_std=1.2, b_std=0.2)],
                         ids=["relu", "erf"])
def test_error_shrinks_with_landmarks(kernel, net):
    # erf saturates on large rows (a nearly diagonal, full-rank kernel): unit-scale rows there
    X = _data() if net is NET else np.random.default_rng(0).normal(size=(400, 12)) * 0.5
    K = net.kernel(X, get=kernel)
    errs = [_rel(NeuralNystroem(net=net, kernel=kernel, n_components=m, random_state=0,
                                dtype="float64").fit_transform(X), K) for m in (25, 100, 300)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.1, errs


def test_exact_on_the_landmarks_and_on_all_rows():
    X = _data(120)
    nys = NeuralNystroem(net=NET, n_components=40, random_state=3, dtype="float64").fit(X)
    L = nys.components_
    np.testing.assert_array_equal(L, X[nys.component_indices_])
    FL = nys.transform(L)
    KL = NET.kernel(L, get="ntk")
    np.testing.assert_allclose(FL @ FL.T, KL, rtol=1e-7, atol=1e-9 * np.abs(KL).max())
    full = NeuralNystroem(net=NET, n_components=120, random_state=0, dtype="float64").fit(X)
    F = full.transform(X)
    assert _rel(F, NET.kernel(X, get="ntk")) < 1e-7


def test_chunk_invariance_and_seeds():
    X = _data(300)
    nys = NeuralNystroem(net=NET, n_components=64, random_state=7).fit(X)
    whole = nys.transform(X)
    halves = np.vstack([nys.transform(X[:131]), nys.transform(X[131:])])
    rows = np.vstack([nys.transform(X[i:i + 1]) for i in range(0, 300, 37)])
    np.testing.assert_allclose(halves, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rows, whole[::37], rtol=1e-5, atol=1e-6)
    assert whole.dtype == np.float32 and whole.shape == (300, 64)
    same = NeuralNystroem(net=NET, n_components=64, random_state=7).fit(X)
    np.testing.assert_array_equal(same.component_indices_, nys.component_indices_)
    assert same.feature_map_ == nys.feature_map_ and hash(same.feature_map_) == hash(nys.feature_map_)
    other = NeuralNystroem(net=NET, n_components=64, random_state=8).fit(X)
    assert not np.array_equal(other.component_indices_, nys.component_indices_)
    assert other.feature_map_ != nys.feature_map_


def test_leverage_scores_and_sampling():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(200, 10))
    lam = 3.0
    expected = np.einsum("ij,jk,ik->i", Z, np.linalg.inv(Z.T @ Z + lam * np.eye(10)), Z)
    np.testing.assert_allclose(ridge_leverage_scores(Z, lam), expected, rtol=1e-10)
    scores = np.ones(200)
    scores[:10] = 1e6  # heavy rows are drawn far more often than uniformly
    hits = sum(np.sum(sample_landmarks(200, 20, s, scores) < 10) for s in range(20))
    assert hits > 20 * 20 * 10 / 200 * 3
    idx = sample_landmarks(200, 50, 1)
    assert len(set(idx.tolist())) == 50 and np.all(np.diff(idx) > 0)


def test_leverage_landmarks_at_least_as_good_on_clustered_rows():
    rng = np.random.default_rng(1)
    # most rows in one tight cluster, a few rows spread out: uniform landmarks miss them
    X = np.vstack([rng.normal(size=(360, 8)) * 0.05 + 1.0, rng.normal(size=(40, 8)) * 3.0])
    K = NET.kernel(X, get="ntk")
    err = {how: np.mean([_rel(NeuralNystroem(net=NET, n_components=30, landmarks=how,
                                             random_state=s, dtype="float64").fit_transform(X), K)
                         for s in range(3)]) for how in ("uniform", "leverage")}
    assert err["leverage"] < err["uniform"], err


def test_inverse_sqrt_drops_null_directions():
    A = np.random.default_rng(0).normal(size=(6, 3))
    K = A @ A.T  # rank 3
    T = inverse_sqrt(K)
    assert np.all(np.isfinite(T))
    np.testing.assert_allclose(K @ T @ T @ K, K, atol=1e-9)  # K T² K = K K⁺ K = K
    with pytest.raises(ValueError, match="not positive"):
        inverse_sqrt(np.zeros((3, 3)))


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def test_dask_and_store_equal_numpy(client, tmp_path):
    from dsketch import engine

    X = _data(600)
    y = np.sin(X[:, 0]) + 0.1 * X[:, 1]
    ref = NeuralNystroem(net=NET, n_components=80, landmarks="leverage", random_state=5).fit(X)
    Xd = da.from_array(X, chunks=150)
    nys = NeuralNystroem(net=NET, n_components=80, landmarks="leverage", random_state=5).fit(Xd)
    np.testing.assert_array_equal(nys.component_indices_, ref.component_indices_)
    Phi = nys.transform(Xd)
    keys = [k for k in dict(Phi.__dask_graph__()) if str(k).startswith("dsketch-map-nystroem")]
    assert len(keys) == 1  # the landmarks travel once, not once per task
    np.testing.assert_allclose(Phi.compute(), ref.transform(X), rtol=1e-5, atol=1e-6)
    url = engine.ingest(X, str(tmp_path / "train.zarr"), y=y, chunk_rows=200)
    model = SketchRidge(sketch=NeuralNystroem(net=NET, n_components=80, random_state=5),
                        alpha=[1e-3, 1e-1]).fit(url)
    mem = SketchRidge(sketch=NeuralNystroem(net=NET, n_components=80, random_state=5),
                      alpha=[1e-3, 1e-1]).fit(X, y)
    assert model.alpha_ == mem.alpha_
    np.testing.assert_allclose(model.coef_, mem.coef_, rtol=1e-4, atol=1e-6)


def test_model_file_round_trip(tmp_path):
    X = _data(200)
    y = X[:, 0] ** 2
    model = SketchRidge(sketch=NeuralNystroem(net=NET, n_components=50, random_state=0),
                        alpha=0.1).fit(X, y)
    path = save_model(model, tmp_path / "model")
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.sketch_.feature_map_ == model.sketch_.feature_map_


def test_bad_input():
    X = _data(30)
    with pytest.raises(ValueError, match="n_components=40 landmarks"):
        NeuralNystroem(net=NET, n_components=40).fit(X)
    with pytest.raises(ValueError, match="kernel"):
        NeuralNystroem(net=NET, kernel="cntk").fit(X)
    nys = NeuralNystroem(net=NET, n_components=10, random_state=0).fit(X)
    with pytest.raises(ValueError, match="features"):
        nys.transform(X[:, :5])
    with pytest.raises(ValueError, match="normalization"):
        NystroemMap(NET, X[:10], np.eye(9))
    with pytest.raises(ValueError, match="finite"):
        NystroemMap(NET, np.full((2, 12), np.nan), np.eye(2))


def test_bad_input_is_invalid_input_and_overflow_is_named():
    X = _data(30)
    with pytest.raises(InvalidInputError, match="normalization"):
        NystroemMap(NET, X[:10], np.eye(9))
    nys = NeuralNystroem(net=NET, n_components=10, random_state=0).fit(X)
    with pytest.raises(InvalidInputError, match="landmarks have shape"):
        nys.feature_map_(X[:, :5])
    # finite float64 normalization whose product exceeds float32: an overflow, named as such
    huge = NystroemMap(NET, X[:10], np.eye(10) * 1e300, dtype="float32")
    with pytest.raises(InvalidInputError, match="overflow: the Nyström features"):
        huge(X)
