"""engine.dataset and engine.ingest on real Zarr stores: layout, validation, atomicity."""

from __future__ import annotations

import os
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
import zarr

from dsketch.engine import Dataset, ingest, open_dataset, validate_rows, write_array
from dsketch.engine.dataset import CSR_FORMAT, read_csr_chunk

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _tree(path) -> dict:
    """Every file under ``path`` with its bytes (to show a store was left untouched)."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, path)] = fh.read()
    return out


def _siblings(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


# ------------------------------------------------------------------------- dense ingest
def test_ingest_npy_round_trip_shard_aligned(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1000, 7)).astype(np.float32)
    y = rng.standard_normal(1000)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    dest = ingest(str(tmp_path / "X.npy"), str(tmp_path / "s.zarr"), y=str(tmp_path / "y.npy"),
                  chunk_rows=256)
    z = zarr.open_group(dest, mode="r")
    assert z["X"].dtype == np.float32 and z["X"].shape == (1000, 7)
    block = (z["X"].shards or z["X"].chunks)[0]
    assert block == 256
    ds = open_dataset(dest)
    assert isinstance(ds, Dataset) and not ds.sparse
    assert ds.X.chunks[0] == (256, 256, 256, 232) and ds.X.chunks[1] == (7,)
    assert ds.y.chunks[0] == ds.X.chunks[0]
    np.testing.assert_array_equal(ds.X.compute(), X)
    np.testing.assert_array_equal(ds.y.compute(), y)
    assert z.attrs["dsketch"]["n_rows"] == 1000
    assert _siblings(tmp_path) == ["X.npy", "s.zarr", "y.npy"]  # no temp dirs left


def test_open_uses_shards_not_inner_chunks(tmp_path):
    """A sharded store written by another tool: dask chunks follow shards (from_zarr would not)."""
    g = zarr.open_group(str(tmp_path / "ext.zarr"), mode="w")
    X = np.arange(4000 * 3, dtype=np.float64).reshape(4000, 3)
    a = g.create_array("X", shape=X.shape, dtype=X.dtype, chunks=(100, 3), shards=(1000, 3))
    a[:] = X
    g.create_array("y", shape=(4000,), dtype="f8", chunks=(4000,))[:] = np.ones(4000)
    ds = open_dataset(str(tmp_path / "ext.zarr"))
    assert ds.X.chunks[0] == (1000,) * 4
    ds2 = open_dataset(str(tmp_path / "ext.zarr"), chunk_rows=1500)  # rounded up to 2 shards
    assert ds2.X.chunks[0] == (2000, 2000)
    np.testing.assert_array_equal(ds2.X.compute(), X)


def test_ingest_inmemory_images_and_inner_chunks(tmp_path):
    X = np.random.default_rng(1).random((300, 8, 8, 3)).astype(np.float32)
    dest = ingest(X, str(tmp_path / "img.zarr"), y=np.arange(300.0), chunk_rows=128)
    ds = open_dataset(dest)
    assert ds.X.shape == (300, 8, 8, 3) and ds.X.chunks[0] == (128, 128, 44)
    assert all(len(c) == 1 for c in ds.X.chunks[1:])
    np.testing.assert_array_equal(ds.X.compute(), X)


def test_ingest_csv_header_last_column_is_target(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.standard_normal((57, 4))
    path = tmp_path / "d.csv"
    with open(path, "w") as f:
        f.write("a,b,c,target\n")
        for row in data:
            f.write(",".join(f"{v:.17g}" for v in row) + "\n")
    dest = ingest(str(path), str(tmp_path / "csv.zarr"), chunk_rows=10)
    ds = open_dataset(dest)
    assert ds.X.shape == (57, 3) and ds.X.dtype == np.float32
    np.testing.assert_allclose(ds.X.compute(), data[:, :3].astype(np.float32))
    np.testing.assert_array_equal(ds.y.compute(), data[:, 3])
    # y=False: every column is an input, no target stored
    dest2 = ingest(str(path), str(tmp_path / "csv2.zarr"), y=False)
    ds2 = open_dataset(dest2, y=None)
    assert ds2.X.shape == (57, 4) and ds2.y is None
    with pytest.raises(KeyError, match="y=None"):
        open_dataset(dest2)


def test_ingest_svmlight_is_sparse_csr_layout(tmp_path):
    from sklearn.datasets import dump_svmlight_file

    rng = np.random.default_rng(3)
    Xs = sp.random(200, 30, density=0.1, format="csr", random_state=3, dtype=np.float64)
    y = rng.integers(0, 2, 200).astype(float)
    path = tmp_path / "d.svm"
    dump_svmlight_file(Xs, y, str(path))
    dest = ingest(str(path), str(tmp_path / "svm.zarr"), chunk_rows=64)
    g = zarr.open_group(dest, mode="r")
    assert dict(g["X"].attrs)["format"] == CSR_FORMAT
    assert list(g["X"]["chunk_offsets"][:]) == [0, 64, 128, 192, 200]
    ds = open_dataset(dest)
    assert ds.sparse and ds.X.shape == (200, 30) and ds.X.chunks[0] == (64, 64, 64, 8)
    blocks = [ds.X.blocks[i].compute() for i in range(ds.X.numblocks[0])]
    assert all(sp.issparse(b) for b in blocks)
    np.testing.assert_allclose(sp.vstack(blocks).toarray(), Xs.astype(np.float32).toarray(), rtol=1e-6)
    np.testing.assert_array_equal(ds.y.compute(), y)


def test_csr_layout_round_trip_from_scipy(tmp_path):
    Xs = sp.random(1000, 50, density=0.05, format="csr", random_state=4, dtype=np.float32)
    Xs = sp.csr_matrix(sp.diags(np.r_[np.ones(5), 0.0, np.ones(994)]).astype(np.float32) @ Xs)  # row 5 empty
    dest = ingest(Xs, str(tmp_path / "sp.zarr"), y=np.arange(1000.0), chunk_rows=300)
    g = zarr.open_group(dest, mode="r")["X"]
    attrs = dict(g.attrs)
    assert attrs["shape"] == [1000, 50] and attrs["layout_version"] == 1
    assert g["indptr"].shape == (1001,) and g["data"].shape == (Xs.nnz,)
    part = read_csr_chunk(g["data"], g["indices"], g["indptr"], 300, 600, 50)
    np.testing.assert_array_equal(part.toarray(), Xs[300:600].toarray())
    ds = open_dataset(dest)
    assert ds.X.chunks[0] == (300, 300, 300, 100)
    got = sp.vstack([ds.X.blocks[i].compute() for i in range(4)])
    assert (got != Xs).nnz == 0


# ------------------------------------------------------------------------ atomicity
def test_overwrite_refused_then_replaced(tmp_path):
    X = np.ones((10, 2), np.float32)
    dest = str(tmp_path / "s.zarr")
    ingest(X, dest)
    before = _tree(dest)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ingest(2 * X, dest)
    assert _tree(dest) == before
    ingest(2 * X, dest, overwrite=True)
    np.testing.assert_array_equal(open_dataset(dest, y=None).X.compute(), 2 * X)
    assert _siblings(tmp_path) == ["s.zarr"]


def test_nonfinite_source_leaves_no_dest_and_names_chunk(tmp_path):
    X = np.zeros((100, 3), np.float32)
    X[57, 1] = np.nan
    with pytest.raises(ValueError, match=r"X .*chunk 2 \(rows 50-74\).*row 57"):
        ingest(X, str(tmp_path / "bad.zarr"), chunk_rows=25)
    assert _siblings(tmp_path) == []
    y = np.zeros(100)
    y[99] = np.inf
    with pytest.raises(ValueError, match=r"y .*chunk 3 \(rows 75-99\)"):
        ingest(np.zeros((100, 3)), str(tmp_path / "bad.zarr"), y=y, chunk_rows=25)
    assert _siblings(tmp_path) == []


def test_failure_mid_ingest_keeps_existing_store_untouched(tmp_path):
    dest = str(tmp_path / "s.zarr")
    ingest(np.ones((40, 2), np.float32), dest, chunk_rows=10)
    before = _tree(dest)

    def boom(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 2:
            raise RuntimeError("source died")
        return block

    src = da.ones((40, 2), chunks=(10, 2), dtype=np.float32).map_blocks(boom, dtype=np.float32)
    with pytest.raises(RuntimeError, match="source died"):
        ingest(src, dest, overwrite=True, chunk_rows=10)
    assert _tree(dest) == before
    bad = np.ones((40, 2), np.float32)
    bad[33, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        ingest(bad, dest, overwrite=True, chunk_rows=10)
    assert _tree(dest) == before
    assert _siblings(tmp_path) == ["s.zarr"]


def test_shape_mismatch_and_dtype_checked_up_front(tmp_path):
    with pytest.raises(ValueError, match="X has 10 rows but y has 9"):
        ingest(np.ones((10, 2)), str(tmp_path / "a.zarr"), y=np.ones(9))
    with pytest.raises(ValueError, match="numeric"):
        ingest(np.array([["a", "b"]]), str(tmp_path / "b.zarr"))
    assert _siblings(tmp_path) == []
    # a hand-made store whose y disagrees with X
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="w")
    g.create_array("X", shape=(10, 2), dtype="f4", chunks=(5, 2))[:] = np.ones((10, 2))
    g.create_array("y", shape=(8,), dtype="f8", chunks=(8,))[:] = np.ones(8)
    with pytest.raises(ValueError, match="10 rows but y has 8"):
        open_dataset(str(tmp_path / "c.zarr"))


# ----------------------------------------------------------------------- validation
def test_validate_rows_rechunks_column_split_with_warning():
    X = da.ones((100, 6), chunks=(30, 2))
    with pytest.warns(UserWarning, match="chunked along axis"):
        V = validate_rows(X, "X")
    assert V.chunks == ((30, 30, 30, 10), (6,))
    np.testing.assert_array_equal(V.compute(), np.ones((100, 6)))


def test_validate_rows_names_array_and_chunk_on_nonfinite():
    x = np.ones((100, 4))
    x[61, 2] = -np.inf
    V = validate_rows(da.from_array(x, chunks=(20, 4)), name="features")
    assert V.name.startswith("dsketch-validate-features-")
    with pytest.raises(ValueError, match=r"features has non-finite .*chunk 3 \(rows 60-79\); first at row 61"):
        V.compute()
    with pytest.raises(ValueError, match="numeric"):
        validate_rows(da.from_array(np.array([["a"]])), "X")
    with pytest.raises(ValueError, match="dimensions"):
        validate_rows(da.ones((4, 2, 2)), "X", ndim=(2, 4))


def test_open_dataset_detects_nonfinite_in_store_per_chunk(tmp_path):
    g = zarr.open_group(str(tmp_path / "nan.zarr"), mode="w")
    X = np.ones((60, 2), np.float32)
    X[45, 0] = np.nan
    g.create_array("X", shape=X.shape, dtype=X.dtype, chunks=(20, 2))[:] = X
    ds = open_dataset(str(tmp_path / "nan.zarr"), y=None)
    with pytest.raises(ValueError, match=r"X has non-finite .*chunk 2 \(rows 40-59\)"):
        ds.X.sum().compute()


# ---------------------------------------------------------------------- write_array
def test_write_array_atomic_and_aligned(tmp_path):
    dest = str(tmp_path / "s.zarr")
    ingest(np.ones((50, 2), np.float32), dest)
    P = da.from_array(np.arange(100.0).reshape(50, 2), chunks=((7, 13, 30), (1, 1)))  # irregular
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for a rechunk we do on purpose
        path = write_array(P, dest)
    assert path.endswith("predictions")
    z = zarr.open_group(dest, mode="r")["predictions"]
    assert (z.shards or z.chunks)[0] == 30
    old = z[:]
    np.testing.assert_array_equal(old, np.arange(100.0).reshape(50, 2))
    with pytest.raises(FileExistsError):
        write_array(P, dest)

    def boom(b, block_info=None):
        if block_info[0]["chunk-location"][0] == 1:
            raise RuntimeError("worker died")
        return b

    with pytest.raises(RuntimeError):
        write_array(P.rechunk((10, 2)).map_blocks(boom, dtype=P.dtype), dest, overwrite=True)
    np.testing.assert_array_equal(zarr.open_group(dest, mode="r")["predictions"][:], old)
    write_array(P + 1, dest, overwrite=True)
    np.testing.assert_array_equal(zarr.open_group(dest, mode="r")["predictions"][:], old + 1)
    assert _siblings(tmp_path) == ["s.zarr"]
    assert open_dataset(dest, y=None).X.shape == (50, 2)  # the rest of the store is intact


def test_fsspec_url_store_round_trip():
    """Any fsspec URL zarr understands (here the in-process memory:// file system)."""
    import uuid

    url = f"memory://dsketch-{uuid.uuid4().hex}/s.zarr"
    X = np.random.default_rng(5).standard_normal((100, 3)).astype(np.float32)
    ingest(X, url, y=np.arange(100.0), chunk_rows=30)
    ds = open_dataset(url)
    assert ds.X.chunks[0] == (30, 30, 30, 10)
    np.testing.assert_array_equal(ds.X.compute(), X)
    with pytest.raises(FileExistsError):
        ingest(X, url)
    ingest(2 * X, url, y=np.zeros(100), overwrite=True, chunk_rows=30)
    np.testing.assert_array_equal(open_dataset(url).X.compute(), 2 * X)
    write_array(ds.X[:, :2] * 0 + 1, url, name="pred")
    assert zarr.open_group(url, mode="r")["pred"][:].sum() == 200
