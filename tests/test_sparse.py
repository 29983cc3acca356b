"""Sparse input through every sketch, estimator, the engine and the CLI (issue 11).

Sparse rows must give the features of their dense copy (same seed), stay chunk-invariant,
approximate the exact kernel like dense rows do, run through Zarr stores on a real
2-process LocalCluster and the ``dsketch`` command, and be refused clearly by image nets.
"""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner
from sklearn.base import clone
from sklearn.datasets import dump_svmlight_file

from dsketch import engine
from dsketch.backend import InvalidInputError
from dsketch.cli import main
from dsketch.estimators import (ArcCosineFeatures, CNTKSketch, NeuralNystroem, NNGPSketch, NTKRandomFeatures,
                                NTKSketch, PolynomialSketch, RandomFourierFeatures, SketchRidge)
from dsketch.model_io import load_model
from dsketch.nets import Dense, Relu, fully_connected, myrtle, serial
from dsketch.sketch import kernels
from dsketch.sketch.linear import REDUCE_ABOVE, reduced_width

pytestmark = pytest.mark.timeout(600)

NARROW, WIDE = 300, 1 << 15  # WIDE > REDUCE_ABOVE: rows enter through a CountSketch


def power_law_rows(n, d, *, pool=300, nnz=(10, 60), seed=0, scale=None):
    """CSR rows with power-law column popularity (rows overlap: the kernel is not diagonal).

    Values are scaled so that the input covariance ⟨x, y⟩/d is O(1) whatever ``d``.
    """
    g = np.random.default_rng(seed)
    cols = g.choice(d, pool, replace=False)
    p = 1.0 / np.arange(1, pool + 1)
    p /= p.sum()
    idx, vals, ptr = [], [], [0]
    for _ in range(n):
        c = np.unique(g.choice(cols, int(g.integers(*nnz)), p=p))
        idx.append(c)
        vals.append(g.random(len(c)) + 0.5)
        ptr.append(ptr[-1] + len(c))
    X = sp.csr_matrix((np.concatenate(vals), np.concatenate(idx), ptr), shape=(n, d))
    return X * (np.sqrt(d / 30.0) if scale is None else scale)


def _rel(F, K):
    F = np.asarray(F, dtype=np.float64)
    return float(np.linalg.norm(F @ F.T - K) / np.linalg.norm(K))


TRANSFORMERS = [
    NTKSketch(n_components=64, random_state=0),
    NTKSketch(n_components=64, random_state=0, relu_method="random"),
    NNGPSketch(net=fully_connected(1, Relu(), b_std=0.2), n_components=64, random_state=1),
    NTKRandomFeatures(n_components=64, b_std=0.1, random_state=2),
    PolynomialSketch(n_components=64, degree=3, coef0=1.0, random_state=3),
    PolynomialSketch(n_components=64, degree=2, method="ctr", random_state=3),
    PolynomialSketch(n_components=64, degree=2, leaf="countsketch", random_state=3),
    PolynomialSketch(n_components=64, degree=2, method="tensorsketch", random_state=3),
    RandomFourierFeatures(n_components=64, gamma=0.05, random_state=4),
    ArcCosineFeatures(n_components=64, order=1, random_state=5),
    NeuralNystroem(n_components=16, random_state=6),
]


# ============================================================ same features dense / sparse
@pytest.mark.parametrize("width", [NARROW, WIDE])
@pytest.mark.parametrize("est", TRANSFORMERS, ids=lambda e: repr(e)[:60])
def test_every_transformer_gives_sparse_rows_their_dense_features(est, width):
    X = power_law_rows(40, width, seed=1)
    Xd = X.toarray()
    fitted_sparse = clone(est).fit(X.tocsc())  # CSC converted to CSR
    fitted_dense = clone(est).fit(Xd)
    ref = fitted_dense.transform(Xd)
    for F in (fitted_sparse.transform(X), fitted_sparse.transform(Xd), fitted_dense.transform(X)):
        assert F.shape == (40, est.n_components) and F.dtype == np.float32
        np.testing.assert_allclose(F, ref, rtol=2e-5, atol=2e-5 * np.abs(ref).max())


