"""A row's result never depends on its batch — bitwise, on every BLAS core type.

Every feature map (classical kernel maps, FC sketches of every method and activation, the
CNTK sketch, Nyström), exact kernel entries and a fitted model's predictions must give a
row the same bits whether it is computed alone, in a slice, after other rows, in reversed
order, past a ``backend.MATMUL_BLOCK`` / ``PAIRS_BLOCK`` boundary, with one or two BLAS threads, or as one
chunk of a dask array.  ``.ci/run`` runs this module (and the chunk-invariance tests of the
map families) three times: default kernels, ``OPENBLAS_CORETYPE=Haswell`` and
``OPENBLAS_CORETYPE=Sandybridge``.

Cross-row reductions (Gram passes, CG matvecs, fold sums) are *not* bitwise: summation order
follows the chunks.  They are held to the float64 bound of a reordered sum instead
(:func:`test_gram_reordering_stays_within_the_float64_summation_bound`).
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from _activations import acts, ids
from test_sketch_kernels import MAPS as KERNEL_MAPS
from test_sketch_primitives import D as ZOO_D
from test_sketch_primitives import ZOO
from threadpoolctl import threadpool_limits

from dsketch import NeuralNystroem, NTKSketch, SketchRidge, SketchRidgeClassifier
from dsketch.backend import MATMUL_BLOCK, PAIRS_BLOCK, pairs_matmul, rows_matmul
from dsketch.engine import embed, gram
from dsketch.nets import (AvgPool, Conv, Erf, Flatten, LeakyRelu, Relu, Sin, fully_connected, myrtle,
                          serial)

#: One activation per family (closed forms, Hermite-folded, numerical quadrature).
FAMILIES = list({str(a): a for a in acts("chunk") + acts("sketch_nan") + [Sin(), LeakyRelu(0.1)]}.values())
#: Rows in front of the batch in the "after other rows" variant: crosses GEMM block edges.
_OFFSET = max(MATMUL_BLOCK, PAIRS_BLOCK) + 37


def _batchings(n: int) -> dict:
    """Named ways of cutting rows ``0..n-1`` into calls: lists of index arrays."""
    idx = np.arange(n)
    return {"alone": [idx[i:i + 1] for i in range(n)],
            "halves": [idx[: n // 2], idx[n // 2:]],
            "thirds-uneven": [idx[:1], idx[1:n - 2], idx[n - 2:]],
            "reversed": [idx[::-1]]}


def _assert_batch_free(f, x, *, what: str):
    """``f(rows)`` gives each row the bits of ``f(x)`` however the rows are batched.

    ``f`` returns an array or a tuple of arrays with rows on axis 0.
    """
    def parts(rows):
        out = f(rows)
        return out if isinstance(out, tuple) else (out,)

    whole = parts(x)
    for name, cuts in _batchings(len(x)).items():
        pieces = [parts(x[c]) for c in cuts]
        order = np.concatenate(cuts)
        for k, ref in enumerate(whole):
            got = np.empty_like(ref)
            got[order] = np.concatenate([p[k] for p in pieces])
            assert np.array_equal(got, ref), f"{what}: rows differ when batched '{name}'"
    # after other rows, past the product blocks' boundaries
    noise = np.random.default_rng(99).standard_normal((_OFFSET,) + x.shape[1:]).astype(x.dtype)
    late = parts(np.concatenate([noise, x]))
    for k, ref in enumerate(whole):
        assert np.array_equal(late[k][_OFFSET:], ref), f"{what}: rows differ after {_OFFSET} rows"
    # two BLAS threads instead of the suite's one
    with threadpool_limits(2):
        two = parts(x)
    for k, ref in enumerate(whole):
        assert np.array_equal(two[k], ref), f"{what}: rows differ with 2 BLAS threads"


# ============================================================================ primitives
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_and_pairs_matmul_are_batch_free(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((11, 37)).astype(dtype)
    w = rng.standard_normal((37, 50)).astype(dtype)
    _assert_batch_free(lambda r: rows_matmul(r, w), x, what="rows_matmul")
    y = rng.standard_normal((300, 37)).astype(dtype)
    _assert_batch_free(lambda r: pairs_matmul(r, y), x, what="pairs_matmul rows")
    _assert_batch_free(lambda r: pairs_matmul(y, r).T.copy(), x, what="pairs_matmul columns")
    # the product itself, to float64 accuracy rounded once
    want = x.astype(np.float64) @ w.astype(np.float64)
    np.testing.assert_allclose(rows_matmul(x, w), want.astype(dtype), rtol=1e-6 if dtype == np.float32 else 1e-13)
    G = pairs_matmul(x, x)
    assert np.array_equal(G, G.T)  # symmetric bit for bit: x·y and y·x take one path
    assert rows_matmul(x[:0], w).shape == (0, 50) and pairs_matmul(x[:0], y).shape == (0, 300)


def test_products_of_gemm_sized_blocks_are_batch_free():
    """Blocks large enough for OpenBLAS to split over two threads: a row alone (one block,
    computed in the calling thread) gets the bits it gets inside a batch (blocks on a pool).
    OpenBLAS's SkylakeX float64 GEMM rounds a block differently on two threads than on one,
    so every block runs on one BLAS thread."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3 * MATMUL_BLOCK + 5, 784)).astype(np.float32)
    w = rng.standard_normal((784, 2048))
    with threadpool_limits(2):
        whole = rows_matmul(x, w)
        pairs = pairs_matmul(x, x[:600])
        for i in (0, MATMUL_BLOCK + 3, 3 * MATMUL_BLOCK + 4):
            assert np.array_equal(rows_matmul(x[i:i + 1], w)[0], whole[i]), i
            assert np.array_equal(pairs_matmul(x[i:i + 1], x[:600])[0], pairs[i]), i


