"""Array-module dispatch, seed derivation, per-device caches and input validation.

Owns: choosing NumPy or CuPy from the arrays a function receives, moving host arrays to a
device, deriving every random stream from an explicit seed along a fixed named path, the
per-process/per-device cache of materialized random matrices, and the shared validation:
the one integer/seed rule (:func:`check_int`, :func:`check_seed`), arrays
(:func:`check_array`) and overflow reports for finite input (:func:`check_overflow`).
Must not import Dask and must not hold any global random state.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import sys
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Hashable

import numpy as np
from threadpoolctl import ThreadpoolController

__all__ = [
    "get_namespace",
    "is_cupy",
    "asnumpy",
    "to_namespace",
    "device_key",
    "seed_sequence",
    "rng",
    "SeedPath",
    "device_cache",
    "check_array",
    "resolve_dtype",
    "usable_cores",
    "MALLOC_KEEP",
    "MALLOC_PLAIN",
    "tune_allocator",
    "MATMUL_BLOCK",
    "PAIRS_BLOCK",
    "rows_matmul",
    "pairs_matmul",
    "one_blas_thread",
    "check_int",
    "check_seed",
    "row_norms",
    "check_overflow",
    "overflow_error",
    "InvalidInputError",
    "NonFiniteError",
    "check_floats",
]

SeedPath = tuple  # (root_seed: int, *names: str | int)


class InvalidInputError(ValueError):
    """Bad user input or bad stored data: the message names what is wrong and where.

    Raised by dsketch's own validation (arguments, arrays, Zarr stores, model files), also
    on Dask workers, so the CLI can print the one message (exit 2) instead of a traceback.
    A ``ValueError``, so callers catching that keep working.
    """


class NonFiniteError(InvalidInputError):
    """An array holds NaN or Inf (:func:`check_array`).

    Its own class so that a computation can tell "this finite input overflowed inside me"
    (a ``NonFiniteError`` from an intermediate array) from bad input and say so.
    """


# --------------------------------------------------------------------------- namespaces
def _cupy():
    try:
        import cupy  # noqa: F401

        return cupy
    except Exception:  # pragma: no cover - depends on the machine
        return None


def is_cupy(x: Any) -> bool:
    """True when ``x`` is a CuPy array (without importing CuPy when it is absent)."""
    return type(x).__module__.split(".")[0] == "cupy"


def get_namespace(*arrays: Any):
    """Return the array module (``numpy`` or ``cupy``) of ``arrays``.

    Mixing CuPy and NumPy arrays raises ``ValueError``; non-array arguments (``None``,
    scalars) are ignored; with no array at all NumPy is returned.
    """
    if len(arrays) == 1 and type(arrays[0]) is np.ndarray:  # the common call, made per block
        return np
    mods = {("cupy" if is_cupy(a) else "numpy") for a in arrays if hasattr(a, "shape")}
    if len(mods) > 1:
        raise ValueError("arrays live on different devices: mix of NumPy and CuPy arrays")
    if mods == {"cupy"}:
        return _cupy()
    return np


def asnumpy(x: Any) -> np.ndarray:
    """Copy ``x`` to host memory as a NumPy array (no copy for NumPy input)."""
    if is_cupy(x):
        return x.get()
    return np.asarray(x)


def to_namespace(x: np.ndarray, xp) -> Any:
    """Move a host array to the device of module ``xp`` (NumPy: unchanged)."""
    if xp is np:
        return x
    return xp.asarray(x)


def device_key(xp) -> str:
    """A hashable name of the current device of module ``xp``: ``'cpu'`` or ``'cuda:N'``."""
    if xp is np:
        return "cpu"
    return f"cuda:{xp.cuda.Device().id}"


# --------------------------------------------------------------------------------- seeds
def _word(part: str | int) -> int:
    if isinstance(part, (int, np.integer)) and not isinstance(part, bool):
        if part < 0:
            raise InvalidInputError(f"seed path entries must be non-negative, got {part}")
        return int(part)
    if isinstance(part, str):
        return int.from_bytes(hashlib.blake2b(part.encode(), digest_size=4).digest(), "little")
    raise TypeError(f"seed path entries must be int or str, got {type(part).__name__}")


def seed_sequence(seed: int, *path: str | int) -> np.random.SeedSequence:
    """The ``SeedSequence`` of ``seed`` spawned along a fixed named ``path``.

    ``seed_sequence(7, "layer1", "polysketch", 3)`` is the same on every machine, process
    and device; two different paths give independent streams.
    """
    seed = check_seed(seed)
    return np.random.SeedSequence(seed, spawn_key=tuple(_word(p) for p in path))


def rng(seed: int, *path: str | int) -> np.random.Generator:
    """A PCG64 generator on the host for ``seed`` and ``path`` (see :func:`seed_sequence`)."""
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, *path)))


# ------------------------------------------------------------------------- device cache
class _LRU:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.data: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get_or_build(self, key: Hashable, build: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        value = build()
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.maxsize:
                self.data.popitem(last=False)
        return value

    def clear(self) -> None:
        with self.lock:
            self.data.clear()


_CACHE = _LRU(maxsize=256)


def device_cache(method: Callable) -> Callable:
    """Cache ``method(self, xp)`` per process, per ``self`` (a hashable spec) and device.

    Random matrices are drawn on the host from the spec's seed, moved to the device once
    and reused by every block this process computes.  The Dask graph never carries them.
    """

    @functools.wraps(method)
    def wrapper(self, xp):
        key = (method.__qualname__, self, device_key(xp))
        return _CACHE.get_or_build(key, lambda: method(self, xp))

    wrapper.cache_clear = _CACHE.clear  # type: ignore[attr-defined]
    return wrapper


# ---------------------------------------------------------------------------- validation
def check_int(value: Any, name: str, *, minimum: int | None = 1,
              maximum: int | None = None) -> int:
    """``value`` as a plain ``int`` in ``[minimum, maximum]``, or :class:`InvalidInputError`.

    The one integer check of dsketch (widths, degrees, block and chunk sizes, seeds):
    Python and NumPy integers pass; ``bool``, floats (``64.7`` *and* ``64.0``: never
    silently truncated), strings and ``None`` are refused with a message naming ``name``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidInputError(f"{name} must be an integer, got {value!r} "
                                f"({type(value).__name__})")
    v = int(value)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        if maximum is None:
            bound = f"≥ {minimum}"
        elif minimum is None:
            bound = f"≤ {maximum}"
        else:
            bound = f"in [{minimum}, {maximum}]"
        raise InvalidInputError(f"{name} must be an integer {bound}, got {value!r}")
    return v


