"""Page faults of chunked work: ``backend.tune_allocator`` on and off, side by side.

Maps and exact kernels run chunk after chunk, freeing and allocating the same intermediates;
when glibc hands freed memory back to the OS, each chunk faults its pages in again.  Dask's
nannies start every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (the worst case), and a plain
process also loses pages now and then.  This benchmark runs each workload in fresh
subprocesses — under a plain environment and under the nannies' setting — once with
dsketch's allocator setting (default) and once with ``DSKETCH_MALLOC_KEEP=0``, and reports for
each the best of ``--repeat`` calls after one warm-up call: the rate, and the minor page
faults of that call.  Workloads: ``CNTKSketch`` (Myrtle-5, 14×14, m = 1024, 128 images: ms
per image), ``NTKSketch`` (depth-2 ReLU, d = 32, m = 1024, 16,384 rows: rows/s) and the exact
FC NTK (depth-2 ReLU, d = 784, 2,048 × 2,048 entries: M entries/s).

Writes ``benchmarks/results/allocator.json``, ``.md`` and ``.png`` (``allocator-quick.*`` with
``--quick``: tiny sizes, to check it runs).
Usage: ``python benchmarks/allocator.py [--quick] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, pyplot, write_results  # noqa: E402

#: One workload per entry: (name, unit, code run in the subprocess with N = its size).
_SETUP = {
    "CNTKSketch myrtle5 14x14 m=1024": (
        "ms per image",
        "from dsketch.estimators import CNTKSketch\n"
        "from dsketch.nets import myrtle\n"
        "X = np.random.default_rng(2).standard_normal((N, 14, 14, 1)).astype(np.float32)\n"
        "est = CNTKSketch(net=myrtle(5), n_components=M, random_state=0).fit(X[:2])\n"
        "call = lambda: est.transform(X)\n"
        "rate = lambda s: 1e3 * s / N\n"),
    "NTKSketch relu d=32 m=1024": (
        "rows per second",
        "from dsketch.estimators import NTKSketch\n"
        "X = (np.random.default_rng(1).standard_normal((N, 32)) / 32 ** 0.5).astype(np.float32)\n"
        "est = NTKSketch(n_components=M, random_state=0).fit(X[:2])\n"
        "call = lambda: est.transform(X)\n"
        "rate = lambda s: N / s\n"),
    "exact FC relu NTK d=784": (
        "M entries per second",
        "from dsketch.nets import Relu, fully_connected\n"
        "X = (np.random.default_rng(0).standard_normal((N, 784)) / 28).astype(np.float32)\n"
        "net = fully_connected(2, Relu(), W_std=2 ** 0.5, b_std=0.0)\n"
        "call = lambda: net.kernel(X, X, get='ntk')\n"
        "rate = lambda s: N * N / s / 1e6\n"),
}

_RUN = """
import json, resource, sys, time
import numpy as np
N, M, REPEAT = {n}, {m}, {repeat}
{setup}
call()
best = None
for _ in range(REPEAT):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    call()
    s = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    if best is None or s < best[0]:
        best = (s, faults)
from dsketch.backend import tune_allocator
print(json.dumps({{"seconds": best[0], "rate": rate(best[0]), "faults": best[1],
                  "tuned": tune_allocator()}}))
"""

#: The environments compared: name -> extra environment variables.
ENVIRONMENTS = {"plain process": {}, "Dask worker (MALLOC_TRIM_THRESHOLD_=65536)":
                {"MALLOC_TRIM_THRESHOLD_": "65536"}}


def run_one(name: str, env_extra: dict, tuned: bool, sizes: dict, repeat: int) -> dict:
    unit, setup = _SETUP[name]
    n, m = sizes[name]
    env = dict(os.environ, **env_extra)
    env.pop("DSKETCH_MALLOC_KEEP", None)
    if not tuned:
        env["DSKETCH_MALLOC_KEEP"] = "0"
    code = _RUN.format(n=n, m=m, repeat=repeat, setup=setup)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=900)
    if proc.returncode:
        raise RuntimeError(f"{name}: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"workload": name, "unit": unit, "n": n, "m": m, "tuned_requested": tuned, **out}


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def _pairs(rows: list):
    """``(workload, environment, tuned row, untuned row)`` for each measured pair, in order."""
    for name in _SETUP:
        for envname in ENVIRONMENTS:
            pair = {r["tuned_requested"]: r for r in rows
                    if r["workload"] == name and r["environment"] == envname}
            if len(pair) == 2:
                yield name, envname, pair[True], pair[False]


def markdown(payload: dict) -> str:
    lines = ["| workload | environment | tuned | untuned (`DSKETCH_MALLOC_KEEP=0`) "
             "| faults per call, tuned / untuned |", "|---|---|---:|---:|---:|"]
    for name, envname, t, u in _pairs(payload["rows"]):
        lines.append(f"| {name} | {envname} | {_num(t['rate'])} {t['unit']} | {_num(u['rate'])} | "
                     f"{t['faults']:,} / {u['faults']:,} |")
    return "\n".join(lines) + "\n"


def plot(payload: dict, path: Path) -> None:
    plt = pyplot()
    rows = payload["rows"]
    fig, axes = plt.subplots(1, len(_SETUP), figsize=(4.5 * len(_SETUP), 3.6))
    for ax, name in zip(axes, _SETUP):
        labels, tuned, untuned = [], [], []
        for _, envname, t, u in (p for p in _pairs(rows) if p[0] == name):
            labels.append(envname.split(" (")[0])
            tuned.append(t["rate"])
            untuned.append(u["rate"])
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], tuned, width=0.4, label="tuned (default)")
        ax.bar([i + 0.2 for i in x], untuned, width=0.4, label="DSKETCH_MALLOC_KEEP=0")
        ax.set_xticks(list(x), labels, fontsize=8)
        unit = next(r["unit"] for r in rows if r["workload"] == name)
        ax.set_ylabel(unit + (" (lower is better)" if unit.startswith("ms") else ""))
        ax.set_title(name, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if args.quick:
        sizes = {"CNTKSketch myrtle5 14x14 m=1024": (4, 64), "NTKSketch relu d=32 m=1024": (512, 256),
                 "exact FC relu NTK d=784": (256, 0)}
        repeat = 1
    else:
        sizes = {"CNTKSketch myrtle5 14x14 m=1024": (128, 1024),
                 "NTKSketch relu d=32 m=1024": (16384, 1024), "exact FC relu NTK d=784": (2048, 0)}
        repeat = args.repeat
    t0 = time.perf_counter()
    rows = []
    for name in _SETUP:
        for envname, extra in ENVIRONMENTS.items():
            for tuned in (True, False):
                r = run_one(name, extra, tuned, sizes, repeat)
                r["environment"] = envname
                rows.append(r)
                print(f"{name:34s} {envname:44s} {'tuned' if tuned else 'untuned':8s} "
                      f"{r['rate']:12,.2f} {r['unit']:22s} {r['faults']:>9,} faults", flush=True)
    payload = {"quick": args.quick, "repeat": repeat, "sizes": sizes, "rows": rows,
               "load_after": os.getloadavg()[0], "seconds_total": time.perf_counter() - t0}
    name = "allocator-quick" if args.quick else "allocator"
    write_results(name, payload)
    (RESULTS / f"{name}.md").write_text(markdown(payload))
    plot(payload, RESULTS / f"{name}.png")
    print(f"wrote {RESULTS / name}.json ({payload['seconds_total']:.0f} s)")
    return payload


if __name__ == "__main__":
    main()
