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
