"""``K V`` for a symmetric matrix stored as its upper block triangle, every core, a fixed sum order.

A cached kernel keeps only the blocks ``K_ij`` with ``i ≤ j`` (:class:`.kernel_ops.MemoryKernel`);
an off-diagonal block serves both ``K_ij V_j`` and ``K_ijᵀ V_i``.  With ``k`` ≈ 10 target
columns the two products are short GEMMs that a multithreaded BLAS runs far below its rate
(measured: 4.3 GB/s of blocks on 2 cores).  :func:`symmetric_product` gives each core whole
block rows, one BLAS thread each, and walks a block in strips of :data:`STRIP_ROWS` rows so
that its second product reads the strip from cache, not memory (5.3 GB/s, the same cores).

Block row ``i`` adds into its own ``n × k`` partial; the partials are summed in row order, so
the result does not depend on the thread count.

Must not know about kernels or solvers: blocks and vectors in, a product out.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

from ..backend import one_blas_thread, usable_cores

__all__ = ["symmetric_product", "STRIP_ROWS"]

#: Rows of a block multiplied at a time (a strip of 4096 float32 columns is 4 MiB: in cache).
STRIP_ROWS = 256


def _block_row(i: int, block: Callable, bounds: Sequence, V: np.ndarray) -> np.ndarray:
    """Block row ``i``'s contribution to ``K V``: ``Σ_j≥i K_ij V_j`` and ``K_ijᵀ V_i`` (j > i)."""
    out = np.zeros(V.shape, dtype=np.float64)
    a, b = bounds[i]
    for j in range(i, len(bounds)):
        c, d = bounds[j]
        blk = block(i, j)
        for s in range(0, b - a, STRIP_ROWS):
            strip = blk[s:s + STRIP_ROWS]
            out[a + s:a + s + strip.shape[0]] += strip @ V[c:d]
            if j != i:
                out[c:d] += strip.T @ V[a + s:a + s + strip.shape[0]]
    return out


def symmetric_product(block: Callable, bounds: Sequence, V: np.ndarray) -> np.ndarray:
    """``K V`` (float64) for ``K`` given by its upper blocks ``block(i, j)`` (``i ≤ j``) over row ranges ``bounds``.

    ``V`` is multiplied in its own dtype (float32 for float32 blocks).  On the host's main
    thread the block rows run on a pool of the usable cores, one BLAS thread each, largest
    first; elsewhere in order.
    """
    rows = range(len(bounds))
    jobs = min(usable_cores(), len(bounds))
    if jobs < 2 or threading.current_thread() is not threading.main_thread():
        parts = [_block_row(i, block, bounds, V) for i in rows]
    else:
        with one_blas_thread(), ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {i: pool.submit(_block_row, i, block, bounds, V) for i in rows}
            parts = [futures[i].result() for i in rows]
    out = parts[0]
    for p in parts[1:]:
        out += p
    return out