def test_exact_kernels_of_wide_rows_are_batch_free_on_any_thread():
    """d = 784 (a width at which OpenBLAS's SkylakeX GEMM rounds differently on two threads):
    an entry computed alone on the calling thread equals the same entry from blocks on a pool,
    for a compiled chain (ReLU) and a net on the layers' own faces (Sin)."""
    x = (np.random.default_rng(3).standard_normal((300, 784)) / 28).astype(np.float32)
    for net in (fully_connected(2, Relu()), fully_connected(2, Sin())):
        with threadpool_limits(2):
            whole = net.kernel(x, x[:280], get="ntk", block_size=64)
            alone = net.kernel(x[7:8], x[:280], get="ntk", n_jobs=1)
        assert np.array_equal(alone[0], whole[7]), net


# ======================================================================= classical maps
@pytest.mark.parametrize("name,make,kind", ZOO, ids=[z[0] for z in ZOO])
def test_sketch_primitives_are_batch_free(name, make, kind):
    from test_sketch_primitives import _apply

    spec = make(7)
    for dtype in (np.float32, np.float64):
        x = np.random.default_rng(2).normal(size=(9, ZOO_D)).astype(dtype)
        _assert_batch_free(lambda r: _apply(spec, kind, r), x, what=f"{name} {dtype.__name__}")


@pytest.mark.parametrize("name,make", KERNEL_MAPS, ids=[m[0] for m in KERNEL_MAPS])
def test_kernel_maps_and_their_exact_kernels_are_batch_free(name, make):
    from test_sketch_kernels import _data

    x = _data(9, seed=1)
    for dtype in ("float32", "float64"):
        fmap = make(5, dtype=dtype)
        _assert_batch_free(fmap, x, what=f"{name} {dtype}")
    fmap = make(5)
    y = _data(7, seed=2)
    _assert_batch_free(lambda r: fmap.kernel(r, y), x, what=f"{name} exact kernel rows")


# ============================================================================ networks
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act,method", [(a, "poly") for a in FAMILIES] + [(Relu(), "random")],
                         ids=ids(FAMILIES) + ["relu-random"])
def test_fc_sketches_are_batch_free(act, method, dtype):
    x = np.random.default_rng(3).standard_normal((9, 7)) * np.linspace(0.2, 4, 9)[:, None]
    fm = fully_connected(2, act, 1.2, 0.1).sketch((7,), n_features=256, seed=3, relu_method=method,
                                                   dtype=dtype)
    _assert_batch_free(lambda r: (fm(r).nngp, fm(r).ntk), x, what=f"{act} {method}")


