"""Engine scaling: rows/s of the one-pass fit vs n, 1 vs 2 workers, direct vs CG, memory.

What it measures, on a Zarr store written to disk first (n × d float32, d = 128 by
default, sharded by rows):

* ``loop``: the one-process baseline — a plain Python loop over the SAME row chunks
  (read the shard with zarr, embed, accumulate ΦᵀΦ and ΦᵀY in float64 with the same
  per-chunk kernel the engine uses), BLAS limited to 1 thread like a 1-thread worker;
* ``dask-1w`` / ``dask-2w``: ``engine.fit_ridge(solver="direct")`` (one pass) on an
  embedded ``LocalCluster`` with 1 and 2 single-threaded worker processes;
* ``cg``: ``engine.fit_ridge(solver="cg")`` on the largest cluster for the sizes up to
  ``--cg-max-rows`` (iterations, seconds per iteration, whether Φ was persisted);
* peak RSS of every worker (sampled inside the workers) for each run;
* CPU seconds (user + system) and minor page faults of the loop's process and of the
  workers, so that the Dask overhead reads the same on a machine other jobs load.

It prints a table with the Dask overhead (loop time / 1-worker time) and the 2-vs-1
speedup, and writes ``benchmarks/results/scaling.json`` and ``scaling.png``.

    python benchmarks/scaling.py --quick      # CI-sized: n up to 2·10^5, ~1 minute
    python benchmarks/scaling.py              # n up to 10^7 rows × 128 (5 GB on disk)
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import psutil
import zarr
from distributed import Client, LocalCluster
from threadpoolctl import threadpool_limits

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from _common import RESULTS  # noqa: E402
from _rss import PeakRSS  # noqa: E402

from dsketch import engine  # noqa: E402
from dsketch.engine.passes import gram_chunk  # noqa: E402
from dsketch.sketch.kernels import RandomFourierFeatures  # noqa: E402


# ----------------------------------------------------------------------- feature map
def feature_map(d: int, m: int, gamma: float):
    return RandomFourierFeatures(input_dim=d, n_features=m, gamma=gamma, seed=0), "RandomFourierFeatures"


# ----------------------------------------------------------------------------- data
def make_store(path: str, n: int, d: int, chunk_rows: int, seed: int = 0) -> float:
    """Write X ~ N(0, 1) (n × d float32) and y = sin(X w) + noise; return seconds."""
    t = time.perf_counter()
    g = da.random.default_rng(seed)
    X = g.standard_normal((n, d), chunks=(chunk_rows, d), dtype=np.float32)
    w = np.random.default_rng(seed + 1).standard_normal(d) / math.sqrt(d)
    y = da.sin(X @ w) + 0.1 * da.random.default_rng(seed + 2).standard_normal(n, chunks=chunk_rows)
    with dask.config.set(scheduler="threads"):
        engine.ingest(X, path, y=y, chunk_rows=chunk_rows, overwrite=True)
    return time.perf_counter() - t


# -------------------------------------------------------------------------- baseline
def loop_baseline(path: str, fmap, threads: int = 1) -> dict:
    """One process, no Dask: for each shard, read → embed → the engine's gram kernel."""
    g = zarr.open_group(path, mode="r")
    zX, zy = g["X"], g["y"]
    rows = (zX.shards or zX.chunks)[0]
    n, m = zX.shape[0], fmap.n_features
    total = None
    cpu0 = _cpu()
    t = time.perf_counter()
    with threadpool_limits(threads):
        for r0 in range(0, n, rows):
            xb = zX[r0:r0 + rows]
            yb = zy[r0:r0 + rows][:, None]
            part = gram_chunk(fmap(xb), yb, n_folds=0, fold_seed=0, slab=8192, m=m, k=1)
            total = part if total is None else total + part
    secs = time.perf_counter() - t
    cpu = np.subtract(_cpu(), cpu0)
    return {"seconds": secs, "rows_per_s": n / secs, "cpu_s": float(cpu[0]),
            "minor_faults": int(cpu[1]),
            "peak_rss_mb": psutil.Process().memory_info().rss / 2**20}


