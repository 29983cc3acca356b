"""The compiled Hadamard kernels (dsketch.sketch.compiled) against independent computations.

- each kernel equals a dense product with ``scipy.linalg.hadamard`` (float64 and float32);
- ``hadamard.fwht`` / ``hadamard_blocks`` / ``hadamard_gather`` / ``fold_signed`` through the
  kernels equal the BLAS factor products they replace (``hadamard.USE_COMPILED = False``)
  to float rounding, and so do the seeded features of every map built on them;
- a row's result is bitwise the same alone, at several positions of a batch and in
  reversed row order (issue 18: per-row determinism, whatever the BLAS core type).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

from dsketch.sketch import compiled, hadamard
from dsketch.sketch.hadamard import fold_signed, fwht, hadamard_blocks, hadamard_gather

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-6, np.float64: 1e-13}


def _close(got, want, dtype):
    """``got == want`` to the dtype's rounding, relative to the row's scale."""
    scale = np.abs(want).max() + 1e-30
    assert got.dtype == np.dtype(dtype)
    assert np.abs(got.astype(np.float64) - want).max() <= 8 * TOL[dtype] * scale


def _signs(rng, shape, dtype):
    return (rng.integers(0, 2, size=shape) * 2 - 1).astype(dtype)


def _ref_blocks(x, signs):
    """Dense float64 reference: per block, the signed row zero-padded, times H_n."""
    blocks, n = signs.shape
    h = scipy.linalg.hadamard(n).astype(np.float64)
    d = x.shape[1]
    out = []
    for b in range(blocks):
        z = np.zeros((x.shape[0], n))
        z[:, :d] = x.astype(np.float64) * signs[b, :d]
        out.append(z @ h)
    return np.concatenate(out, axis=1)


def _batch_invariant(fn, x, positions=(0, 3, -1)):
    """``fn`` of each chosen row alone, inside the batch and in reversed order: same bits."""
    full = fn(x)
    rev = fn(np.ascontiguousarray(x[::-1]))[::-1]
    np.testing.assert_array_equal(full, rev)
    for p in positions:
        alone = fn(np.ascontiguousarray(x[p:p + 1] if p != -1 else x[-1:]))
        np.testing.assert_array_equal(alone[0], full[p])
        padded = np.concatenate([x[:2], x[p:p + 1] if p != -1 else x[-1:], x[:5]])
        np.testing.assert_array_equal(fn(padded)[2], full[p])


# ------------------------------------------------------------------------------ kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32, 64, 128, 512, 4096])
def test_fwht_rows_is_the_hadamard_product(n, dtype):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((7, n)).astype(dtype)
    y = compiled.fwht_rows(x.copy())
    _close(y, x.astype(np.float64) @ scipy.linalg.hadamard(n), dtype)
    z = (rng.standard_normal((3, n)) + 1j * rng.standard_normal((3, n))).astype(
        np.complex64 if dtype == np.float32 else np.complex128)
    w = z.copy()
    compiled.fwht_rows(w.view(dtype), 2)  # interleaved (re, im) pairs
    want = z.astype(np.complex128) @ scipy.linalg.hadamard(n)
    assert np.abs(w - want).max() <= 8 * TOL[dtype] * np.abs(want).max()


def _levels_by_numpy(x):
    """The butterfly level by level, span 1 first: ``(a, b) → (a + b, a − b)``."""
    y = x.copy()
    n = y.shape[1]
    h = 1
    while h < n:
        v = y.reshape(y.shape[0], n // (2 * h), 2, h)
        a, b = v[:, :, 0].copy(), v[:, :, 1].copy()
        v[:, :, 0], v[:, :, 1] = a + b, a - b
        h *= 2
    return y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [8, 16, 32, 256, 1024, 4096])
def test_fwht_rows_rounds_every_level_as_the_plain_butterfly(n, dtype):
    """The vector levels (16 entries in registers) and the looped ones give the bits of the
    plain level-by-level butterfly, signed zeros and infinities included."""
    rng = np.random.default_rng(n + 1)
    x = (rng.standard_normal((6, n)) * 10.0 ** rng.integers(-6, 7, (6, n))).astype(dtype)
    x[0, ::3] = -0.0
    x[1, :4] = [np.inf, -np.inf, 0.0, -0.0]
    with np.errstate(invalid="ignore"):  # inf − inf
        want = _levels_by_numpy(x)
    got = compiled.fwht_rows(x.copy())
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d,n,blocks", [(1, 8, 1), (5, 16, 2), (33, 64, 1), (100, 128, 3),
                                        (300, 1024, 1), (784, 1024, 2), (1024, 1024, 1),
                                        (3, 4, 5), (9, 16, 64)])  # many narrow untiled blocks
def test_signed_blocks_and_gather(d, n, blocks, dtype):
    rng = np.random.default_rng(d)
    x = rng.standard_normal((9, d)).astype(dtype)
    s = _signs(rng, (blocks, n), dtype)
    want = _ref_blocks(x, s)
    _close(compiled.signed_blocks(x, s), want, dtype)
    idx = rng.permutation(blocks * n)[: max(1, blocks * n // 3)]
    _close(compiled.signed_blocks(x, s, idx), want[:, idx], dtype)
    frozen = x.copy()
    frozen.flags.writeable = False  # a read-only input is copied, not compiled for again
    np.testing.assert_array_equal(compiled.signed_blocks(frozen, s), compiled.signed_blocks(x, s))
    assert len(compiled._signed_blocks.signatures) <= len(compiled.NUMBA_DTYPES)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d,n", [(10, 16), (64, 64), (100, 32), (3000, 1024)])
def test_folded_fwht(d, n, dtype):
    rng = np.random.default_rng(d + n)
    x = rng.standard_normal((6, d)).astype(dtype)
    s = _signs(rng, -(-d // n) * n + 3, dtype)
    z = np.zeros((6, -(-d // n) * n))
    z[:, :d] = x.astype(np.float64) * s[:d]
    folded = z.reshape(6, -1, n).sum(axis=1)
    _close(compiled.folded_fwht(x, s, n), folded @ scipy.linalg.hadamard(n), dtype)
    idx = rng.permutation(n)[: n // 2 + 1]
    _close(compiled.folded_fwht(x, s, n, idx), (folded @ scipy.linalg.hadamard(n))[:, idx], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_are_bitwise_per_row(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((11, 300)).astype(dtype)
    s = _signs(rng, (2, 512), dtype)
    idx = rng.permutation(1024)[:700]
    _batch_invariant(lambda a: compiled.fwht_rows(np.ascontiguousarray(a[:, :256]).copy()), x)
    _batch_invariant(lambda a: compiled.signed_blocks(a, s), x)
    _batch_invariant(lambda a: compiled.signed_blocks(a, s, idx), x)
    _batch_invariant(lambda a: compiled.folded_fwht(a, s.ravel(), 128), x)
    _batch_invariant(lambda a: compiled.folded_fwht(a, s.ravel(), 128, idx[idx < 128]), x)
    _batch_invariant(lambda a: fwht(np.ascontiguousarray(a[:, :128]) + 0j), x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_window_product_is_numpys_broadcast_product(dtype):
    """``out[t·w + k] = a[k]·b[t + k]`` (or ``a[k]``) for the first ``windows`` windows, the
    rest of ``out`` untouched; bitwise NumPy's product, per row."""
    rng = np.random.default_rng(8)
    a = rng.standard_normal((5, 4)).astype(dtype)
    b = rng.standard_normal((5, 9)).astype(dtype)
    out = np.full((5, 23), 7, dtype=dtype)
    compiled.window_product(a, b, 5, out)
    want = np.stack([a * b[:, t:t + 4] for t in range(5)], axis=1).reshape(5, 20)
    assert np.array_equal(out[:, :20], want) and (out[:, 20:] == 7).all()
    compiled.window_product(a, None, 5, out)
    assert np.array_equal(out[:, :20], np.tile(a, 5))
    _batch_invariant(lambda r: compiled.window_product(r[:, :4], r[:, 4:], 5, np.empty((len(r), 20), dtype)),
                     np.concatenate([a, b], axis=1))
    with pytest.raises(ValueError, match="b must have"):
        compiled.window_product(a, b[:, :7], 5, out)
    with pytest.raises(ValueError, match="out must be"):
        compiled.window_product(a, b, 6, out)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensor_srht_windows_through_the_kernel_equal_numpys(dtype, monkeypatch):
    """A TensorSRHT whose first factor is narrower than its output (windowed pairing, e.g. the
    first activation of a net on a 32-wide input) gives the same bits with the window kernel
    as with NumPy's broadcast product."""
    from dsketch.sketch import TensorSRHT, tensor

    rng = np.random.default_rng(9)
    x1, x2 = rng.standard_normal((2, 7, 32)).astype(dtype)
    for d_out in (1024, 1000):  # whole windows, and a partial last one
        t = TensorSRHT(32, 32, d_out, 3)
        got, left = t(x1, x2), t.left(x1)
        with monkeypatch.context() as m:
            m.setattr(tensor, "_compiled_windows", lambda *a: False)
            assert np.array_equal(got, t(x1, x2)) and np.array_equal(left, t.left(x1))


