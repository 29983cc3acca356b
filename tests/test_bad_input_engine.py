"""Bad input on the engine / Zarr surface, by class: every case fails clearly, none reads wrong.

Classes: checksums (bit flips, truncation; every store dsketch writes carries one), missing
chunk files and phantom rows, corrupted metadata and things that are not datasets, NaN/Inf
found on a worker (global row, store, array), refusing before any work (plain files, a
source as its own destination, models vs data) and stale temporary directories, and bad
``chunk_rows``.  Real Zarr stores on disk, a real ``LocalCluster`` where workers matter.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import zlib

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from sklearn.datasets import dump_svmlight_file

from dsketch.backend import InvalidInputError
from dsketch.engine import ingest, open_dataset, write_array
from dsketch.engine.store import check_overwrite_target, clean_stale, target_kind

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def sync():
    with dask.config.set(scheduler="sync"):
        yield


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def _data(n=300, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal(n)


def _store(tmp_path, name="s.zarr", **kw):
    X, y = _data()
    return ingest(X, str(tmp_path / name), y=y, chunk_rows=64, **kw), X, y


def _arrays(url) -> dict:
    """``{array path: zarr.json document}`` of every array under the store ``url``."""
    out = {}
    for root, _, files in os.walk(url):
        if "zarr.json" in files:
            with open(os.path.join(root, "zarr.json")) as f:
                doc = json.load(f)
            if doc["node_type"] == "array":
                out[os.path.relpath(root, url)] = doc
    return out


def _chunk_files(url, array) -> list[str]:
    base = os.path.join(url, array, "c")
    return sorted(os.path.join(r, f) for r, _, fs in os.walk(base) for f in fs)


def _read_all(url):
    ds = open_dataset(url)
    return dask.compute(ds.X, ds.y)


# ============================================================================ checksums
def _names(codecs) -> list[str]:
    return [c["name"] for c in codecs]


def _assert_checksummed(url):
    arrays = _arrays(url)
    assert arrays
    for path, doc in arrays.items():
        codecs = doc["codecs"]
        shard = [c for c in codecs if c["name"] == "sharding_indexed"]
        if shard:
            cfg = shard[0]["configuration"]
            assert _names(cfg["codecs"])[-2:] == ["zstd", "crc32c"], (url, path)
            assert "crc32c" in _names(cfg["index_codecs"]), (url, path)
        else:
            assert _names(codecs)[-2:] == ["zstd", "crc32c"], (url, path)


def test_every_store_dsketch_writes_carries_checksums(tmp_path, sync):
    X, y = _data()
    wide = np.random.default_rng(1).standard_normal((4096, 512)).astype(np.float32)
    np.save(tmp_path / "w.npy", wide)  # 8 MiB shards: inner chunks inside shards
    with open(tmp_path / "t.csv", "w") as f:
        f.writelines(",".join(map(str, r)) + "\n" for r in np.c_[X, y][:50])
    Xs = sp.random(120, 20, density=0.2, format="csr", random_state=0)
    dump_svmlight_file(Xs, np.arange(120.0), str(tmp_path / "t.svm"))
    stores = [
        ingest(X, str(tmp_path / "dense.zarr"), y=y, chunk_rows=64),
        ingest(str(tmp_path / "w.npy"), str(tmp_path / "wide.zarr"), chunk_rows=4096),
        ingest(str(tmp_path / "t.csv"), str(tmp_path / "csv.zarr"), chunk_rows=16),
        ingest(str(tmp_path / "t.svm"), str(tmp_path / "svm.zarr"), chunk_rows=50),
        ingest(Xs, str(tmp_path / "sp.zarr"), y=np.arange(120, dtype=np.int64), chunk_rows=40),
        ingest(np.ones((20, 4, 4, 2)), str(tmp_path / "img.zarr"), chunk_rows=8),
    ]
    assert "sharding_indexed" in json.dumps(_arrays(stores[1]))
    assert {"X/data", "X/indices", "X/indptr", "X/chunk_offsets", "y"} <= set(_arrays(stores[4]))
    pred = da.from_array(X[:, :2], chunks=(70, 2))
    write_array(pred, stores[0])  # into a dataset store
    write_array(pred, str(tmp_path / "out.zarr"), name="scores")  # into a new store
    for url in stores + [str(tmp_path / "out.zarr")]:
        _assert_checksummed(url)
        ds = open_dataset(url, y=None, x="scores" if url.endswith("out.zarr") else "X")
        dask.compute(*(ds.X.blocks[i] for i in range(ds.X.numblocks[0])))  # reads cleanly


@pytest.mark.parametrize("array", ["X", "y"])
def test_bit_flips_and_truncation_never_read_changed_values(tmp_path, sync, array):
    pristine, X, y = _store(tmp_path)
    rng = np.random.default_rng(42)
    for trial in range(12):
        url = str(tmp_path / f"flip{trial}.zarr")
        shutil.copytree(pristine, url)
        path = rng.choice(_chunk_files(url, array))
        data = bytearray(open(path, "rb").read())
        pos = int(rng.integers(len(data)))
        data[pos] ^= 1 << int(rng.integers(8))
        open(path, "wb").write(bytes(data))
        key = os.path.relpath(path, os.path.join(url, array))
        with pytest.raises(InvalidInputError) as err:
            _read_all(url)
        msg = str(err.value)
        assert url in msg and f"array {array!r}" in msg and key in msg and "damaged" in msg, msg
        shutil.rmtree(url)
    url = str(tmp_path / "trunc.zarr")
    shutil.copytree(pristine, url)
    path = _chunk_files(url, array)[2]
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match=r"chunk c/2(/0)? \(rows 128-191\) is damaged"):
        _read_all(url)
    # the intact store still reads back exactly
    got_X, got_y = _read_all(pristine)
    np.testing.assert_array_equal(got_X, X)
    np.testing.assert_array_equal(got_y, y)


def test_damaged_inner_chunk_of_a_shard_is_named(tmp_path, sync):
    wide = np.random.default_rng(1).standard_normal((8192, 512)).astype(np.float32)
    url = ingest(wide, str(tmp_path / "w.zarr"), chunk_rows=4096)
    assert "sharding_indexed" in json.dumps(_arrays(url))
    path = _chunk_files(url, "X")[1]
    data = bytearray(open(path, "rb").read())
    data[100] ^= 0x10  # inside the first inner chunk of shard 1
    open(path, "wb").write(bytes(data))
    with pytest.raises(InvalidInputError, match=r"array 'X', chunk c/1/0 \(rows 4096-8191\)"):
        open_dataset(url, y=None).X.sum().compute()
    np.testing.assert_array_equal(open_dataset(url, y=None).X[:4096].compute(), wide[:4096])


def test_csr_part_damage_is_named(tmp_path, sync):
    Xs = sp.random(200, 30, density=0.1, format="csr", random_state=3, dtype=np.float64)
    url = ingest(Xs, str(tmp_path / "sp.zarr"), chunk_rows=50)
    path = _chunk_files(url, "X/data")[0]
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 1
    open(path, "wb").write(bytes(data))
    with pytest.raises(InvalidInputError, match=rf"store {url}: CSR array 'X', rows 0-49 .*damaged"):
        open_dataset(url, y=None).X.blocks[0].compute()


def test_store_without_checksums_still_opens_with_a_warning(tmp_path, sync):
    g = zarr.open_group(str(tmp_path / "old.zarr"), mode="w")
    g.attrs["dsketch"] = {"n_rows": 40, "chunk_rows": 20}
    g.create_array("X", shape=(40, 3), dtype="f4", chunks=(20, 3),
                   compressors=zarr.codecs.ZstdCodec(level=3))[:] = np.ones((40, 3))
    with pytest.warns(UserWarning, match="no checksum.*older dsketch"):
        ds = open_dataset(str(tmp_path / "old.zarr"), y=None)
    assert float(ds.X.sum().compute()) == 120.0


# ======================================================================= missing chunks
@pytest.mark.parametrize("array,index", [("X", 0), ("X", 4), ("y", 2)])
def test_deleted_chunk_file_is_an_error_naming_it(tmp_path, sync, array, index):
    url, _, _ = _store(tmp_path)
    path = _chunk_files(url, array)[index]
    key = os.path.relpath(path, os.path.join(url, array))
    os.remove(path)
    lo = index * 64
    with pytest.raises(InvalidInputError) as err:
        open_dataset(url)
    msg = str(err.value)
    assert f"store {url}: array {array!r}" in msg and f"{key} (rows {lo}-" in msg and "missing" in msg


def test_chunk_deleted_after_open_reads_as_nan_and_is_caught(tmp_path, sync):
    url, _, _ = _store(tmp_path)
    ds = open_dataset(url)
    os.remove(_chunk_files(url, "X")[1])
    with pytest.raises(InvalidInputError, match=r"chunk 1 \(rows 64-127\).*chunk file may be missing"):
        ds.X.sum().compute()


def test_all_zero_chunks_are_stored_not_mistaken_for_missing(tmp_path, sync):
    X = np.zeros((200, 3))
    url = ingest(X, str(tmp_path / "z.zarr"), y=np.zeros(200, dtype=np.int64), chunk_rows=50)
    assert len(_chunk_files(url, "X")) == 4 and len(_chunk_files(url, "y")) == 4
    ds = open_dataset(url)
    assert float(ds.X.sum().compute()) == 0.0 and int(ds.y.sum().compute()) == 0
    write_array(da.zeros((200, 2), chunks=50), url, name="p")
    assert len(_chunk_files(url, "p")) == 4


def test_deleted_csr_part_chunk_is_an_error(tmp_path, sync):
    Xs = sp.random(300, 10, density=0.3, format="csr", random_state=1)
    url = ingest(Xs, str(tmp_path / "sp.zarr"), chunk_rows=100)
    os.remove(_chunk_files(url, "X/indptr")[0])
    with pytest.raises(InvalidInputError, match=rf"store {url}: array 'X/indptr': 1 of 1 chunk files missing: c/0"):
        open_dataset(url, y=None)


@pytest.mark.parametrize("array", ["X", "y"])
def test_shape_edited_upward_is_detected(tmp_path, sync, array):
    url, _, _ = _store(tmp_path)
    meta = os.path.join(url, array, "zarr.json")
    doc = json.load(open(meta))
    doc["shape"][0] += 10  # phantom rows inside the last shard
    json.dump(doc, open(meta, "w"))
    with pytest.raises(InvalidInputError, match=rf"store {url}: array '{array}' has shape \(310.*"
                                                r"written with 300 rows"):
        open_dataset(url)
    doc["shape"][0] += 200  # and phantom shards
    json.dump(doc, open(meta, "w"))
    with pytest.raises(InvalidInputError, match="written with 300 rows"):
        open_dataset(url)


def test_missing_chunk_in_foreign_store_warns(tmp_path, sync):
    g = zarr.open_group(str(tmp_path / "ext.zarr"), mode="w")
    g.create_array("X", shape=(40, 2), dtype="f8", chunks=(10, 2))[:] = np.ones((40, 2))
    os.remove(str(tmp_path / "ext.zarr" / "X" / "c" / "3" / "0"))
    with pytest.warns(UserWarning, match=r"array 'X': 1 of 4 chunk files missing: c/3/0 \(rows 30-39\)"):
        open_dataset(str(tmp_path / "ext.zarr"), y=None)


# =================================================================== corrupted metadata
@pytest.mark.parametrize("target,content", [
    ("zarr.json", b'{"zarr_format": 3, "node_'),  # truncated
    ("zarr.json", b"[1, 2]"),  # valid JSON, not metadata
    ("zarr.json", b'{"zarr_format": 3, "node_type": "group", "attributes": [1]}'),
    ("X/zarr.json", b"\xff\xfe\x00garbage"),  # binary garbage
    ("X/zarr.json", b"null"),
    ("X/zarr.json", b"{}"),
    ("X/zarr.json", b'{"zarr_format": 3, "node_type": "array"}'),  # fields missing
    ("y/zarr.json", b"[1, 2"),
    ("y/zarr.json", b""),
])
def test_corrupted_metadata_names_the_file(tmp_path, sync, target, content):
    url, _, _ = _store(tmp_path)
    with open(os.path.join(url, target), "wb") as f:
        f.write(content)
    with pytest.raises(InvalidInputError, match=rf"{url}/{target} is (corrupted|missing or not Zarr)"):
        open_dataset(url)


def test_group_metadata_saying_array_is_refused(tmp_path, sync):
    url, _, _ = _store(tmp_path)
    with open(os.path.join(url, "zarr.json"), "w") as f:
        json.dump({"zarr_format": 3, "node_type": "array"}, f)
    with pytest.raises(InvalidInputError, match=rf"{url} is a Zarr array, not a group"):
        open_dataset(url)


@pytest.mark.parametrize("kind", ["file", "empty", "group", "model"])
def test_not_a_dataset_suggests_ingest(tmp_path, sync, kind):
    path = tmp_path / "thing"
    if kind == "file":
        path.write_text("a,b\n1,2\n")
    elif kind == "empty":
        path.mkdir()
    elif kind == "group":
        zarr.open_group(str(path), mode="w").create_array("other", shape=(3,), dtype="f4")
    else:
        path.mkdir()
        (path / "model.json").write_text("{}")
    with pytest.raises(InvalidInputError, match=r"not a dsketch dataset.*dsketch ingest"):
        open_dataset(str(path))
    with pytest.raises(FileNotFoundError, match="dsketch ingest"):
        open_dataset(str(tmp_path / "nothing.zarr"))


# ================================================================ NaN/Inf on the workers
def test_nonfinite_on_worker_names_store_array_and_global_row(tmp_path, client):
    X, y = _data()
    g = zarr.open_group(str(tmp_path / "nan.zarr"), mode="w")  # written around ingest's check
    g.create_array("X", shape=X.shape, dtype=X.dtype, chunks=(64, 5))[:] = X
    bad = y.copy()
    bad[200] = np.nan
    g.create_array("y", shape=y.shape, dtype=y.dtype, chunks=(64,))[:] = bad
    Xb = X.copy()
    Xb[137, 3] = np.inf
    g["X"][:] = Xb
    url = str(tmp_path / "nan.zarr")
    ds = open_dataset(url)
    with pytest.raises(InvalidInputError) as err:
        client.compute(ds.X.sum()).result()
    msg = str(err.value)
    assert f"store {url}" in msg and "X has non-finite" in msg
    assert "chunk 2 (rows 128-191); first at row 137" in msg
    with pytest.raises(InvalidInputError, match=r"y has non-finite .*chunk 3 \(rows 192-255\); first at row 200"):
        client.compute(ds.y.sum()).result()


def _embed_input(kind, tmp_path):
    """(dask X of 300 rows in chunks of 50 with a NaN at global row 170, feature map)."""
    from dsketch.nets import Conv, Dense, Flatten, Relu, fully_connected, serial

    rng = np.random.default_rng(3)
    if kind == "images":
        x = rng.standard_normal((300, 4, 4, 2))
        x[170, 1, 2, 0] = np.nan
        net = serial(Conv((3, 3), 1.0, 0.0), Relu(), Flatten(), Dense())
        fmap = net.sketch((4, 4, 2), 16, seed=0).output("ntk")
        return da.from_array(x, chunks=(50, 4, 4, 2)), fmap
    x = rng.standard_normal((300, 6))
    x[170, 4] = np.nan
    fmap = fully_connected(2).sketch((6,), 16, seed=0).output("ntk")
    if kind == "dask":
        return da.from_array(x, chunks=(50, 6)), fmap
    if kind == "sparse":
        xs = sp.csr_matrix(np.where(np.abs(x) > 1, x, 0))
        xs[170, 4] = np.nan
        blocks = [da.from_delayed(dask.delayed(xs[i:i + 50]), shape=(50, 6), dtype=float,
                                  meta=sp.csr_matrix((0, 6))) for i in range(0, 300, 50)]
        return da.concatenate(blocks, axis=0), fmap
    z = zarr.open_array(str(tmp_path / "raw.zarr"), mode="w", shape=x.shape, chunks=(50, 6),
                        dtype=x.dtype)  # a plain Zarr array read around open_dataset's check
    z[:] = x
    return da.from_zarr(str(tmp_path / "raw.zarr")), fmap


@pytest.mark.parametrize("kind", ["dask", "sparse", "images", "zarr"])
def test_embed_of_unvalidated_input_names_the_global_row_and_chunk(kind, tmp_path, sync):
    """The map only sees chunk-local rows (``first at row 20``); embed says where globally."""
    from dsketch.engine import embed

    X, fmap = _embed_input(kind, tmp_path)
    with pytest.raises(InvalidInputError) as err:
        embed(X, fmap).compute()
    msg = str(err.value)
    assert "X has non-finite values" in msg and "chunk 3 (rows 150-199); first at row 170" in msg, msg


def test_embed_global_row_on_a_cluster(tmp_path, client):
    from dsketch.engine import embed

    X, fmap = _embed_input("zarr", tmp_path)
    with pytest.raises(InvalidInputError, match=r"chunk 3 \(rows 150-199\); first at row 170"):
        client.compute(embed(X, fmap).sum()).result()


def test_numpy_input_to_an_estimator_names_the_row(sync):
    from dsketch.estimators import NTKSketch

    x = np.random.default_rng(0).standard_normal((300, 6))
    x[170, 4] = np.inf
    sk = NTKSketch(n_components=16, random_state=0).fit(x[:10])
    with pytest.raises(InvalidInputError, match="row 170"):
        sk.transform(x)
    with pytest.raises(InvalidInputError, match="chunk 3 .*row 170"):
        sk.transform(da.from_array(x, chunks=(50, 6))).compute()


def test_damaged_chunk_on_worker_is_named(tmp_path, client):
    url, _, _ = _store(tmp_path)
    path = _chunk_files(url, "X")[3]
    data = bytearray(open(path, "rb").read())
    data[5] ^= 0x80
    open(path, "wb").write(bytes(data))
    with pytest.raises(InvalidInputError, match=rf"store {url}: array 'X', chunk c/3/0 \(rows 192-255\)"):
        client.compute(open_dataset(url).X.sum()).result()


# ============================================== refuse before computing, leave nothing
def _never(block):
    raise RuntimeError("computed although the write should have been refused")


def test_write_array_refuses_plain_file_and_model_before_computing(tmp_path, sync):
    arr = da.ones((10, 2), chunks=5).map_blocks(_never, dtype=float)
    plain = tmp_path / "out.txt"
    plain.write_text("keep me")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text("{}")
    for target, what in ((plain, "a plain file"), (model, "a dsketch model directory")):
        with pytest.raises(InvalidInputError, match=rf"{target} is {what}, not a Zarr store"):
            write_array(arr, str(target), overwrite=True)
    assert plain.read_text() == "keep me" and sorted(os.listdir(model)) == ["model.json"]
    assert sorted(os.listdir(tmp_path)) == ["model", "out.txt"]


def test_ingest_refuses_its_own_source_and_non_stores(tmp_path, sync):
    X, y = _data(20, 3)
    csv = tmp_path / "t.csv"
    csv.write_text("".join(",".join(map(str, r)) + "\n" for r in np.c_[X, y]))
    before = csv.read_text()
    with pytest.raises(InvalidInputError, match=r"is the source .*replace its own input"):
        ingest(str(csv), str(csv), overwrite=True)
    np.save(tmp_path / "y.npy", y)
    with pytest.raises(InvalidInputError, match="is the y"):
        ingest(X, str(tmp_path / "y.npy"), y=str(tmp_path / "y.npy"), overwrite=True)
    inside = tmp_path / "d.zarr"
    ingest(X, str(inside))
    np.save(inside / "src.npy", X)
    with pytest.raises(InvalidInputError, match="contains it"):
        ingest(str(inside / "src.npy"), str(inside), overwrite=True)
    other = tmp_path / "home"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(InvalidInputError, match="neither a Zarr store nor a dsketch model"):
        ingest(X, str(other), overwrite=True)
    with pytest.raises(InvalidInputError, match="a plain file, not a dsketch dataset"):
        ingest(X, str(tmp_path / "y.npy"), overwrite=True)
    assert csv.read_text() == before and (other / "notes.txt").read_text() == "x"
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), y)


@pytest.mark.parametrize("below", ["d.zarr", "a/b/d.zarr"])
def test_writes_below_a_plain_file_name_the_path_and_what_is_in_the_way(tmp_path, sync, below):
    plain = tmp_path / "notes.txt"
    plain.write_text("keep me")
    target = str(plain / below)
    X, y = _data(20, 3)
    for write in (lambda: ingest(X, target, y=y), lambda: write_array(da.ones((5, 2)), target)):
        with pytest.raises(InvalidInputError) as err:
            write()
        msg = str(err.value)
        assert target in msg and f"{plain} is a plain file" in msg, msg
    assert plain.read_text() == "keep me" and os.listdir(tmp_path) == ["notes.txt"]


def test_check_overwrite_target_by_kind(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "e").mkdir()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.json").write_text("{}")
    ingest(np.ones((4, 2)), str(tmp_path / "d.zarr"))
    zarr.open_group(str(tmp_path / "z.zarr"), mode="w")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "a.txt").write_text("x")
    kinds = {"f": "file", "e": "empty", "m": "model", "d.zarr": "dataset", "z.zarr": "zarr",
             "o": "directory", "none": "absent"}
    ok = {"dataset": {"e", "d.zarr", "z.zarr", "none"}, "store": {"e", "d.zarr", "z.zarr", "none"},
          "model": {"e", "m", "none"}}
    for name, kind in kinds.items():
        assert target_kind(str(tmp_path / name)) == kind
        for expect, good in ok.items():
            if name in good:
                assert check_overwrite_target(str(tmp_path / name), expect) == kind
            else:
                with pytest.raises(InvalidInputError, match=rf"{tmp_path / name} is .*refusing"):
                    check_overwrite_target(str(tmp_path / name), expect)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_siblings_are_cleaned_by_the_next_write(tmp_path, sync):
    url, X, _ = _store(tmp_path)
    host = f"{zlib.crc32(socket.gethostname().encode()):08x}"
    stale = [f".s.zarr.tmp-0123456789ab.{host}.{_dead_pid()}",  # killed ingest on this host
             ".s.zarr.old-abcdefabcdef"]  # left by a version that recorded no owner
    live = f".s.zarr.tmp-00000000000a.{host}.{os.getpid()}"  # a write still running
    foreign = ".s.zarr.tmp-00000000000b.deadbeef.12"  # another host: cannot tell
    unrelated = ".s.zarrx.tmp-00000000000c"
    for name in stale + [live, foreign, unrelated]:
        os.makedirs(tmp_path / name / "X")
    ingest(2 * X, url, chunk_rows=64, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == sorted(["s.zarr", live, foreign, unrelated])
    np.testing.assert_array_equal(open_dataset(url, y=None).X.compute(), 2 * X)
    # a replaced array's leftover inside the store goes with the next write_array there
    os.makedirs(os.path.join(url, ".predictions.old-0123456789ab"))
    write_array(da.ones((300, 1), chunks=64), url)
    assert ".predictions.old-0123456789ab" not in os.listdir(url)
    # dsketch info --clean: everything but the live writer's
    removed = clean_stale(url)
    assert removed == [str(tmp_path / foreign)]
    assert sorted(os.listdir(tmp_path)) == sorted(["s.zarr", live, unrelated])


# ========================================================================= chunk_rows
@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8", 1.0])
def test_bad_chunk_rows_refused_naming_it(tmp_path, sync, bad):
    X, _ = _data(20, 2)
    with pytest.raises(InvalidInputError, match=r"chunk_rows .*must be an integer"):
        ingest(X, str(tmp_path / "s.zarr"), chunk_rows=bad)
    with pytest.raises(InvalidInputError, match=r"chunk_rows .*must be an integer"):
        write_array(da.from_array(X, chunks=5), str(tmp_path / "p.zarr"), chunk_rows=bad)
    assert os.listdir(tmp_path) == []


def test_numpy_integer_chunk_rows_is_fine(tmp_path, sync):
    X, _ = _data(20, 2)
    url = ingest(X, str(tmp_path / "s.zarr"), chunk_rows=np.int64(8))
    assert open_dataset(url, y=None).X.chunks[0] == (8, 8, 4)
    write_array(da.from_array(X, chunks=5), url, chunk_rows=np.int32(10))
    assert zarr.open_group(url, mode="r")["predictions"].chunks[0] == 10
