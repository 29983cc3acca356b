#!/usr/bin/env python3
"""Size dask workers for a dsketch fit from the engine's memory model (stdlib only).

The engine's memory contract (``dsketch/engine/cluster.py`` and ``dsketch/engine/passes.py``
module docstrings): nothing ``n × m`` is ever gathered; a worker *task* holds at most

* one row chunk of inputs and features: ``r × (d + m)`` elements (inputs as stored:
  ``dsketch ingest`` writes float32, 8 bytes are counted here so float64 stores fit too;
  float32 features, 4 bytes, counted twice for the sketch's temporaries);
* an ``s × m`` float64 slab (``s`` = ``SLAB_ROWS`` = 8192 ≤ r rows converted at once);
* ``F`` float64 partial Grams ``m × m`` plus ``m × k`` cross terms (``F`` = CV folds when
  ``--alpha`` is a grid, else 1);

and a tree-reduction task holds ``split_every + 2`` such partials (``SPLIT_EVERY`` = 4).
A worker runs ``threads`` tasks at once, on top of ~300 MiB of interpreter, dask and NumPy
(the 10^5–10^7-row scaling benchmark measured a flat 298–312 MiB peak per worker).  Dask
pauses a worker at 80 % of its memory limit, so the limit is the peak over 0.75.

Usage::

    python deployments/sizing.py --d 128 --m 4096 --chunk-rows 16384 --folds 5 --threads 2

prints the per-task and per-worker peaks and the ``--memory-limit`` / Kubernetes
``resources`` to use.  The Kubernetes manifests carry the inputs they were sized for in a
``dsketch.org/sizing`` annotation, and ``tests/test_deployments.py`` recomputes them.
"""

from __future__ import annotations

import argparse
import json
import math

MiB = 2**20
GiB = 2**30
BASELINE = 300 * MiB
SLAB_ROWS = 8192
SPLIT_EVERY = 4
PAUSE_MARGIN = 0.75


def worker_memory(*, d: int, m: int, chunk_rows: int, folds: int = 1, targets: int = 1,
                  threads: int = 1, split_every: int = SPLIT_EVERY, input_bytes: int = 8,
                  feature_bytes: int = 4, embed_overhead: float = 2.0) -> dict:
    """Peak bytes of one embed+Gram task, one reduction task and one worker process."""
    r, s = int(chunk_rows), min(int(chunk_rows), SLAB_ROWS)
    block = r * d * input_bytes + embed_overhead * r * m * feature_bytes
    partials = 8 * folds * (m * m + m * targets)
    task = block + 8 * s * m + partials
    reduction = (split_every + 2) * partials
    peak = threads * max(task, reduction) + BASELINE
    limit_gib = math.ceil(peak / PAUSE_MARGIN / GiB)
    return {"task_bytes": int(task), "reduction_bytes": int(reduction), "worker_peak_bytes": int(peak),
            "memory_limit": f"{limit_gib}GiB", "memory_limit_bytes": limit_gib * GiB,
            "k8s_memory": f"{limit_gib}Gi", "k8s_cpu": str(threads)}


def client_memory(*, m: int, folds: int = 1, targets: int = 1) -> int:
    """Peak bytes of the process that runs ``dsketch fit`` (it solves the m × m system).

    The reduced Grams (``folds`` of them) plus ~3 m × m float64 work arrays of the
    factorization, plus the same baseline as a worker.
    """
    return int(8 * (folds + 3) * (m * m + m * targets) + BASELINE)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Size dask workers for a dsketch fit.")
    p.add_argument("--d", type=int, required=True, help="input width (features per row)")
    p.add_argument("--m", type=int, required=True, help="sketch width (--n-components)")
    p.add_argument("--chunk-rows", type=int, required=True, help="rows per chunk (dsketch ingest --chunk-rows)")
    p.add_argument("--folds", type=int, default=1, help="CV folds (--cv) when --alpha is a grid, else 1")
    p.add_argument("--targets", type=int, default=1, help="target columns (classes for a classifier)")
    p.add_argument("--threads", type=int, default=1, help="threads per worker (--nthreads)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    w = worker_memory(d=a.d, m=a.m, chunk_rows=a.chunk_rows, folds=a.folds, targets=a.targets,
                      threads=a.threads)
    c = client_memory(m=a.m, folds=a.folds, targets=a.targets)
    if a.json:
        print(json.dumps({"worker": w, "client_bytes": c}))
        return 0
    print(f"embed+gram task     {w['task_bytes'] / MiB:10.0f} MiB")
    print(f"reduction task      {w['reduction_bytes'] / MiB:10.0f} MiB")
    print(f"worker peak         {w['worker_peak_bytes'] / MiB:10.0f} MiB  ({a.threads} thread(s))")
    print(f"dask worker         --nthreads {a.threads} --memory-limit {w['memory_limit']}")
    print(f"kubernetes worker   resources: {{requests: {{cpu: {a.threads}, memory: {w['k8s_memory']}}}, "
          f"limits: {{cpu: {a.threads}, memory: {w['k8s_memory']}}}}}")
    print(f"fit client (job)    {c / MiB:10.0f} MiB  -> at least {math.ceil(c / PAUSE_MARGIN / GiB)}Gi")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