def check_seed(seed: Any, name: str = "seed") -> int:
    """A seed as a non-negative ``int`` (:func:`check_int`); ``None`` is refused here.

    Low-level specs need an explicit seed; the estimators turn ``random_state=None`` into
    a drawn one first (scikit-learn's convention).
    """
    if seed is None:
        raise InvalidInputError(f"{name} must be a non-negative integer, got None (an explicit "
                                f"seed is required here; estimators draw one for "
                                f"random_state=None)")
    return check_int(seed, name, minimum=0)


def check_floats(value: Any, name: str) -> np.ndarray:
    """``value`` (a number or a list of numbers) as a float64 array, or
    :class:`InvalidInputError` naming ``name`` (never a bare "could not convert").

    Range checks (finite, positive, ...) stay with the caller, which knows them.
    """
    if isinstance(value, (str, bytes)):
        raise InvalidInputError(f"{name} must be a number or a list of numbers, got {value!r}")
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be a number or a list of numbers, got {value!r} "
                                f"({exc})") from None


def resolve_dtype(dtype: Any) -> np.dtype:
    """Validate a floating output dtype: float32 (default) or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InvalidInputError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InvalidInputError(f"dtype must be float32 or float64, got {dt}")
    return dt


def check_array(
    x: Any,
    name: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    finite: bool = True,
    dtype: Any = None,
) -> Any:
    """Validate an input array and return it (as NumPy or CuPy, floating).

    Raises :class:`InvalidInputError` naming ``name`` when it is not numeric, has the
    wrong number of dimensions, no rows, rows of zero size, or holds NaN/Inf
    (:class:`NonFiniteError`, with the first offending row).
    """
    if x is None:
        raise InvalidInputError(f"{name} is missing")
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        try:
            x = np.asarray(x)
        except Exception as exc:  # pragma: no cover - defensive
            raise InvalidInputError(f"{name} is not array-like: {exc}") from None
    xp = get_namespace(x)
    kind = np.dtype(x.dtype).kind if not is_cupy(x) else x.dtype.kind
    if kind not in "fiub":
        raise InvalidInputError(f"{name} must be numeric (got dtype {x.dtype})")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise InvalidInputError(f"{name} must have {want} dimensions, got shape "
                                    f"{tuple(x.shape)}")
    if x.shape and x.shape[0] == 0:
        raise InvalidInputError(f"{name} has no rows")
    if x.ndim > 1 and 0 in x.shape[1:]:
        raise InvalidInputError(f"{name} has rows of shape {tuple(x.shape[1:])}: every row "
                                f"dimension must be at least 1")
    if kind != "f":
        x = x.astype(dtype or np.float64)
    elif dtype is not None:
        x = x.astype(dtype, copy=False)
    if finite:
        bad = ~xp.isfinite(x)
        if bool(bad.any()):
            row = int(xp.argmax(bad.reshape(x.shape[0], -1).any(axis=1)))
            raise NonFiniteError(f"{name} contains NaN or Inf (first at row {row})")
    return x


def row_norms(x: Any) -> np.ndarray:
    """Euclidean norm of each row of ``x`` on the host, float64, without overflowing.

    Rows are scaled by their largest entry first, so norms near 1e300 come out finite.
    Sparse rows (``scipy.sparse``/``cupyx``) are scaled by the largest entry overall.
    """
    if hasattr(x, "tocsr"):
        x = x.tocsr().astype(np.float64)
        top = float(abs(x).max()) if x.nnz else 0.0
        scale = top if top > 0 else 1.0
        return top * np.sqrt(asnumpy(x.multiply(1.0 / scale).power(2).sum(axis=1))).ravel()
    xp = get_namespace(x)
    a = xp.abs(x.reshape(x.shape[0], -1).astype(xp.float64))
    top = a.max(axis=1) if a.shape[1] else xp.zeros(a.shape[0])
    safe = xp.where(top > 0, top, 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        return asnumpy(top * xp.sqrt(((a / safe[:, None]) ** 2).sum(axis=1)))


def overflow_error(what: str, inputs: dict, row: int | None = None,
                   dtype: Any = None) -> InvalidInputError:
    """The error for a NaN/Inf that ``what`` produced from finite ``inputs`` (an overflow).

    Names ``what``, the first affected ``row`` (if known), the inputs (``{name: array}``)
    with their largest row norms, and how to avoid it.
    """
    def largest(x):
        r = row_norms(x)
        return f"{float(r.max()):.3g} (row {int(np.argmax(r))})"

    norms = ", ".join(f"{name} up to {largest(x)}" for name, x in inputs.items())
    names = " and ".join(inputs)
    at = f" (first in result row {row})" if row is not None else ""
    rng = f" of {np.dtype(dtype)}" if dtype is not None else ""
    return InvalidInputError(
        f"overflow: {what} is not finite{at} although {names} "
        f"{'is' if len(inputs) == 1 else 'are'} finite (row norms: {norms}); the values "
        f"exceed the floating-point range{rng}: scale {names} down (e.g. standardize rows)")


def check_overflow(out: Any, what: str, inputs: dict) -> Any:
    """Return ``out``; raise :func:`overflow_error` when it holds NaN/Inf.

    For results computed from validated (finite) ``inputs`` a non-finite value is an
    overflow, never "bad input": the message says so rather than "contains NaN".  A NaN or
    Inf makes the sum of all entries non-finite, so a finite sum (one pass, no temporary
    as large as ``out``: a fresh array that size costs page faults) settles it; only a sum
    that is not finite (a bad entry, or finite entries whose sum overflows) is looked at
    entry by entry.
    """
    xp = get_namespace(out)
    with np.errstate(over="ignore", invalid="ignore"):
        total = xp.sum(out)
    if bool(xp.isfinite(total)):
        return out
    bad = ~xp.isfinite(out)
    if not bool(bad.any()):
        return out
    row = int(xp.argmax(bad.reshape(bad.shape[0], -1).any(axis=1)))
    raise overflow_error(what, inputs, row, out.dtype)


# ------------------------------------------------------------------ batch-free products
#: Rows of every BLAS call :func:`rows_matmul` makes: each call has the same shape whatever
#: the batch, the last block zero-padded.  128 rows: the same bits as 256-row blocks under
#: the Haswell, SkylakeX, Sandybridge and Zen kernels (checked), 93% of their float64 GEMM
#: rate, and the 128-row chunks of wide maps (``nets.chunks``) no longer pay for 256 (the
#: GEMM-bound ``relu_method="random"`` at d=784, m=4096: 1.85x the rows/s).
MATMUL_BLOCK = 128
#: Rows and columns of every BLAS call :func:`pairs_matmul` makes (exact kernels' Gram
#: blocks: 256 × k × 256 runs about 7% faster than 128 at d=784).
PAIRS_BLOCK = 256


def _gemm_dtype(*arrays) -> tuple[np.dtype, np.dtype]:
    """``(output dtype, float64 or complex128 GEMM dtype)`` of a product of ``arrays``."""
    out = np.result_type(*(a.dtype for a in arrays))
    if out.kind not in "fc":
        out = np.dtype(np.float64)
    return out, np.dtype(np.complex128 if out.kind == "c" else np.float64)


def rows_matmul(x: Any, w: Any) -> Any:
    """``x @ w`` whose every output row is bitwise independent of the other rows of ``x``.

    BLAS rounds a row's dot products differently depending on the call's shape, on the
    row's position inside the call and on the CPU's kernels (OpenBLAS's float32 Haswell
    GEMM adds the two halves of its 12-row tiles in different orders).  So on NumPy the
    product runs in float64 (complex128) GEMMs of exactly ``MATMUL_BLOCK`` rows (the last
    block zero-padded), each on one BLAS thread — the one case in which OpenBLAS computes
    every row alike on every core type (tested under Haswell, SkylakeX and Sandybridge
    kernels; SkylakeX's float64 GEMM rounds a block split over two threads differently) —
    and is rounded once to the output dtype.  ``x`` is 2-D ``(n, k)``, ``w`` is ``(k, m)``
    and fixed (a map's parameters).  CuPy input goes to cuBLAS unchanged; a SciPy sparse
    ``x`` to SciPy's sparse product, which accumulates each row over its stored entries in
    order.  Blocks run on the cores as in :func:`_each_block`.
    """
    if hasattr(x, "tocsr") or get_namespace(x, w) is not np:
        return x @ w
    out_dtype, dt = _gemm_dtype(x, w)
    (n, k), w = x.shape, np.asarray(w, dtype=dt)
    out = np.empty((n, w.shape[1]), dtype=out_dtype)

    def block(start, stop, rows):
        out[start:stop] = (rows @ w)[:stop - start]

    _each_block(x, dt, block, work=k * w.shape[1])
    return out


def pairs_matmul(x1: Any, x2: Any) -> Any:
    """``x1 @ x2.T`` whose every entry is bitwise independent of both batches.

    The pairwise form of :func:`rows_matmul`: float64 (complex128) GEMMs of exactly
    ``PAIRS_BLOCK × k × PAIRS_BLOCK`` on zero-padded row blocks of both sides, rounded
    once to the output dtype; so ``K(x, y)`` computed inside any two batches is the same
    number (and ``pairs_matmul(x, x)`` is symmetric bit for bit).  CuPy input goes to cuBLAS
    unchanged.
    """
    if get_namespace(x1, x2) is not np:
        return x1 @ x2.T
    out_dtype, dt = _gemm_dtype(x1, x2)
    (n1, k), n2, b = x1.shape, x2.shape[0], PAIRS_BLOCK
    out = np.empty((n1, n2), dtype=out_dtype)
    if n1 <= b < n2:  # one row block: its column blocks share the cores instead
        left = np.zeros((b, k), dt)
        left[:n1] = x1

        def column(start, stop, cols):
            out[:, start:stop] = (left @ cols.T)[:n1, :stop - start]

        _each_block(x2, dt, column, work=k * b, b=b)
        return out
    right = np.zeros((-(-n2 // b) * b, k), dt)  # x2 padded once, transposed per block
    right[:n2] = x2

    def block(start, stop, rows):
        for col in range(0, n2, b):
            end = min(col + b, n2)
            out[start:stop, col:end] = (rows @ right[col:col + b].T)[:stop - start, :end - col]

    _each_block(x1, dt, block, work=k * n2, b=b)
    return out


#: Multiply-adds per row block below which a product's blocks run in the calling thread.
_POOL_WORK = 1 << 22


@functools.lru_cache(maxsize=1)
def _blas_controller():
    return ThreadpoolController()


def one_blas_thread(gpu: bool = False):
    """Context limiting BLAS to one thread (host, main thread only; else a no-op).

    The Hadamard transforms are many GEMMs with a small inner dimension, which a
    multithreaded BLAS runs slower than one thread does (measured 2–4× on a busy 2-core
    machine); :func:`rows_matmul` runs its blocks one thread each.  Dask worker threads
    already run one-thread BLAS and are left alone.
    """
    if gpu or threading.current_thread() is not threading.main_thread():
        return contextlib.nullcontext()
    return _blas_controller().limit(limits=1, user_api="blas")


def _each_block(x, dt, fn, *, work: int, b: int = MATMUL_BLOCK) -> None:
    """``fn(start, stop, rows)`` for each ``b``-row block of ``x``.

    ``rows`` is the block cast to ``dt`` and zero-padded to ``b`` rows.  On the
    host's main thread, blocks of enough work (``work`` multiply-adds per row) run on a pool
    of the usable cores, and the others in order, all with one BLAS thread (a block split
    over BLAS threads may round differently); elsewhere (Dask worker threads, pools of the
    callers, which run one-thread BLAS) they run in order.
    """
    n = x.shape[0]

    def run(start):
        stop = min(start + b, n)
        rows = np.zeros((b,) + x.shape[1:], dt)
        rows[:stop - start] = x[start:stop]
        fn(start, stop, rows)

    starts = range(0, n, b)
    jobs = min(usable_cores(), len(starts))
    if jobs < 2 or b * work < _POOL_WORK or threading.current_thread() is not threading.main_thread():
        # one BLAS thread here too: OpenBLAS's SkylakeX float64 GEMM rounds a block
        # differently on two threads than on one (a row then depended on the batch)
        with one_blas_thread():
            for start in starts:
                run(start)
        return
    with one_blas_thread(), ThreadPoolExecutor(max_workers=jobs) as pool:
        for f in [pool.submit(run, start) for start in starts]:
            f.result()


# ------------------------------------------------------------------------------- machine
#: glibc's ``M_MMAP_THRESHOLD`` and ``M_TOP_PAD`` (bytes) set by :func:`tune_allocator` in
#: processes started with ``MALLOC_TRIM_THRESHOLD_`` (Dask workers: chunk-sized feature blocks
#: stay in the heap); the environment variable ``DSKETCH_MALLOC_KEEP`` sets both to another
#: size anywhere, ``0`` leaves malloc alone.
MALLOC_KEEP = 256 * 2**20
#: (``M_MMAP_THRESHOLD``, ``M_TOP_PAD``) in other processes: the ceiling glibc's own dynamic
#: thresholds can reach (32 MiB, trim at twice that), set from the start.
MALLOC_PLAIN = (32 * 2**20, 64 * 2**20)
_M_TOP_PAD, _M_MMAP_THRESHOLD = -2, -3  # glibc's mallopt parameter numbers


@functools.lru_cache(maxsize=1)
def tune_allocator() -> bool:
    """Once per process: reuse freed chunk-sized memory instead of faulting fresh pages in.

    Maps, exact kernels and the engine's tasks run chunk after chunk, freeing and allocating
    the same intermediates (megabytes each).  When malloc hands freed memory back to the OS,
    every chunk faults its pages in again (about 1.7 µs a page on a virtual machine) —
    always so in Dask workers, whose nannies set ``MALLOC_TRIM_THRESHOLD_=65536`` (which also
    pins the mmap threshold at 128 KiB), and often in a plain process, where glibc raises its
    thresholds only after it has freed such blocks.  So ``M_MMAP_THRESHOLD`` and ``M_TOP_PAD``
    are set to :data:`MALLOC_KEEP` under ``MALLOC_TRIM_THRESHOLD_`` and to
    :data:`MALLOC_PLAIN` elsewhere.  Measured on the 2-core VM (``benchmarks/allocator.py``,
    two runs): ``CNTKSketch`` (Myrtle-5, 14×14, m = 1024) 27.0 ms per image with 1.15 M page
    faults per call under the nannies' setting, 4.8–6.2 ms and ≤ 59 faults tuned; 9.7–10.5 →
    4.8–5.2 ms in a plain process; ``NTKSketch`` (d = 32, m = 1024) 5,900–7,900 → 16,600–25,300
    rows/s under the nannies' setting; the exact FC NTK (d = 784) 15.7–18.6 → 34.0–34.7 M
    entries/s there.  The cost: freed memory kept per malloc arena, up to the pad (peak RSS
    of a 20,000 × 784 ``NTKSketch`` m = 4096 ridge fit 2.05 → 2.09 GB).  Returns whether the
    setting was made (Linux/glibc; elsewhere nothing changes).
    """
    raw = os.environ.get("DSKETCH_MALLOC_KEEP", "").strip()
    try:
        keep = int(raw) if raw else None
    except ValueError:
        raise InvalidInputError(
            f"DSKETCH_MALLOC_KEEP must be a whole number of bytes (0: leave malloc alone), "
            f"got {raw!r}") from None
    if keep is not None:
        threshold = pad = min(keep, 1 << 30)
    elif "MALLOC_TRIM_THRESHOLD_" in os.environ:
        threshold = pad = MALLOC_KEEP
    else:
        threshold, pad = MALLOC_PLAIN
    if pad <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - a libc without mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TOP_PAD, pad))


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity mask: containers, SLURM cgroups)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)