@pytest.mark.parametrize("width", [NARROW, WIDE])
def test_ridge_fitted_on_sparse_predicts_dense_and_vice_versa(width):
    X = power_law_rows(120, width, seed=2)
    y = np.asarray(X[:, X.indices[:5]].sum(axis=1)).ravel()
    sparse = SketchRidge(sketch=NTKSketch(n_components=128, random_state=0), alpha=0.1).fit(X, y)
    dense = SketchRidge(sketch=NTKSketch(n_components=128, random_state=0), alpha=0.1).fit(X.toarray(), y)
    np.testing.assert_allclose(sparse.predict(X.toarray()), dense.predict(X), rtol=1e-4,
                               atol=1e-4 * np.abs(y).max())


# ==================================================================== chunk invariance
@pytest.mark.parametrize("width", [NARROW, WIDE])
def test_features_chunk_invariant_over_sparse_row_chunks(width):
    X = power_law_rows(90, width, seed=3)
    maps = [fully_connected(2, Relu(), b_std=0.1).sketch((width,), 64, seed=7).output("ntk"),
            kernels.RandomFourierFeatures(width, 64, gamma=0.05, seed=7),
            kernels.NTKRandomFeatures(width, 64, seed=7),
            kernels.PolynomialSketch(width, 64, 2, coef0=1.0, seed=7)]
    for fmap in maps:
        whole = np.asarray(fmap(X))
        parts = np.concatenate([fmap(X[i:i + 17]) for i in range(0, 90, 17)])
        np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-6 * np.abs(whole).max())
        # dask array of sparse blocks (the engine's sparse stores): the same rows
        blocks = da.concatenate([da.from_array(X[i:i + 30], chunks=(30, width), asarray=False)
                                 for i in range(0, 90, 30)])
        lazy = engine.embed(blocks, fmap).compute()
        np.testing.assert_allclose(lazy, whole, rtol=1e-5, atol=1e-6 * np.abs(whole).max())


# ========================================================================= accuracy
def test_sparse_sketch_error_against_exact_kernel_matches_dense_narrow_rows():
    """Wide sparse rows (CountSketch first) approximate the exact NTK as well as narrow ones."""
    net = fully_connected(2, Relu(), W_std=np.sqrt(2.0), b_std=0.1)
    errs = {}
    for width in (NARROW, WIDE):
        X = power_law_rows(150, width, seed=4)
        K = net.kernel(X, get="ntk")
        np.testing.assert_allclose(K, net.kernel(X.toarray(), get="ntk"), rtol=1e-10, atol=1e-12)
        errs[width] = np.mean([_rel(net.sketch((width,), 1024, seed=s)(X).ntk, K) for s in range(2)])
    assert errs[NARROW] < 0.2 and errs[WIDE] < 1.25 * errs[NARROW], errs
    assert reduced_width(WIDE, 1024) == 4096 and reduced_width(REDUCE_ABOVE, 1024) is None


@pytest.mark.parametrize("cls,kwargs,bound", [
    (kernels.RandomFourierFeatures, dict(gamma=0.02), 0.6),
    (kernels.ArcCosineFeatures, {}, 0.15),
    (kernels.NTKRandomFeatures, {}, 0.2),
    (kernels.PolynomialSketch, dict(degree=2, gamma=0.01, coef0=1.0), 0.2),
])
def test_kernel_maps_on_wide_sparse_rows_approximate_their_kernel(cls, kwargs, bound):
    X = power_law_rows(150, WIDE, seed=5, scale=3.0)
    fmap = cls(input_dim=WIDE, n_features=1024, seed=0, **kwargs)
    assert _rel(fmap(X), fmap.kernel(X)) < bound


