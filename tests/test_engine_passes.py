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
