"""Shared helpers for benchmarks: timing, relative errors, JSON + PNG output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

#: Where results go (``DSKETCH_BENCH_RESULTS`` overrides it, e.g. for the CI smoke run).
RESULTS = Path(os.environ.get("DSKETCH_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def best_time(fn, repeat: int = 3) -> float:
    """Best wall-clock seconds of ``repeat`` calls of ``fn()`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def rel_fro(approx: np.ndarray, exact: np.ndarray) -> float:
    """‖approx − exact‖_F / ‖exact‖_F."""
    return float(np.linalg.norm(approx - exact) / np.linalg.norm(exact))


def machine() -> dict:
    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "numpy": np.__version__}


def pyplot():
    """``matplotlib.pyplot`` on the ``MPLBACKEND`` backend (Agg by default: files only)."""
    import matplotlib
    matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
    import matplotlib.pyplot as plt
    return plt


def write_results(name: str, payload: dict) -> Path:
    """Write ``results/<name>.json`` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2, default=float))
    return path


def gemm_gflops(n: int = 4096, d: int = 512, m: int = 4096, dtype=np.float32) -> float:
    """Measured float32 GEMM rate of this machine (GFLOP/s) for an (n×d)·(d×m) product."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, d)).astype(dtype)
    b = rng.standard_normal((d, m)).astype(dtype)
    t = best_time(lambda: a @ b)
    return 2.0 * n * d * m / t / 1e9


def update_readme_block(name: str, md: str) -> None:
    """Replace README.md's text between ``<!-- name:begin -->`` and ``<!-- name:end -->``."""
    import re

    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text()
    pat = re.compile(rf"(<!-- {name}:begin -->\n).*?(\n<!-- {name}:end -->)", re.S)
    if not pat.search(text):
        raise SystemExit(f"README.md has no <!-- {name}:begin/end --> markers")
    readme.write_text(pat.sub(lambda mt: mt.group(1) + md + mt.group(2), text))
