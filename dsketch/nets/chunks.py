"""Running a feature map over row chunks: a bounded working set, every core, any batch size.

Owns how ``FeatureMap.__call__`` spends memory and cores.  Rows are cut into chunks of about
:data:`PIXEL_ROWS` vector rows or :data:`IMAGE_CHUNK_PIXELS` image pixels whose layers run on
pieces of about :data:`IMAGE_PIXEL_ROWS` pixel rows (:func:`run_steps`), so every
intermediate of a chunk stays a few megabytes — cache-sized on a CPU — and the cost per row
does not grow with the batch (a 14×14 Myrtle-5 sketch measured 107 ms of CPU per image in
chunks of 2 images and 203 ms in one batch of 64).  The layers' FWHTs are many small GEMMs
that a multithreaded BLAS runs slower than one thread does (measured 10× slower on a busy
2-core machine), so on the host the chunks run on a thread pool of the usable cores with
BLAS limited to one thread each (:func:`dsketch.execution.one_blas_thread`: only from
the main thread; worker threads of Dask already run one-thread BLAS and are left alone).  Chunks are independent and written into
preallocated outputs, so a row's features do not depend on the batch or the schedule.
No Dask and no layer maths here.
"""

from __future__ import annotations

import math
import threading
from typing import Callable, Optional

from ..backend import MATMUL_BLOCK, get_namespace, is_cupy, usable_cores
from ..execution import is_sparse, map_rows, one_blas_thread
from .base import Features

__all__ = ["PIXEL_ROWS", "VECTOR_CHUNK_ELEMENTS", "WIDE_CHUNK_ELEMENTS", "IMAGE_PIXEL_ROWS",
           "IMAGE_CHUNK_PIXELS", "GPU_PIXEL_ROWS", "chunk_rows",
           "map_row_chunks", "run_steps"]

#: Rows per chunk on the host for vector rows (fewer for wide maps: VECTOR_CHUNK_ELEMENTS): a
#: 1024-wide float32 intermediate is then 2 MiB, the tree's live ones near the L2/L3 caches.
#: Measured, NTKSketch depth 2, m = 1024, 2 cores, best of 5, with the vector butterflies:
#: 512-row chunks 1.04-1.13x the rows/s of 256-row ones for ReLU, erf and GeLU at d = 32 and
#: erf/GeLU at d = 784, ReLU at d = 784 within 1% (the per-chunk Python work holds the GIL;
#: 1024 and 2048 rows were slower).  Before those butterflies, 256 rows were faster.
PIXEL_ROWS = 512
#: Host vector chunks of a map wider than 1024 features get fewer rows, so that a chunk's
#: intermediates keep about this many entries (measured, NTK PolySketch d=784, m=4096 on 2
#: cores: 128-row chunks 1.35-1.4x the rows per CPU second of 512-row ones, 1.25x the rows/s
#: of 256-row ones; at m = 2048, 256 rows 1.06x 128), but never less than one product block
#: (``backend.rows_matmul`` multiplies whole blocks of ``MATMUL_BLOCK`` rows: a smaller chunk
#: would pay for a whole block).
VECTOR_CHUNK_ELEMENTS = 512 * 1024
#: Above this many entries per intermediate (64 MiB of float32) a chunk of one product
#: block is too large: maps wider than this / ``MATMUL_BLOCK`` (131,072) features keep
#: chunks of down to 64 rows.
WIDE_CHUNK_ELEMENTS = 1 << 24
#: Pixel rows per layer call on the host for images: a 14×14 layer runs one image at a time
#: (196 pixel rows; measured on Myrtle-5, m = 1024: 42 ms of CPU per image against 50 in
#: pieces of 2 images, the tree's live intermediates then stay near the L2/L3 caches).
IMAGE_PIXEL_ROWS = 256
#: Input pixel rows per host chunk of images: the chunk's layers run on pieces of about
#: IMAGE_PIXEL_ROWS pixel rows (:func:`run_steps`), so after each pooling the pieces merge
#: and a 3×3 layer runs on many images at once (its fixed cost per call, ~2 ms for an
#: activation, was paid per image: Myrtle-5 at 14×14 spent a quarter of its time there).
IMAGE_CHUNK_PIXELS = 2048
#: Pixel rows per chunk on a GPU (large launches; bounded memory all the same).
GPU_PIXEL_ROWS = 65536


