"""Throughput of every feature map and exact kernel against this machine's GEMM rate.

Measures, in one process and one run (so that the ratios cancel most of the machine's load):

- a **float32 GEMM probe** ``(4096×512)·(512×4096)`` in GFLOP/s (and a float64 one: the
  exact kernels' Gram blocks are float64 products);
- **rows/s** of ``transform`` (after ``fit`` and a warm-up call that builds the random
  matrices) of every map — ``RandomFourierFeatures``, ``NTKSketch`` of a depth-2 fully
  connected net with PolySketch (ReLU with ``W_std=√2``, erf, GeLU), ``NTKSketch`` with
  ``relu_method="random"``, ``PolynomialSketch`` (degree 2), ``ArcCosineFeatures`` (order 1),
  ``NTKRandomFeatures`` (depth 1) — at (d, m) = (32, 1024), (784, 1024), (784, 4096) on rows
  ``x ~ N(0, I/d)``; each also as a ratio to RFF at the same (d, m) — RFF transforms the
  same rows, timed alternately with the map (a paired ratio: this VM's speed drifts by up
  to 1.5× within a run) — and the kernel error (relative Frobenius norm of ``ΦΦᵀ`` against
  the exact kernel on 256 rows, seed 0);
- ms per image of ``CNTKSketch`` (``myrtle(5)``, 14×14×1 images, m=1024);
- **entries/s** of the exact FC NTK and NNGP (depth 2; ReLU, erf, GeLU) at d=32 and d=784,
  and the GEMM-only share ``entries/s · 2d / GEMM rate`` (float32 and float64 probes); ms per entry of the exact CNTK
  (Myrtle-5, 14×14×1).

Timing: each figure is the minimum over ``--repeat`` calls (wall clock) — the machine may
be shared; the process CPU seconds of that call (``rows_per_cpu_s``, ``ratio_to_rff_cpu``:
robust to other processes on the machine) and the 1-minute load average before and after
the run are recorded beside it.  The row count of each call grows until one call takes at
least ``--min-seconds``.

Writes ``benchmarks/results/throughput.json``, ``throughput.png`` and ``throughput.md`` (the
README table)
(``throughput-quick.*`` with ``--quick``: d=32, m=256, a few rows, to check it runs;
``--cntk``: only the CNTK rows, ``throughput-cntk.json`` / ``.md``).
Usage: ``python benchmarks/throughput.py [--quick] [--repeat 3] [--only NAME ...] [--cntk]``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from dsketch.estimators import (ArcCosineFeatures, CNTKSketch, NTKRandomFeatures, NTKSketch,
                                PolynomialSketch, RandomFourierFeatures)
from dsketch.nets import Erf, Gelu, Relu, fully_connected, myrtle

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, gemm_gflops, pyplot, rel_fro, write_results  # noqa: E402

SQRT2 = math.sqrt(2.0)


def _nets():
    return {"relu": fully_connected(2, Relu(), W_std=SQRT2, b_std=0.0),
            "erf": fully_connected(2, Erf(), W_std=1.0, b_std=0.0),
            "gelu": fully_connected(2, Gelu(), W_std=1.0, b_std=0.0)}


def maps(m: int) -> dict:
    """The timed maps (name -> unfitted estimator) at width ``m``."""
    nets = _nets()
    return {
        "RandomFourierFeatures": RandomFourierFeatures(n_components=m, random_state=0),
        "NTKSketch relu poly": NTKSketch(net=nets["relu"], n_components=m, random_state=0),
        "NTKSketch erf poly": NTKSketch(net=nets["erf"], n_components=m, random_state=0),
        "NTKSketch gelu poly": NTKSketch(net=nets["gelu"], n_components=m, random_state=0),
        "NTKSketch relu random": NTKSketch(net=nets["relu"], n_components=m, random_state=0,
                                           relu_method="random"),
        "PolynomialSketch": PolynomialSketch(degree=2, n_components=m, random_state=0),
        "ArcCosineFeatures": ArcCosineFeatures(order=1, n_components=m, random_state=0),
        "NTKRandomFeatures": NTKRandomFeatures(depth=1, n_components=m, random_state=0),
    }


def timed(fn, repeat: int, warm: bool = True) -> tuple[float, float]:
    """(best wall seconds, process CPU seconds of that call) over ``repeat`` calls after a
    warm-up call (``warm=False``: none)."""
    if warm:
        fn()
    best = (math.inf, math.inf)
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        t, c = time.perf_counter() - t0, time.process_time() - c0
        if t < best[0]:
            best = (t, c)
    return best


def gemm_cpu_gflops(dtype, n: int = 4096, d: int = 512, m: int = 4096) -> float:
    """The GEMM probe per process CPU second (robust to other processes on the machine)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, d)).astype(dtype)
    b = rng.standard_normal((d, m)).astype(dtype)
    wall, cpu = timed(lambda: a @ b, 3)
    return 2.0 * n * d * m / cpu / 1e9


