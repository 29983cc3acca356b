"""dsketch.engine.solve on a REAL multi-process LocalCluster over Zarr stores on disk.

Checks: direct and CG fits equal the in-memory NumPy ridge solution (≤ 1e-5 relative),
for 1 and several targets; per-fold Grams; task names on the scheduler; a worker killed
mid-fit changes nothing; worker memory measured during a fit (reported, loosely bounded).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from dsketch import engine

from dask.utils import key_split

from _maps import RFF, dense_ridge

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _rss import PeakRSS  # noqa: E402  (the benchmarks' worker-memory monitor)

pytestmark = pytest.mark.timeout(300)

N, D, M = 6000, 10, 96


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      memory_limit="2GiB") as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D)).astype(np.float32)
    w = rng.standard_normal((D, 3))
    Y = np.sin(X @ w) + 0.1 * rng.standard_normal((N, 3))
    url = str(tmp_path_factory.mktemp("store") / "train.zarr")
    engine.ingest(X, url, y=Y, chunk_rows=1000)
    fm = RFF((D,), M, gamma=0.3, seed=11)
    return url, X, Y, fm


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _phi_y(data, targets):
    url, X, Y, fm = data
    ds = engine.open_dataset(url)
    Yd = ds.y if targets == 3 else ds.y[:, 0]
    return engine.embed(ds.X, fm), Yd, fm(X), (Y if targets == 3 else Y[:, :1])


@pytest.mark.parametrize("targets", [1, 3])
@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_fit_on_cluster_equals_numpy_ridge(client, data, solver, targets):
    Phi, Yd, P, Y = _phi_y(data, targets)
    alpha = 0.5
    W, rep = engine.fit_ridge(Phi, Yd, alpha=alpha, solver=solver, tol=1e-10, maxiter=300,
                              client=client)
    ref = dense_ridge(P, Y, alpha)
    assert W.shape == (M, targets) and W.dtype == np.float64
    assert _rel(W, ref) <= 1e-5
    assert rep.solver == solver and rep.n_samples == N and rep.n_features == M
    assert rep.n_targets == targets and rep.converged
    if solver == "cg":
        assert rep.iterations >= 1 and len(rep.residuals) == rep.iterations + 1
        assert rep.residuals[-1] <= 1e-10 and rep.passes == rep.iterations + 1
        assert rep.persisted is True and "persisted" in rep.reason  # 2 MiB Φ fits 4 GiB
        assert rep.preconditioner.startswith("nystrom")
    d = rep.to_dict()
    assert d["solver"] == solver and isinstance(d["residuals"], list)


def test_cg_variants_recompute_jacobi_warm_start(client, data):
    Phi, Yd, P, Y = _phi_y(data, 3)
    ref = dense_ridge(P, Y, 0.5)
    seen = []
    W, rep = engine.fit_ridge(Phi, Yd, alpha=0.5, solver="cg", tol=1e-10, persist=False,
                              preconditioner="jacobi", client=client,
                              callback=lambda r, it: seen.append((it, r)))
    assert _rel(W, ref) <= 1e-5 and rep.persisted is False and "recomputed" in rep.reason
    assert [it for it, _ in seen] == list(range(1, rep.iterations + 1))
    W2, rep2 = engine.fit_ridge(Phi, Yd, alpha=0.5, solver="cg", tol=1e-10, x0=ref, client=client)
    assert rep2.iterations <= 1 and _rel(W2, ref) <= 1e-8
    W3, rep3 = engine.fit_ridge(Phi, Yd, alpha=0.5, solver="cg", tol=1e-10, preconditioner=None,
                                client=client)
    assert _rel(W3, ref) <= 1e-5
    assert rep.iterations < rep3.iterations or rep.iterations <= 40


def test_auto_says_what_and_why(client, data):
    Phi, Yd, P, Y = _phi_y(data, 1)
    W, rep = engine.fit_ridge(Phi, Yd, alpha=0.5, client=client)
    assert rep.solver == "direct" and "direct" in rep.reason and "m=96" in rep.reason
    solver, reason = engine.choose_solver(10**8, 50_000, 2, client)
    assert solver == "cg" and "50000" in reason
    persist, why = engine.choose_persist(da.zeros((10**9, 4096), chunks=(10**6, 4096)), client, "auto")
    assert persist is False and "exceeds" in why


def test_gram_folds_equal_numpy_sums(client, data):
    url, X, Y, fm = data
    ds = engine.open_dataset(url)
    Phi = engine.embed(ds.X, fm)
    g = engine.gram(Phi, ds.y, n_folds=4, fold_seed=7, client=client)
    P = fm(X).astype(np.float64)
    ids = engine.fold_ids(N, 4, 7)
    np.testing.assert_allclose(g.G, P.T @ P, rtol=1e-10)
    np.testing.assert_allclose(g.B, P.T @ Y, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(g.yy, (Y ** 2).sum(0), rtol=1e-12)
    assert g.n == N and sum(g.n_folds) == N
    for f in range(4):
        r = ids == f
        assert g.n_folds[f] == r.sum()
        np.testing.assert_allclose(g.G_folds[f], P[r].T @ P[r], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(g.B_folds[f], P[r].T @ Y[r], rtol=1e-9, atol=1e-9)
    # fold of a row does not depend on where a chunk starts
    np.testing.assert_array_equal(engine.fold_ids(1000, 4, 7, start=2500), ids[2500:3500])
    # per-target alpha
    W = engine.solve_gram(g, np.array([0.1, 1.0, 10.0]))
    for j, a in enumerate([0.1, 1.0, 10.0]):
        assert _rel(W[:, j:j + 1], dense_ridge(P, Y[:, j], a)) <= 1e-8


def test_predict_lazy_and_written_back(client, data, tmp_path):
    Phi, Yd, P, Y = _phi_y(data, 3)
    W = dense_ridge(P, Y, 0.5)
    pred = engine.predict(Phi, W)
    assert pred.shape == (N, 3) and pred.name.startswith("dsketch-predict-")
    url = str(tmp_path / "out.zarr")
    engine.write_array(pred, url, name="predictions")
    import zarr

    got = zarr.open_group(url, mode="r")["predictions"][:]
    np.testing.assert_allclose(got, P.astype(np.float64) @ W, rtol=1e-10, atol=1e-10)
    assert engine.predict(Phi, W[:, 0]).shape == (N,)


def test_task_names_on_the_scheduler(client, data):
    Phi, Yd, P, Y = _phi_y(data, 1)
    assert {key_split(k) for k in Phi.__dask_graph__().layers[Phi.name].keys()} == {"dsketch-embed-rff"}
    before = set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes)))
    engine.fit_ridge(Phi, Yd, alpha=0.5, solver="direct", client=client)
    engine.fit_ridge(Phi, Yd, alpha=0.5, solver="cg", persist=False, client=client)
    Phi3, Y3, _, _ = _phi_y(data, 3)
    engine.fit_path(Phi3, Y3, [0.1, 1.0, 10.0], n_folds=3, scoring="accuracy", client=client)
    after = set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes)))
    for name in ("dsketch-gram", "dsketch-gram-partial", "dsketch-gram-aggregate",
                 "dsketch-cg-setup", "dsketch-cg-matvec", "dsketch-cg-matvec-aggregate",
                 "dsketch-cv-score", "dsketch-cv-score-aggregate"):
        assert name in after, [p for p in sorted(after) if "dsketch" in p]
    # read → validate → embed → per-chunk partial are fused into the dsketch-gram/-cg tasks:
    # every task group a fit creates is named dsketch-...
    new = {p for p in after - before if not p.startswith("finalize")}  # dask's own last step
    assert all(p.startswith("dsketch-") for p in new), sorted(new)


def test_worker_killed_mid_fit_gives_the_same_weights(client, data):
    Phi, Yd, P, Y = _phi_y(data, 3)
    kw = dict(alpha=0.05, solver="cg", tol=1e-10, maxiter=300, persist=True,
              preconditioner="jacobi", client=client)
    W_ref, rep_ref = engine.fit_ridge(Phi, Yd, **kw)
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    at_iteration = threading.Event()
    out: dict = {}

    def cb(res, it):
        if it == 3:
            at_iteration.set()
            time.sleep(0.01)

    def run():
        try:
            out["fit"] = engine.fit_ridge(Phi, Yd, callback=cb, **kw)
        except BaseException as exc:  # pragma: no cover - reported below
            out["error"] = exc

    th = threading.Thread(target=run)
    th.start()
    assert at_iteration.wait(120)
    os.kill(victim, signal.SIGKILL)  # lands while iteration 4's reduction runs
    th.join(240)
    assert not th.is_alive() and "error" not in out, out.get("error")
    W, rep = out["fit"]
    assert rep.iterations == rep_ref.iterations
    np.testing.assert_allclose(W, W_ref, rtol=1e-9, atol=1e-12)
    client.wait_for_workers(2, timeout=60)
    assert victim not in client.run(os.getpid).values()  # the nanny started a new process


def test_worker_memory_during_fit_is_bounded(client, data):
    """Peak worker RSS over a direct and a CG fit with m = 768 (reported; loose bound only)."""
    url, X, Y, fm = data
    ds = engine.open_dataset(url)
    Phi = engine.embed(ds.X, RFF((D,), 768, gamma=0.3, seed=2))
    with PeakRSS(client) as mon:
        _, r1 = engine.fit_ridge(Phi, ds.y, alpha=1.0, solver="direct", client=client)
        _, r2 = engine.fit_ridge(Phi, ds.y, alpha=1.0, solver="cg", persist=False, maxiter=20,
                                 tol=1e-3, client=client)
    chunk = 1000 * (D + 768) * 4
    gram_b = 768 * 768 * 8
    print(f"\ndirect {r1.seconds:.2f}s, cg {r2.seconds:.2f}s ({r2.iterations} iterations); "
          f"worker RSS start/peak (MiB): " + ", ".join(
              f"{mon.start[a] / 2**20:.0f}/{p / 2**20:.0f}" for a, p in mon.peak.items())
          + f"; one chunk of X+Φ = {chunk / 2**20:.1f} MiB, one Gram partial = {gram_b / 2**20:.1f} MiB")
    assert len(mon.peak) == 2 and mon.max_peak < 1.5 * 2**30
