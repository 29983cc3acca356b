"""Kernel matrices over row chunks: ``K(X_i, X_j)`` blocks kept (float32) or recomputed.

Owns the operators that the kernel solvers (:mod:`.kernel_cg`, :mod:`.falkon`) multiply
with, for in-memory rows (:class:`MemoryKernel`) and for a dask array of rows
(:class:`DaskKernel`, blocks computed on the workers per pair of row chunks), and the memory
model that decides whether the blocks are cached (:func:`plan_cache`): ``K·V``, columns
``K[:, idx]``, the diagonal, a principal submatrix, and the ``n × m`` cross kernel against
a few centre rows (Falkon).  The kernel itself comes from :class:`KernelFunction`, a thin
wrapper of ``net.kernel(x1, x2, get=kind)`` (the network's exact face, whose entries do
not depend on the batch they are computed in).

Must not contain solver maths (CG, preconditioners: ``kernel_cg``/``falkon``) nor kernel
formulas (``dsketch.nets``).  Memory: a cached in-memory kernel holds the upper block
triangle, ``≈ 4·n·(n + chunk)/2`` bytes; a cached dask kernel holds all ``n²`` float32
entries spread over the workers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
import psutil

from ..backend import MATMUL_BLOCK, PAIRS_BLOCK, InvalidInputError, check_int, rows_matmul
from .cluster import worker_memory_limits
from .graph import token
from .passes import compute, fmt_bytes
from .sym_product import symmetric_product

__all__ = ["KernelFunction", "MapKernelFunction", "MemoryKernel", "DaskKernel", "make_kernel",
           "plan_cache", "kernel_predict", "CACHE_FRACTION", "CHUNK_ROWS", "PREDICT_ENTRIES"]

#: Cache the kernel blocks when they take at most this share of the memory available.
CACHE_FRACTION = 0.6
#: Rows per chunk of an in-memory kernel (one cached block is ``CHUNK_ROWS²`` float32).
CHUNK_ROWS = 4096
#: Kernel entries per prediction block (float64: 256 MiB).
PREDICT_ENTRIES = 1 << 25


@dataclass(frozen=True)
class KernelFunction:
    """``k(a, b)`` of flat rows: ``net.kernel(a, b, get=kind)`` on rows reshaped to ``input_shape``."""

    net: object
    kind: str
    input_shape: tuple

    def _rows(self, a):
        a = np.asarray(a, dtype=np.float64)
        return a.reshape((a.shape[0],) + tuple(self.input_shape))

    def __call__(self, a, b=None, dtype=None) -> np.ndarray:
        """``K(a, b)`` (``b`` None: ``K(a, a)``), float64 or rounded once to ``dtype``."""
        kw = {} if dtype is None else {"dtype": dtype}
        if b is None:
            return np.asarray(self.net.kernel(self._rows(a), get=self.kind, **kw))
        return np.asarray(self.net.kernel(self._rows(a), self._rows(b), get=self.kind, **kw))

    def diag(self, a) -> np.ndarray:
        return np.asarray(self.net.kernel(self._rows(a), get=self.kind, diagonal=True))


@dataclass(frozen=True)
class MapKernelFunction:
    """``k(a, b)`` of flat rows by a classical kernel map's exact face (``kmap.kernel``: the
    Gaussian, polynomial or arc-cosine kernel of :mod:`dsketch.sketch`), the same interface
    as :class:`KernelFunction`."""

    kmap: object

    def __call__(self, a, b=None, dtype=None) -> np.ndarray:
        """``K(a, b)`` (``b`` None: ``K(a, a)``), float64 or rounded once to ``dtype``."""
        out = np.asarray(self.kmap.kernel(a, b), dtype=np.float64)
        return out if dtype is None else out.astype(dtype)

    def diag(self, a) -> np.ndarray:
        """``k(a_i, a_i)``: the diagonals of ``K`` over blocks of ``MATMUL_BLOCK`` rows."""
        a = np.asarray(a)
        parts = [np.diag(self(a[s:s + MATMUL_BLOCK])) for s in range(0, a.shape[0], MATMUL_BLOCK)]
        return np.concatenate(parts) if parts else np.empty(0)


def available_memory(client=None) -> tuple[float, str]:
    """Bytes the kernel blocks may use and where (workers' total, or this machine's free)."""
    workers, _, total = worker_memory_limits(client)
    if total:
        return float(total), f"the {workers} workers' memory"
    return float(psutil.virtual_memory().available), "this machine's available memory"


def plan_cache(nbytes: float, cache, client=None, what: str = "the kernel blocks") -> tuple[bool, str]:
    """``(cache?, reason)``: ``cache`` True/False forces, ``"auto"`` asks the memory model."""
    if cache is True:
        return True, f"cache=True: {what} ({fmt_bytes(nbytes)}, float32) kept in memory"
    if cache is False:
        return False, f"cache=False: {what} recomputed every iteration"
    if cache != "auto":
        raise InvalidInputError(f"cache must be True, False or 'auto', got {cache!r}")
    avail, where = available_memory(client)
    if nbytes <= CACHE_FRACTION * avail:
        return True, (f"{what} ({fmt_bytes(nbytes)}, float32) fit in {int(CACHE_FRACTION * 100)}% "
                      f"of {where} ({fmt_bytes(avail)}): cached")
    return False, (f"{what} ({fmt_bytes(nbytes)}, float32) exceed {int(CACHE_FRACTION * 100)}% of "
                   f"{where} ({fmt_bytes(avail)}): recomputed every iteration")


def _bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + chunk)) for s in range(0, n, chunk)]


# ====================================================================== in memory
class MemoryKernel:
    """The ``n × n`` kernel of in-memory rows as blocks over row chunks of ``chunk`` rows.

    With ``cache`` (decided by :func:`plan_cache`) the upper block triangle is computed
    once (:meth:`build`) and kept as float32; otherwise every product recomputes the
    blocks (float64).  ``K·V`` accumulates in float64.
    """

    def __init__(self, X, kfn: KernelFunction, *, chunk: int = CHUNK_ROWS, cache="auto",
                 dtype=np.float32):
        self.X = X
        self.kfn = kfn
        self.n = int(X.shape[0])
        self.chunk = check_int(chunk, "chunk_rows")
        self.bounds = _bounds(self.n, self.chunk)
        self.dtype = np.dtype(dtype)
        nbytes = sum((b - a) * (d - c) for i, (a, b) in enumerate(self.bounds)
                     for (c, d) in self.bounds[i:]) * float(self.dtype.itemsize)
        self.cached, self.reason = plan_cache(nbytes, cache)
        self.nbytes = nbytes if self.cached else 0.0
        self.blocks: dict = {}
        self.built = False

    def _compute(self, i: int, j: int, dtype=None) -> np.ndarray:
        a, b = self.bounds[i]
        if i == j:
            return self.kfn(self.X[a:b], dtype=dtype)
        c, d = self.bounds[j]
        return self.kfn(self.X[a:b], self.X[c:d], dtype=dtype)

    def block(self, i: int, j: int) -> np.ndarray:
        """``K(X_i, X_j)`` for ``i ≤ j`` (cached or computed now)."""
        if not self.cached:
            return self._compute(i, j)
        blk = self.blocks.get((i, j))
        if blk is None:
            blk = self.blocks[(i, j)] = self._compute(i, j, self.dtype)
        return blk

    def _block_any(self, i: int, j: int) -> np.ndarray:
        return self.block(i, j) if i <= j else self.block(j, i).T

    def build(self) -> None:
        """Compute every cached block now (no-op without the cache)."""
        if self.cached:
            for i in range(len(self.bounds)):
                for j in range(i, len(self.bounds)):
                    self.block(i, j)
            self.built = True

    def matvec(self, V) -> np.ndarray:
        """``K V`` for ``V`` ``(n, k)``, float64."""
        V = np.asarray(V, dtype=np.float64)
        if self.built:  # cached blocks: every core, one read of each block strip
            return symmetric_product(self.block, self.bounds, V.astype(self.dtype))
        out = np.zeros_like(V)
        Vc = V.astype(self.dtype) if self.cached else V
        for i, (a, b) in enumerate(self.bounds):
            for j in range(i, len(self.bounds)):
                c, d = self.bounds[j]
                blk = self.block(i, j)
                out[a:b] += blk @ Vc[c:d]
                if i != j:
                    out[c:d] += blk.T @ Vc[a:b]
        return out

    def columns(self, idx) -> np.ndarray:
        """``K[:, idx]`` ``(n, len(idx))`` float64."""
        idx = np.asarray(idx, dtype=np.int64)
        if not self.built:  # never fill the cache block by block from here
            return self.kfn(self.X, self.X[idx])
        out = np.empty((self.n, idx.size))
        owner = np.searchsorted([a for a, _ in self.bounds], idx, side="right") - 1
        for j in np.unique(owner):
            sel = np.flatnonzero(owner == j)
            local = idx[sel] - self.bounds[j][0]
            for i, (a, b) in enumerate(self.bounds):
                out[a:b, sel] = self._block_any(i, j)[:, local]
        return out

    def diag(self) -> np.ndarray:
        return self.kfn.diag(self.X)

    def submatrix(self, rows) -> np.ndarray:
        """``K[rows][:, rows]`` float64, computed afresh: a gather from the float32 cache
        took 7.9 s for 10,000 rows of 20,000 (measured), the fresh kernel is ``rows²/2``
        entries at the kernel's rate (~35 M entries/s for the FC NTK at d = 784)."""
        rows = np.asarray(rows, dtype=np.int64)
        return self.kfn(self.X[rows])