# ---------------------------------------------------- hadamard.* through the kernels
@pytest.fixture
def reference_path(monkeypatch):
    """A function running ``fn`` with the BLAS factor products instead of the kernels."""
    def run(fn, *args):
        monkeypatch.setattr(hadamard, "USE_COMPILED", False)
        try:
            return fn(*args)
        finally:
            monkeypatch.setattr(hadamard, "USE_COMPILED", True)
    return run


@pytest.mark.parametrize("dtype", DTYPES)
def test_hadamard_functions_match_the_blas_path(dtype, reference_path):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((13, 700)).astype(dtype)
    s = _signs(rng, (3, 1024), dtype) / np.float32(math.sqrt(3072))
    s = s.astype(dtype)
    for fn, args in [(fwht, (x[:, :512],)), (hadamard_blocks, (x, s)),
                     (hadamard_blocks, (x[:, :40], s[:, :64])),
                     (hadamard_gather, (x, s[:1], np.sort(rng.permutation(1024)[:500]))),
                     (hadamard_gather, (x[:, :513], s[:1], np.arange(1024)[::3].copy()))]:
        got = fn(*args)
        want = reference_path(fn, *args)
        _close(got, want.astype(np.float64), dtype)
    folded = fwht(fold_signed(x, s.ravel(), 256))
    _close(folded, reference_path(lambda: fwht(fold_signed(x, s.ravel(), 256))).astype(np.float64), dtype)


