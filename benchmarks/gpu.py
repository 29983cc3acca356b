"""The GPU check, in one command: ``python benchmarks/gpu.py`` on a machine with one NVIDIA GPU.

In under 8 minutes it

1. runs the CuPy tests (``pytest -m gpu`` over the test files that have them);
2. compares CuPy and NumPy features of every map (``RandomFourierFeatures``, ``NTKSketch``
   with PolySketch — ReLU, erf, GeLU — and ``relu_method="random"``, ``PolynomialSketch``,
   ``ArcCosineFeatures``, ``NTKRandomFeatures``, ``CNTKSketch`` on Myrtle-5) and of the exact FC
   NTK/NNGP and CNTK: relative error per row, float32 rounding expected;
3. fits ``SketchRidge``-style on a ``LocalCUDACluster`` from a Zarr store (``engine.ingest`` →
   ``open_dataset`` → ``embed(device="gpu")`` → ``fit_ridge``) and checks the weights against
   the same fit on the host;
4. times every map on the GPU against the CPU (rows/s, same sizes as ``throughput.py``'s
   d=784, m=1024 row) and the exact kernels (entries/s).

Writes ``benchmarks/results/gpu.json`` and ``gpu.png``.  ``--quick`` shrinks every size;
``--skip-tests`` / ``--skip-cluster`` leave those parts out.  Exit status 1 when a check fails.

Getting the dependencies onto a GPU machine that has CuPy but not dask/distributed/zarr (and
no route to PyPI): on a machine with the same Python version and platform, download the
wheels, carry the folder over, install from it without an index::

    pip download -d wheels "dask[array]>=2026.7.1" "distributed>=2026.7.1" "zarr>=3" \\
        "dask-cuda>=26.10" "numba>=0.60" scikit-learn threadpoolctl click psutil pytest \\
        pytest-timeout matplotlib --python-version 3.11 --platform manylinux2014_x86_64 \\
        --only-binary=:all:
    # copy wheels/ and this repository to the GPU machine, then there:
    pip install --no-index --find-links wheels "dask[array]" distributed zarr dask-cuda numba \\
        scikit-learn threadpoolctl click psutil pytest pytest-timeout matplotlib
    pip install --no-index --no-deps -e .
    python benchmarks/gpu.py

(``--platform``/``--python-version`` must match the GPU machine: ``pip debug --verbose``
there lists its tags.  Leave CuPy as it is: it matches that machine's CUDA.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _common import RESULTS, gemm_gflops, write_results  # noqa: E402

GPU_TEST_FILES = ["tests/test_sketch_compiled.py", "tests/test_nets_fc_compiled.py",
                  "tests/test_sketch_primitives.py", "tests/test_sketch_kernels.py",
                  "tests/test_nets_fc_sketch.py", "tests/test_nets_conv_sketch.py",
                  "tests/test_engine_cluster.py"]


def run_gpu_tests(timeout: int) -> dict:
    files = [f for f in GPU_TEST_FILES if (ROOT / f).exists()]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", *files], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    print(f"GPU tests: {tail}", flush=True)
    return {"returncode": proc.returncode, "summary": tail, "seconds": time.perf_counter() - t0,
            "output_tail": proc.stdout[-4000:]}


def _maps(m: int) -> dict:
    from dsketch.estimators import (ArcCosineFeatures, NTKRandomFeatures, NTKSketch, PolynomialSketch,
                                    RandomFourierFeatures)
    from dsketch.nets import Erf, Gelu, Relu, fully_connected

    relu = fully_connected(2, Relu(), W_std=math.sqrt(2.0))
    return {
        "RandomFourierFeatures": RandomFourierFeatures(n_components=m, random_state=0),
        "NTKSketch relu poly": NTKSketch(net=relu, n_components=m, random_state=0),
        "NTKSketch erf poly": NTKSketch(net=fully_connected(2, Erf()), n_components=m, random_state=0),
        "NTKSketch gelu poly": NTKSketch(net=fully_connected(2, Gelu()), n_components=m, random_state=0),
        "NTKSketch relu random": NTKSketch(net=relu, n_components=m, random_state=0, relu_method="random"),
        "PolynomialSketch": PolynomialSketch(degree=2, n_components=m, random_state=0),
        "ArcCosineFeatures": ArcCosineFeatures(order=1, n_components=m, random_state=0),
        "NTKRandomFeatures": NTKRandomFeatures(depth=1, n_components=m, random_state=0),
    }


def _row_err(dev, host) -> float:
    dev = np.asarray(dev, dtype=np.float64)
    host = np.asarray(host, dtype=np.float64)
    den = np.maximum(np.linalg.norm(host, axis=-1), 1e-30)
    return float(np.max(np.linalg.norm(dev - host, axis=-1) / den))


def _sync(cp):
    cp.cuda.Device().synchronize()


def _best(fn, repeat: int, sync) -> float:
    fn()
    sync()
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def compare_and_time(cfg, repeat: int) -> dict:
    import cupy as cp

    from dsketch.estimators import CNTKSketch
    from dsketch.nets import Erf, Gelu, Relu, fully_connected, myrtle

    sync = lambda: _sync(cp)  # noqa: E731
    d, m, n = cfg["d"], cfg["m"], cfg["rows"]
    X = (np.random.default_rng(1).standard_normal((n, d)) / math.sqrt(d)).astype(np.float32)
    Xg = cp.asarray(X)
    out = {"maps": [], "exact": []}
    for name, est in _maps(m).items():
        est.fit(X[:2])
        fmap = est.feature_map_
        host = est.transform(X)
        dev = fmap(Xg)
        err = _row_err(cp.asnumpy(dev), host)
        t_cpu = _best(lambda: est.transform(X), repeat, lambda: None)
        t_gpu = _best(lambda: fmap(Xg), repeat, sync)
        r = {"map": name, "d": d, "m": m, "rows": n, "max_row_rel_err": err, "ok": err < cfg["tol"],
             "cpu_rows_per_s": n / t_cpu, "gpu_rows_per_s": n / t_gpu, "speedup": t_cpu / t_gpu}
        print(f"{name:24s} err {err:.1e} cpu {r['cpu_rows_per_s']:10,.0f} gpu "
              f"{r['gpu_rows_per_s']:12,.0f} rows/s ({r['speedup']:.1f}x)", flush=True)
        out["maps"].append(r)
    imgs = np.random.default_rng(2).standard_normal((cfg["images"], 14, 14, 1)).astype(np.float32)
    est = CNTKSketch(net=myrtle(5), n_components=m, random_state=0).fit(imgs[:2])
    host = est.transform(imgs)
    dev = est.feature_map_(cp.asarray(imgs))
    err = _row_err(cp.asnumpy(dev), host)
    t_cpu = _best(lambda: est.transform(imgs), 1, lambda: None)
    t_gpu = _best(lambda: est.feature_map_(cp.asarray(imgs)), repeat, sync)
    out["maps"].append({"map": "CNTKSketch myrtle5 14x14", "m": m, "rows": len(imgs), "max_row_rel_err": err,
                        "ok": err < cfg["tol"], "cpu_rows_per_s": len(imgs) / t_cpu,
                        "gpu_rows_per_s": len(imgs) / t_gpu, "speedup": t_cpu / t_gpu})
    print(f"CNTKSketch err {err:.1e} cpu {1e3 * t_cpu / len(imgs):.1f} gpu "
          f"{1e3 * t_gpu / len(imgs):.2f} ms/image", flush=True)
    k = cfg["exact_rows"]
    A = np.random.default_rng(3).standard_normal((k, d)) / math.sqrt(d)
    B = np.random.default_rng(4).standard_normal((k, d)) / math.sqrt(d)
    nets = {"relu": fully_connected(2, Relu(), W_std=math.sqrt(2.0)), "erf": fully_connected(2, Erf()),
            "gelu": fully_connected(2, Gelu())}
    for act, net in nets.items():
        host = net.kernel(A, B)
        dev = net.kernel(cp.asarray(A), cp.asarray(B))
        err = max(float(np.abs(cp.asnumpy(getattr(dev, f)) - getattr(host, f)).max()
                        / np.abs(getattr(host, f)).max()) for f in ("nngp", "ntk"))
        t_cpu = _best(lambda: net.kernel(A, B, get="ntk"), repeat, lambda: None)
        Ag, Bg = cp.asarray(A), cp.asarray(B)
        t_gpu = _best(lambda: net.kernel(Ag, Bg, get="ntk"), repeat, sync)
        out["exact"].append({"kernel": f"FC {act}", "d": d, "entries": k * k, "max_rel_err": err,
                             "ok": err < 1e-10, "cpu_entries_per_s": k * k / t_cpu,
                             "gpu_entries_per_s": k * k / t_gpu})
        print(f"exact FC {act}: err {err:.1e}, cpu {k * k / t_cpu / 1e6:.1f} M, gpu "
              f"{k * k / t_gpu / 1e6:.1f} M entries/s", flush=True)
    c = cfg["cntk_exact"]
    Ia, Ib = imgs[:c].astype(np.float64), imgs[-c:].astype(np.float64)
    net = myrtle(5)
    host = net.kernel(Ia, Ib, get="ntk")
    dev = cp.asnumpy(net.kernel(cp.asarray(Ia), cp.asarray(Ib), get="ntk"))
    err = float(np.abs(dev - host).max() / np.abs(host).max())
    t_gpu = _best(lambda: net.kernel(cp.asarray(Ia), cp.asarray(Ib), get="ntk"), 1, sync)
    out["exact"].append({"kernel": "CNTK myrtle5 14x14", "entries": c * c, "max_rel_err": err,
                         "ok": err < 1e-10, "gpu_ms_per_entry": 1e3 * t_gpu / (c * c)})
    print(f"exact CNTK: err {err:.1e}, gpu {1e3 * t_gpu / c / c:.2f} ms/entry", flush=True)
    return out


def cluster_fit(cfg) -> dict:
    from dsketch import engine
    from dsketch.estimators import NTKSketch

    n, d, m = cfg["fit_rows"], 32, cfg["m"]
    rng = np.random.default_rng(7)
    X = (rng.standard_normal((n, d)) / math.sqrt(d)).astype(np.float32)
    y = np.sin(X @ rng.standard_normal(d)) + 0.1 * rng.standard_normal(n)
    fmap = NTKSketch(n_components=m, random_state=0).fit(X[:2]).feature_map_
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        url = engine.ingest(X, os.path.join(tmp, "data.zarr"), y=y, chunk_rows=max(1, n // 8))
        with engine.connect(gpu=True, quiet=True):
            ds = engine.open_dataset(url)
            W_gpu, _ = engine.fit_ridge(engine.embed(ds.X, fmap, device="gpu"), ds.y, alpha=1.0)
        W_gpu = np.asarray(W_gpu.get() if hasattr(W_gpu, "get") else W_gpu)
    seconds = time.perf_counter() - t0
    Phi = fmap(X).astype(np.float64)
    W_cpu = np.linalg.solve(Phi.T @ Phi + np.eye(m), Phi.T @ y)
    err = float(np.linalg.norm(W_gpu.ravel() - W_cpu) / np.linalg.norm(W_cpu))
    print(f"LocalCUDACluster fit from Zarr: {n} rows in {seconds:.1f} s, weights vs host {err:.1e}",
          flush=True)
    return {"rows": n, "m": m, "seconds": seconds, "weights_rel_err": err, "ok": err < 1e-3}


def plot(payload: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
    import matplotlib.pyplot as plt

    rows = payload["compare"]["maps"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [r["cpu_rows_per_s"] for r in rows], height=0.4, label="CPU (NumPy + Numba)")
    ax.barh(y + 0.2, [r["gpu_rows_per_s"] for r in rows], height=0.4, label="GPU (CuPy)")
    ax.set_yticks(y, [r["map"] for r in rows])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("rows / s")
    ax.legend()
    ax.set_title(f"GPU vs CPU ({payload['device']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--skip-cluster", action="store_true")
    args = ap.parse_args(argv)
    try:
        import cupy as cp

        cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - say why and stop
        print(f"benchmarks/gpu.py needs CuPy and a CUDA device: {exc}", file=sys.stderr)
        return 2
    cfg = ({"d": 64, "m": 256, "rows": 2048, "images": 8, "exact_rows": 512, "cntk_exact": 2,
            "fit_rows": 20000, "tol": 1e-4} if args.quick else
           {"d": 784, "m": 1024, "rows": 32768, "images": 64, "exact_rows": 4096, "cntk_exact": 6,
            "fit_rows": 500000, "tol": 1e-4})
    t0 = time.perf_counter()
    props = cp.cuda.runtime.getDeviceProperties(0)
    payload = {"device": props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"]),
               "config": cfg, "cpu_gemm_gflops": gemm_gflops()}
    if not args.skip_tests:
        payload["tests"] = run_gpu_tests(timeout=240)
    payload["compare"] = compare_and_time(cfg, args.repeat)
    if not args.skip_cluster:
        payload["cluster_fit"] = cluster_fit(cfg)
    payload["seconds_total"] = time.perf_counter() - t0
    ok = all(r["ok"] for r in payload["compare"]["maps"] + payload["compare"]["exact"])
    ok = ok and payload.get("tests", {}).get("returncode", 0) in (0, 5)
    ok = ok and payload.get("cluster_fit", {}).get("ok", True)
    payload["ok"] = bool(ok)
    name = "gpu-quick" if args.quick else "gpu"
    write_results(name, payload)
    plot(payload, RESULTS / f"{name}.png")
    print(json.dumps({"ok": payload["ok"], "seconds": round(payload["seconds_total"], 1)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