def chunk_rows(input_shape: tuple, gpu: bool = False, width: Optional[int] = None) -> int:
    """Rows per chunk for rows of ``input_shape`` (``(d,)`` or ``(H, W, C)``); ``width``: the
    map's feature width (host vector rows: at most :data:`VECTOR_CHUNK_ELEMENTS` / width
    rows, rounded down to whole ``MATMUL_BLOCK`` blocks, at least one; down to 64 rows for maps
    wider than :data:`WIDE_CHUNK_ELEMENTS` / ``MATMUL_BLOCK``)."""
    pixels = math.prod(input_shape[:-1]) if len(input_shape) > 1 else 1
    host = IMAGE_CHUNK_PIXELS if len(input_shape) > 1 else PIXEL_ROWS
    rows = max(1, (GPU_PIXEL_ROWS if gpu else host) // max(1, pixels))
    if width and not gpu and len(input_shape) == 1:
        rows = min(rows, VECTOR_CHUNK_ELEMENTS // int(width))
        if MATMUL_BLOCK * int(width) <= WIDE_CHUNK_ELEMENTS:
            rows = max(MATMUL_BLOCK, rows - rows % MATMUL_BLOCK)
        else:  # very wide maps: memory first
            rows = max(64, rows)
    return rows


def run_steps(steps, f: Features) -> Features:
    """Apply the layer ``steps`` in order to the features ``f`` of one chunk; for images each
    step runs on pieces of whole rows of about :data:`IMAGE_PIXEL_ROWS` pixel rows (host) or
    :data:`GPU_PIXEL_ROWS` (GPU).

    Steps run depth first on each piece while the piece size fits (a piece's intermediates
    stay in cache); pieces are merged (concatenated by row) or cut only where the spatial
    size calls for another piece size.  Every step acts row by row, so the result is that
    of the steps on the whole chunk.
    """
    if f.nngp.ndim < 3:  # vector rows: the chunk is the piece
        for step in steps:
            f = step(f)
        return f
    budget = GPU_PIXEL_ROWS if is_cupy(f.nngp) else IMAGE_PIXEL_ROWS

    def size(g):
        return max(1, budget // max(1, math.prod(g.nngp.shape[1:-1])))

    pieces, i = [f], 0
    while i < len(steps):
        pieces = _regroup(pieces, size(pieces[0]))
        done = []
        for p in pieces:
            j, k = i, size(p)
            while j < len(steps) and size(p) == k:
                p = steps[j](p)
                j += 1
            done.append(p)
        pieces, i = done, j
    return pieces[0] if len(pieces) == 1 else _concat(pieces)


def _concat(pieces) -> Features:
    xp = get_namespace(pieces[0].nngp)
    return Features(*(xp.concatenate([getattr(p, k) for p in pieces], axis=0)
                      for k in ("nngp", "ntk", "var")))


def _regroup(pieces, size: int) -> list:
    """The rows of ``pieces`` in pieces of ``size`` rows (the last may be smaller)."""
    if all(p.nngp.shape[0] == size for p in pieces[:-1]) and pieces[-1].nngp.shape[0] <= size:
        return pieces
    whole = pieces[0] if len(pieces) == 1 else _concat(pieces)
    n = whole.nngp.shape[0]
    if n <= size:
        return [whole]
    return [Features(whole.nngp[i:i + size], whole.ntk[i:i + size], whole.var[i:i + size])
            for i in range(0, n, size)]


def map_row_chunks(fn: Callable, x, rows: Optional[int] = None,
                   n_jobs: Optional[int] = None, width: Optional[int] = None) -> tuple:
    """``fn(x[i:j])`` over row chunks, its outputs (a tuple of arrays) concatenated by row.

    Parameters
    ----------
    fn : callable
        Maps a chunk of rows to a tuple of arrays, each with the chunk's rows first.
    x : array (n, ...) or sparse matrix (n, d)
        NumPy or CuPy rows, or CSR rows (sliced per chunk; ``fn`` densifies or reduces them).
    rows : int, optional
        Rows per chunk (default :func:`chunk_rows` of ``x``'s row shape, device and ``width``).
    n_jobs : int, optional
        Threads (default: the usable cores from the main thread on the host, else 1).

    Returns
    -------
    tuple of arrays
        Preallocated outputs filled chunk by chunk: peak memory is the outputs plus one
        chunk's working set per thread.
    """
    gpu = is_cupy(getattr(x, "data", None) if is_sparse(x) else x)
    if rows is None:
        rows = chunk_rows(tuple(x.shape[1:]), gpu, width)
    if n_jobs is None:
        main = threading.current_thread() is threading.main_thread()
        n_jobs = usable_cores() if (main and not gpu) else 1
    with one_blas_thread(gpu):
        return tuple(map_rows(fn, x, rows, n_jobs))
