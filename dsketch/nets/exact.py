"""Evaluating a network's exact kernel over row blocks: tiling, threads, what to keep.

Owns how ``Serial.kernel`` spends memory and cores: the output arrays are allocated once
and filled block by block (peak memory ≈ the requested outputs plus one block's
temporaries per thread), only the requested kernels (``get``) are kept, K(x, x) computes
its upper block triangle and mirrors it, and independent blocks run on a thread pool
(NumPy/CuPy release the GIL in their array kernels).  The layer maths is the layers'
exact faces; this module only schedules them.  Must not import Dask.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np

from ..backend import get_namespace, is_cupy, tune_allocator, usable_cores

__all__ = ["KINDS", "resolve_get", "default_block_size", "blocked_kernel"]

#: The kernels a network's exact face produces, in ``KernelResult`` order.
KINDS = ("nngp", "ntk")
#: Entries of one vector block pair: large enough that per-block Python overhead is small,
#: small enough that a block's float64 temporaries stay in cache-friendly megabytes.
_VECTOR_BLOCK_ENTRIES = 512 * 512
#: Bytes of one image block pair's arrays (pixel-pair axes make them large).
_IMAGE_BLOCK_BYTES = 64e6  # 16 MB per array: below glibc's 32 MB mmap threshold, no page faults


def resolve_get(get) -> tuple[tuple[str, ...], bool]:
    """``(kinds, single)`` for ``get``: None → both; a string → that one (returned bare)."""
    if get is None:
        return KINDS, False
    single = isinstance(get, str)
    kinds = (get,) if single else tuple(get)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"get must be 'nngp', 'ntk' or a tuple of them, got {get!r}")
    return kinds, single


def default_block_size(x1, x2) -> int:
    """Rows per block: ~``_VECTOR_BLOCK_ENTRIES`` entries per vector block pair; for images
    sized so that one block pair's (n1, n2, H, W, H, W) arrays stay under ~64 MB."""
    pix = int(np.prod(x1.shape[1:-1])) if x1.ndim == 4 else 1
    if pix == 1:
        return max(64, int(math.sqrt(_VECTOR_BLOCK_ENTRIES)))
    return max(1, int(math.sqrt(_IMAGE_BLOCK_BYTES / 8 / 4 / pix ** 2)))


def _swap(a):
    """K[i, j, p, q] -> K[j, i, q, p] (the transpose of a pair kernel)."""
    s = (a.ndim - 2) // 2
    return a.transpose((1, 0) + tuple(range(2 + s, 2 + 2 * s)) + tuple(range(2, 2 + s)))


def blocked_kernel(run: Callable, x1, x2, *, same: bool, diagonal: bool, block_size: int,
                   kinds: tuple, pair_shape: tuple = (), n_jobs: Optional[int] = None,
                   dtype=None) -> dict:
    """Run ``run(a, b, diagonal) -> Kernel`` over row blocks; ``{kind: array}`` for ``kinds``.

    Cross mode fills ``(n1, n2) + P`` outputs (``P = pair_shape``: the pixel-pair axes of
    the network's output, ``()`` for vectors), diagonal mode ``(n1,) + P``; with ``same`` only blocks on or above the
    block diagonal are computed, the others are their mirrors, and diagonal blocks are
    symmetrized (K + Kᵀ)/2 to remove round-off.  ``n_jobs`` threads (default: the usable
    cores; 1 on CuPy, whose kernels queue on one stream anyway) share the blocks.  The
    outputs have ``dtype`` (default float64): each block is rounded once as it is written.
    """
    xp = get_namespace(x1, x2)
    tune_allocator()  # blocks free and allocate the same temporaries: no page faults
    n1, n2 = x1.shape[0], x2.shape[0]
    if n_jobs is None:
        n_jobs = 1 if is_cupy(x1) else usable_cores()
    n_jobs = max(1, int(n_jobs))
    out: dict = {}

    def alloc(shape_of):
        for kind in kinds:
            out[kind] = xp.empty(shape_of, dtype=xp.float64 if dtype is None else dtype)

    if diagonal:
        jobs = [(i, None) for i in range(0, n1, block_size)]
    else:
        jobs = [(i, j) for i in range(0, n1, block_size) for j in range(0, n2, block_size)
                if not (same and j < i)]

    def work(job):
        i, j = job
        a = x1[i:i + block_size]
        if diagonal:
            k = run(a, None, True)
            for kind in kinds:
                out[kind][i:i + a.shape[0]] = getattr(k, kind)
            return
        b = x2[j:j + block_size]
        k = run(a, b, False)
        for kind in kinds:
            blk = getattr(k, kind)
            if same and i == j:
                blk = (blk + _swap(blk)) / 2
            out[kind][i:i + a.shape[0], j:j + b.shape[0]] = blk
            if same and i != j:
                out[kind][j:j + b.shape[0], i:i + a.shape[0]] = _swap(blk)

    alloc((n1,) + tuple(pair_shape) if diagonal else (n1, n2) + tuple(pair_shape))
    if n_jobs == 1 or len(jobs) == 1:
        for job in jobs:
            work(job)
    else:
        with ThreadPoolExecutor(max_workers=min(n_jobs, len(jobs))) as pool:
            for f in [pool.submit(work, job) for job in jobs]:
                f.result()
    return out