def test_nystroem_and_exact_kernel_take_sparse_rows():
    X = power_law_rows(80, WIDE, seed=6)
    net = serial(Dense(1.5, 0.1), Relu(), Dense(1.0))
    K = net.kernel(X[:30], X[30:], get="nngp")
    np.testing.assert_allclose(K, net.kernel(X[:30].toarray(), X[30:].toarray(), get="nngp"), rtol=1e-10)
    np.testing.assert_allclose(net.kernel(X[:30], X[30:].toarray(), get="nngp"), K, rtol=1e-10)
    np.testing.assert_allclose(net.kernel(X, diagonal=True, get="ntk"),
                               np.diag(net.kernel(X.toarray(), get="ntk")), rtol=1e-10)
    nys = NeuralNystroem(net=net, n_components=40, random_state=0).fit(X)
    assert sp.issparse(nys.components_)  # never an m × d dense array for sparse data
    F = nys.transform(X).astype(np.float64)
    np.testing.assert_allclose((F @ F.T)[np.ix_(nys.component_indices_, nys.component_indices_)],
                               net.kernel(nys.components_, get="ntk"), rtol=1e-3, atol=1e-4)


def test_huge_width_sparse_rows_never_densified():
    """d = 2²²: a dense copy of these 64 rows would be 1 GiB; features come from O(nnz) work."""
    d = 1 << 22
    X = power_law_rows(64, d, seed=7, scale=1.0)
    for est in (NTKSketch(n_components=64, random_state=0),
                RandomFourierFeatures(n_components=64, gamma=0.1, random_state=0),
                PolynomialSketch(n_components=64, random_state=0)):
        F = est.fit_transform(X)
        assert F.shape == (64, 64) and np.all(np.isfinite(F))
        np.testing.assert_allclose(F[:8], est.transform(X[:8]), rtol=1e-5, atol=1e-6)


# ============================================================================ errors
def test_image_nets_refuse_sparse_rows_naming_the_layer():
    X = sp.random(4, 8 * 8 * 3, density=0.1, format="csr", random_state=0)
    with pytest.raises(InvalidInputError, match=r"layer 0 \(Conv\) takes images"):
        CNTKSketch(image_shape=(8, 8, 3), n_components=32).fit(X)
    with pytest.raises(InvalidInputError, match=r"layer 0 \(Conv\) takes images"):
        CNTKSketch(n_components=32).fit(X)
    with pytest.raises(InvalidInputError, match=r"layer 0 \(Conv\) takes images"):
        myrtle(5).sketch((8, 8, 3), 32)(X)
    with pytest.raises(ValueError, match=r"Conv"):
        myrtle(5).kernel(X)


def test_bad_sparse_rows_named():
    X = sp.random(6, 50, density=0.3, format="csr", random_state=0)
    fmap = fully_connected(1, Relu()).sketch((40,), 32)
    with pytest.raises(InvalidInputError, match="input width=40"):
        fmap(X)
    bad = X.copy()
    bad.data[bad.indptr[3]] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf.*row 3"):
        fully_connected(1, Relu()).sketch((50,), 32)(bad)
    with pytest.raises(ValueError, match="NaN or Inf.*row 3"):
        kernels.RandomFourierFeatures(50, 16)(bad)


# ==================================================================== engine + cluster
@pytest.fixture(scope="module")
def address():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit="2GiB") as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def svm_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("svm")
    X = power_law_rows(500, WIDE, seed=8, scale=1.0).astype(np.float32)
    y = np.asarray(X[:, np.unique(X.indices)[:40]].sum(axis=1)).ravel()
    dump_svmlight_file(X[:400], y[:400], str(tmp / "train.svm"))
    dump_svmlight_file(X[400:], y[400:], str(tmp / "test.svm"))
    return tmp, X, y


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_sparse_store_fit_on_cluster_equals_in_memory_fit(address, svm_files, tmp_path, solver):
    from distributed import Client

    tmp, X, y = svm_files
    url = str(tmp_path / "train.zarr")
    engine.ingest(tmp / "train.svm", url, chunk_rows=96, n_features=WIDE, zero_based=True)
    ds = engine.open_dataset(url, y="y")
    assert ds.sparse and ds.X.shape == (400, WIDE) and len(ds.X.chunks[0]) == 5
    with Client(address):
        for sk in (NTKSketch(n_components=96, random_state=0),
                   RandomFourierFeatures(n_components=96, gamma=0.5, random_state=0)):
            mem = SketchRidge(sketch=sk, alpha=0.1, solver=solver, tol=1e-8).fit(X[:400], y[:400])
            dist = SketchRidge(sketch=sk, alpha=0.1, solver=solver, tol=1e-8).fit(url)
            assert dist.fit_report_["solver"] == solver
            np.testing.assert_allclose(dist.coef_, mem.coef_, rtol=1e-4, atol=1e-4 * np.abs(mem.coef_).max())
            pred = np.asarray(dist.predict(url).compute())
            np.testing.assert_allclose(pred, mem.predict(X[:400]), rtol=1e-4, atol=1e-4 * np.abs(y).max())


