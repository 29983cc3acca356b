"""Exact-kernel ridge on all rows (issue 19): ``KernelRidge`` / ``KernelRidgeClassifier``.

Every answer is checked against an independent computation: the direct solve
``np.linalg.solve(K + λI, Y)`` of the network's exact kernel (Falkon: the Nyström normal
equations solved directly), for NumPy, dask and Zarr-store input and on a real 2-process
``distributed.LocalCluster``.  The kernel blocks cached as float32 agree with the float64
direct solve to float32 accuracy; uncached (float64) blocks to CG's tolerance.
"""

from __future__ import annotations

import json
import math
import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from dsketch import KernelRidge, KernelRidgeClassifier, engine, load_model, save_model
from dsketch.engine.falkon import gram_lower, tri_solve
from dsketch.engine.kernel_cg import (LowRankPreconditioner, holdout_split, rpcholesky,
                                      spectral_shift, syrk_gram)
from dsketch.nets import Relu, fully_connected

pytestmark = pytest.mark.timeout(300)

NET = fully_connected(2, Relu(), W_std=math.sqrt(2.0), b_std=0.1)
RNG = np.random.default_rng(3)
N, D, NT = 300, 8, 40
X = RNG.standard_normal((N, D))
Y = np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2 + 0.1 * RNG.standard_normal(N)
LABELS = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
XT = RNG.standard_normal((NT, D))
K = NET.kernel(X, get="ntk")
KT = NET.kernel(XT, X, get="ntk")
LAM = 0.3


def direct(Yt, lam=LAM, Kmat=K):
    return np.linalg.solve(Kmat + lam * np.eye(Kmat.shape[0]), Yt)


def signed(labels):
    classes = np.unique(labels)
    return np.where(labels[:, None] == classes[None, :], 1.0, -1.0)


def rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def model(**kw):
    base = dict(net=NET, alpha=LAM, tol=1e-10, max_iter=400, rank=60, chunk_rows=128,
                random_state=0)
    return KernelRidge(**{**base, **kw})


@parametrize_with_checks([KernelRidge(random_state=0, rank=8),
                          KernelRidgeClassifier(random_state=0, rank=8)])
def test_sklearn_conformance(estimator, check):
    check(estimator)


# ============================================================== engine pieces
def test_rpcholesky_of_full_rank_reproduces_the_kernel_and_picks_distinct_pivots():
    F, piv = rpcholesky(np.diag(K).copy(), lambda idx: K[:, idx], N, block=64, seed=1)
    assert len(set(piv.tolist())) == len(piv)
    assert rel(F @ F.T, K) < 1e-6
    F2, _ = rpcholesky(np.diag(K).copy(), lambda idx: K[:, idx], 80, block=32, seed=1)
    resid = K - F2 @ F2.T  # a Nyström approximation leaves a PSD residual
    assert np.linalg.eigvalsh(resid).min() > -1e-8 * np.trace(K)
    assert np.trace(resid) < np.trace(K)


def test_low_rank_preconditioner_is_the_inverse_of_ffT_plus_lambda():
    F = RNG.standard_normal((50, 7))
    R = RNG.standard_normal((50, 3))
    lam = np.array([0.5, 2.0, 0.5])
    out = LowRankPreconditioner(F)(R, lam)
    for j in range(3):
        ref = np.linalg.solve(F @ F.T + lam[j] * np.eye(50), R[:, j])
        assert rel(out[:, j], ref) < 1e-10


def test_shifted_preconditioner_is_the_inverse_of_ffT_plus_lambda_plus_shift():
    F = RNG.standard_normal((50, 7))
    R = RNG.standard_normal((50, 2))
    out = LowRankPreconditioner(F, shift=0.25)(R, np.array([0.5, 0.5]))
    assert rel(out, np.linalg.solve(F @ F.T + 0.75 * np.eye(50), R)) < 1e-10


