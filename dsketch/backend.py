"""Array-module dispatch, seed derivation, per-device caches and input validation.

Owns: choosing NumPy or CuPy from the arrays a function receives, moving host arrays to a
device, deriving every random stream from an explicit seed along a fixed named path, and
the per-process/per-device cache of materialized random matrices.  Must not import Dask
and must not hold any global random state.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

import numpy as np

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
    "InvalidInputError",
]

SeedPath = tuple  # (root_seed: int, *names: str | int)


class InvalidInputError(ValueError):
    """Bad user input or bad stored data: the message names what is wrong and where.

    Raised by dsketch's own validation (arguments, arrays, Zarr stores, model files), also
    on Dask workers, so the CLI can print the one message (exit 2) instead of a traceback.
    A ``ValueError``, so callers catching that keep working.
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
            raise ValueError(f"seed path entries must be non-negative, got {part}")
        return int(part)
    if isinstance(part, str):
        return int.from_bytes(hashlib.blake2b(part.encode(), digest_size=4).digest(), "little")
    raise TypeError(f"seed path entries must be int or str, got {type(part).__name__}")


def seed_sequence(seed: int, *path: str | int) -> np.random.SeedSequence:
    """The ``SeedSequence`` of ``seed`` spawned along a fixed named ``path``.

    ``seed_sequence(7, "layer1", "polysketch", 3)`` is the same on every machine, process
    and device; two different paths give independent streams.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.SeedSequence(int(seed), spawn_key=tuple(_word(p) for p in path))


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
def resolve_dtype(dtype: Any) -> np.dtype:
    """Validate a floating output dtype: float32 (default) or float64."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
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

    Raises ``ValueError`` naming ``name`` when it is not numeric, has the wrong number of
    dimensions, is empty, or holds NaN/Inf (with the first offending row).
    """
    if x is None:
        raise ValueError(f"{name} is missing")
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        try:
            x = np.asarray(x)
        except Exception as exc:  # pragma: no cover - defensive
            raise ValueError(f"{name} is not array-like: {exc}") from None
    xp = get_namespace(x)
    kind = np.dtype(x.dtype).kind if not is_cupy(x) else x.dtype.kind
    if kind not in "fiub":
        raise ValueError(f"{name} must be numeric (got dtype {x.dtype})")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")
    if x.shape and x.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    if kind != "f":
        x = x.astype(dtype or np.float64)
    elif dtype is not None:
        x = x.astype(dtype, copy=False)
    if finite:
        bad = ~xp.isfinite(x)
        if bool(bad.any()):
            row = int(xp.argmax(bad.reshape(x.shape[0], -1).any(axis=1)))
            raise ValueError(f"{name} contains NaN or Inf (first at row {row})")
    return x


# ------------------------------------------------------------------------------- machine
def usable_cores() -> int:
    """Cores this process may run on (CPU affinity mask: containers, SLURM cgroups)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)
