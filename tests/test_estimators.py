"""scikit-learn estimators: contracts, conformance, regularization path, posterior, dask input.

References are independent of the code under test: the feature maps called directly
(``net.sketch(...)``), brute-force k-fold ridge fits with ``scipy.linalg.solve``, the GP
posterior written in function space, and scikit-learn's own ``check_estimator``.
"""

from __future__ import annotations


import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from dsketch import engine
from dsketch.estimators import (
    ArcCosineFeatures, CNTKSketch, NNGPSketch, NTKRandomFeatures, NTKSketch, PolynomialSketch,
    RandomFourierFeatures, SketchRidge, SketchRidgeClassifier,
)
from dsketch.nets import Conv, Dense, Erf, GlobalAvgPool, Relu, fully_connected, serial


def _data(n=120, d=5, seed=0, k=None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w = rng.normal(size=(d,) if k is None else (d, k))
    y = np.sin(X @ w) + 0.05 * rng.normal(size=(n,) if k is None else (n, k))
    return X, y


# ================================================================ scikit-learn conformance
SMALL = 64
CHECKED = [
    NTKSketch(n_components=SMALL, random_state=0),
    NNGPSketch(net=fully_connected(1, Erf(), 1.5, 0.2), n_components=SMALL, random_state=0),
    NTKRandomFeatures(n_components=SMALL, random_state=0),
    PolynomialSketch(n_components=SMALL, random_state=0),
    PolynomialSketch(n_components=SMALL, method="tensorsketch", random_state=0),  # sparse input
    RandomFourierFeatures(n_components=SMALL, random_state=0),
    ArcCosineFeatures(n_components=SMALL, random_state=0),
    SketchRidge(sketch=NTKSketch(n_components=128, random_state=0), alpha=0.01),
    SketchRidge(sketch=RandomFourierFeatures(n_components=128, gamma=0.1, random_state=0), alpha=[1e-3, 1e-1, 10.0], cv=3),
    SketchRidgeClassifier(sketch=NTKSketch(n_components=128, random_state=0), alpha=0.1),
    RandomFourierFeatures(n_components=SMALL, random_state=0, dtype="float64"),
    SketchRidge(sketch=NTKSketch(n_components=128, random_state=0, dtype="float64"), alpha=0.01),
    SketchRidgeClassifier(sketch=NTKSketch(n_components=128, random_state=0, dtype="float64"), alpha=0.1),
]

# Why: these checks force n_components=1, but a sketch through a nonlinearity needs at least
# 2 features (activation sketches and NTKRandomFeatures refuse 1 with a ValueError).
_MIN_TWO = "check forces n_components=1; nonlinear sketches need >= 2 features"
_N_COMPONENTS_1 = ("check_dont_overwrite_parameters", "check_methods_sample_order_invariance",
                   "check_methods_subset_invariance", "check_fit2d_1sample", "check_fit2d_1feature",
                   "check_fit2d_predict1d")
#: Checks that fail by design, per estimator, with the reason.
EXPECTED_FAILED: dict[str, dict[str, str]] = {
    "NTKSketch": {"check_methods_sample_order_invariance": _MIN_TWO,
                  "check_methods_subset_invariance": _MIN_TWO},
    "NNGPSketch": {"check_methods_sample_order_invariance": _MIN_TWO,
                   "check_methods_subset_invariance": _MIN_TWO},
    "NTKRandomFeatures": {name: _MIN_TWO for name in _N_COMPONENTS_1},
}


def _expected_failed(est) -> dict[str, str]:
    sketch = getattr(est, "sketch", None) or est
    if getattr(sketch, "dtype", "float32") == "float64":
        return {}
    return EXPECTED_FAILED.get(type(est).__name__, {})


@parametrize_with_checks(CHECKED, expected_failed_checks=_expected_failed)
def test_sklearn_conformance(estimator, check):
    check(estimator)


# ============================================================================ contracts
@pytest.mark.parametrize("cls,which", [(NTKSketch, "ntk"), (NNGPSketch, "nngp")])
def test_transform_equals_feature_map_exactly(cls, which):
    X, _ = _data(40, 6)
    net = fully_connected(2, Relu(), W_std=1.3, b_std=0.2)
    got = cls(net=net, n_components=96, random_state=7).fit_transform(X)
    want = getattr(net.sketch(X.shape[1:], 96, seed=7)(X), which)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.asarray(want))


