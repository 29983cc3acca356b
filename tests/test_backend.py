"""Backend: seed derivation, per-device cache, namespace dispatch, input validation."""

from dataclasses import dataclass

import numpy as np
import pytest

from dsketch import backend


def test_seed_paths_are_deterministic_and_independent():
    a = backend.rng(7, "layer1", "polysketch", 3).standard_normal(5)
    b = backend.rng(7, "layer1", "polysketch", 3).standard_normal(5)
    c = backend.rng(7, "layer1", "polysketch", 4).standard_normal(5)
    d = backend.rng(8, "layer1", "polysketch", 3).standard_normal(5)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert not np.allclose(a, d)
    # names are hashed stably (no Python hash randomization): a fixed known value
    assert backend.seed_sequence(0, "x").spawn_key == backend.seed_sequence(0, "x").spawn_key


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, None])
def test_bad_seed_rejected(bad):
    with pytest.raises(ValueError, match="seed"):
        backend.seed_sequence(bad)


@dataclass(frozen=True)
class _Spec:
    seed: int

    @backend.device_cache
    def matrix(self, xp):
        _Spec.builds += 1
        return backend.to_namespace(backend.rng(self.seed, "m").standard_normal((3, 3)), xp)


_Spec.builds = 0


def test_device_cache_builds_once_per_spec():
    before = _Spec.builds
    m1 = _Spec(1).matrix(np)
    m2 = _Spec(1).matrix(np)
    m3 = _Spec(2).matrix(np)
    assert m1 is m2
    assert not np.allclose(m1, m3)
    assert _Spec.builds == before + 2


def test_get_namespace_numpy_default():
    assert backend.get_namespace(np.ones(2), None, 3.0) is np
    assert backend.get_namespace() is np


def test_check_array_errors_name_argument_and_row():
    with pytest.raises(ValueError, match="X must have 2 dimensions"):
        backend.check_array(np.ones(3), "X", ndim=2)
    x = np.ones((4, 2))
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN or Inf \(first at row 2\)"):
        backend.check_array(x, "X")
    with pytest.raises(ValueError, match="numeric"):
        backend.check_array(np.array([["a", "b"]]), "X")
    with pytest.raises(ValueError, match="no rows"):
        backend.check_array(np.ones((0, 3)), "X")
    out = backend.check_array(np.ones((2, 2), dtype=np.int64), "X")
    assert out.dtype == np.float64


def test_resolve_dtype():
    assert backend.resolve_dtype("float32") == np.float32
    with pytest.raises(ValueError, match="float32 or float64"):
        backend.resolve_dtype("int8")


def test_cupy_arrays_dispatch_when_available():
    cupy = pytest.importorskip("cupy")
    try:
        x = cupy.ones(3)
    except Exception:  # pragma: no cover - CuPy without a device
        pytest.skip("CuPy installed but no CUDA device")
    assert backend.get_namespace(x) is cupy
    np.testing.assert_array_equal(backend.asnumpy(x), np.ones(3))


_FAULTS = r"""
import math, resource, sys
import numpy as np
from dsketch import backend
from dsketch.estimators import NTKSketch
x = (np.random.default_rng(1).standard_normal((4096, 32)) / math.sqrt(32)).astype(np.float32)
est = NTKSketch(n_components=1024, random_state=0).fit(x[:2])
est.transform(x)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
est.transform(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, backend.tune_allocator())
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_chunk_memory_is_kept_instead_of_faulted_in_again():
    """Under Dask's worker malloc setting (MALLOC_TRIM_THRESHOLD_=65536) a second transform of
    the same rows faults its intermediates' pages in again unless malloc keeps freed memory
    (``tune_allocator``, on by default; ``DSKETCH_MALLOC_KEEP=0`` turns it off)."""
    import os
    import subprocess
    import sys

    def faults(pad):
        env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536", DSKETCH_MALLOC_KEEP=pad,
                   OMP_NUM_THREADS="1")
        out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True,
                             text=True, check=True, timeout=300).stdout.split()
        return int(out[0]), out[1] == "True"

    kept, on = faults("")
    if not on:
        pytest.skip("this libc has no mallopt(M_TOP_PAD)")
    dropped, off = faults("0")
    assert not off
    # at most the output's pages (4096 × 1024 float32: 4,096) plus a few; without: ~260,000
    assert kept < 8000 and 10 * max(kept, 1) < dropped, (kept, dropped)


def test_allocator_setting_is_read_from_the_environment(monkeypatch):
    try:
        monkeypatch.setenv("DSKETCH_MALLOC_KEEP", "0")
        backend.tune_allocator.cache_clear()
        assert backend.tune_allocator() is False
        monkeypatch.setenv("DSKETCH_MALLOC_KEEP", "64M")
        backend.tune_allocator.cache_clear()
        with pytest.raises(backend.InvalidInputError, match="DSKETCH_MALLOC_KEEP.*'64M'"):
            backend.tune_allocator()
    finally:
        monkeypatch.delenv("DSKETCH_MALLOC_KEEP")
        backend.tune_allocator.cache_clear()
        backend.tune_allocator()


def test_check_overflow_finds_the_first_bad_row_and_passes_huge_finite_values():
    """``check_overflow``: a finite result is returned as is — also one whose entries are
    finite but sum past the float range (the one-pass sum check falls back to entries) —
    and a NaN or Inf raises naming the first bad row and the inputs."""
    from dsketch.backend import InvalidInputError, check_overflow

    x = np.ones((4, 2), dtype=np.float32)
    out = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    assert check_overflow(out, "the features", {"X": x}) is out
    huge = np.full((6, 5), 3e38, dtype=np.float32)          # finite; the sum overflows
    with np.errstate(over="ignore"):
        assert np.isinf(huge.sum())
    assert check_overflow(huge, "the features", {"X": x}) is huge
    for bad in (np.nan, np.inf, -np.inf):
        out2 = out.copy()
        out2[3, 1] = bad
        out2[5, 0] = bad
        with pytest.raises(InvalidInputError, match=r"overflow: the features is not finite \(first in result row 3\)"):
            check_overflow(out2, "the features", {"X": x})
