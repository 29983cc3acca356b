"""Generic (array-namespace) code paths run on a strict array-API namespace.

Functions that take their module from ``backend.get_namespace`` claim to run on any array
module (NumPy on the host, CuPy on a GPU).  Here ``get_namespace`` answers
``array_api_strict`` for its arrays, so a NumPy-only call (``np.*`` on the argument, a
NumPy-only method or name) raises instead of silently converting; results must equal the
NumPy results.  The list below is what is generic in the array-API sense today; the
dual-activation faces (``moments``: ``np.result_type`` on dtypes, ``.astype(copy=False)``;
``arccos`` spelled the NumPy way) are NumPy/CuPy-generic only and stay off it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

xps = pytest.importorskip("array_api_strict")

from dsketch import backend  # noqa: E402
from dsketch.engine import whitening  # noqa: E402
from dsketch.nets import Relu, hermite_moments, hermite_series, special  # noqa: E402
from dsketch.nets.activations import relu as relu_module  # noqa: E402
from dsketch.sketch import arccos  # noqa: E402

#: Modules whose generic functions are checked (each imported ``get_namespace`` by name).
MODULES = [backend, special, hermite_series, hermite_moments, arccos, relu_module, whitening]


@pytest.fixture
def strict(monkeypatch):
    host = backend.get_namespace

    def get_namespace(*arrays):
        if any(type(a).__module__.startswith("array_api_strict") for a in arrays):
            return xps
        return host(*arrays)

    for mod in MODULES:
        if hasattr(mod, "get_namespace"):
            monkeypatch.setattr(mod, "get_namespace", get_namespace)
    return xps


def _np(a):
    return np.asarray(a)


CASES = {
    "norm_pdf": lambda xp, v: special.norm_pdf(v),
    "normalized_hermite": lambda xp, v: hermite_series.normalized_hermite(v, 5),
    "safe_power": lambda xp, v: hermite_moments.safe_power(xp.abs(v), 1.5),
    "arccos_J0": lambda xp, v: arccos.arccos_J(0, xp.acos(v / 4), xp),
    "arccos_J1": lambda xp, v: arccos.arccos_J(1, xp.acos(v / 4), xp, cos=v / 4),
    "arccos_J2": lambda xp, v: arccos.arccos_J(2, xp.acos(v / 4), xp, cos=v / 4),
    "relu_fn": lambda xp, v: Relu().fn(v),
}


@pytest.mark.parametrize("name", list(CASES))
def test_generic_function_runs_on_the_strict_namespace(name, strict):
    host = np.linspace(-3.0, 3.0, 13)
    want = CASES[name](np, host)
    got = CASES[name](strict, strict.asarray(host))
    assert type(got).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(_np(got), want, rtol=1e-14, atol=1e-15)
    assert math.isfinite(float(np.sum(want)))


def test_zca_whitening_runs_on_the_strict_namespace(strict):
    """``apply_zca`` on in-memory blocks (the CuPy path of ``CNTKSketch(zca_regularization=)``)."""
    host = np.random.default_rng(0).normal(size=(9, 3, 3, 1)).astype(np.float32)
    mean, W = whitening.fit_zca(host, 1.0)
    want = whitening.apply_zca(host, mean, W)
    got = whitening.apply_zca(strict.asarray(host), mean, W)
    assert type(got).__module__.startswith("array_api_strict") and got.dtype == strict.float32
    np.testing.assert_array_equal(_np(got), want)


def test_hermite_series_residual_compiled_equals_the_generic_path(strict):
    """``subtract_series``: the compiled host pass (float64 NumPy) and the whole-array steps
    (CuPy's path, here on the strict namespace) give the same bits, and both equal
    ``values − Σ_l coef_l h_l(z)`` with :func:`normalized_hermite`."""
    rng = np.random.default_rng(4)
    z, values = rng.normal(size=(2, 6, 11))
    coef = rng.normal(size=(6, 5))
    for top in (0, 2, 4):
        host = hermite_series.subtract_series(values, z, coef, top)
        got = hermite_series.subtract_series(strict.asarray(values), strict.asarray(z),
                                             strict.asarray(coef), top)
        assert type(got).__module__.startswith("array_api_strict")
        np.testing.assert_array_equal(_np(got), host)
        h = hermite_series.normalized_hermite(z, top)
        want = values - np.einsum("rl,rkl->rk", coef[:, :top + 1], h)
        np.testing.assert_allclose(host, want, rtol=1e-12, atol=1e-12)
    # a row's values depend on that row alone (any batch, any order)
    one = hermite_series.subtract_series(values[3:4], z[3:4], coef[3:4], 4)
    np.testing.assert_array_equal(one[0], hermite_series.subtract_series(values, z, coef, 4)[3])
    # overwrite=True: the same numbers, written into (and returned as) ``values`` itself
    want = hermite_series.subtract_series(values, z, coef, 4)
    mine = values.copy()
    got = hermite_series.subtract_series(mine, z, coef, 4, overwrite=True)
    assert got is mine
    np.testing.assert_array_equal(got, want)
