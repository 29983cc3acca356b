"""The compiled exact FC kernels (dsketch.nets.fc_kernel) against the layers' NumPy exact faces.

``Serial.kernel`` runs a Dense/ReLU-family/Erf/GeLU net on dense host rows through one compiled
pass per block; here the same kernels computed layer by layer (the layers' own exact faces,
with ``fc_chain`` switched off) are the reference, at float64 rounding, for cross, symmetric
and diagonal kernels, with biases, zero rows and |ρ| = 1 pairs; the branch-free arccos and
arcsin are checked against NumPy's to 2 ulp; every entry is bitwise independent of the batches
it is computed in.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from numba import njit

from dsketch.nets import (Abs, ABRelu, Dense, Erf, Gelu, LeakyRelu, Relu, Sin, fully_connected,
                          serial)
from dsketch.nets import fc_kernel

SERIAL = sys.modules["dsketch.nets.serial"]

NETS = {
    "relu": fully_connected(2, Relu(), W_std=math.sqrt(2.0)),
    "relu-bias-deep": fully_connected(4, Relu(), W_std=1.4, b_std=0.3),
    "leaky": fully_connected(1, LeakyRelu(0.1), b_std=0.5),
    "abs": fully_connected(2, Abs()),
    "abrelu": fully_connected(2, ABRelu(-0.4, 1.3), W_std=0.9, b_std=0.2),
    "erf": fully_connected(3, Erf(), W_std=1.3, b_std=0.2),
    "erf-abc": fully_connected(2, Erf(a=0.7, b=2.0, c=0.1)),
    "gelu": fully_connected(2, Gelu(), b_std=0.1),
    "mixed": serial(Dense(1.2, 0.1), Relu(), Dense(1.0, 0.0), Erf(), Dense(0.8, 0.2), Gelu(), Dense()),
}


def _rows(seed, n, d, scale=1.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * scale / math.sqrt(d)
    x[1] = 0.0            # a zero row: zero variances, ρ = 0
    x[2] = -x[3]          # ρ = -1 pairs inside one batch
    return x


@pytest.fixture
def layerwise(monkeypatch):
    """Run a call with the layers' own NumPy exact faces (the compiled chain switched off)."""
    def run(fn):
        monkeypatch.setattr(SERIAL, "fc_chain", lambda layers: None)
        try:
            return fn()
        finally:
            monkeypatch.undo()
    return run


def _close(got, want):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14 * np.abs(want).max())


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_chain_matches_layer_by_layer(name, scale, layerwise):
    net = NETS[name]
    x1, x2 = _rows(1, 70, 24, scale), _rows(2, 50, 24, scale)
    x2[4] = x1[5]  # ρ = 1 across the two sides
    assert fc_kernel.fc_chain(SERIAL.bind_layers(net.layers, (24,))) is not None
    for call in (lambda: net.kernel(x1, x2), lambda: net.kernel(x1, block_size=32),
                 lambda: net.kernel(x1, diagonal=True)):
        got, want = call(), layerwise(call)
        _close(got.nngp, want.nngp)
        _close(got.ntk, want.ntk)
    ntk = net.kernel(x1, x2, get="ntk")
    _close(ntk, layerwise(lambda: net.kernel(x1, x2, get="ntk")))


def test_unsupported_nets_keep_the_layer_path():
    bound = SERIAL.bind_layers
    assert fc_kernel.fc_chain(bound(fully_connected(2, Sin()).layers, (5,))) is None
    std = serial(Dense(1.0, 0.1, parameterization="standard"), Relu(), Dense())
    assert fc_kernel.fc_chain(bound(std.layers, (5,))) is None


@njit
def _apply(f, x, out):
    for i in range(x.shape[0]):
        out[i] = f(x[i])


@pytest.mark.parametrize("fast,ref", [(fc_kernel.fast_acos, np.arccos), (fc_kernel.fast_asin, np.arcsin)])
def test_branch_free_inverse_trig(fast, ref):
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-1, 1, 200001), rng.uniform(-1, 1, 100000),
                        1 - np.logspace(-17, 0, 2000), -1 + np.logspace(-17, 0, 2000),
                        np.logspace(-300, 0, 500), [0.0, -0.0, 0.5, -0.5, 1.0, -1.0]])
    out = np.empty_like(x)
    _apply(fast, x, out)
    want = ref(x)
    ulp = np.spacing(np.abs(want))
    assert np.all(np.abs(out - want) <= 2 * np.maximum(ulp, np.finfo(float).tiny))
    if fast is fc_kernel.fast_acos:
        assert out[-2] == 0.0 and out[-1] == np.arccos(-1.0)


@pytest.mark.parametrize("name", ["relu", "erf", "gelu"])
def test_entries_are_bitwise_independent_of_the_batches(name):
    net = NETS[name]
    x1, x2 = _rows(3, 40, 16), _rows(4, 30, 16)
    full = net.kernel(x1, x2)
    rev = net.kernel(x1[::-1].copy(), x2[::-1].copy())
    np.testing.assert_array_equal(full.ntk, rev.ntk[::-1, ::-1])
    np.testing.assert_array_equal(full.nngp, rev.nngp[::-1, ::-1])
    for i in (0, 17, 39):
        one = net.kernel(x1[i:i + 1], x2[5:6])
        assert one.ntk[0, 0] == full.ntk[i, 5] and one.nngp[0, 0] == full.nngp[i, 5]
        np.testing.assert_array_equal(net.kernel(x1[i:i + 1], x2, block_size=7).ntk[0], full.ntk[i])
    np.testing.assert_array_equal(net.kernel(x1, x2, block_size=9, n_jobs=2).ntk, full.ntk)


def _cupy():
    from _gpu import cupy_or_none

    return cupy_or_none()


@pytest.mark.gpu
@pytest.mark.skipif(_cupy() is None, reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("name", ["relu", "erf-abc", "gelu", "mixed"])
def test_gpu_chain_matches_the_host(name):
    cp = _cupy()
    net = NETS[name]
    x1, x2 = _rows(1, 50, 24), _rows(2, 40, 24)
    host = net.kernel(x1, x2)
    dev = net.kernel(cp.asarray(x1), cp.asarray(x2))
    for got, want in ((dev.nngp, host.nngp), (dev.ntk, host.ntk)):
        np.testing.assert_allclose(cp.asnumpy(got), want, rtol=1e-12, atol=1e-13 * np.abs(want).max())
    diag = net.kernel(cp.asarray(x1), diagonal=True)
    np.testing.assert_allclose(cp.asnumpy(diag.ntk), net.kernel(x1, diagonal=True).ntk, rtol=1e-12)
