"""Pass accounting of the solvers (local scheduler): one reduction per CG iteration."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

from dsketch import engine
from dsketch.engine import cg, passes

from _maps import RFF, dense_ridge


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads"):
        yield


def _problem(n=3000, d=6, m=80, k=2):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, d)).astype(np.float32)
    Y = rng.standard_normal((n, k))
    fm = RFF((d,), m, seed=9)
    Phi = engine.embed(da.from_array(x, chunks=(700, d)), fm)
    return Phi, da.from_array(Y, chunks=(500, k)), fm(x), Y


def test_cg_is_exactly_one_reduction_per_iteration(monkeypatch):
    calls = []
    real = passes.compute

    def counting(arr, client, progress=None):
        names = {k[0] if isinstance(k, tuple) else k for k in arr.__dask_graph__().keys()}
        calls.append(sorted(n.rsplit("-", 1)[0] for n in names if "aggregate" in n))
        return real(arr, client, progress)

    monkeypatch.setattr(passes, "compute", counting)
    Phi, Y, P, Yn = _problem()
    W, rep = engine.fit_ridge(Phi, Y, alpha=0.3, solver="cg", tol=1e-10)
    assert len(calls) == 1 + rep.iterations == rep.passes
    assert calls[0] == ["dsketch-cg-setup-aggregate"]
    assert all(c == ["dsketch-cg-matvec-aggregate"] for c in calls[1:])
    assert float(np.abs(W - dense_ridge(P, Yn, 0.3)).max() / np.abs(W).max()) <= 1e-5
    calls.clear()
    engine.fit_ridge(Phi, Y, alpha=0.3, solver="direct")
    assert calls == [["dsketch-gram-aggregate"]]


def test_graph_of_an_iteration_does_not_grow_with_chunks_times_m():
    """The direction V is one key of the graph, not copied into every chunk task."""
    import pickle

    Phi, Y, P, Yn = _problem(n=20_000, m=512)
    V = np.ones((512, 2))
    parts = passes.per_chunk(cg.matvec_chunk, "dsketch-cg-matvec", Phi, V=V, P=512 * 2,
                             slab=8192)
    g = dict(parts.__dask_graph__())
    holding_v = [k for k in g if isinstance(k, str) and k.startswith("dsketch-cg-matvec-input-")]
    assert len(holding_v) == 1 and len(pickle.dumps(g[holding_v[0]])) >= V.nbytes
    chunk_tasks = [t for k, t in g.items() if isinstance(k, tuple) and k[0] == parts.name]
    assert len(chunk_tasks) == Phi.numblocks[0]
    assert max(len(pickle.dumps(t)) for t in chunk_tasks) < V.nbytes / 4


def test_nystrom_preconditioner_helps_and_full_rank_is_exact():
    Phi, Y, P, Yn = _problem(m=64)
    _, r_none = engine.fit_ridge(Phi, Y, alpha=1e-3, solver="cg", tol=1e-8, preconditioner=None)
    _, r_full = engine.fit_ridge(Phi, Y, alpha=1e-3, solver="cg", tol=1e-8, rank=64)
    assert r_full.iterations <= 2 < r_none.iterations
    with pytest.warns(RuntimeWarning, match="did not reach"):
        W, r = engine.fit_ridge(Phi, Y, alpha=1e-3, solver="cg", tol=1e-8, maxiter=2,
                                preconditioner=None)
    assert not r.converged and r.iterations == 2


def test_solve_gram_rejects_bad_alpha_and_reports_indefinite():
    g = engine.Gram(G=np.eye(3), B=np.ones((3, 2)), yy=np.ones(2), n=10)
    with pytest.raises(ValueError, match="alpha"):
        engine.solve_gram(g, -1.0)
    with pytest.raises(ValueError, match="one per target"):
        engine.solve_gram(g, np.ones(3))
    g2 = engine.Gram(G=-np.eye(3), B=np.ones((3, 1)), yy=np.ones(1), n=10)
    with pytest.raises(np.linalg.LinAlgError, match="increase alpha"):
        engine.solve_gram(g2, 0.5)
    np.testing.assert_allclose(engine.solve_gram(g, 1.0), np.full((3, 2), 0.5))


def test_fold_ids_balanced_and_deterministic():
    ids = engine.fold_ids(100_000, 5, seed=3)
    counts = np.bincount(ids, minlength=5)
    assert counts.min() > 19_000 and counts.max() < 21_000
    np.testing.assert_array_equal(ids, engine.fold_ids(100_000, 5, seed=3))
    assert (ids != engine.fold_ids(100_000, 5, seed=4)).mean() > 0.7
    with pytest.raises(ValueError):
        engine.fold_ids(10, 1, 0)


def test_in_memory_phi_runs_the_same_passes_as_dask():
    """NumPy Φ: one "chunk" through the same kernels — same Gram, folds, weights, predictions."""
    Phi, Y, P, Yn = _problem(n=1500, m=40)
    g_mem = engine.gram(P, Yn, n_folds=3, fold_seed=5)
    g_lazy = engine.gram(Phi, Y, n_folds=3, fold_seed=5)
    np.testing.assert_allclose(g_mem.G, g_lazy.G, rtol=1e-10)
    np.testing.assert_allclose(g_mem.B, g_lazy.B, rtol=1e-10, atol=1e-10)
    assert g_mem.n_folds == g_lazy.n_folds and g_mem.n == 1500
    for f in range(3):
        np.testing.assert_allclose(g_mem.G_folds[f], g_lazy.G_folds[f], rtol=1e-10, atol=1e-10)
    ref = dense_ridge(P, Yn, 0.3)
    for solver in ("direct", "cg"):
        W, rep = engine.fit_ridge(P, Yn, alpha=0.3, solver=solver, tol=1e-10)
        assert rep.solver == solver and rep.persisted is None
        assert float(np.abs(W - ref).max() / np.abs(ref).max()) <= 1e-6
    W, rep = engine.fit_ridge(P, Yn[:, 0], alpha=0.3)
    assert rep.solver == "direct" and "m=40" in rep.reason and W.shape == (40, 1)
    np.testing.assert_allclose(engine.predict(P, ref), engine.predict(Phi, ref).compute(),
                               rtol=1e-12)


# ================================================================ direct solves, path
def test_blocked_cholesky_equals_scipy_and_reports_indefinite():
    from dsketch.engine.linalg import cho_solve, cholesky
    import scipy.linalg

    rng = np.random.default_rng(0)
    for n, block in [(37, 8), (64, 16), (50, 50), (9, 4)]:
        X = rng.standard_normal((n, n + 3))
        A = X @ X.T
        L = cholesky(A, block=block, blocked_min=1)  # force the blocked path
        np.testing.assert_allclose(L, scipy.linalg.cholesky(A, lower=True), rtol=1e-10, atol=1e-12)
        B = rng.standard_normal((n, 2))
        np.testing.assert_allclose(cho_solve(L, B), np.linalg.solve(A, B), rtol=1e-8)
    A = np.eye(20)
    A[13, 13] = -1.0
    with pytest.raises(np.linalg.LinAlgError, match="order 14"):
        cholesky(A, block=4, blocked_min=1)


def test_blocked_cholesky_in_place_reuses_the_matrix_and_gives_the_same_factor():
    from dsketch.engine.linalg import cholesky

    X = np.random.default_rng(1).standard_normal((37, 40))
    A = X @ X.T
    ref = cholesky(A, block=8, blocked_min=1)
    work = A.copy()
    L = cholesky(work, block=8, blocked_min=1, overwrite=True)
    assert L is work and np.array_equal(L, ref)
    assert np.array_equal(cholesky(A, block=8, blocked_min=1), ref)  # the default keeps A


def test_tiled_syrk_equals_the_gram_and_symmetrizes_in_place():
    """``syrk_acc`` in tiles (forced small here) accumulates PᵀP like one syrk; the upper
    triangle copied down gives the full Gram (the path above SYRK_MAX, where one OpenBLAS
    syrk segfaults)."""
    from dsketch.engine.linalg import symmetrize_upper, syrk_acc

    rng = np.random.default_rng(4)
    P1, P2 = rng.normal(size=(30, 23)), rng.normal(size=(11, 23))
    for tile in (5, 8, 23, 64):
        G = np.zeros((23, 23), order="F")
        syrk_acc(G, P1, tile=tile)
        syrk_acc(G, P2, tile=tile)
        want = P1.T @ P1 + P2.T @ P2
        np.testing.assert_allclose(np.triu(G), np.triu(want), rtol=1e-12, atol=1e-12)
        assert not np.any(np.tril(G, -1))  # the lower triangle is left alone
        full = symmetrize_upper(G, tile=tile)
        assert full is G
        np.testing.assert_allclose(G, want, rtol=1e-12, atol=1e-12)


def test_ridge_system_cholesky_and_eigh_agree():
    from dsketch.engine.linalg import RidgeSystem

    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 12))
    S, B = X @ X.T, rng.standard_normal((30, 3))  # rank-deficient S, as for m > n
    chol, eig = RidgeSystem(S, 2), RidgeSystem(S, 100)
    assert (chol.method, eig.method) == ("cholesky", "eigh")
    for a in (1e-3, 0.7, 50.0):
        ref = np.linalg.solve(S + a * np.eye(30), B)
        np.testing.assert_allclose(chol.solve(a, B), ref, rtol=1e-7)
        np.testing.assert_allclose(eig.solve(a, B), ref, rtol=1e-7)
        tr = np.trace(np.linalg.inv(S + a * np.eye(30)))
        assert chol.trace_inv(a) == pytest.approx(tr, rel=1e-9)
        assert eig.trace_inv(a) == pytest.approx(tr, rel=1e-9)
        for sysm in (chol, eig):
            F = sysm.posterior_factor(a)
            np.testing.assert_allclose(F @ F.T, a * np.linalg.inv(S + a * np.eye(30)), atol=1e-10)


def _cv_brute(P, Y, ids, alphas):
    """Per-fold MSE and accuracy (argmax of rows) by explicit refits."""
    F = ids.max() + 1
    mse, acc = np.empty((F, len(alphas))), np.empty((F, len(alphas)))
    for f in range(F):
        tr, va = ids != f, ids == f
        for j, a in enumerate(alphas):
            W = np.linalg.solve(P[tr].T @ P[tr] + a * np.eye(P.shape[1]), P[tr].T @ Y[tr])
            pred = P[va] @ W
            mse[f, j] = np.mean((Y[va] - pred) ** 2)
            acc[f, j] = np.mean(pred.argmax(1) == Y[va].argmax(1))
    return mse, acc


@pytest.mark.parametrize("m", [40, 400])  # n > m (feature space) and n < m (sample space)
def test_fit_path_forms_and_scorings_equal_brute_force(m):
    rng = np.random.default_rng(2)
    n, alphas = 240, np.array([1e-3, 1e-1, 3.0, 100.0])
    P = rng.standard_normal((n, m))
    lab = (P[:, :3].sum(1) > 0).astype(int) + (P[:, 3] > 1)
    Y = np.where(lab[:, None] == np.arange(3)[None], 1.0, -1.0)
    ids = engine.fold_ids(n, 3, 4)
    mse, acc = _cv_brute(P, Y, ids, alphas)
    sizes = np.bincount(ids)
    form, _ = engine.path.choose_form(n, m, 3, 3, 4, in_memory=True, posterior=False)
    assert form == ("sample" if m > n else "feature")
    outs = {}
    for f in ("feature", "sample"):
        for scoring in ("neg_mean_squared_error", "accuracy"):
            r = engine.fit_path(P, Y, alphas, n_folds=3, fold_seed=4, scoring=scoring, form=f)
            outs[f, scoring] = r
            for k in range(3):
                np.testing.assert_allclose(r.cv_results[f"split{k}_test_mse"], mse[k], rtol=1e-8)
                ref = acc[k] if scoring == "accuracy" else -mse[k]
                np.testing.assert_allclose(r.cv_results[f"split{k}_test_score"], ref, rtol=1e-8)
            ref = (acc if scoring == "accuracy" else -mse) * sizes[:, None]
            np.testing.assert_allclose(r.cv_results["mean_test_score"], ref.sum(0) / n, rtol=1e-8)
            W = np.linalg.solve(P.T @ P + r.alpha * np.eye(m), P.T @ Y)
            np.testing.assert_allclose(r.W, W, rtol=1e-7, atol=1e-9)
    # GCV n·RSS/(n − df)²: the sample form is exact, the feature form's RSS = yy − 2⟨W, B⟩ + …
    # cancels near interpolation (small alpha, m > n)
    ref = []
    for a in alphas:
        H = P @ np.linalg.solve(P.T @ P + a * np.eye(m), P.T)
        ref.append(n * np.sum((Y - H @ Y) ** 2) / 3 / (n - np.trace(H)) ** 2)
    g1 = engine.fit_path(P, Y, alphas, form="feature").cv_results["gcv_mse"]
    g2 = engine.fit_path(P, Y, alphas, form="sample").cv_results["gcv_mse"]
    np.testing.assert_allclose(g2, ref, rtol=1e-7)
    np.testing.assert_allclose(g1, ref, rtol=1e-5)
    with pytest.raises(ValueError, match="folds"):
        engine.fit_path(P, Y, alphas, scoring="accuracy")


def test_accuracy_pass_on_dask_equals_in_memory():
    Phi, _, P, _ = _problem(n=2100, m=30)
    lab = (P[:, 0] > np.median(P[:, 0])).astype(int) + (P[:, 1] > np.median(P[:, 1]))
    Yn = np.where(lab[:, None] == np.arange(3)[None], 1.0, -1.0)
    Y = da.from_array(Yn, chunks=(700, 3))
    alphas = [1e-3, 1.0, 30.0]
    lazy = engine.fit_path(Phi, Y, alphas, n_folds=3, fold_seed=1, scoring="accuracy")
    mem = engine.fit_path(P, Yn, alphas, n_folds=3, fold_seed=1, scoring="accuracy")
    assert lazy.form == mem.form == "feature" and lazy.timings["score_pass_s"] >= 0
    for key in ("mean_test_score", "split0_test_score", "mean_test_mse"):
        np.testing.assert_allclose(lazy.cv_results[key], mem.cv_results[key], rtol=1e-9)
    np.testing.assert_allclose(lazy.W, mem.W, rtol=1e-9, atol=1e-12)


def test_edge_of_grid_warns():
    Phi, _, P, Yn = _problem(n=600, m=20)
    with pytest.warns(engine.AlphaGridWarning, match="largest of the grid.*upwards"):
        engine.fit_path(P, Yn, [1e-6, 1e-5, 1e6], n_folds=3)  # pure noise: the most shrinkage
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", engine.AlphaGridWarning)
        engine.fit_path(P, Yn, 1e-6, n_folds=3)  # one alpha: nothing to warn about


def test_fold_class_counts_match_fold_ids_whatever_the_chunks():
    """Per-fold class counts: one pass over Y, the same for NumPy and any dask chunking."""
    import dask.array as da

    from dsketch.engine import fold_class_counts, fold_ids

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=503)
    Y = np.where(np.arange(4) == labels[:, None], 1.0, -1.0)
    ids = fold_ids(503, 5, 7)
    want = np.array([[np.sum((ids == f) & (labels == c)) for c in range(4)] for f in range(5)])
    np.testing.assert_array_equal(fold_class_counts(Y, 5, 7), want)
    for chunks in (503, 100, 37):
        got = fold_class_counts(da.from_array(Y, chunks=(chunks, 4)), 5, 7)
        np.testing.assert_array_equal(got, want)
