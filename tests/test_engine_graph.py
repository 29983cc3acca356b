"""dsketch.engine.graph: the lazy embed graph (names, meta, chunk invariance, small graphs)."""

from __future__ import annotations

import pickle

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from dask.utils import key_split

from dsketch.engine import embed, task_word

from _maps import RFF


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


def _names(arr) -> set[str]:
    return {key_split(k) for k in arr.__dask_graph__().keys()}


def test_embed_is_lazy_with_meta_and_readable_names():
    fm = RFF((5,), 32, seed=3)
    X = da.from_array(np.random.default_rng(0).standard_normal((100, 5)), chunks=(30, 5))
    Phi = embed(X, fm)
    assert Phi.shape == (100, 32) and Phi.dtype == np.float32
    assert Phi.chunks == ((30, 30, 30, 10), (32,))
    assert type(Phi._meta) is np.ndarray and Phi._meta.dtype == np.float32
    assert Phi.name.startswith("dsketch-embed-rff-")
    assert "dsketch-embed-rff" in _names(Phi)
    assert key_split(embed(X, fm, name="rff-2-layer").name) == "dsketch-embed-rff-layer"


def test_task_word_keeps_alphabetic_words():
    class NTKMap:
        which = "ntk"

    assert task_word(NTKMap()) == "ntk"
    assert task_word(NTKMap(), "poly3") == "poly"
    assert task_word(object()) == "object"


def test_embed_is_chunk_invariant():
    fm = RFF((6,), 48, seed=1)
    x = np.random.default_rng(1).standard_normal((257, 6)).astype(np.float32)
    ref = fm(x)
    for chunks in (257, 100, 64, 17, (1, 100, 156)):
        Phi = embed(da.from_array(x, chunks=(chunks, 6)), fm).compute()
        np.testing.assert_allclose(Phi, ref, rtol=1e-6, atol=1e-6)


def test_embed_images_drops_pixel_axes_and_merges_column_chunks():
    fm = RFF((4, 4, 2), 16, seed=2)
    x = np.random.default_rng(2).random((40, 4, 4, 2)).astype(np.float32)
    Phi = embed(da.from_array(x, chunks=(15, 4, 4, 2)), fm)
    assert Phi.shape == (40, 16) and Phi.chunks[0] == (15, 15, 10)
    np.testing.assert_allclose(Phi.compute(), fm(x), rtol=1e-6)
    with pytest.warns(UserWarning, match="rechunking"):
        Phi2 = embed(da.from_array(x, chunks=(15, 2, 4, 2)), fm)
    np.testing.assert_allclose(Phi2.compute(), fm(x), rtol=1e-6)


def test_graph_carries_the_spec_not_random_matrices():
    """A 512 × 8192 float32 map (16 MiB of random weights) gives a graph of a few KiB."""
    fm = RFF((512,), 8192, seed=5)
    X = da.zeros((10_000, 512), chunks=(1000, 512), dtype=np.float32)
    Phi = embed(X, fm)
    layer = Phi.__dask_graph__().layers[Phi.name]
    size = len(pickle.dumps(dict(layer)))
    assert size < 64 * 1024, size
    assert len(pickle.dumps(fm)) < 1024


def test_embed_rejects_bad_input():
    fm = RFF((5,), 8)
    with pytest.raises(TypeError, match="dask array"):
        embed(np.ones((3, 5)), fm)
    with pytest.raises(ValueError, match=r"expects \(5,\)"):
        embed(da.ones((3, 4)), fm)
    with pytest.raises(TypeError, match="feature map"):
        embed(da.ones((3, 5)), object())


def test_embed_passes_sparse_blocks_through():
    fm = RFF((20,), 16, seed=4)
    Xs = sp.random(60, 20, density=0.2, format="csr", random_state=0, dtype=np.float64)
    blocks = [Xs[i:i + 25] for i in range(0, 60, 25)]
    from dask.highlevelgraph import HighLevelGraph

    dsk = {("sparse-x", i, 0): b for i, b in enumerate(blocks)}
    X = da.Array(HighLevelGraph.from_collections("sparse-x", dsk, ()), "sparse-x",
                 chunks=((25, 25, 10), (20,)), meta=sp.csr_matrix((0, 20)))
    Phi = embed(X, fm).compute()
    np.testing.assert_allclose(Phi, fm(Xs.toarray()), rtol=1e-5, atol=1e-6)


def test_embed_cupy_blocks_stay_on_device():
    cupy = pytest.importorskip("cupy")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception:  # pragma: no cover - CuPy without a GPU
        pytest.skip("no CUDA device")
    fm = RFF((6,), 32, seed=6)
    x = np.random.default_rng(6).standard_normal((100, 6)).astype(np.float32)
    X = da.from_array(x, chunks=(30, 6))
    Phi = embed(X, fm, device="gpu")
    assert type(Phi._meta).__module__.startswith("cupy")
    out = Phi.compute()
    assert type(out).__module__.startswith("cupy")
    np.testing.assert_allclose(cupy.asnumpy(out), fm(x), rtol=1e-5, atol=1e-5)
    from dsketch.engine import gram, predict

    g = gram(Phi, da.from_array(x[:, 0].astype(np.float64), chunks=30))
    P = fm(x).astype(np.float64)
    np.testing.assert_allclose(g.G, P.T @ P, rtol=1e-5, atol=1e-5)
    pred = predict(Phi, np.ones(32)).compute()
    np.testing.assert_allclose(cupy.asnumpy(pred), P.sum(axis=1), rtol=1e-5, atol=1e-5)
