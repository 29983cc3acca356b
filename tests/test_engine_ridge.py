"""The one ridge entry ``engine.fit_ridge_model`` (issue 19, item 3).

It must give the weights the solvers it dispatches to give on their own (direct path, CG,
full-kernel PCG, Falkon), one report shape whatever chose the solver, the same answer for
dask input on a real 2-process ``LocalCluster`` as for NumPy, and one set of parameter checks.
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import pytest

from dsketch import SketchRidge, SketchRidgeClassifier, engine
from dsketch.backend import InvalidInputError
from dsketch.engine.falkon import fit_falkon
from dsketch.engine.kernel_cg import fit_kernel_ridge
from dsketch.engine.kernel_ops import KernelFunction, make_kernel
from dsketch.engine.ridge import KernelSystem, check_params, choose_ridge_solver, fit_ridge_model
from dsketch.estimators import RandomFourierFeatures
from dsketch.nets import Relu, fully_connected

pytestmark = pytest.mark.timeout(300)

RNG = np.random.default_rng(7)
N, M = 240, 24
P = RNG.standard_normal((N, M))
W_TRUE = 0.3 * RNG.standard_normal((M, 2))
Y = P @ W_TRUE + RNG.standard_normal((N, 2))  # noisy: CV picks an inner alpha of GRID
SCORE = P @ W_TRUE[:, 0] + 0.5 * RNG.standard_normal(N)
LABELS = np.digitize(SCORE, np.quantile(SCORE, [1 / 3, 2 / 3]))
ONEHOT = np.where(LABELS[:, None] == np.arange(3)[None, :], 1.0, -1.0)
GRID = [0.1, 3.0, 30.0, 300.0]
#: accuracy (argmax of the columns) prefers the most shrinkage here: no grid edge warning
edge_ok = pytest.mark.filterwarnings("ignore::dsketch.engine.path.AlphaGridWarning")


@pytest.fixture(scope="module")
def client(dashboard_client):
    return dashboard_client


def _dask(a, rows=64):
    return da.from_array(a, chunks=(rows,) + a.shape[1:])


# ============================================================ same W as the solvers alone
def test_direct_equals_the_direct_solve_and_auto_is_the_same_fit():
    W_old, _ = engine.fit_ridge(P, Y, alpha=0.3, solver="direct")
    fit = fit_ridge_model(P, Y, 0.3, solver="direct")
    np.testing.assert_allclose(fit.W, W_old, rtol=1e-12, atol=1e-14)
    auto = fit_ridge_model(P, Y, 0.3)
    np.testing.assert_array_equal(auto.W, fit.W)
    assert auto.report.solver == fit.report.solver == "direct"
    assert auto.report.to_dict().keys() == fit.report.to_dict().keys()
    assert auto.report.reason.startswith("direct: m=24 features") and "feature space" in auto.report.reason
    assert fit.report.reason.startswith("direct: solver='direct' requested")
    assert fit.cv_results is None and fit.alpha == 0.3 and fit.report.passes == 1


@edge_ok
def test_grid_equals_the_regularization_path():
    old = engine.fit_path(P, ONEHOT, GRID, n_folds=3, fold_seed=5, scoring="accuracy")
    fit = fit_ridge_model(P, ONEHOT, GRID, n_folds=3, fold_seed=5, scoring="accuracy",
                          classes=np.arange(3))
    np.testing.assert_array_equal(fit.W, old.W)
    assert fit.alpha == old.alpha and fit.cv_results == old.cv_results
    assert fit.report.solver == "direct" and "alpha grid" in fit.report.reason
    gcv = fit_ridge_model(P, Y, GRID)  # no folds: GCV
    assert "gcv_mse" in gcv.cv_results


def test_cg_equals_the_feature_cg_and_reports_every_column():
    W_old, rep_old = engine.fit_ridge(P, Y, alpha=0.3, solver="cg", tol=1e-10, preconditioner=None)
    fit = fit_ridge_model(P, Y, 0.3, solver="cg", tol=1e-10)
    np.testing.assert_array_equal(fit.W, W_old)
    assert fit.report.iterations == rep_old.iterations and fit.report.solver == "cg"
    assert len(fit.report.column_residuals) == 2 and max(fit.report.column_residuals) <= 1e-10
    assert fit.report.reason.startswith("cg: solver='cg' requested")
    np.testing.assert_allclose(fit.W, fit_ridge_model(P, Y, 0.3).W, rtol=1e-7)


def test_the_choice_says_why():
    assert choose_ridge_solver(None, 10**6, 20_000, 2)[0] == "cg"
    solver, why = choose_ridge_solver(None, 10**6, 20_000, 2, grid=True)
    assert solver == "direct" and "grid" in why
    assert choose_ridge_solver(None, 100, 10, 1, posterior=True)[1].startswith("direct: posterior")


# =================================================================== kernel systems
NET = fully_connected(2, Relu(), W_std=math.sqrt(2.0), b_std=0.1)
XK = RNG.standard_normal((150, 5))
YK = np.sin(XK[:, :1])


def _op():
    return make_kernel(XK, KernelFunction(NET, "ntk", (5,)), chunk=64)


def test_kernel_system_equals_the_kernel_solvers():
    kw = dict(tol=1e-8, maxiter=300, rank=20, seed=1)
    old = fit_kernel_ridge(_op(), YK, 0.3, **kw)
    fit = fit_ridge_model(KernelSystem(_op()), YK, 0.3, **kw)
    np.testing.assert_array_equal(fit.W, old.W)
    assert fit.report.solver == "kernel-pcg" and fit.report.reason.startswith("pcg: the full 150×150")
    assert fit.report.column_residuals == old.extra["column_residuals"]
    assert "column_residuals" not in fit.extra and "cache" in fit.extra

    C = XK[:40]
    old = fit_falkon(_op(), C, YK, 0.3, tol=1e-8, maxiter=300)
    fit = fit_ridge_model(KernelSystem(_op(), centres=C), YK, 0.3, solver="falkon", tol=1e-8,
                          maxiter=300)
    np.testing.assert_array_equal(fit.W, old.W)
    assert fit.report.solver == "falkon" and fit.report.reason.startswith("falkon: solver='falkon' requested, m=40")
    grid = fit_ridge_model(KernelSystem(_op(), centres=C), YK, [0.01, 0.3, 3.0], solver="falkon",
                           tol=1e-8)
    assert grid.cv_results and grid.alpha in (0.01, 0.3, 3.0) and "chosen by" in grid.report.reason


# ====================================================================== dask = NumPy
@edge_ok
def test_dask_input_equals_numpy_input(client):
    Pd, Yd = _dask(P), _dask(Y)
    for kw in (dict(alpha=0.3, solver="direct"), dict(alpha=GRID, n_folds=3, fold_seed=2),
               dict(alpha=0.3, solver="cg", tol=1e-10, preconditioner=None)):
        mem = fit_ridge_model(P, Y, **kw)
        dist = fit_ridge_model(Pd, Yd, client=client, **kw)
        assert dist.alpha == mem.alpha and dist.report.solver == mem.report.solver
        np.testing.assert_allclose(dist.W, mem.W, rtol=1e-7, atol=1e-9)
    acc = dict(alpha=GRID, n_folds=3, fold_seed=2, scoring="accuracy", classes=np.arange(3))
    mem = fit_ridge_model(P, ONEHOT, **acc)
    dist = fit_ridge_model(Pd, _dask(ONEHOT), client=client, **acc)
    assert dist.alpha == mem.alpha
    np.testing.assert_allclose(dist.cv_results["mean_test_score"], mem.cv_results["mean_test_score"])


def test_estimators_report_one_shape_for_direct_and_auto(client):
    sk = RandomFourierFeatures(n_components=32, random_state=0)
    X = P[:, :4]
    reps = [SketchRidge(sketch=sk, alpha=0.1, solver=s).fit(X, Y[:, 0]).fit_report_
            for s in ("direct", "auto")]
    reps.append(SketchRidge(sketch=sk, alpha=0.1).fit(_dask(X), _dask(Y[:, 0])).fit_report_)
    assert all(r.keys() == reps[0].keys() and r["solver"] == "direct" for r in reps)
    cg = SketchRidgeClassifier(sketch=sk, alpha=0.1, solver="cg").fit(_dask(X), _dask(LABELS))
    assert len(cg.fit_report_["column_residuals"]) == 3


# ============================================================== one parameter check
@pytest.mark.parametrize("kw, match", [
    (dict(alpha=[0.1, -1.0]), "alpha"),
    (dict(alpha="big"), "alpha"),
    (dict(alpha=1.0, solver="pcg"), "solver"),
    (dict(alpha=1.0, solver="cg", kernel=True), "solver"),
    (dict(alpha=[0.1, 1.0], solver="cg"), "solver='cg'"),
    (dict(alpha=1.0, scoring="accuracy", classifier=False), "classifiers"),
    (dict(alpha=[0.1, 1.0], scoring="accuracy", n_folds=None), "cv folds"),
    (dict(alpha=1.0, scoring="r2"), "scoring"),
])
def test_parameters_are_checked_in_one_place(kw, match):
    with pytest.raises(InvalidInputError, match=match):
        check_params(**kw)


def test_kernel_solver_must_match_the_system():
    with pytest.raises(InvalidInputError, match="centres"):
        fit_ridge_model(KernelSystem(_op()), YK, 0.3, solver="falkon")


def test_auto_on_a_kernel_system_asks_the_memory_model():
    kfn = KernelFunction(NET, "ntk", (5,))
    C = XK[:40]
    for cache, chosen in ((True, "pcg"), (False, "falkon")):
        system = KernelSystem(make_kernel(XK, kfn, chunk=64, cache=cache), centres=C)
        solver, why = choose_ridge_solver(system, 150, 40, 1)
        assert solver == chosen and system.op.reason in why
    assert choose_ridge_solver(system, 150, 40, 1, solver="pcg")[0] == "pcg"


def test_wide_in_memory_features_select_alpha_on_one_holdout_fold(monkeypatch):
    """Above HOLDOUT_MIN_FEATURES (lowered here) an in-memory grid is scored on fold 0 only:
    its accuracies are those of a brute-force hold-out fit, the weights those of the direct
    solve at the chosen alpha, and the report says why."""
    import dsketch.engine.path as path_mod
    from dsketch.engine.passes import fold_ids

    monkeypatch.setattr(path_mod, "HOLDOUT_MIN_FEATURES", 40)
    rng = np.random.default_rng(3)
    n, m = 900, 60
    Phi = rng.normal(size=(n, m)).astype(np.float32)
    y = np.where(Phi[:, 3] > 0.8, 2, (Phi[:, :3] @ np.array([1.0, -1.0, 0.5]) > 0).astype(int))
    Y = -np.ones((n, 3))
    Y[np.arange(n), y] = 1.0
    alphas = np.array([1e-2, 1.0, 30.0, 3e3])
    fit = fit_ridge_model(Phi, Y, alphas, n_folds=3, scoring="accuracy", classes=np.arange(3))
    assert "hold-out fold" in fit.report.reason and fit.cv_results["holdout"] is True
    P = Phi.astype(np.float64)
    val = fold_ids(n, 3, 0) == 0
    for a, got in zip(alphas, fit.cv_results["split0_test_score"]):
        W = np.linalg.solve(P[~val].T @ P[~val] + a * np.eye(m), P[~val].T @ Y[~val])
        assert got == np.mean((P[val] @ W).argmax(1) == y[val])
    score = np.array(fit.cv_results["mean_test_score"])
    tied = np.flatnonzero(score == score.max())  # ties go to the lower validation MSE
    best = alphas[tied[np.argmin(np.array(fit.cv_results["mean_test_mse"])[tied])]]
    assert fit.alpha == best
    W = np.linalg.solve(P.T @ P + best * np.eye(m), P.T @ Y)
    np.testing.assert_allclose(fit.W, W, rtol=1e-9, atol=1e-12)
    # at or below the threshold: the usual 3-fold CV
    monkeypatch.setattr(path_mod, "HOLDOUT_MIN_FEATURES", m)
    cv = fit_ridge_model(Phi, Y, alphas, n_folds=3, scoring="accuracy", classes=np.arange(3))
    assert "holdout" not in cv.cv_results and "split2_test_score" in cv.cv_results


def test_a_grid_on_dask_features_too_wide_for_the_workers_is_refused_before_any_pass(client):
    """The per-fold Gram reduction of a grid is sized against the workers' memory: past half
    of the smallest worker's limit the fit names the remedies instead of running a pass."""
    from dsketch.engine.cluster import worker_memory_limits
    from dsketch.engine.passes import SPLIT_EVERY

    _, wmin, _ = worker_memory_limits(client)
    assert wmin > 0
    m_big = int(np.sqrt(0.5 * wmin / (8.0 * 3 * (SPLIT_EVERY + 2)))) + 64
    Phi = da.zeros((32, m_big), chunks=(16, m_big))
    Y = np.ones((32, 2))
    with pytest.raises(InvalidInputError, match="needs a Gram reduction of .* pass one alpha"):
        fit_ridge_model(Phi, Y, [0.1, 1.0], n_folds=3, client=client)
    assert choose_ridge_solver(Phi[:, :64], 32, 64, 2, grid=True, n_folds=3,
                               client=client)[0] == "direct"
    # one alpha needs one Gram (or CG's m×k state): not refused
    assert choose_ridge_solver(Phi, 32, m_big, 2, client=client)[0] in ("direct", "cg")


