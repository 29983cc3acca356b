"""How a row-wise computation runs on one process: row blocks, slabs, threads, BLAS threads.

Owns the execution helpers shared by ``sketch`` and ``nets`` (and free for any layer above):

- :func:`is_sparse`: telling SciPy / CuPy sparse matrices from dense arrays;
- :func:`map_rows`: ``fn(x)`` as ``fn`` over row blocks written into preallocated outputs,
  optionally on a thread pool;
- :func:`map_slabs`, :func:`slab_rows`, :data:`SLAB_ELEMENTS`: the same in cache-sized
  slabs, so the working set stays bounded whatever the batch size;
- :func:`one_blas_thread` (defined in :mod:`dsketch.backend`, beside the products that use
  it): BLAS limited to one thread on the host's main thread;
- :func:`map_rows` first calls :func:`dsketch.backend.tune_allocator` (malloc keeps freed
  chunk intermediates instead of faulting their pages in again).

A row's result never depends on the block it is computed in: every helper here only cuts
rows apart and puts them back.  Sits beside :mod:`dsketch.backend` at the bottom of the
package (imports only it); no kernel maths, no random state, never imports Dask.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from .backend import get_namespace, is_cupy, one_blas_thread, tune_allocator

__all__ = ["is_sparse", "SLAB_ELEMENTS", "slab_rows", "one_blas_thread", "map_slabs", "map_rows"]

#: Numbers in one (rows × width) intermediate of a slab: ~1 MB of float32 for the
#: Hadamard-bound maps on a CPU, so a transform's working set stays in cache; 16 MB for
#: GEMM-bound ones (a large GEMM runs faster); GPUs get large slabs (wide batches).
SLAB_ELEMENTS = {"cpu": 1 << 18, "cpu-gemm": 1 << 22, "gpu": 1 << 24}


def is_sparse(x) -> bool:
    """True for ``scipy.sparse`` and ``cupyx.scipy.sparse`` matrices/arrays."""
    return type(x).__module__.startswith(("scipy.sparse", "cupyx.scipy.sparse"))


def slab_rows(width: int, kind: str = "cpu") -> int:
    """Rows per slab (at least 16) for intermediates ``width`` numbers wide on ``kind``."""
    return max(16, SLAB_ELEMENTS[kind] // max(int(width), 1))


def map_slabs(fn, x, width: int, one_thread: bool = True):
    """``fn(x)`` computed slab by slab over the rows of 2-D ``x`` (dense or sparse).

    ``fn`` maps rows to an array ``(rows, ...)`` or a tuple of them and must act on each row
    independently (every sketch does: a row's features never depend on its batch), so the
    result equals ``fn(x)`` while the working set stays bounded whatever the batch size:
    the per-row cost no longer grows with ``n`` once intermediates leave the cache.
    ``width`` is the widest intermediate per row (sets the slab height); ``one_thread``
    (Hadamard-bound maps) runs cache-sized slabs under :func:`one_blas_thread`, otherwise
    slabs are larger and BLAS keeps its threads.
    """
    data = x.data if is_sparse(x) else x
    gpu = is_cupy(data)
    kind = "gpu" if gpu else ("cpu" if one_thread else "cpu-gemm")
    with one_blas_thread(gpu or not one_thread):
        return map_rows(fn, x, slab_rows(width, kind))


def map_rows(fn, x, step: int, n_jobs: int = 1):
    """``fn(x)`` as ``fn(x[i:i + step])`` over row blocks, written into preallocated outputs.

    ``fn`` must be row-wise and return an array or a tuple of arrays with the rows first;
    the result equals ``fn(x)``.  ``n_jobs > 1`` runs the blocks after the first on a thread
    pool (NumPy/CuPy release the GIL in their kernels; blocks write disjoint rows).
    """
    tune_allocator()  # blocks free and allocate the same intermediates: no page faults
    n = x.shape[0]
    if n <= step:
        return fn(x)
    first = fn(x[:step])
    single = not isinstance(first, tuple)
    parts = (first,) if single else first
    xp = get_namespace(parts[0])
    outs = tuple(xp.empty((n,) + tuple(p.shape[1:]), dtype=p.dtype) for p in parts)
    for o, p in zip(outs, parts):
        o[:step] = p
    del first, parts

    def work(i):
        res = fn(x[i:i + step])
        for o, p in zip(outs, (res,) if single else res):
            o[i:i + step] = p

    starts = range(step, n, step)
    jobs = min(max(1, int(n_jobs)), len(starts))
    if jobs == 1:
        for i in starts:
            work(i)
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for f in [pool.submit(work, i) for i in starts]:
                f.result()
    return outs[0] if single else outs
