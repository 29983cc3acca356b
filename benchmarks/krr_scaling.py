"""Full-kernel ridge by preconditioned CG against n: seconds per iteration, iterations, memory.

Synthetic rows (``x ~ N(0, I_d)``, d = 64, a smooth target plus noise) and the NTK of
``fully_connected(2, Relu(), W_std=√2, b_std=0.1)``; for each n, ``dsketch.KernelRidge``
(``solver="pcg"``, tol 1e-3, fixed λ) with

* ``rpcholesky``: cached float32 kernel blocks, randomly pivoted Cholesky preconditioner of
  rank ``rank`` (the default configuration);
* ``none``: the same cached kernel, plain CG (what the preconditioner saves);
* ``recomputed``: rpcholesky with ``cache=False`` (every iteration recomputes the blocks),
  up to ``uncached_max`` rows.

Each row records the kernel seconds, the preconditioner seconds, iterations to the
tolerance, seconds per iteration, the cache's bytes and the process's peak RSS, plus the
machine's load average.  Writes ``results/krr_scaling[-quick].json`` and ``.png``.

    python benchmarks/krr_scaling.py --quick   # CI-sized, under a minute
    python benchmarks/krr_scaling.py           # n up to 60,000 (7.2 GiB of cached kernel)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_results  # noqa: E402
from _peak import ProcessPeak  # noqa: E402

from dsketch import KernelRidge  # noqa: E402
from dsketch.nets import Relu, fully_connected  # noqa: E402

NET = fully_connected(2, Relu(), W_std=math.sqrt(2.0), b_std=0.1)
CONFIG = {
    "full": {"n": [2500, 5000, 10000, 20000, 40000, 60000], "d": 64, "rank": 1024,
             "uncached_max": 5000, "plain_max": 20000, "alpha": 0.1},
    "quick": {"n": [500, 1000, 2000], "d": 16, "rank": 128, "uncached_max": 1000,
              "plain_max": 2000, "alpha": 0.1},
}


def data(n: int, d: int):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d) / math.sqrt(d)
    y = np.sin(2 * X @ w) + 0.3 * np.cos(X[:, 0]) + 0.1 * rng.standard_normal(n)
    return X, y


def one(X, y, cfg, **kw) -> dict:
    with ProcessPeak() as peak, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        m = KernelRidge(net=NET, alpha=cfg["alpha"], rank=cfg["rank"], tol=1e-3, max_iter=300,
                        random_state=0, **kw).fit(X, y)
        seconds = time.perf_counter() - t0
    rep = m.fit_report_
    return {"seconds": seconds, "iterations": rep["iterations"], "converged": rep["converged"],
            "seconds_per_iteration": rep["seconds_per_iteration"],
            "kernel_s": rep["timings"].get("kernel_s"),
            "preconditioner_s": rep["timings"].get("preconditioner_s"),
            "cg_s": rep["timings"].get("cg_s"), "cache_bytes": rep["cache_bytes"],
            "cache": rep["cache"], "peak_rss_gib": peak.peak / 2**30,
            "start_rss_gib": peak.start / 2**30, "final_residual": max(rep["column_residuals"]),
            "warnings": [str(w.message)[:200] for w in caught], "load": os.getloadavg()[0]}


def run(quick: bool) -> dict:
    cfg = CONFIG["quick" if quick else "full"]
    rows = []
    for n in cfg["n"]:
        X, y = data(n, cfg["d"])
        runs = [("rpcholesky", dict(cache=True, preconditioner="rpcholesky"))]
        if n <= cfg["plain_max"]:
            runs.append(("none", dict(cache=True, preconditioner=None)))
        if n <= cfg["uncached_max"]:
            runs.append(("recomputed", dict(cache=False, preconditioner="rpcholesky")))
        for name, kw in runs:
            r = {"n": n, "config": name, **one(X, y, cfg, **kw)}
            rows.append(r)
            print(f"n={n:6d} {name:11s} it={r['iterations']:4d} s/it={r['seconds_per_iteration'] or 0:.3f} "
                  f"kernel={r['kernel_s']:.1f}s total={r['seconds']:.1f}s peak={r['peak_rss_gib']:.2f}GiB "
                  f"load={r['load']:.1f}", flush=True)
    return {"config": cfg, "quick": quick, "rows": rows}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for name in ("rpcholesky", "none", "recomputed"):
        pts = [r for r in result["rows"] if r["config"] == name]
        if not pts:
            continue
        ns = [r["n"] for r in pts]
        axes[0].plot(ns, [r["seconds_per_iteration"] for r in pts], "o-", label=name)
        axes[1].plot(ns, [r["iterations"] for r in pts], "o-", label=name)
        axes[2].plot(ns, [r["peak_rss_gib"] for r in pts], "o-", label=name)
    for ax, lab in zip(axes, ("seconds per CG iteration", "iterations to rel. residual 1e-3",
                              "peak RSS (GiB)")):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("n (rows)")
        ax.set_ylabel(lab)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    fig.suptitle("KernelRidge (full NTK, PCG): cost against n, 2 cores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized run")
    args = ap.parse_args(argv)
    name = "krr_scaling-quick" if args.quick else "krr_scaling"
    result = run(args.quick)
    write_results(name, result)
    plot(result, RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