@edge_ok
def test_passes_over_embedded_features_run_slab_by_slab_with_the_same_sums(client, tmp_path,
                                                                          monkeypatch):
    """The Gram, CG and CV-accuracy passes over ``Φ = embed(X, fmap)`` compute each chunk's
    features slab by slab inside their tasks (no ``dsketch-embed`` task, no chunk-sized
    feature block): the results equal, bit for bit, those of the same passes over Φ's
    chunks, on a Zarr store and a real 2-process cluster; an unvalidated NaN is reported
    alike."""
    from dask.utils import key_split

    from dsketch.engine import ingest, open_dataset, passes
    from dsketch.engine.graph import embedded_source
    from dsketch.engine.passes import gram

    rng = np.random.default_rng(11)
    x = rng.standard_normal((3000, 12)).astype(np.float32)
    y = rng.standard_normal(3000).astype(np.float32)
    url = str(tmp_path / "rows.zarr")
    ingest(x, url, y=y, chunk_rows=700)
    ds = open_dataset(url)
    fm = fully_connected(2, Relu(), W_std=1.4).sketch((12,), n_features=96, seed=2).output("ntk")
    Phi = engine.embed(ds.X, fm)
    assert embedded_source(Phi) is not None
    for derived in (Phi.copy(), Phi[:, :50], Phi.rechunk({0: 1000})):
        assert embedded_source(derived) is None
    for folds in (None, 3):
        fused = gram(Phi, ds.y, n_folds=folds, slab_rows=256, client=client)
        whole = gram(Phi.copy(), ds.y, n_folds=folds, slab_rows=256, client=client)
        for a, b in [(fused.G, whole.G), (fused.B, whole.B), (fused.yy, whole.yy),
                     *zip(fused.G_folds or [], whole.G_folds or [])]:
            np.testing.assert_array_equal(a, b)
        assert fused.n == whole.n == 3000
    P = fm(x).astype(np.float64)
    np.testing.assert_allclose(fused.G, P.T @ P, rtol=1e-10, atol=1e-8)
    Wf, rf = engine.fit_ridge(Phi, ds.y, alpha=0.5, solver="cg", tol=1e-10, slab_rows=256,
                              persist=False, client=client)
    Ww, rw = engine.fit_ridge(Phi.copy(), ds.y, alpha=0.5, solver="cg", tol=1e-10,
                              slab_rows=256, persist=False, client=client)
    np.testing.assert_array_equal(Wf, Ww)
    assert rf.iterations == rw.iterations > 1
    Yc = da.from_array(np.where(y[:, None] > 0, [[1.0, -1.0]], [[-1.0, 1.0]]), chunks=(700, 2))
    grid = [0.1, 1.0, 10.0]
    pf = engine.fit_path(Phi, Yc, grid, n_folds=3, scoring="accuracy", client=client)
    pw = engine.fit_path(Phi.copy(), Yc, grid, n_folds=3, scoring="accuracy", client=client)
    assert set(pf.cv_results) == set(pw.cv_results)
    for key in pf.cv_results:
        np.testing.assert_array_equal(pf.cv_results[key], pw.cv_results[key])
    np.testing.assert_array_equal(pf.W, pw.W)
    seen = []
    real = passes.compute

    def spy(arr, c, progress=None):
        seen.extend(key_split(k) for k in arr.__dask_graph__())
        return real(arr, c, progress)

    monkeypatch.setattr(passes, "compute", spy)
    gram(Phi, ds.y, client=client)
    engine.fit_path(Phi, Yc, grid, n_folds=3, scoring="accuracy", client=client)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        engine.fit_ridge(Phi, ds.y, alpha=0.5, solver="cg", maxiter=2, persist=False,
                         client=client)
    for name in ("dsketch-gram-chunk", "dsketch-cv-score-chunk", "dsketch-cg-setup-chunk",
                 "dsketch-cg-matvec-chunk"):
        assert name in seen
    assert not any(s.startswith("dsketch-embed") for s in seen)
    bad = x.copy()
    bad[1500, 3] = np.nan
    Xb = da.from_array(bad, chunks=(700, 12))
    for Phib in (engine.embed(Xb, fm), engine.embed(Xb, fm).copy()):
        with pytest.raises(InvalidInputError, match=r"chunk 2 \(rows 1400-2099\); first at row 1500"):
            gram(Phib, da.from_array(y, chunks=700), slab_rows=256, client=client)