def test_cli_svmlight_ingest_fit_predict_round_trip(address, svm_files, tmp_path):
    tmp, X, y = svm_files

    def run(*args):
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return result

    info = json.loads(run("ingest", tmp / "train.svm", tmp_path / "train.zarr", "--n-columns",
                          WIDE, "--index-base", 0, "--json").stdout)
    assert info["sparse"] and info["row_shape"] == [WIDE] and info["n_rows"] == 400
    run("ingest", tmp / "test.svm", tmp_path / "test.zarr", "--n-columns", WIDE, "--index-base", 0)
    run("fit", "--data", tmp_path / "train.zarr", "--model", tmp_path / "model", "--kernel", "ntk",
        "--n-components", 128, "--alpha", "0.1", "--scheduler", address)
    out = run("predict", "--model", tmp_path / "model", "--data", tmp_path / "test.zarr", "--out",
              tmp_path / "pred.zarr", "--scheduler", address)
    assert "wrote predictions" in out.stdout
    import zarr

    pred = zarr.open_group(str(tmp_path / "pred.zarr"), mode="r")["predictions"][:]
    model = load_model(tmp_path / "model")
    np.testing.assert_allclose(pred, model.predict(X[400:]), rtol=1e-4, atol=1e-4 * np.abs(y).max())
    np.testing.assert_allclose(pred, model.predict(X[400:].toarray()), rtol=1e-4, atol=1e-4 * np.abs(y).max())


def test_model_with_sparse_landmarks_saves_and_loads(tmp_path):
    from dsketch.model_io import save_model

    X = power_law_rows(60, WIDE, seed=9)
    y = np.asarray(X.sum(axis=1)).ravel()
    model = SketchRidge(sketch=NeuralNystroem(n_components=20, random_state=0), alpha=0.1).fit(X, y)
    save_model(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert sp.issparse(loaded.sketch_.components_)
    np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-6, atol=1e-9)


def test_gaussian_projection_takes_sparse_rows_and_reduction_is_seeded():
    from dsketch.sketch import GaussianProjection
    from dsketch.sketch.linear import first_layer_rows, input_reduction

    X = power_law_rows(20, WIDE, seed=10)
    g = GaussianProjection(NARROW, 32, seed=1)
    Xn = X[:, :NARROW]
    np.testing.assert_allclose(g(Xn), g(Xn.toarray()), rtol=1e-10, atol=1e-12)
    red = input_reduction(WIDE, 64, seed=3, path=("t",))
    assert red.d_out == 1024 and input_reduction(NARROW, 64, 3, ("t",)) is None
    np.testing.assert_allclose(first_layer_rows(X, red), first_layer_rows(X.toarray(), red), rtol=1e-10)
    assert not np.allclose(first_layer_rows(X, red), first_layer_rows(X, input_reduction(WIDE, 64, 4, ("t",))))


def test_svmlight_index_base_is_honoured(tmp_path):
    X = sp.csr_matrix(np.array([[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 3.0, 0.0]]))
    dump_svmlight_file(X, np.array([1.0, 2.0]), str(tmp_path / "a.svm"))  # 0-based, no index 0
    engine.ingest(tmp_path / "a.svm", str(tmp_path / "a.zarr"), zero_based=True, n_features=6)
    stored = engine.open_dataset(str(tmp_path / "a.zarr")).X.compute()
    np.testing.assert_array_equal(stored.toarray()[:, :4], X.toarray())
    assert stored.shape == (2, 6)
