"""Sparse-input benchmark: feature time linear in nnz and flat in the input width d.

Generated sparse rows (CSR, float32): row lengths power-law distributed between 10 and 200
non-zeros (P(k) ∝ k^-1.5, mean ≈ 40), column indices uniform over ``d``, values N(0, 1).
Two sweeps, each timing ``transform`` of a fitted map (best of ``--repeat``, after a
warm-up call that builds the random matrices):

  - **nnz**: fixed ``d`` (2^20), rows n = 10^3 … 10^6: time against the total nnz — input
    sparsity time is a straight line (seconds per million non-zeros ~ constant);
  - **width**: fixed rows and row lengths (same nnz), d = 2^16 … 2^22: time flat in d.

Methods, on the same sparse input: dsketch ``NTKSketch`` (fully connected ReLU net; wide rows
enter through a CountSketch), ``RandomFourierFeatures`` (same), ``PolynomialSketch``
(degree 2, CountSketch leaves), beside scikit-learn's ``PolynomialCountSketch`` (takes
sparse input, but loops over the d input columns in Python: ~0.3 ms a column, so run only up
to ``--sklearn-max-d``) and ``RBFSampler`` (takes sparse input, but its d × m Gaussian
matrix grows with d: run only while d·m stays under ``--max-weights`` numbers), and
densify-then-sketch (``X.toarray()`` then dsketch's dense path, while n·d stays under
``--max-dense``).  The width sweep starts low enough for scikit-learn's sketch to appear;
its slopes are fitted over d ≥ 2^16 (rows up to ``REDUCE_ABOVE`` = 2^13 wide are densified
chunk by chunk and sketched exactly, so narrower widths cost more for the net sketches).
Peak resident memory above the start of each timed call is sampled in a thread; the
dense copy of the input (n·d·4 bytes) is reported beside it (sparse runs stay far below).

Writes ``benchmarks/results/sparse.json`` and ``sparse.png`` (``sparse-quick.*`` with
``--quick``).  Usage: ``python benchmarks/sparse.py [--quick] [--rows ...] [--widths ...]``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

# This file is named like pydata's ``sparse`` package, which dask imports when it can: keep
# the benchmarks folder off sys.path while dask loads, then borrow it for ``_common`` only;
# imported *as* ``sparse`` (this folder first on someone's sys.path), it says it is not it.
if __name__ == "sparse":
    raise ImportError("benchmarks/sparse.py is a script, not the pydata 'sparse' package")
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from sklearn.kernel_approximation import PolynomialCountSketch, RBFSampler  # noqa: E402

from dsketch.estimators import NTKSketch, PolynomialSketch, RandomFourierFeatures  # noqa: E402

sys.path.insert(0, str(_HERE))
from _common import RESULTS, write_results  # noqa: E402
from _peak import ProcessPeak  # noqa: E402

sys.path.remove(str(_HERE))


def power_law_rows(n: int, d: int, seed: int = 0, lo: int = 10, hi: int = 200) -> sp.csr_matrix:
    """``n`` CSR rows of width ``d``: lengths P(k) ∝ k^-1.5 on [lo, hi], uniform columns."""
    g = np.random.default_rng(seed)
    k = np.arange(lo, hi + 1)
    p = k ** -1.5
    lengths = g.choice(k, size=n, p=p / p.sum())
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    nnz = int(indptr[-1])
    # columns: uniform (duplicates within a row are rare at d ≥ 2^16 and merely summed)
    indices = g.integers(0, d, size=nnz, dtype=np.int64).astype(np.int32)
    data = g.standard_normal(nnz, dtype=np.float32)
    X = sp.csr_matrix((data, indices, indptr), shape=(n, d))
    X.sum_duplicates()
    return X


def methods(m: int, seed: int = 0) -> dict:
    """name -> (factory of a fresh estimator, kind): ``dsketch``, ``sklearn`` or ``dense``."""
    return {
        "dsketch NTKSketch": (lambda: NTKSketch(n_components=m, random_state=seed), "dsketch"),
        "dsketch RandomFourierFeatures": (
            lambda: RandomFourierFeatures(n_components=m, gamma=0.01, random_state=seed), "dsketch"),
        "dsketch PolynomialSketch (countsketch leaves)": (
            lambda: PolynomialSketch(n_components=m, degree=2, leaf="countsketch", random_state=seed),
            "dsketch"),
        "sklearn PolynomialCountSketch": (
            lambda: PolynomialCountSketch(n_components=m, degree=2, random_state=seed), "sklearn"),
        "sklearn RBFSampler": (lambda: RBFSampler(n_components=m, gamma=0.01, random_state=seed),
                               "sklearn-dxm"),
        "densify + dsketch NTKSketch": (lambda: NTKSketch(n_components=m, random_state=seed), "dense"),
    }


def run_one(name, factory, kind, X, *, m: int, repeat: int, max_dense: float, max_weights: float,
            sklearn_max_d: int):
    """Time and peak memory of ``transform`` of ``X`` (None when the method does not fit)."""
    n, d = X.shape
    if kind == "dense" and n * d > max_dense:
        return None
    if kind == "sklearn-dxm" and d * m > max_weights:
        return None
    if kind == "sklearn" and d > sklearn_max_d:
        return None
    est = factory()
    est.fit(X[:2] if kind != "dense" else X[:2].toarray())

    def call():
        return est.transform(X.toarray() if kind == "dense" else X)

    call()  # warm-up: builds the random matrices (memory ∝ d for the CountSketches)
    gc.collect()
    best, peak = float("inf"), 0
    for _ in range(repeat):
        with ProcessPeak(interval=0.005) as mem:
            t0 = time.perf_counter()
            out = call()
            best = min(best, time.perf_counter() - t0)
        del out
        peak = max(peak, mem.extra)
        gc.collect()
    return {"method": name, "n": n, "d": d, "nnz": int(X.nnz), "m": m, "seconds": best,
            "us_per_nnz": best / X.nnz * 1e6, "peak_extra_mb": peak / 2 ** 20,
            "dense_input_mb": n * d * 4 / 2 ** 20, "output_mb": n * m * 4 / 2 ** 20}


def sweep(label, configs, *, m, repeat, max_dense, max_weights, sklearn_max_d, only=None):
    rows = []
    for n, d in configs:
        X = power_law_rows(n, d, seed=1)
        for name, (factory, kind) in methods(m).items():
            if only and name not in only:
                continue
            r = run_one(name, factory, kind, X, m=m, repeat=repeat, max_dense=max_dense,
                        max_weights=max_weights, sklearn_max_d=sklearn_max_d)
            if r is None:
                continue
            r["sweep"] = label
            rows.append(r)
            print(f"[{label}] {name:46s} n={n:>8d} d=2^{int(np.log2(d)):<2d} nnz={X.nnz:>10d} "
                  f"{r['seconds']:8.3f} s  {r['us_per_nnz']:7.3f} µs/nnz  "
                  f"peak +{r['peak_extra_mb']:8.1f} MB (dense input {r['dense_input_mb']:.0f} MB)",
                  flush=True)
        del X
        gc.collect()
    return rows


def fits(rows: list, sweep_name: str, key: str, low: float = 0) -> dict:
    """Per method: log-log slope of seconds against ``key`` ≥ ``low`` (1 = linear, 0 = flat)."""
    out = {}
    for name in sorted({r["method"] for r in rows if r["sweep"] == sweep_name}):
        pts = [(r[key], r["seconds"]) for r in rows
               if r["sweep"] == sweep_name and r["method"] == name and r[key] >= low]
        if len(pts) >= 2:
            x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
            out[name] = float(np.polyfit(x, y, 1)[0])
    return out


def plot(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, (sw, key, xlabel) in zip(axes, (("nnz", "nnz", "total non-zeros (fixed d)"),
                                             ("width", "d", "input width d (fixed nnz)"))):
        for name in sorted({r["method"] for r in rows if r["sweep"] == sw}):
            pts = sorted((r[key], r["seconds"]) for r in rows if r["sweep"] == sw and r["method"] == name)
            style = "-o" if name.startswith("dsketch") else "--s"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=name, ms=4)
        ax.set_xscale("log", base=2 if sw == "width" else 10)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("transform seconds")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title("time vs nnz: linear")
    axes[1].set_title("time vs d at fixed nnz: flat")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized run (seconds)")
    ap.add_argument("--rows", type=float, nargs="*", help="row counts of the nnz sweep")
    ap.add_argument("--widths", type=int, nargs="*", help="log2 widths of the width sweep")
    ap.add_argument("--width-rows", type=int, default=None, help="rows of the width sweep")
    ap.add_argument("--m", type=int, default=None, help="features (default 256; 64 quick)")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--max-dense", type=float, default=2 ** 28,
                    help="largest n·d of a densify run, in numbers")
    ap.add_argument("--max-weights", type=float, default=2 ** 26,
                    help="largest d·m of RBFSampler's Gaussian matrix, in numbers")
    ap.add_argument("--sklearn-max-d", type=int, default=None,
                    help="widest PolynomialCountSketch run (default 2^14; 2^12 quick)")
    args = ap.parse_args(argv)
    quick = args.quick
    m = args.m or (64 if quick else 256)
    repeat = args.repeat or (1 if quick else 3)
    rows_n = [int(r) for r in (args.rows or ([500, 2000] if quick else [1e3, 1e4, 1e5, 1e6]))]
    widths = args.widths or ([12, 16, 20] if quick else [12, 14, 16, 18, 20, 22])
    n_w = args.width_rows or (1000 if quick else 20000)
    kw = dict(m=m, repeat=repeat, max_dense=args.max_dense, max_weights=args.max_weights,
              sklearn_max_d=args.sklearn_max_d or (1 << (12 if quick else 14)))
    t0 = time.perf_counter()
    results = sweep("nnz", [(n, 1 << 20) for n in rows_n], **kw)
    results += sweep("width", [(n_w, 1 << w) for w in widths], **kw)
    name = "sparse-quick" if quick else "sparse"
    payload = {"quick": quick, "m": m, "rows": results,
               "slope_time_vs_nnz": fits(results, "nnz", "nnz"),
               "slope_time_vs_d": fits(results, "width", "d", low=1 << 16),
               "seconds_total": time.perf_counter() - t0}
    path = write_results(name, payload)
    plot(results, RESULTS / f"{name}.png")
    print("slopes, log time vs log nnz (1 = linear):", payload["slope_time_vs_nnz"])
    print("slopes, log time vs log d at fixed nnz (0 = flat):", payload["slope_time_vs_d"])
    print(f"wrote {path} and {name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