def _maps():
    from dsketch.estimators import (ArcCosineFeatures, NTKRandomFeatures, NTKSketch,
                                    PolynomialSketch, RandomFourierFeatures)
    from dsketch.nets import Erf, Gelu, Relu, fully_connected

    return {
        "rff": RandomFourierFeatures(n_components=256, random_state=3),
        "ntk-relu": NTKSketch(net=fully_connected(2, Relu(), W_std=math.sqrt(2)), n_components=256,
                              random_state=3),
        "ntk-erf": NTKSketch(net=fully_connected(2, Erf()), n_components=256, random_state=3),
        "ntk-gelu": NTKSketch(net=fully_connected(2, Gelu()), n_components=256, random_state=3),
        "ntk-random": NTKSketch(n_components=256, random_state=3, relu_method="random"),
        "poly": PolynomialSketch(degree=3, n_components=256, random_state=3),
        "arccos": ArcCosineFeatures(order=1, n_components=256, random_state=3),
        "ntkrf": NTKRandomFeatures(depth=1, n_components=256, random_state=3),
    }


@pytest.mark.parametrize("name", list(_maps()))
@pytest.mark.parametrize("d", [20, 300])
def test_seeded_features_unchanged_to_rounding(name, d, reference_path):
    """The same seed gives the features of the BLAS path (float32 rounding), bitwise per row."""
    x = (np.random.default_rng(d).standard_normal((40, d)) / math.sqrt(d)).astype(np.float32)
    est = _maps()[name].fit(x)
    got = est.transform(x)
    want = reference_path(est.transform, x)
    assert got.dtype == want.dtype == np.float32
    err = np.linalg.norm(got.astype(np.float64) - want, axis=1) / np.linalg.norm(want, axis=1)
    assert err.max() < 1e-5, err.max()
    _batch_invariant(lambda a: est.transform(a), x, positions=(0, 17, -1))


def test_cntk_features_unchanged_to_rounding(reference_path):
    from dsketch.estimators import CNTKSketch
    from dsketch.nets import myrtle

    x = np.random.default_rng(2).standard_normal((3, 8, 8, 1)).astype(np.float32)
    est = CNTKSketch(net=myrtle(5), n_components=64, random_state=1).fit(x)
    got, want = est.transform(x), reference_path(est.transform, x)
    err = np.linalg.norm(got.astype(np.float64) - want, axis=1) / np.linalg.norm(want, axis=1)
    assert err.max() < 1e-5, err.max()
    np.testing.assert_array_equal(est.transform(x[1:2])[0], got[1])