def rows(n: int, d: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, d)) / math.sqrt(d)).astype(np.float32)


def rate_rows(est, d: int, repeat: int, min_seconds: float, n0: int, n_max: int,
              rff=None) -> dict:
    """rows/s of ``est.transform`` with the row count grown until one call takes ``min_seconds``.

    With a fitted ``rff``, RFF's ``transform`` of the same rows is timed alternately with
    ``est``'s (best of ``repeat`` each): ``ratio_to_rff`` then compares two timings taken
    seconds apart, not minutes, on a machine whose speed drifts.
    """
    n = n0
    X = rows(n, d, 1)
    est.fit(X[:2])
    est.transform(X)  # warm-up: builds the random matrices, loads compiled kernels
    while True:
        t0 = time.perf_counter()
        est.transform(X)
        t = time.perf_counter() - t0
        if t >= min_seconds or n >= n_max:
            break
        n = min(n_max, n * max(2, int(min_seconds / max(t, 1e-4)) // 2 * 2 or 2))
        X = rows(n, d, 1)
    fns = {"est": lambda: est.transform(X)}  # est just ran on X (the sizing loop)
    if rff is not None:
        fns["rff"] = lambda: rff.transform(X)
        rff.transform(X)  # warm-up on these rows
    best = {k: (math.inf, math.inf) for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            best[k] = min(best[k], timed(fn, 1, warm=False))
    wall, cpu = best["est"]
    out = {"rows": n, "seconds": wall, "cpu_seconds": cpu, "rows_per_s": n / wall,
           "rows_per_cpu_s": n / max(cpu, 1e-9)}
    if rff is not None:
        out["ratio_to_rff"] = best["rff"][0] / wall
        out["ratio_to_rff_cpu"] = best["rff"][1] / max(cpu, 1e-9)
    return out


def kernel_error(est, d: int, n: int) -> float:
    X = rows(n, d, 7).astype(np.float64)
    F = np.asarray(est.fit(X[:2]).transform(X), dtype=np.float64)
    return rel_fro(F @ F.T, est.exact_kernel(X))


def bench_maps(cfg, repeat, min_seconds, only) -> list:
    out = []
    for d, m in cfg["sizes"]:
        rff = None
        for name, est in maps(m).items():
            if only and not any(o in name for o in only):
                continue
            r = rate_rows(est, d, repeat, min_seconds, cfg["n0"], cfg["n_max"], rff)
            r.update(map=name, d=d, m=m, kernel_error=kernel_error(est, d, cfg["error_rows"]))
            if name == "RandomFourierFeatures":
                rff = est  # fitted: the later maps time it beside themselves
                r["ratio_to_rff"] = r["ratio_to_rff_cpu"] = 1.0
            r.setdefault("ratio_to_rff", None)
            r.setdefault("ratio_to_rff_cpu", None)
            if name == "NTKSketch relu random":  # its hidden layer is an m×m product per row
                r["gemm_flops_per_row"] = 2.0 * (d * m + 2 * m * m)
            ratio = f"1/{1 / r['ratio_to_rff']:.1f} of RFF" if r["ratio_to_rff"] else ""
            print(f"d={d:4d} m={m:5d} {name:24s} {r['rows_per_s']:12,.0f} rows/s {ratio:16s} "
                  f"err {r['kernel_error']:.3f}", flush=True)
            out.append(r)
    return out


def bench_cntk_sketch(cfg, repeat) -> dict:
    n, m = cfg["cntk_images"], cfg["cntk_m"]
    X = np.random.default_rng(2).standard_normal((n, 14, 14, 1)).astype(np.float32)
    est = CNTKSketch(net=myrtle(5), n_components=m, random_state=0).fit(X[:2])
    wall, cpu = timed(lambda: est.transform(X), repeat)
    r = {"map": "CNTKSketch myrtle5 14x14", "m": m, "images": n, "seconds": wall,
         "cpu_seconds": cpu, "ms_per_image": 1e3 * wall / n}
    print(f"CNTKSketch m={m}: {r['ms_per_image']:.1f} ms/image (CPU {1e3 * cpu / n:.1f} ms)", flush=True)
    return r


def bench_exact(cfg, repeat, gemm, gemm64, gemm_cpu) -> list:
    return bench_exact_fc(cfg, repeat, gemm, gemm64, gemm_cpu) + bench_exact_cntk(cfg, repeat)


def bench_exact_fc(cfg, repeat, gemm, gemm64, gemm_cpu) -> list:
    out = []
    for d in cfg["exact_d"]:
        n = cfg["exact_rows"]
        X1, X2 = rows(n, d, 3).astype(np.float64), rows(n, d, 4).astype(np.float64)
        for act, net in _nets().items():
            for get in ("ntk", "nngp"):
                if act != "relu" and get == "nngp":
                    continue
                wall, cpu = timed(lambda: net.kernel(X1, X2, get=get), repeat)
                eps = n * n / wall
                share = eps * 2 * d / (gemm * 1e9)
                share64 = eps * 2 * d / (gemm64 * 1e9)
                out.append({"kernel": f"FC {act} {get}", "d": d, "entries": n * n, "seconds": wall,
                            "cpu_seconds": cpu, "entries_per_s": eps, "gemm_share": share,
                            "gemm64_share": share64, "entries_per_cpu_s": n * n / cpu,
                            "gemm_share_cpu": n * n / cpu * 2 * d / (gemm_cpu[0] * 1e9),
                            "gemm64_share_cpu": n * n / cpu * 2 * d / (gemm_cpu[1] * 1e9)})
                print(f"exact FC {act} {get} d={d}: {eps / 1e6:8.1f} M entries/s "
                      f"({100 * share:.0f}% of float32 GEMM-only, {100 * share64:.0f}% of float64)",
                      flush=True)
    return out


def bench_exact_cntk(cfg, repeat) -> list:
    out = []
    n = cfg["cntk_exact"]
    Xa = np.random.default_rng(5).standard_normal((n, 14, 14, 1))
    Xb = np.random.default_rng(6).standard_normal((n, 14, 14, 1))
    net = myrtle(5)
    wall, cpu = timed(lambda: net.kernel(Xa, Xb, get="ntk"), max(1, repeat - 1))
    out.append({"kernel": "CNTK myrtle5 14x14 ntk", "entries": n * n, "seconds": wall,
                "cpu_seconds": cpu, "ms_per_entry": 1e3 * wall / (n * n)})
    print(f"exact CNTK: {1e3 * wall / n / n:.2f} ms/entry (CPU {1e3 * cpu / n / n:.2f} ms)", flush=True)
    return out


def _ratio(x) -> str:
    return "" if not x else (f"1/{1 / x:.1f}" if x < 1 else f"{x:.1f}×")


def markdown(payload: dict) -> str:
    """The README table: rows/s (ratio to RFF) per map and size, then the exact kernels."""
    rws = payload["maps"]
    sizes = sorted({(r["d"], r["m"]) for r in rws})
    head = "| map | " + " | ".join(f"d={d}, m={m}" for d, m in sizes) + " |"
    lines = [head, "|---|" + "---:|" * len(sizes)] if rws else []
    for name in dict.fromkeys(r["map"] for r in rws):
        cells = []
        for d, m in sizes:
            r = next((r for r in rws if r["map"] == name and (r["d"], r["m"]) == (d, m)), None)
            cells.append("" if r is None else f"{r['rows_per_s']:,.0f} ({_ratio(r['ratio_to_rff'])}; "
                         f"CPU-time {_ratio(r['ratio_to_rff_cpu'])})")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"GEMM probe: float32 {payload['gemm_gflops']:.0f}, float64 "
                 f"{payload['gemm64_gflops']:.0f} GFLOP/s; load {payload['load_before']:.1f}.")
    for r in rws:
        if r.get("gemm_share"):
            lines.append(f"- `{r['map']}` d={r['d']}, m={r['m']}: its matrix products run at "
                         f"{r['rows_per_s'] * r['gemm_flops_per_row'] / 1e9:.0f} GFLOP/s "
                         f"({100 * r['gemm_share']:.0f}% of the float32 GEMM probe, "
                         f"{100 * r['gemm64_share']:.0f}% of the float64 one its products use)")
    for e in payload.get("exact", []):
        if "entries_per_s" in e:
            lines.append(f"- exact {e['kernel']} d={e['d']}: {e['entries_per_s'] / 1e6:.1f} M entries/s "
                         f"({100 * e['gemm_share']:.0f}% of the float32 GEMM-only rate, "
                         f"{100 * e['gemm64_share']:.0f}% of float64; per CPU second "
                         f"{e['entries_per_cpu_s'] / 1e6:.1f} M, {100 * e['gemm_share_cpu']:.0f}% / "
                         f"{100 * e['gemm64_share_cpu']:.0f}%)")
        else:
            lines.append(f"- exact {e['kernel']}: {e['ms_per_entry']:.2f} ms per entry")
    if "cntk_sketch" in payload:
        lines.append(f"- CNTKSketch Myrtle-5 14×14, m={payload['cntk_sketch']['m']}: "
                     f"{payload['cntk_sketch']['ms_per_image']:.1f} ms per image")
    return "\n".join(lines) + "\n"


def plot(payload: dict, path: Path) -> None:
    plt = pyplot()
    rws = payload["maps"]
    sizes = sorted({(r["d"], r["m"]) for r in rws})
    names = list(dict.fromkeys(r["map"] for r in rws))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.8))
    w = 0.8 / max(1, len(sizes))
    for k, (d, m) in enumerate(sizes):
        vals = [next((r["rows_per_s"] for r in rws if r["map"] == nm and (r["d"], r["m"]) == (d, m)), 0)
                for nm in names]
        a1.barh(np.arange(len(names)) + k * w, vals, height=w, label=f"d={d}, m={m}")
    a1.set_yticks(np.arange(len(names)) + 0.4 - w / 2, names)
    a1.set_xscale("log")
    a1.set_xlabel("rows / s (transform)")
    a1.invert_yaxis()
    a1.legend(fontsize=8)
    a1.set_title(f"maps (GEMM probe {payload['gemm_gflops']:.0f} GFLOP/s)")
    ex = [r for r in payload["exact"] if "gemm_share" in r]
    labels = [f"{r['kernel']} d={r['d']}" for r in ex]
    a2.barh(np.arange(len(ex)) - 0.2, [100 * r["gemm_share"] for r in ex], height=0.4,
            label=f"float32 probe ({payload['gemm_gflops']:.0f} GFLOP/s)")
    a2.barh(np.arange(len(ex)) + 0.2, [100 * r["gemm64_share"] for r in ex], height=0.4,
            label=f"float64 probe ({payload['gemm64_gflops']:.0f} GFLOP/s)")
    a2.axvline(60, color="k", ls="--", lw=1)
    a2.legend(fontsize=8)
    a2.set_yticks(np.arange(len(ex)), labels)
    a2.invert_yaxis()
    a2.set_xlabel("% of the GEMM-only entry rate (2d flops per entry)")
    a2.set_title("exact kernels")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--min-seconds", type=float, default=0.3)
    ap.add_argument("--only", nargs="*", default=None, help="substrings of the map names to time")
    ap.add_argument("--no-exact", action="store_true", help="skip the exact kernels and CNTK")
    ap.add_argument("--cntk", action="store_true",
                    help="only the CNTK rows: CNTKSketch and the exact CNTK (results throughput-cntk*)")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    args = ap.parse_args(argv)
    if args.quick:
        cfg = {"sizes": [(32, 256)], "n0": 256, "n_max": 512, "error_rows": 64, "cntk_images": 2,
               "cntk_m": 128, "exact_d": [32], "exact_rows": 128, "cntk_exact": 2}
        repeat, min_seconds = 1, 0.0
    else:
        cfg = {"sizes": [(32, 1024), (784, 1024), (784, 4096)], "n0": 1024, "n_max": 1 << 16,
               "error_rows": 256, "cntk_images": 64, "cntk_m": 1024, "exact_d": [32, 784],
               "exact_rows": 2048, "cntk_exact": 6}
        repeat, min_seconds = args.repeat, args.min_seconds
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    gemm = gemm_gflops()
    gemm64 = gemm_gflops(dtype=np.float64)
    print(f"GEMM probe: float32 {gemm:.1f}, float64 {gemm64:.1f} GFLOP/s (load {load:.2f})", flush=True)
    payload = {"quick": args.quick, "config": cfg, "repeat": repeat, "load_before": load,
               "gemm_gflops": gemm, "gemm64_gflops": gemm64,
               "gemm_cpu_gflops": gemm_cpu_gflops(np.float32),
               "gemm64_cpu_gflops": gemm_cpu_gflops(np.float64),
               "maps": [] if args.cntk else bench_maps(cfg, repeat, min_seconds, args.only)}
    for r in payload["maps"]:
        r["gemm_share"] = r["gemm64_share"] = None
        if "gemm_flops_per_row" in r:
            r["gemm_share"] = r["rows_per_s"] * r["gemm_flops_per_row"] / (gemm * 1e9)
            r["gemm64_share"] = r["rows_per_s"] * r["gemm_flops_per_row"] / (gemm64 * 1e9)
    if args.cntk:
        payload["cntk_sketch"] = bench_cntk_sketch(cfg, repeat)
        payload["exact"] = bench_exact_cntk(cfg, repeat)
    elif not args.no_exact:
        payload["cntk_sketch"] = bench_cntk_sketch(cfg, repeat)
        payload["exact"] = bench_exact(cfg, repeat, gemm, payload["gemm64_gflops"],
                                       (payload["gemm_cpu_gflops"], payload["gemm64_cpu_gflops"]))
    payload["gemm_gflops_after"] = gemm_gflops()
    payload["load_after"] = os.getloadavg()[0]
    payload["seconds_total"] = time.perf_counter() - t0
    name = "throughput-quick" if args.quick else "throughput" + (f"-{args.tag}" if args.tag else "")
    if args.cntk:
        name = name.replace("throughput", "throughput-cntk", 1)
    write_results(name, payload)
    if "exact" in payload and not args.cntk:
        plot(payload, RESULTS / f"{name}.png")
    (RESULTS / f"{name}.md").write_text(markdown(payload))
    print(f"wrote {RESULTS / name}.json ({payload['seconds_total']:.0f} s, load "
          f"{load:.2f} -> {payload['load_after']:.2f})")
    return payload


if __name__ == "__main__":
    main()