# ===================================================================== dask rows
def _kernel_block(a, b, *, kfn, dtype):
    return kfn(a, b, dtype=dtype)


def _diag_chunk(a, *, kfn):
    return kfn.diag(a)


def _cross_chunk(a, c, *, kfn, dtype):
    return kfn(a, c, dtype=dtype)


class DaskKernel:
    """The kernel of a row-chunked dask array: blocks ``K(X_i, X_j)`` computed by the workers.

    The ``n × n`` float32 block array is one blockwise graph (tasks
    ``dsketch-kernel-block``); with the cache it is persisted on the workers (every block
    once), otherwise each product recomputes it.  ``K·V`` is a dask matrix product.
    """

    def __init__(self, X, kfn: KernelFunction, *, client=None, cache="auto", dtype=np.float32):
        if X.ndim != 2:
            X = X.reshape((X.shape[0], -1))
        self.X = X.rechunk({1: -1})
        self.kfn = kfn
        self.client = client
        self.n = int(X.shape[0])
        self.dtype = np.dtype(dtype)
        nbytes = float(self.n) ** 2 * self.dtype.itemsize
        self.cached, self.reason = plan_cache(nbytes, cache, client)
        self.nbytes = nbytes if self.cached else 0.0
        if not self.cached:  # recomputed blocks are never rounded
            self.dtype = np.dtype(np.float64)
        tok = token(self.X.name, kfn, str(self.dtype))
        self.K = da.blockwise(functools.partial(_kernel_block, kfn=kfn, dtype=self.dtype),
                              "ij", self.X, "ik", self.X, "jk", concatenate=True,
                              dtype=self.dtype, name=f"dsketch-kernel-block-{tok}",
                              meta=np.empty((0, 0), dtype=self.dtype))

    def build(self) -> None:
        """Persist the block array on the workers (no-op without the cache)."""
        if self.cached and not getattr(self, "_persisted", False):
            self.K = self.client.persist(self.K) if self.client is not None else self.K.persist()
            self._persisted = True

    def _run(self, arr) -> np.ndarray:
        return compute(arr, self.client, progress=False)

    def matvec(self, V) -> np.ndarray:
        """``K V`` for ``V`` ``(n, k)``, float64 (one dask product per call)."""
        V = np.asarray(V, dtype=np.float64)
        Vd = da.from_array(V, chunks=(self.K.chunks[1], V.shape[1]),
                           name=f"dsketch-kernel-v-{token(V)}")
        return self._run(da.dot(self.K, Vd).astype(np.float64))

    def columns(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        C = np.asarray(self.X[idx].compute(), dtype=np.float64)
        return self._run(self._cross(C, np.float64))

    def _cross(self, C, dtype):
        Cd = dask.delayed(C, name=f"dsketch-kernel-centres-{token(C)}", pure=True)
        kfn = self.kfn
        return self.X.map_blocks(
            functools.partial(_cross_chunk, kfn=kfn, dtype=dtype), Cd, dtype=dtype,
            chunks=(self.X.chunks[0], (C.shape[0],)), meta=np.empty((0, 0), dtype=dtype),
            name=f"dsketch-kernel-cross-{token(self.X.name, kfn, token(C), str(dtype))}")

    def cross(self, C, dtype=np.float32):
        """The lazy ``n × m`` kernel against centre rows ``C`` (Falkon's ``K_nm``)."""
        return self._cross(np.asarray(C, dtype=np.float64), np.dtype(dtype))

    def diag(self) -> np.ndarray:
        kfn = self.kfn
        d = self.X.map_blocks(functools.partial(_diag_chunk, kfn=kfn), dtype=np.float64, drop_axis=1,
                              chunks=(self.X.chunks[0],), meta=np.empty((0,)),
                              name=f"dsketch-kernel-diag-{token(self.X.name, kfn)}")
        return self._run(d)

    def submatrix(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        Xs = np.asarray(self.X[rows].compute(), dtype=np.float64)
        return self.kfn(Xs)


def make_kernel(X, kfn: KernelFunction, *, client=None, cache="auto", chunk=CHUNK_ROWS,
                dtype=np.float32):
    """:class:`DaskKernel` for a dask ``X``, else :class:`MemoryKernel`."""
    if isinstance(X, da.Array):
        return DaskKernel(X, kfn, client=client, cache=cache, dtype=dtype)
    return MemoryKernel(X, kfn, chunk=chunk, cache=cache, dtype=dtype)


# ======================================================================= predict
def _predict_rows(x, xf, w, *, kfn):
    """``K(x, X_fit) W`` in row blocks of at most :data:`PREDICT_ENTRIES` kernel entries;
    each row's prediction is independent of the batch (``backend.rows_matmul``)."""
    step = max(1, PREDICT_ENTRIES // max(1, xf.shape[0]))
    if step > PAIRS_BLOCK:  # whole product blocks (of both products): no zero padding computed
        step -= step % PAIRS_BLOCK
    out = np.empty((x.shape[0], w.shape[1]))
    for a in range(0, x.shape[0], step):
        out[a:a + step] = rows_matmul(kfn(x[a:a + step], xf), w)
    return out


def kernel_predict(X, kfn: KernelFunction, X_fit, W):
    """``K(X, X_fit) W`` ``(n, k)``: NumPy in memory, lazy per row chunk for a dask ``X``
    (``X_fit`` and ``W`` travel once per graph, tasks ``dsketch-kernel-predict``)."""
    W = np.asarray(W, dtype=np.float64)
    X_fit = np.asarray(X_fit)
    if not isinstance(X, da.Array):
        return _predict_rows(X, X_fit, W, kfn=kfn)
    if X.ndim != 2:
        X = X.reshape((X.shape[0], -1))
    X = X.rechunk({1: -1})
    tok = token(X.name, kfn, token(X_fit), token(W))
    xf = dask.delayed(X_fit, name=f"dsketch-kernel-fitrows-{token(X_fit)}", pure=True)
    wd = dask.delayed(W, name=f"dsketch-kernel-weights-{token(W)}", pure=True)
    return X.map_blocks(functools.partial(_predict_rows, kfn=kfn), xf, wd, dtype=np.float64,
                        chunks=(X.chunks[0], (W.shape[1],)), meta=np.empty((0, 0)),
                        name=f"dsketch-kernel-predict-{tok}")