def test_fc_exact_kernel_entries_are_batch_free():
    net = fully_connected(3, Erf(), 1.3, 0.2)
    x = np.random.default_rng(4).standard_normal((9, 6))
    y = np.random.default_rng(5).standard_normal((20, 6))
    _assert_batch_free(lambda r: (net.kernel(r, y).nngp, net.kernel(r, y).ntk), x, what="exact FC")
    _assert_batch_free(lambda r: net.kernel(y, r, get="ntk").T.copy(), x, what="exact FC columns")
    relu = fully_connected(2, Relu(), 1.4, 0.1)
    full = relu.kernel(y, get="ntk")  # K(X, X): upper blocks mirrored
    for a, b in ((0, 1), (3, 11), (19, 20)):
        assert np.array_equal(relu.kernel(y[a:b], y, get="ntk"), full[a:b])


def _images(n, seed):
    return np.random.default_rng(seed).standard_normal((n, 8, 8, 2))


def test_cntk_sketch_and_exact_conv_kernel_are_batch_free():
    x = _images(5, 6)
    fmap = myrtle(5).sketch(x.shape[1:], n_features=64, seed=4)
    _assert_batch_free(lambda r: (fmap(r).nngp, fmap(r).ntk), x, what="CNTK sketch")
    net = serial(Conv((3, 3), 1.3, 0.1, "SAME"), Relu(), AvgPool((2, 2)), Flatten())
    y = _images(3, 7)
    _assert_batch_free(lambda r: net.kernel(r, y, get="ntk"), x, what="exact conv kernel")


def test_nystroem_features_are_batch_free():
    X = np.random.default_rng(8).standard_normal((300, 6))
    nys = NeuralNystroem(net=fully_connected(2, Relu(), 1.4, 0.1), n_components=64,
                         random_state=7).fit(X)
    _assert_batch_free(nys.transform, X[:9], what="NeuralNystroem")


# ========================================================================= predictions
def test_model_predictions_are_batch_free():
    rng = np.random.default_rng(9)
    X = rng.standard_normal((200, 6))
    y = np.sin(X @ rng.standard_normal(6))
    reg = SketchRidge(sketch=NTKSketch(n_components=128, random_state=0), alpha=[1e-2, 1.0], cv=3).fit(X, y)
    _assert_batch_free(reg.predict, X[:9], what="SketchRidge.predict")
    clf = SketchRidgeClassifier(sketch=NTKSketch(n_components=128, random_state=0), alpha=0.1)
    clf.fit(X, (y > 0).astype(int) + (y > 0.5))
    _assert_batch_free(clf.decision_function, X[:9], what="SketchRidgeClassifier.decision_function")


def test_dask_chunks_give_the_in_memory_bits():
    X = np.random.default_rng(10).standard_normal((300, 6))
    sk = NTKSketch(n_components=96, random_state=2).fit(X)
    want = sk.transform(X)
    reg = SketchRidge(sketch=NTKSketch(n_components=96, random_state=2), alpha=0.1).fit(X, X[:, 0])
    pred = reg.predict(X)
    with dask.config.set(scheduler="synchronous"):
        for chunks in (300, 64, 17, (1, 150, 149)):
            Xd = da.from_array(X, chunks=(chunks, 6))
            assert np.array_equal(sk.transform(Xd).compute(), want)
            assert np.array_equal(reg.predict(Xd).compute(), pred)


# ===================================================================== cross-row sums
def test_gram_reordering_stays_within_the_float64_summation_bound():
    """ΦᵀΦ over chunks vs NumPy: |ΔG_ij| ≤ 2·n·ε·Σ_r |φ_ri φ_rj| (any order of n float64 terms)."""
    X = np.random.default_rng(11).standard_normal((1000, 6))
    sk = NTKSketch(n_components=64, random_state=3).fit(X)
    P = sk.transform(X).astype(np.float64)
    bound = 2 * len(P) * np.finfo(np.float64).eps * (np.abs(P).T @ np.abs(P))
    want = P.T @ P
    Y = X[:, :1]
    with dask.config.set(scheduler="synchronous"):
        for chunks in (1000, 128, 77):
            g = gram(embed(da.from_array(X, chunks=(chunks, 6)), sk.feature_map_), Y)
            assert np.all(np.abs(g.G - want) <= bound), f"chunks={chunks}"