# --------------------------------------------------------------------------------- GPU
def _cupy():
    from _gpu import cupy_or_none

    return cupy_or_none()


@pytest.mark.gpu
@pytest.mark.skipif(_cupy() is None, reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_kernels_match_the_host_kernels(dtype):
    cp = _cupy()
    from dsketch.sketch import compiled_cupy

    rng = np.random.default_rng(4)
    for n in (1, 2, 8, 64, 1024, 4096):
        x = rng.standard_normal((5, n)).astype(dtype)
        _close(cp.asnumpy(compiled_cupy.gpu_fwht_rows(cp.asarray(x))),
               compiled.fwht_rows(x.copy()).astype(np.float64), dtype)
        _close(cp.asnumpy(fwht(cp.asarray(x))), fwht(x).astype(np.float64), dtype)
    z = (rng.standard_normal((3, 256)) + 1j * rng.standard_normal((3, 256))).astype(np.complex128)
    w = cp.asarray(z)
    compiled_cupy.gpu_fwht_rows(w.view(cp.float64), 2)
    np.testing.assert_allclose(cp.asnumpy(w), z @ scipy.linalg.hadamard(256), atol=1e-9)
    for d, n, blocks in ((5, 16, 2), (300, 1024, 1), (784, 1024, 3)):
        x = rng.standard_normal((6, d)).astype(dtype)
        s = _signs(rng, (blocks, n), dtype)
        idx = rng.permutation(blocks * n)[:100]
        got = compiled_cupy.gpu_signed_blocks(cp.asarray(x), cp.asarray(s), cp.asarray(idx))
        _close(cp.asnumpy(got), compiled.signed_blocks(x, s, idx).astype(np.float64), dtype)
        _close(cp.asnumpy(hadamard_blocks(cp.asarray(x), cp.asarray(s))),
               hadamard_blocks(x, s).astype(np.float64), dtype)


@pytest.mark.gpu
@pytest.mark.skipif(_cupy() is None, reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("name", ["ntk-relu", "ntk-erf", "poly"])
def test_gpu_features_match_the_host(name):
    cp = _cupy()
    x = (np.random.default_rng(1).standard_normal((30, 100)) / 10).astype(np.float32)
    est = _maps()[name].fit(x)
    host = est.transform(x)
    dev = cp.asnumpy(est.feature_map_(cp.asarray(x)))
    err = np.linalg.norm(dev.astype(np.float64) - host, axis=1) / np.linalg.norm(host, axis=1)
    assert err.max() < 1e-4, err.max()



def test_wide_maps_run_in_narrower_chunks_with_the_same_features():
    """Host vector chunks shrink with the feature width (cache-sized intermediates); a row's
    features do not depend on the chunk it lands in."""
    from dsketch.estimators import NTKSketch
    from dsketch.backend import MATMUL_BLOCK
    from dsketch.nets import chunks

    assert chunks.chunk_rows((784,)) == chunks.chunk_rows((784,), width=1024) == chunks.PIXEL_ROWS
    # wide maps: fewer rows, but whole blocks of backend.rows_matmul (no padded rows)
    assert chunks.chunk_rows((784,), width=2048) == chunks.VECTOR_CHUNK_ELEMENTS // 2048
    assert chunks.chunk_rows((784,), width=4096) == MATMUL_BLOCK
    assert chunks.chunk_rows((784,), width=3000) == MATMUL_BLOCK
    assert chunks.chunk_rows((784,), width=chunks.WIDE_CHUNK_ELEMENTS // MATMUL_BLOCK) == MATMUL_BLOCK
    assert chunks.chunk_rows((784,), width=1 << 20) == 64  # very wide: memory first
    assert chunks.chunk_rows((784,), gpu=True, width=4096) == chunks.GPU_PIXEL_ROWS
    assert chunks.chunk_rows((8, 8, 3), width=4096) == chunks.chunk_rows((8, 8, 3))
    x = (np.random.default_rng(3).standard_normal((300, 20)) / 5).astype(np.float32)
    fmap = NTKSketch(n_components=8192, degree=2, random_state=0).fit(x).feature_map_
    got = fmap(x)  # 64-row chunks
    whole = np.concatenate([fmap(x[:150]), fmap(x[150:])])
    np.testing.assert_array_equal(got, whole)
    np.testing.assert_array_equal(fmap(x[77:78])[0], got[77])