def test_cntk_images_and_flat_rows_agree():
    rng = np.random.default_rng(1)
    imgs = rng.normal(size=(6, 6, 6, 2))
    net = serial(Conv((3, 3), W_std=1.4, padding="SAME"), Relu(), GlobalAvgPool(), Dense(1.0))
    want = net.sketch(imgs.shape[1:], 32, seed=3)(imgs).ntk
    got4 = CNTKSketch(net=net, n_components=32, random_state=3).fit_transform(imgs)
    flat = CNTKSketch(net=net, image_shape=(6, 6, 2), n_components=32, random_state=3)
    got2 = flat.fit_transform(imgs.reshape(6, -1))
    np.testing.assert_array_equal(got4, np.asarray(want))
    np.testing.assert_array_equal(got2, got4)
    with pytest.raises(ValueError, match="image_shape"):
        CNTKSketch(net=net, n_components=32).fit(imgs.reshape(6, -1))


def test_cntk_hidden_components_are_the_nets_hidden_features(tmp_path):
    """``hidden_components``/``hidden_degree`` are ``net.sketch``'s ``hidden_features`` /
    ``hidden_degree``, and a saved model keeps them."""
    from dsketch import SketchRidgeClassifier, load_model, save_model
    from dsketch.nets import myrtle

    rng = np.random.default_rng(2)
    imgs = rng.normal(size=(12, 8, 8, 1))
    y = np.arange(12) % 2
    sk = CNTKSketch(n_components=128, hidden_components=32, hidden_degree=2, random_state=1)
    want = myrtle(5).sketch(imgs.shape[1:], 128, seed=1, hidden_features=32, hidden_degree=2)(imgs).ntk
    np.testing.assert_array_equal(sk.fit_transform(imgs), np.asarray(want))
    clf = SketchRidgeClassifier(sketch=clone(sk), alpha=1e-2, cv=None).fit(imgs, y)
    save_model(clf, tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert back.sketch_.hidden_components == 32 and back.sketch_.hidden_degree == 2
    np.testing.assert_array_equal(back.predict(imgs), clf.predict(imgs))
    with pytest.raises(ValueError, match="hidden_components"):
        CNTKSketch(hidden_components=1).fit(imgs)
    # the defaults: hidden width 2048 capped at n_components, degree 2; None: uniform
    got = CNTKSketch(n_components=64, random_state=1).fit_transform(imgs)
    want = myrtle(5).sketch(imgs.shape[1:], 64, seed=1, hidden_features=64, hidden_degree=2)(imgs).ntk
    np.testing.assert_array_equal(got, np.asarray(want))
    got = CNTKSketch(n_components=64, random_state=1, hidden_components=None,
                     hidden_degree=None).fit_transform(imgs)
    np.testing.assert_array_equal(got, np.asarray(myrtle(5).sketch(imgs.shape[1:], 64, seed=1)(imgs).ntk))


def test_random_state_semantics():
    X, _ = _data(10, 3)
    a = NTKSketch(n_components=32, random_state=5).fit(X)
    assert a.seed_ == 5 and a.feature_map_.fmap.seed == 5
    rs = np.random.RandomState(0)
    b = NTKSketch(n_components=32, random_state=rs).fit(X)
    assert b.seed_ == np.random.RandomState(0).randint(np.iinfo(np.int32).max)
    c1 = NTKSketch(n_components=32, random_state=None).fit(X)
    c2 = NTKSketch(n_components=32, random_state=None).fit(X)
    assert c1.seed_ != c2.seed_  # fresh entropy, recorded for reproducibility
    np.testing.assert_array_equal(
        c1.transform(X), NTKSketch(n_components=32, random_state=c1.seed_).fit_transform(X))


def test_sketch_approximates_exact_kernel():
    X, _ = _data(60, 8)
    t = NTKSketch(n_components=4096, random_state=0).fit(X)
    F = t.transform(X).astype(np.float64)
    K = t.exact_kernel(X)
    assert np.linalg.norm(F @ F.T - K) / np.linalg.norm(K) < 0.1


def test_feature_names_and_set_output():
    X, _ = _data(10, 3)
    t = RandomFourierFeatures(n_components=8, random_state=0).fit(X)
    names = t.get_feature_names_out()
    assert list(names[:2]) == ["randomfourierfeatures0", "randomfourierfeatures1"] and len(names) == 8


def test_sparse_input_used():
    X = scipy.sparse.random(40, 5, density=0.3, format="csr", random_state=0)
    for sk in (PolynomialSketch(n_components=32, method="tensorsketch", random_state=0),
               PolynomialSketch(n_components=32, leaf="countsketch", random_state=0),
               NTKSketch(n_components=32, random_state=0),
               RandomFourierFeatures(n_components=32, random_state=0)):
        np.testing.assert_allclose(clone(sk).fit_transform(X), clone(sk).fit_transform(X.toarray()),
                                   rtol=1e-5, atol=1e-6)
        est = SketchRidge(sketch=sk, alpha=0.1).fit(X, X.toarray()[:, 0])
        np.testing.assert_allclose(est.predict(X), est.predict(X.toarray()), rtol=1e-5, atol=1e-6)


def test_bad_parameters_named():
    X, y = _data(20, 3)
    with pytest.raises(ValueError, match="n_components"):
        NTKSketch(n_components=0).fit(X)
    with pytest.raises(ValueError, match="alpha"):
        SketchRidge(alpha=[0.1, -1.0]).fit(X, y)
    with pytest.raises(ValueError, match="solver='cg'"):
        SketchRidge(sketch=RandomFourierFeatures(n_components=8), alpha=[0.1, 1.0], solver="cg").fit(X, y)


# =================================================================== regularization path
def _brute_force_cv(Phi, Y, ids, alphas):
    errs = np.zeros((ids.max() + 1, len(alphas)))
    for k in range(ids.max() + 1):
        tr, va = ids != k, ids == k
        for j, a in enumerate(alphas):
            W = scipy.linalg.solve(Phi[tr].T @ Phi[tr] + a * np.eye(Phi.shape[1]), Phi[tr].T @ Y[tr])
            errs[k, j] = np.mean((Y[va] - Phi[va] @ W) ** 2)
    return errs


def test_cv_path_matches_brute_force_refits():
    X, y = _data(150, 4, k=2)
    alphas = [1e-3, 1e-2, 0.3, 10.0]
    est = SketchRidge(sketch=RandomFourierFeatures(n_components=40, gamma=0.3, random_state=2),
                      alpha=alphas, cv=4).fit(X, y)
    Phi = est.sketch_.transform(X).astype(np.float64)
    ids = engine.fold_ids(len(X), 4, est.sketch_.seed_)
    errs = _brute_force_cv(Phi, y, ids, alphas)
    for k in range(4):
        np.testing.assert_allclose(est.cv_results_[f"split{k}_test_mse"], errs[k], rtol=1e-7)
    sizes = np.bincount(ids, minlength=4)
    best = alphas[int(np.argmin((errs * sizes[:, None]).sum(0)))]
    assert est.alpha_ == best
    W = scipy.linalg.solve(Phi.T @ Phi + best * np.eye(40), Phi.T @ y)
    np.testing.assert_allclose(est.coef_, W, rtol=1e-8, atol=1e-10)
    assert est.coef_.shape == (40, 2)


def test_gcv_when_cv_is_none():
    X, y = _data(100, 3)
    alphas = [1e-2, 1.0, 100.0]
    est = SketchRidge(sketch=RandomFourierFeatures(n_components=30, random_state=0), alpha=alphas,
                      cv=None).fit(X, y)
    Phi = est.sketch_.transform(X).astype(np.float64)
    for a, score in zip(alphas, est.cv_results_["gcv_mse"]):
        H = Phi @ np.linalg.solve(Phi.T @ Phi + a * np.eye(30), Phi.T)
        r = y - H @ y
        np.testing.assert_allclose(score, len(y) * (r @ r) / (len(y) - np.trace(H)) ** 2, rtol=1e-8)


def test_solvers_agree():
    X, y = _data(200, 5)
    sk = RandomFourierFeatures(n_components=50, random_state=1)
    direct = SketchRidge(sketch=sk, alpha=0.1, solver="direct").fit(X, y)
    cg = SketchRidge(sketch=sk, alpha=0.1, solver="cg", tol=1e-10, max_iter=500).fit(X, y)
    np.testing.assert_allclose(cg.coef_, direct.coef_, rtol=1e-6, atol=1e-8)
    assert cg.fit_report_["solver"] == "cg" and cg.fit_report_["residuals"][-1] < 1e-9


# ======================================================================= GP posterior std
def test_posterior_std_equals_function_space_gp():
    X, y = _data(80, 4)
    Xt, _ = _data(15, 4, seed=1)
    alpha = 0.3
    est = SketchRidge(sketch=NNGPSketch(n_components=48, random_state=0), alpha=alpha,
                      posterior_std=True).fit(X, y)
    mean, std = est.predict(Xt, return_std=True)
    P = est.sketch_.transform(X).astype(np.float64)
    Q = est.sketch_.transform(Xt).astype(np.float64)
    K, Ks, Kss = P @ P.T, Q @ P.T, np.sum(Q * Q, axis=1)
    A = K + alpha * np.eye(len(K))
    np.testing.assert_allclose(mean, Ks @ np.linalg.solve(A, y), rtol=1e-6)
    var = Kss - np.einsum("ij,ji->i", Ks, np.linalg.solve(A, Ks.T))
    np.testing.assert_allclose(std ** 2, var, rtol=1e-6, atol=1e-10)
    with pytest.raises(ValueError, match="posterior_std"):
        SketchRidge(sketch=NNGPSketch(n_components=16), alpha=1.0).fit(X, y).predict(Xt, return_std=True)


# ============================================================================ classifier
def test_classifier_on_digits_one_vs_rest():
    d = load_digits()
    Xtr, Xte, ytr, yte = train_test_split(d.data / 16, d.target, test_size=0.25, random_state=0)
    clf = SketchRidgeClassifier(sketch=NTKSketch(n_components=1024, random_state=0),
                                alpha=[1e-2, 1e-1, 1.0], cv=3).fit(Xtr, ytr)
    assert clf.coef_.shape == (1024, 10)
    assert clf.score(Xte, yte) > 0.95
    # one-hot targets give the same argmax up to the centering the ±1 code adds
    onehot = SketchRidgeClassifier(sketch=NTKSketch(n_components=1024, random_state=0), alpha=clf.alpha_,
                                   targets="onehot").fit(Xtr, ytr)
    np.testing.assert_allclose(2 * onehot.coef_ - clf.coef_,
                               np.linalg.solve(*_gram_pair(clf, Xtr, np.ones((len(Xtr), 10)))), atol=1e-8)
    labels = np.array(["cat", "dog"])[ytr % 2]
    b = SketchRidgeClassifier(sketch=NTKSketch(n_components=128, random_state=0)).fit(Xtr, labels)
    dec = b.decision_function(Xte)
    assert dec.shape == (len(Xte),)
    np.testing.assert_array_equal(b.predict(Xte), np.where(dec > 0, "dog", "cat"))


def test_classifier_scores_cv_by_accuracy_and_warns_at_the_grid_edge():
    d = load_digits()
    X, y = d.data[:400] / 16, d.target[:400]
    alphas = [1e-3, 1e-1, 10.0]
    sk = NTKSketch(n_components=256, random_state=0)
    clf = SketchRidgeClassifier(sketch=sk, alpha=alphas, cv=3).fit(X, y)
    res = clf.cv_results_
    assert res["scoring"] == "accuracy" and len(res["split2_test_score"]) == 3
    assert 0.8 < max(res["mean_test_score"]) <= 1.0 and "mean_test_mse" in res
    assert clf.alpha_ == alphas[int(np.argmax(res["mean_test_score"]))]
    # brute force: refit each fold, count correct argmax labels
    Phi = clf.sketch_.transform(X).astype(np.float64)
    ids = engine.fold_ids(len(X), 3, clf.sketch_.seed_)
    Y = np.where(y[:, None] == np.arange(10)[None], 1.0, -1.0)
    for f in range(3):
        tr, va = ids != f, ids == f
        for j, a in enumerate(alphas):
            W = scipy.linalg.solve(Phi[tr].T @ Phi[tr] + a * np.eye(256), Phi[tr].T @ Y[tr])
            assert res[f"split{f}_test_score"][j] == pytest.approx(
                np.mean((Phi[va] @ W).argmax(1) == y[va]), abs=1e-12)
    mse = SketchRidgeClassifier(sketch=sk, alpha=alphas, cv=3,
                                scoring="neg_mean_squared_error").fit(X, y)
    assert mse.cv_results_["scoring"] == "neg_mean_squared_error"
    np.testing.assert_allclose(mse.cv_results_["mean_test_score"],
                               -np.asarray(res["mean_test_mse"]), rtol=1e-10)
    import dsketch
    from dsketch.estimators import AlphaGridWarning

    assert dsketch.AlphaGridWarning is AlphaGridWarning and issubclass(AlphaGridWarning, UserWarning)
    with pytest.warns(AlphaGridWarning, match=r"smallest of the grid \[1000.0, 10000.0\]"):
        SketchRidgeClassifier(sketch=sk, alpha=[1e3, 1e4], cv=3).fit(X, y)
    with pytest.raises(ValueError, match="classifiers"):
        SketchRidge(sketch=sk, alpha=alphas, scoring="accuracy").fit(X, y.astype(float))
    with pytest.raises(ValueError, match="cv folds"):
        SketchRidgeClassifier(sketch=sk, alpha=alphas, cv=None, scoring="accuracy").fit(X, y)
    gcv = SketchRidgeClassifier(sketch=sk, alpha=alphas, cv=None).fit(X, y)  # GCV: MSE
    assert "gcv_mse" in gcv.cv_results_


def _gram_pair(est, X, Y):
    P = est.sketch_.transform(X).astype(np.float64)
    return P.T @ P + est.alpha_ * np.eye(P.shape[1]), P.T @ Y


# ============================================================================== pipelines
def test_pipeline_and_grid_search():
    X, y = _data(160, 4)
    pipe = Pipeline([("scale", StandardScaler()),
                     ("ridge", SketchRidge(sketch=RandomFourierFeatures(n_components=64, random_state=0)))])
    search = GridSearchCV(pipe, {"ridge__alpha": [1e-3, 1.0], "ridge__sketch__gamma": [0.05, 0.5]}, cv=3)
    search.fit(X, y)
    assert set(search.best_params_) == {"ridge__alpha", "ridge__sketch__gamma"}
    assert search.best_score_ > 0.5
    feats = Pipeline([("ntk", NTKSketch(n_components=128, random_state=0)), ("ridge", Ridge(alpha=0.1))])
    assert feats.fit(X, y).score(X, y) > 0.5


# ============================================================================ dask input
@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


def test_dask_input_matches_numpy(client):
    import dask.array as da

    X, y = _data(600, 6, seed=3)
    Xd, yd = da.from_array(X, chunks=(150, 6)), da.from_array(y, chunks=150)
    t = NTKSketch(n_components=64, random_state=1).fit(X)
    lazy = t.transform(Xd)
    assert isinstance(lazy, da.Array) and lazy.chunks[0] == (150,) * 4
    np.testing.assert_array_equal(lazy.compute(), t.transform(X))

    alphas = [1e-3, 1e-1, 10.0]
    mem = SketchRidge(sketch=NTKSketch(n_components=64, random_state=1), alpha=alphas, cv=3).fit(X, y)
    dist = SketchRidge(sketch=NTKSketch(n_components=64, random_state=1), alpha=alphas, cv=3).fit(Xd, yd)
    assert dist.alpha_ == mem.alpha_
    np.testing.assert_allclose(dist.cv_results_["mean_test_mse"], mem.cv_results_["mean_test_mse"], rtol=1e-8)
    np.testing.assert_allclose(dist.coef_, mem.coef_, rtol=1e-7, atol=1e-9)
    pred = dist.predict(Xd)
    assert isinstance(pred, da.Array)
    np.testing.assert_allclose(pred.compute(), mem.predict(X), rtol=1e-6, atol=1e-9)

    cg = SketchRidge(sketch=NTKSketch(n_components=64, random_state=1), alpha=0.1, solver="cg",
                     tol=1e-10).fit(Xd, yd)
    ref = SketchRidge(sketch=NTKSketch(n_components=64, random_state=1), alpha=0.1, solver="direct").fit(X, y)
    np.testing.assert_allclose(cg.coef_, ref.coef_, rtol=1e-4, atol=1e-6)
    assert cg.fit_report_["residuals"]

    gp_mem = SketchRidge(sketch=NNGPSketch(n_components=32, random_state=2), alpha=0.5, posterior_std=True).fit(X, y)
    gp = SketchRidge(sketch=NNGPSketch(n_components=32, random_state=2), alpha=0.5, posterior_std=True).fit(Xd, yd)
    mean, std = gp.predict(Xd, return_std=True)
    assert isinstance(std, da.Array)
    np.testing.assert_allclose(std.compute(), gp_mem.predict(X, return_std=True)[1], rtol=1e-6)


def test_store_input_and_lazy_classifier(client, tmp_path):
    import dask.array as da

    d = load_digits()
    X, y = (d.data[:600] / 16).astype(np.float32), d.target[:600]
    url = engine.ingest(X, str(tmp_path / "digits.zarr"), y=y, chunk_rows=200)
    grid = [1e-3, 0.1, 10.0]  # by CV accuracy: one extra pass on the cluster
    clf = SketchRidgeClassifier(sketch=NTKSketch(n_components=256, random_state=0), alpha=grid,
                                cv=3).fit(url)
    ref = SketchRidgeClassifier(sketch=NTKSketch(n_components=256, random_state=0), alpha=grid,
                                cv=3).fit(X, y)
    assert clf.fit_report_["passes"] == 2 and clf.alpha_ == ref.alpha_
    np.testing.assert_allclose(clf.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"],
                               rtol=1e-9)
    np.testing.assert_array_equal(clf.classes_, ref.classes_)
    pred = clf.predict(url)
    assert isinstance(pred, da.Array)
    np.testing.assert_array_equal(pred.compute(), ref.predict(X))