def _cpu() -> tuple:
    """(user + system CPU seconds, minor page faults) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_minflt


def _workers_cpu(client) -> np.ndarray:
    return np.sum([v for v in client.run(_cpu).values()], axis=0)


# ------------------------------------------------------------------- machine check
def _gemm_work(_=None) -> float:
    a = np.random.default_rng(0).random((1000, 1000))
    with threadpool_limits(1):
        t = time.perf_counter()
        for _ in range(8):
            a @ a
        return time.perf_counter() - t


def parallel_capacity(workers: int) -> float:
    """How many single-thread processes this machine runs at full speed right now.

    ``workers × t(1 alone) / t(workers at once)`` for a fixed GEMM: 2.0 on 2 idle cores,
    ~1.0 when other processes already occupy a core (then no 2-worker speedup is possible).
    """
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        t1 = min(pool.map(_gemm_work, range(2)))
    with ctx.Pool(workers) as pool:
        tw = max(pool.map(_gemm_work, range(workers)))
    return workers * t1 / tw if tw > 0 else float("nan")


# ---------------------------------------------------------------------------- runs
def run_cluster(path: str, fmap, workers: int, memory_limit: str, do_cg: bool, alpha: float,
                cg_maxiter: int) -> dict:
    out: dict = {}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      memory_limit=memory_limit, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        ds = engine.open_dataset(path)
        Phi = engine.embed(ds.X, fmap)
        # warm-up: imports and random matrices on the workers (not timed)
        engine.fit_ridge(Phi[: ds.X.chunks[0][0]], ds.y[: ds.X.chunks[0][0]], alpha=alpha,
                         solver="direct", client=client)
        with PeakRSS(client) as mon:
            cpu0 = _workers_cpu(client)
            t = time.perf_counter()
            W, rep = engine.fit_ridge(Phi, ds.y, alpha=alpha, solver="direct", client=client)
            secs = time.perf_counter() - t
            cpu = _workers_cpu(client) - cpu0
        out["direct"] = {"seconds": secs, "rows_per_s": ds.n_rows / secs,
                         "workers_cpu_s": float(cpu[0]), "workers_minor_faults": int(cpu[1]),
                         "gram_s": rep.timings.get("gram_s"),
                         "peak_rss_mb": {a: v / 2**20 for a, v in mon.peak.items()},
                         "max_peak_rss_mb": mon.max_peak / 2**20}
        if do_cg:
            with PeakRSS(client) as mon:
                t = time.perf_counter()
                Wc, repc = engine.fit_ridge(Phi, ds.y, alpha=alpha, solver="cg", tol=1e-6,
                                            maxiter=cg_maxiter, client=client)
                secs = time.perf_counter() - t
            rel = float(np.abs(Wc - W).max() / np.abs(W).max())
            out["cg"] = {"seconds": secs, "iterations": repc.iterations,
                         "seconds_per_iteration": repc.seconds_per_iteration,
                         "setup_s": repc.timings.get("setup_s"), "persisted": repc.persisted,
                         "reason": repc.reason, "converged": repc.converged,
                         "rel_diff_vs_direct": rel, "residuals": repc.residuals,
                         "peak_rss_mb": {a: v / 2**20 for a, v in mon.peak.items()},
                         "max_peak_rss_mb": mon.max_peak / 2**20}
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["runs"]
    ns = [r["n"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    ax.plot(ns, [r["loop"]["rows_per_s"] for r in rows], "o-", label="NumPy loop (1 process)")
    for w in results["config"]["workers"]:
        ax.plot(ns, [r[f"dask_{w}w"]["direct"]["rows_per_s"] for r in rows], "s-",
                label=f"dask, {w} worker(s)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows n")
    ax.set_ylabel("rows / s (one-pass direct fit)")
    ax.set_title(f"d={results['config']['d']}, m={results['config']['m']}")
    ax.legend()
    ax = axes[1]
    cg = [(r["n"], r[f"dask_{max(results['config']['workers'])}w"].get("cg")) for r in rows]
    cg = [(n, c) for n, c in cg if c]
    if cg:
        ax.plot([n for n, _ in cg], [c["seconds_per_iteration"] for _, c in cg], "o-",
                label="CG s / iteration")
        ax.plot([n for n, _ in cg], [c["setup_s"] for _, c in cg], "^-", label="CG setup pass (s)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows n")
        ax.set_ylabel("seconds")
        ax.legend()
        ax.set_title("distributed CG")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI-sized run (n ≤ 2·10^5)")
    p.add_argument("--rows", type=float, nargs="*", help="row counts (default by mode)")
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--m", type=int, default=256, help="features")
    p.add_argument("--chunk-rows", type=int, default=None)
    p.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    p.add_argument("--memory-limit", default="6GiB", help="per worker")
    p.add_argument("--cg-max-rows", type=float, default=None)
    p.add_argument("--cg-maxiter", type=int, default=100)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--data-dir", default=None, help="where stores are written (default: temp)")
    p.add_argument("--keep", action="store_true", help="keep the stores")
    p.add_argument("--out", default=str(RESULTS), help="results folder")
    p.add_argument("--name", default=None, help="file stem of the JSON and PNG (default: scaling, or scaling_quick with --quick)")
    a = p.parse_args(argv)

    rows = [int(r) for r in a.rows] if a.rows else (
        [20_000, 100_000, 200_000] if a.quick else [100_000, 1_000_000, 10_000_000])
    chunk_rows = a.chunk_rows or (16_384 if a.quick else 65_536)
    cg_max = a.cg_max_rows or (200_000 if a.quick else 1_000_000)
    fmap, fmap_name = feature_map(a.d, a.m, gamma=1.0 / a.d)
    base = Path(a.data_dir) if a.data_dir else Path(tempfile.mkdtemp(prefix="dsketch-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    results = {"benchmark": "scaling", "config": {
        "d": a.d, "m": a.m, "chunk_rows": chunk_rows, "workers": a.workers,
        "memory_limit": a.memory_limit, "feature_map": fmap_name, "alpha": a.alpha,
        "threads_per_worker": 1, "loop_blas_threads": 1, "quick": a.quick,
        "cpus": os.cpu_count()}, "runs": []}
    cap = parallel_capacity(max(a.workers))
    results["config"]["parallel_capacity"] = cap
    print(f"scaling: d={a.d} m={a.m} chunk_rows={chunk_rows} map={fmap_name} "
          f"cpus={os.cpu_count()} data in {base}")
    print(f"machine check: {max(a.workers)} single-thread GEMM processes at once run "
          f"{cap:.2f}× the work of one (the ceiling of the {max(a.workers)}-vs-1 worker speedup "
          f"right now)")
    try:
        for n in rows:
            path = str(base / f"x{n}.zarr")
            t_ing = make_store(path, n, a.d, chunk_rows)
            disk = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
            rec = {"n": n, "ingest_s": t_ing, "store_mb": disk / 2**20,
                   "chunks": math.ceil(n / chunk_rows)}
            print(f"n={n:>10,}: store {disk / 2**20:8.1f} MiB written in {t_ing:6.1f} s", flush=True)
            rec["loop"] = loop_baseline(path, fmap)
            print(f"  loop     {rec['loop']['seconds']:8.2f} s  {rec['loop']['rows_per_s']:12,.0f} rows/s  "
                  f"cpu {rec['loop']['cpu_s']:.2f} s", flush=True)
            for w in a.workers:
                r = run_cluster(path, fmap, w, a.memory_limit,
                                do_cg=(w == max(a.workers) and n <= cg_max), alpha=a.alpha,
                                cg_maxiter=a.cg_maxiter)
                rec[f"dask_{w}w"] = r
                dr = r["direct"]
                print(f"  dask {w}w  {dr['seconds']:8.2f} s  {dr['rows_per_s']:12,.0f} rows/s  "
                      f"cpu {dr['workers_cpu_s']:.2f} s, {dr['workers_minor_faults']:,} minor faults  "
                      f"peak RSS/worker {dr['max_peak_rss_mb']:7.0f} MiB", flush=True)
                if "cg" in r:
                    c = r["cg"]
                    print(f"  cg {w}w    {c['seconds']:8.2f} s  {c['iterations']} it × "
                          f"{c['seconds_per_iteration']:.3f} s (+ setup {c['setup_s']:.2f} s), "
                          f"persisted={c['persisted']}, rel diff vs direct {c['rel_diff_vs_direct']:.1e}, "
                          f"peak RSS/worker {c['max_peak_rss_mb']:.0f} MiB", flush=True)
            results["runs"].append(rec)
            if not a.keep:
                shutil.rmtree(path, ignore_errors=True)
    finally:
        if not a.keep and not a.data_dir:
            shutil.rmtree(base, ignore_errors=True)

    # ---- table
    w1, wmax = min(a.workers), max(a.workers)
    print()
    hdr = (f"{'n':>11} {'loop rows/s':>13} {f'{w1}w rows/s':>12} {f'{wmax}w rows/s':>12} "
           f"{'loop/1w':>8} {'cpu':>5} {f'{wmax}w/{w1}w':>7} {'peak MiB':>9} {'cg it':>6} {'s/it':>7} {'persist':>8}")
    print(hdr)
    print("-" * len(hdr))
    for rec in results["runs"]:
        l = rec["loop"]["rows_per_s"]
        r1 = rec[f"dask_{w1}w"]["direct"]["rows_per_s"]
        rm = rec[f"dask_{wmax}w"]["direct"]["rows_per_s"]
        c = rec[f"dask_{wmax}w"].get("cg")
        cpu_ratio = rec["loop"]["cpu_s"] / rec[f"dask_{w1}w"]["direct"]["workers_cpu_s"]
        rec["ratios"] = {"dask_1w_over_loop": r1 / l, "speedup_max_over_min_workers": rm / r1,
                         "loop_cpu_over_1w_cpu": cpu_ratio}
        peak = max(rec[f"dask_{w}w"]["direct"]["max_peak_rss_mb"] for w in a.workers)
        print(f"{rec['n']:>11,} {l:>13,.0f} {r1:>12,.0f} {rm:>12,.0f} {r1 / l:>8.2f} {cpu_ratio:>5.2f} {rm / r1:>7.2f} "
              f"{peak:>9.0f} " + (f"{c['iterations']:>6} {c['seconds_per_iteration']:>7.3f} {str(c['persisted']):>8}"
                                  if c else f"{'-':>6} {'-':>7} {'-':>8}"))
    print(f"parallel capacity of the machine during the run: {cap:.2f} (of {max(a.workers)})")
    print("loop/1w = throughput of 1 single-thread worker relative to the 1-thread NumPy loop "
          "(1.0 = no Dask overhead); cpu = loop CPU seconds / the worker's CPU seconds (the same "
          "ratio, insensitive to other load); {0}w/{1}w = speedup from {1} to {0} workers."
          .format(wmax, w1))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = a.name or ("scaling_quick" if a.quick else "scaling")
    (out / f"{name}.json").write_text(json.dumps(results, indent=2, default=float))
    plot(results, out / f"{name}.png")
    print(f"wrote {out / (name + '.json')} and {out / (name + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