def test_spectral_shift_is_the_mean_residual_diagonal_and_never_negative():
    F, _ = rpcholesky(np.diag(K).copy(), lambda idx: K[:, idx], 40, seed=0)
    delta = spectral_shift(np.diag(K), F)
    assert delta > 0 and math.isclose(delta, np.trace(K - F @ F.T) / (N - 40), rel_tol=1e-9)
    assert spectral_shift(np.zeros(N), F) == 0.0


def test_syrk_gram_equals_ftf():
    F = RNG.standard_normal((50, 7))
    np.testing.assert_allclose(syrk_gram(F), F.T @ F, rtol=1e-12, atol=1e-12)


def _symmetric_product(monkeypatch, cores):
    import dsketch.engine.sym_product as sp
    bounds = [(0, 70), (70, 140), (140, 183)]
    S = (K[:183, :183]).astype(np.float32)
    V = np.random.default_rng(5).standard_normal((183, 3)).astype(np.float32)
    monkeypatch.setattr(sp, "STRIP_ROWS", 16)  # several strips per block
    monkeypatch.setattr(sp, "usable_cores", lambda: cores)
    blocks = {(i, j): np.ascontiguousarray(S[a:b, c:d]) for i, (a, b) in enumerate(bounds)
              for j, (c, d) in enumerate(bounds) if i <= j}
    return sp.symmetric_product(lambda i, j: blocks[(i, j)], bounds, V), S @ V.astype(np.float64)


def test_symmetric_product_of_upper_blocks_equals_the_dense_product_on_any_core_count(monkeypatch):
    one, ref = _symmetric_product(monkeypatch, 1)
    two, _ = _symmetric_product(monkeypatch, 2)
    assert one.dtype == np.float64 and rel(one, ref) < 1e-5
    assert np.array_equal(one, two)  # a fixed order of sums: no dependence on the thread count


def test_cg_callback_gets_every_column_residual_live_when_it_asks():
    from dsketch.engine.cg import pcg_columns
    A = K[:60, :60] + np.eye(60)
    B = RNG.standard_normal((60, 3))
    seen, plain = [], []

    def run(cb):
        pcg_columns(lambda D, act: A @ D, B, np.zeros_like(B), B.copy(), lambda R, act: R.copy(),
                    tol=1e-8, maxiter=200, callback=cb, breakdown=AssertionError)

    run(lambda r, it, columns: seen.append((r, columns)))
    run(lambda r, it: plain.append(r))
    assert [r for r, _ in seen] == plain and all(len(c) == 3 and max(c) == r for r, c in seen)


