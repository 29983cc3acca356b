"""Regularization path and large direct solves: seconds before/after, and what crashes.

Part 1 (path): ``SketchRidgeClassifier``'s alpha selection on Fashion-MNIST (protocol in
``_fashion.py``; ``NTKSketch`` of ``fully_connected(2, Relu(), W_std=√2, b_std=0.1)``,
m features, a grid of 7 alphas, cv=3) from the same in-memory features, three ways:

* ``eigh (before)``: the former algorithm — feature space, one ``eigh`` per fold plus one
  for the refit, CV by MSE;
* ``feature + Cholesky``: feature space, one Cholesky per fold and alpha, CV by accuracy;
* ``auto``: what ``fit_path`` picks (the n × n kernel form when n < m), CV by accuracy;

plus the whole ``SketchRidgeClassifier.fit`` (transform included) as the estimator runs it.

Part 2 (Cholesky): LAPACK ``potrf`` (``scipy.linalg.cholesky``, bundled OpenBLAS, default
threads) against the blocked :func:`dsketch.engine.linalg.cholesky`, each in a
child process so that a segfault is recorded, not fatal.

    python benchmarks/ridge_path.py --quick     # n=2000, m=2048; Cholesky up to 4096
    python benchmarks/ridge_path.py             # n=2000, m=4096; Cholesky up to 16384
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import _fashion  # noqa: E402
from _common import RESULTS, machine  # noqa: E402

from dsketch import engine  # noqa: E402
from dsketch.engine import linalg  # noqa: E402

ALPHAS = np.logspace(-3, 3, 7)


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def path_part(n: int, m: int, cv: int) -> dict:
    import warnings

    from dsketch import NTKSketch, SketchRidgeClassifier
    from dsketch.nets import Relu, fully_connected

    Xall, yall, _, _ = _fashion.load()
    idx = _fashion.subset(n)
    X, y = Xall[idx].astype(np.float32), yall[idx]
    net = fully_connected(2, Relu(), W_std=math.sqrt(2), b_std=0.1)
    sk = NTKSketch(net=net, n_components=m, random_state=0).fit(X)
    P, t_tr = _timed(lambda: sk.transform(X))
    Y = np.where(y[:, None] == np.arange(10)[None], 1.0, -1.0)
    runs = {}
    warnings.simplefilter("ignore", engine.AlphaGridWarning)
    saved = linalg.EIGH_MIN_ALPHAS
    linalg.EIGH_MIN_ALPHAS = 0  # every RidgeSystem eigendecomposes: the former path
    try:
        before, t = _timed(lambda: engine.fit_path(P, Y, ALPHAS, n_folds=cv, form="feature"))
    finally:
        linalg.EIGH_MIN_ALPHAS = saved
    runs["eigh (before)"] = {"seconds": t, "alpha": before.alpha, **before.timings}
    for label, form in (("feature + Cholesky", "feature"), ("auto", "auto")):
        r, t = _timed(lambda: engine.fit_path(P, Y, ALPHAS, n_folds=cv, form=form,
                                              scoring="accuracy"))
        mse = np.asarray(r.cv_results["mean_test_mse"])
        ref = np.asarray(before.cv_results["mean_test_mse"])
        runs[label] = {"seconds": t, "alpha": r.alpha, "form": r.form, **r.timings,
                       "cv_accuracy": r.cv_results["mean_test_score"],
                       "cv_mse_rel_diff_vs_before": float(np.max(np.abs(mse - ref) / ref))}
        if r.alpha == before.alpha:
            runs[label]["W_rel_diff_vs_before"] = float(np.abs(r.W - before.W).max()
                                                        / np.abs(before.W).max())
    clf = SketchRidgeClassifier(sketch=NTKSketch(net=net, n_components=m, random_state=0),
                                alpha=ALPHAS, cv=cv)
    _, t_fit = _timed(lambda: clf.fit(X, y))
    runs["estimator fit (after)"] = {"seconds": t_fit, "alpha": clf.alpha_,
                                     "timings": clf.fit_report_["timings"]}
    return {"n": n, "m": m, "cv": cv, "alphas": ALPHAS.tolist(), "transform_s": t_tr,
            "runs": runs}


def _child(n: int, method: str) -> None:
    r = np.random.default_rng(0).random((n, n))
    A = r + r.T
    del r
    A[np.diag_indices(n)] += 2.0 * n
    t = time.perf_counter()
    if method == "lapack":
        import scipy.linalg

        scipy.linalg.cholesky(A, lower=True, check_finite=False)
    else:
        linalg.cholesky(A, blocked_min=1)  # the blocked algorithm at every size
    print(json.dumps({"seconds": time.perf_counter() - t}))


def cholesky_part(sizes) -> list:
    out = []
    for n in sizes:
        for method in ("lapack", "blocked"):
            p = subprocess.run([sys.executable, __file__, "--cholesky-child", str(n), method],
                               capture_output=True, text=True)
            rec = {"n": n, "method": method, "returncode": p.returncode}
            if p.returncode == 0:
                rec.update(json.loads(p.stdout.strip().splitlines()[-1]))
            print(f"  cholesky n={n:>6} {method:>8}: " + (f"{rec['seconds']:.2f} s" if p.returncode == 0
                                                          else f"CRASHED (return code {p.returncode})"),
                  flush=True)
            out.append(rec)
    return out


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    runs = res["path"]["runs"]
    names = list(runs)
    axes[0].barh(names, [runs[k]["seconds"] for k in names])
    axes[0].set_xlabel("seconds")
    axes[0].set_title(f"alpha path, n={res['path']['n']}, m={res['path']['m']}, "
                      f"{len(ALPHAS)} alphas, cv={res['path']['cv']}")
    ax = axes[1]
    for method, mk in (("lapack", "o-"), ("blocked", "s-")):
        recs = [r for r in res["cholesky"] if r["method"] == method]
        ok = [r for r in recs if r["returncode"] == 0]
        ax.plot([r["n"] for r in ok], [r["seconds"] for r in ok], mk, label=method)
        bad = [r["n"] for r in recs if r["returncode"] != 0]
        if bad:
            ax.plot(bad, [max(r["seconds"] for r in res["cholesky"] if r["returncode"] == 0)] * len(bad),
                    "rx", ms=12, label=f"{method}: crashed")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("matrix order")
    ax.set_ylabel("seconds")
    ax.set_title("Cholesky")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--m", type=int, default=None)
    p.add_argument("--cv", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="*", default=None, help="Cholesky orders")
    p.add_argument("--cholesky-child", nargs=2, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.cholesky_child:
        _child(int(a.cholesky_child[0]), a.cholesky_child[1])
        return 0
    m = a.m or (2048 if a.quick else 4096)
    sizes = a.sizes or ([2048, 4096] if a.quick else [4096, 8192, 16384])
    res = {"benchmark": "ridge_path", "machine": machine(), "quick": a.quick}
    res["path"] = path_part(a.n, m, a.cv)
    for k, r in res["path"]["runs"].items():
        print(f"  {k:>22}: {r['seconds']:8.2f} s  alpha={r['alpha']:g}  "
              + " ".join(f"{x}={r[x]:.2g}" for x in ("cv_mse_rel_diff_vs_before", "W_rel_diff_vs_before")
                         if x in r), flush=True)
    res["cholesky"] = cholesky_part(sizes)
    name = "ridge_path_quick" if a.quick else "ridge_path"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2, default=float))
    plot(res, RESULTS / f"{name}.png")
    print(f"wrote {RESULTS / (name + '.json')} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