def test_blocked_falkon_factors_equal_dense_linear_algebra():
    T = np.tril(RNG.standard_normal((45, 45))) + 8 * np.eye(45)
    B = RNG.standard_normal((45, 3))
    M = gram_lower(T, 1.5, block=8)
    np.testing.assert_allclose(np.tril(M), np.tril(1.5 * T.T @ T), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(tri_solve(T, B, False, block=8), np.linalg.solve(T, B), rtol=1e-10)
    np.testing.assert_allclose(tri_solve(T, B, True, block=8), np.linalg.solve(T.T, B), rtol=1e-10)


# ======================================================= PCG == direct solve
@pytest.mark.parametrize("preconditioner", ["rpcholesky", "sketch", None])
def test_pcg_equals_the_direct_solve_uncached(preconditioner):
    m = model(preconditioner=preconditioner, cache=False).fit(X, Y)
    ref = direct(Y)
    assert rel(m.dual_coef_, ref) < 1e-7
    assert rel(m.predict(XT), KT @ ref) < 1e-7
    rep = m.fit_report_
    assert rep["solver"] == "kernel-pcg" and rep["converged"] and "recomputed" in rep["cache"]
    assert max(rep["column_residuals"]) <= 1e-10 and rep["iterations"] == m.n_iter_ > 0


def test_pcg_with_cached_float32_blocks_and_rpcholesky_needs_few_iterations():
    m = model(cache=True).fit(X, Y)
    plain = model(cache=True, preconditioner=None).fit(X, Y)
    ref = direct(Y)
    assert rel(m.dual_coef_, ref) < 1e-4  # float32 kernel entries
    assert "kept in memory" in m.fit_report_["cache"] and m.fit_report_["cache_bytes"] > 0
    assert m.n_iter_ < plain.n_iter_


def test_multi_target_regression_and_one_column_per_target():
    Y2 = np.stack([Y, X[:, 2]], axis=1)
    m = model(cache=False).fit(X, Y2)
    assert m.dual_coef_.shape == (N, 2) and rel(m.dual_coef_, direct(Y2)) < 1e-7
    assert len(m.fit_report_["column_residuals"]) == 2


def test_classifier_equals_direct_one_vs_rest():
    clf = KernelRidgeClassifier(net=NET, alpha=LAM, tol=1e-10, max_iter=400, rank=60,
                                chunk_rows=128, cache=False, random_state=0).fit(X, LABELS)
    ref = direct(signed(LABELS))
    assert rel(clf.dual_coef_, ref) < 1e-7
    np.testing.assert_array_equal(clf.predict(XT), np.argmax(KT @ ref, axis=1))
    assert clf.decision_function(XT).shape == (NT, 3)


def test_alpha_grid_is_chosen_on_held_out_training_rows():
    grid = [1e-3, 1e-1, 10.0, 1e3]
    m = model(alpha=grid, selection_rows=250, cache=False).fit(X, Y)
    tr, va = holdout_split(N, 250, m.seed_)
    assert len(tr) == 200 and len(va) == 50 and not set(tr) & set(va)
    scores = [-np.mean((K[np.ix_(va, tr)] @ direct(Y[tr], lam, K[np.ix_(tr, tr)]) - Y[va]) ** 2)
              for lam in grid]
    np.testing.assert_allclose(m.cv_results_["mean_test_score"], scores, rtol=1e-6)
    assert m.alpha_ == grid[int(np.argmax(scores))]
    assert rel(m.dual_coef_, direct(Y, m.alpha_)) < 1e-6
    cached = model(alpha=grid, selection_rows=250, cache=True).fit(X, Y)  # from float32 blocks
    np.testing.assert_allclose(cached.cv_results_["mean_test_score"], scores, rtol=1e-3)


def test_non_convergence_warns_and_reports():
    with pytest.warns(RuntimeWarning, match="did not reach"):
        m = model(max_iter=2, preconditioner=None).fit(X, Y)
    assert not m.fit_report_["converged"] and m.n_iter_ == 2


# ================================================================ Falkon
def falkon_direct(centres_idx, Yt, lam=LAM):
    Knm, Kmm = K[:, centres_idx], K[np.ix_(centres_idx, centres_idx)]
    return np.linalg.solve(Knm.T @ Knm + lam * Kmm, Knm.T @ Yt)


@pytest.mark.parametrize("cache", [True, False])
def test_falkon_equals_the_nystroem_normal_equations(cache):
    m = model(solver="falkon", n_components=70, cache=cache).fit(X, Y)
    idx = m.component_indices_
    np.testing.assert_array_equal(m.X_fit_, X[idx])
    ref = falkon_direct(idx, Y)
    assert rel(m.dual_coef_, ref) < 1e-3  # float32 K_nm, jittered K_mm
    assert rel(m.predict(XT), KT[:, idx] @ ref) < 1e-3
    assert m.fit_report_["solver"] == "falkon" and m.n_iter_ < 100


def test_auto_solver_is_the_exact_pcg_when_the_kernel_fits_else_falkon():
    exact = model(solver="auto", n_components=70, cache=True).fit(X, Y)
    assert exact.fit_report_["solver"] == "kernel-pcg" and "kept in memory" in exact.fit_report_["reason"]
    assert exact.X_fit_.shape[0] == N and rel(exact.dual_coef_, direct(Y)) < 1e-4
    nys = model(solver="auto", n_components=70, cache=False).fit(X, Y)
    assert nys.fit_report_["solver"] == "falkon" and "recomputed" in nys.fit_report_["reason"]
    falkon = model(solver="falkon", n_components=70, cache=False).fit(X, Y)
    np.testing.assert_array_equal(nys.X_fit_, falkon.X_fit_)
    np.testing.assert_allclose(nys.dual_coef_, falkon.dual_coef_, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cache", [True, False])
def test_classical_kernels_equal_scikit_learns_kernel_ridge(cache):
    from sklearn.kernel_ridge import KernelRidge as SkKernelRidge

    from dsketch import PolynomialSketch, RandomFourierFeatures

    for kmap, sk in [(RandomFourierFeatures(gamma=0.2), dict(kernel="rbf", gamma=0.2)),
                     (PolynomialSketch(degree=2, gamma=0.3, coef0=1.0),
                      dict(kernel="poly", degree=2, gamma=0.3, coef0=1.0))]:
        m = model(kernel=kmap, net=None, cache=cache).fit(X, Y)
        ref = SkKernelRidge(alpha=LAM, **sk).fit(X, Y)  # an independent implementation
        assert rel(m.dual_coef_, ref.dual_coef_) < (1e-4 if cache else 1e-7)
        assert rel(m.predict(XT), ref.predict(XT)) < (1e-4 if cache else 1e-7)
        assert "spectral shift" in m.fit_report_["preconditioner"]


def test_classical_kernel_with_its_own_sketch_preconditioner_falkon_and_a_saved_model(tmp_path):
    from dsketch import ArcCosineFeatures

    kmap = ArcCosineFeatures(order=1)
    K1 = ArcCosineFeatures(order=1).fit(X).feature_map_.kernel(X)
    pcg = model(kernel=kmap, net=None, preconditioner="sketch", rank=64, cache=False).fit(X, Y)
    assert rel(pcg.dual_coef_, direct(Y, Kmat=K1)) < 1e-7
    nys = model(kernel=kmap, net=None, solver="falkon", n_components=70,
                landmarks="leverage").fit(X, Y)
    assert nys.fit_report_["solver"] == "falkon"
    save_model(pcg, tmp_path / "m")
    np.testing.assert_array_equal(load_model(tmp_path / "m").predict(XT), pcg.predict(XT))


def test_classical_kernel_refuses_a_net_and_images():
    from dsketch import RandomFourierFeatures

    with pytest.raises(ValueError, match="net= is for kernel='ntk'"):
        model(kernel=RandomFourierFeatures()).fit(X, Y)  # model() passes net=NET
    with pytest.raises(ValueError, match="flat rows"):
        model(kernel=RandomFourierFeatures(), net=None).fit(X[:, :4].reshape(N, 2, 2, 1), Y)


def test_falkon_leverage_centres_solve_the_same_equations():
    m = model(solver="falkon", n_components=70, landmarks="leverage").fit(X, Y)
    u = model(solver="falkon", n_components=70).fit(X, Y)
    assert not np.array_equal(m.component_indices_, u.component_indices_)
    assert rel(m.dual_coef_, falkon_direct(m.component_indices_, Y)) < 1e-3


# ======================================================= dask, cluster, store
def test_dask_input_equals_numpy_input():
    Xd = da.from_array(X, chunks=100)
    for kw in (dict(cache=False), dict(cache=True), dict(solver="falkon", n_components=70)):
        a = model(**kw).fit(X, Y)
        b = model(**kw).fit(Xd, da.from_array(Y, chunks=100))
        tol = 1e-3 if kw.get("solver") == "falkon" else 1e-5  # float32 K_nm products
        assert rel(b.dual_coef_, a.dual_coef_) < tol, kw
        pred = b.predict(da.from_array(XT, chunks=15))
        assert isinstance(pred, da.Array) and rel(pred.compute(), a.predict(XT)) < tol


def test_predictions_do_not_depend_on_the_batch():
    m = model(cache=True).fit(X, Y)
    whole = m.predict(XT)
    parts = np.concatenate([m.predict(XT[:7]), m.predict(XT[7:])])
    lazy = m.predict(da.from_array(XT, chunks=(13, -1))).compute()
    np.testing.assert_array_equal(parts, whole)
    np.testing.assert_array_equal(lazy, whole)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as c:
        yield c


def test_on_a_two_process_cluster_equals_the_direct_solve(client):
    Xd = da.from_array(X, chunks=150)
    m = model(cache="auto", tol=1e-7).fit(Xd, Y)
    assert "workers' memory" in m.fit_report_["cache"] and "cached" in m.fit_report_["cache"]
    assert rel(m.dual_coef_, direct(Y)) < 1e-4
    clf = KernelRidgeClassifier(net=NET, alpha=LAM, tol=1e-8, max_iter=400, rank=60,
                                cache=False, random_state=0).fit(Xd, LABELS)
    ref = direct(signed(LABELS))
    assert rel(clf.dual_coef_, ref) < 1e-6
    pred = clf.predict(da.from_array(XT, chunks=20))
    np.testing.assert_array_equal(pred.compute(), np.argmax(KT @ ref, axis=1))
    f = model(solver="falkon", n_components=70, tol=1e-7).fit(Xd, Y)
    assert rel(f.dual_coef_, falkon_direct(f.component_indices_, Y)) < 1e-3


def test_zarr_store_input_equals_numpy_input(tmp_path):
    url = engine.ingest(X, str(tmp_path / "rows.zarr"), y=Y, chunk_rows=64)
    a = model(cache=True, tol=1e-6).fit(X, Y)
    b = model(cache=True, tol=1e-6).fit(url)
    assert rel(b.dual_coef_, a.dual_coef_) < 1e-5
    assert rel(np.asarray(b.predict(url)), a.predict(X)) < 1e-5


# =============================================================== saved models
def test_saved_model_holds_the_training_rows_checksummed(tmp_path):
    clf = KernelRidgeClassifier(net=NET, alpha=LAM, rank=60, random_state=0).fit(X, LABELS)
    path = save_model(clf, tmp_path / "krr")
    doc = json.loads((tmp_path / "krr" / "model.json").read_text())
    entry = doc["estimator"]["attributes"]["X_fit_"]
    assert entry["shape"] == [N, D] and len(entry["sha256"]) == 64
    back = load_model(path)
    np.testing.assert_array_equal(back.predict(XT), clf.predict(XT))
    arr = tmp_path / "krr" / "arrays" / entry["array"]
    bad = np.load(arr)
    bad[0, 0] += 1.0
    np.save(arr, bad)
    with pytest.raises(ValueError, match="X_fit_"):
        load_model(path)


# ======================================================================== CLI
def test_cli_fit_method_kernel_and_falkon_equal_the_library(tmp_path, client):
    from click.testing import CliRunner

    from dsketch.cli import main

    url = engine.ingest(X, str(tmp_path / "rows.zarr"), y=Y, chunk_rows=100)
    net = fully_connected(2, Relu(), W_std=math.sqrt(2.0), b_std=0.1)
    for method in ("kernel", "falkon"):
        out = tmp_path / f"model-{method}"
        res = CliRunner().invoke(main, ["fit", "--data", url, "--model", str(out), "--method",
                                        method, "--b-std", "0.1", "--n-components", "60",
                                        "--alpha", "0.3", "--task", "regress", "--json",
                                        "--scheduler", client.scheduler.address])
        assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
        doc = json.loads(res.stdout)
        assert doc["method"] == method and doc["iterations"] > 0
        est = load_model(out)
        ref = KernelRidge(net=net, alpha=0.3, random_state=0, n_components=60,
                          solver="falkon" if method == "falkon" else "pcg").fit(X, Y)
        assert rel(est.predict(XT), ref.predict(XT)) < 1e-3
    res = CliRunner().invoke(main, ["fit", "--data", url, "--model", str(tmp_path / "bad"),
                                    "--method", "kernel", "--kernel", "rff"])
    assert res.exit_code == 2 and "--method kernel needs --kernel ntk or nngp" in res.output
