"""Writing stores: ingest sources (files, arrays, dask arrays) and write results, atomically.

Owns every write of a dsketch store: reading a source row chunk by row chunk (``.npy``
memory-mapped, ``.csv`` in chunks of lines, svmlight / ``scipy.sparse`` whole, NumPy and
dask arrays), checking each chunk before it is written, creating the arrays in the layout
of :mod:`dsketch.engine.dataset`, and :func:`write_array` of a result (predictions) by the
cluster's workers, one task per shard.  :func:`write_array` lives here rather than in
``dataset`` because it shares the whole write path with :func:`ingest` (row-sharded arrays,
per-chunk checks, staging next to the destination), and ``dataset`` stays read-only.
Must not contain kernel maths and must never gather an ``n × m`` array on the client.

Atomicity
---------
Both write into a temporary sibling directory (``.<name>.tmp-<uuid>``) and rename it into
place only after every chunk was written and validated (:mod:`dsketch.engine.store`).  A
failure (bad value, exception in the source, interrupted worker) removes the temporary
directory; an existing destination is never touched unless ``overwrite=True``, and even
then it is replaced only by a complete new store.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
from pathlib import Path
from typing import Iterator

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp
from sklearn.datasets import load_svmlight_file

from ..backend import InvalidInputError, asnumpy
from .dataset import (CSR_FORMAT, LAYOUT_VERSION, TARGET_CHUNK_BYTES, array_word, check_dtype,
                      check_finite_block, create_rows_array, default_chunk_rows,
                      storage_row_block)
from .graph import token
from .integrity import check_chunk_rows, new_array
from .store import (check_absent, check_overwrite_target, check_parent, clean_stale, exists,
                    open_group, remove, replace, same_path, sibling, staged)

__all__ = ["ingest", "write_array"]


# ============================================================================ sources
class _DenseSource:
    """Rows of a dense source in order: ``shape``, ``dtype`` and ``blocks(rows)``."""

    def __init__(self, shape, dtype, blocks, y=None):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._blocks = blocks  # callable(rows) -> iterator of (X block, y block | None)
        self.y = y  # in-memory y, or None when y comes with the blocks

    def blocks(self, rows: int) -> Iterator:
        return self._blocks(rows)


def _array_blocks(arr, y=None):
    def gen(rows):
        for r0 in range(0, arr.shape[0], rows):
            blk = np.asarray(arr[r0:r0 + rows])
            yield blk, (None if y is None else np.asarray(y[r0:r0 + rows]))
    return gen


def _dask_blocks(arr):
    def gen(rows):
        a = arr.rechunk({0: rows, **{ax: -1 for ax in range(1, arr.ndim)}})
        for i in range(a.numblocks[0]):
            blk = a.blocks[i].compute()
            yield np.asarray(blk), None
    return gen


def _csv_header_and_rows(path: Path, delimiter: str):
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        first = next(reader, None)
        if first is None:
            raise InvalidInputError(f"{path} is empty")
        try:
            [float(v) for v in first]
            header = False
        except ValueError:
            header = True
    with open(path, "rb") as f:
        n = sum(1 for line in f if line.strip())
    return header, n - int(header), len(first)


def _csv_source(path: Path, y, dtype, delimiter: str) -> _DenseSource:
    header, n, ncols = _csv_header_and_rows(path, delimiter)
    if n <= 0:
        raise InvalidInputError(f"{path} has no data rows")
    target_last = y is None
    d = ncols - 1 if target_last else ncols
    if d < 1:
        raise InvalidInputError(f"{path} has {ncols} column(s); need at least one input column"
                         + (" besides the target (last column)" if target_last else ""))

    def gen(rows):
        with open(path) as f:
            lines = (ln for ln in f if ln.strip())
            if header:
                next(lines)
            while True:
                chunk = list(itertools.islice(lines, rows))
                if not chunk:
                    return
                try:
                    arr = np.loadtxt(io.StringIO("".join(chunk)), delimiter=delimiter,
                                     ndmin=2, dtype=np.float64)
                except ValueError as exc:
                    raise InvalidInputError(f"{path}: could not parse rows as numbers: {exc}") from None
                if arr.shape[1] != ncols:
                    raise InvalidInputError(f"{path}: expected {ncols} columns, got {arr.shape[1]}")
                if target_last:
                    yield arr[:, :-1].astype(dtype), arr[:, -1].copy()
                else:
                    yield arr.astype(dtype), None
    return _DenseSource((n, d), dtype, gen, y=None)


def _load_y(y, n: int | None):
    if y is None or y is False:
        return None
    if isinstance(y, (str, os.PathLike)):
        p = Path(y)
        if p.suffix == ".npy":
            y = np.load(p, mmap_mode="r")
        elif p.suffix in (".csv", ".txt"):
            y = np.loadtxt(p, delimiter=",", ndmin=1)
        else:
            raise InvalidInputError(f"y file {p} must be .npy or .csv")
    if hasattr(y, "compute") and hasattr(y, "chunks"):
        y = y.compute()
    y = np.asarray(y)
    if y.ndim not in (1, 2):
        raise InvalidInputError(f"y must be (n,) or (n, k), got shape {y.shape}")
    check_dtype(y.dtype, "y")
    if n is not None and y.shape[0] != n:
        raise InvalidInputError(f"X has {n} rows but y has {y.shape[0]}")
    return y


def _resolve_source(source, y, dtype, delimiter, n_features=None, zero_based="auto"):
    """-> ('dense', _DenseSource, y) or ('sparse', csr_matrix, y)."""
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.exists():
            raise FileNotFoundError(f"source {p} does not exist")
        suf = p.suffix.lower()
        if suf == ".npy":
            arr = np.load(p, mmap_mode="r")
            check_dtype(arr.dtype, "X")
            yy = _load_y(y, arr.shape[0])
            dt = np.dtype(dtype) if dtype is not None else arr.dtype
            return "dense", _DenseSource(arr.shape, dt, _array_blocks(arr)), yy
        if suf in (".csv", ".txt"):
            dt = np.dtype(dtype) if dtype is not None else np.dtype(np.float32)
            src = _csv_source(p, None if y is None else y, dt, delimiter)
            yy = _load_y(y, src.shape[0]) if y is not None else None
            return "dense", src, yy
        if suf in (".svm", ".svmlight", ".libsvm"):
            dt = np.dtype(dtype) if dtype is not None else np.dtype(np.float32)
            Xs, ys = load_svmlight_file(str(p), dtype=dt, n_features=n_features,
                                        zero_based=zero_based)
            yy = _load_y(y, Xs.shape[0]) if y is not None else ys
            return "sparse", Xs.tocsr(), yy
        raise InvalidInputError(f"unsupported source file {p}: use .npy, .csv, .svm/.svmlight/.libsvm")
    if sp.issparse(source):
        Xs = source.tocsr()
        check_dtype(Xs.dtype, "X")
        if dtype is not None:
            Xs = Xs.astype(dtype)
        return "sparse", Xs, _load_y(y, Xs.shape[0])
    if hasattr(source, "chunks") and hasattr(source, "compute"):  # dask array
        check_dtype(source.dtype, "X")
        dt = np.dtype(dtype) if dtype is not None else np.dtype(source.dtype)
        return "dense", _DenseSource(source.shape, dt, _dask_blocks(source)), _load_y(y, source.shape[0])
    if isinstance(source, np.ndarray) or hasattr(source, "__array__"):
        arr = np.asarray(source)
        check_dtype(arr.dtype, "X")
        if arr.ndim not in (2, 4):
            raise InvalidInputError(f"X must be (n, d) or (n, H, W, C), got shape {arr.shape}")
        dt = np.dtype(dtype) if dtype is not None else arr.dtype
        return "dense", _DenseSource(arr.shape, dt, _array_blocks(arr)), _load_y(y, arr.shape[0])
    if callable(getattr(source, "__iter__", None)):
        raise TypeError("iterators are not supported as sources; pass an array or a file path")
    raise TypeError(f"unsupported source type {type(source).__name__}")


# ============================================================================= ingest
def _write_dense(group, src: _DenseSource, x_name: str, y_name: str, y, chunk_rows: int):
    n = src.shape[0]
    zx = create_rows_array(group, x_name, src.shape, src.dtype, chunk_rows)
    zy = None
    if y is not None:
        zy = create_rows_array(group, y_name, y.shape, y.dtype, chunk_rows)
    r0 = 0
    for j, (blk, yblk) in enumerate(src.blocks(chunk_rows)):
        blk = np.ascontiguousarray(blk, dtype=src.dtype)
        if blk.shape[1:] != src.shape[1:]:
            raise InvalidInputError(f"X rows {r0}.. have shape {blk.shape[1:]}, expected {src.shape[1:]}")
        r1 = r0 + blk.shape[0]
        if r1 > n:
            raise InvalidInputError(f"source yields more than its {n} rows")
        check_finite_block(blk, x_name, r0, j)
        zx[r0:r1] = blk  # whole shard(s): block rows == shard rows
        if yblk is not None:
            if zy is None:
                zy = create_rows_array(group, y_name, (n,), np.float64, chunk_rows)
            check_finite_block(yblk, y_name, r0, j)
            zy[r0:r1] = yblk
        elif y is not None:
            yb = np.asarray(y[r0:r1])
            check_finite_block(yb, y_name, r0, j)
            zy[r0:r1] = yb
        r0 = r1
    if r0 != n:
        raise InvalidInputError(f"source yielded {r0} rows, expected {n}")
    return n


def _write_csr(group, Xs, x_name: str, chunk_rows: int | None):
    n, d = Xs.shape
    Xs.sort_indices()
    nnz_row = max(1.0, Xs.nnz / max(n, 1))
    if not chunk_rows:
        per = Xs.data.itemsize + Xs.indices.itemsize
        chunk_rows = int(max(1, min(n, TARGET_CHUNK_BYTES // max(1, int(nnz_row * per)))))
    offsets = np.unique(np.r_[np.arange(0, n, chunk_rows, dtype=np.int64), n])
    for j in range(len(offsets) - 1):
        a, b = int(offsets[j]), int(offsets[j + 1])
        check_finite_block(Xs[a:b], x_name, a, j)
    sub = group.create_group(x_name, attributes={
        "format": CSR_FORMAT, "shape": [int(n), int(d)], "dtype": str(Xs.dtype),
        "layout_version": LAYOUT_VERSION})
    elem_chunk = 1 << 20
    nnz = int(Xs.nnz)
    for nm, arr in (("data", Xs.data), ("indices", Xs.indices)):
        z = new_array(sub, nm, (nnz,), arr.dtype, (max(1, min(elem_chunk, nnz)),))
        if nnz:
            z[:] = arr
    indptr = Xs.indptr.astype(np.int64)
    z = new_array(sub, "indptr", (n + 1,), np.int64, (min(elem_chunk, n + 1),))
    z[:] = indptr
    z = new_array(sub, "chunk_offsets", offsets.shape, np.int64, offsets.shape)
    z[:] = offsets
    return n, int(chunk_rows)


def ingest(source, dest: str, *, y=None, x_name: str = "X", y_name: str = "y",
           chunk_rows: int | None = None, overwrite: bool = False, storage_options=None,
           dtype=None, delimiter: str = ",", n_features: int | None = None,
           zero_based="auto") -> str:
    """Write a dataset to a new Zarr store, atomically.

    Parameters
    ----------
    source : str, path, numpy.ndarray, scipy.sparse matrix or dask.array.Array
        * ``.npy`` file (memory-mapped, copied chunk by chunk) — targets only via ``y``;
        * ``.csv`` / ``.txt`` (comma separated; a non-numeric first line is a header):
          with ``y=None`` the **last column is the target** and the others are ``X``;
          with ``y=False`` every column is ``X`` and no target is stored; with ``y`` an
          array or file, every column is ``X``.  Read in chunks of ``chunk_rows`` lines;
        * svmlight / libsvm (``.svm``, ``.svmlight``, ``.libsvm``): read with
          ``sklearn.datasets.load_svmlight_file`` and stored in the sparse CSR layout,
          with the file's labels as ``y`` unless ``y`` is given;
        * an in-memory NumPy array ``(n, d)`` / ``(n, H, W, C)`` or ``scipy.sparse``
          matrix (sparse layout), or a dask array (written block by block).
    dest : str
        Local path or fsspec URL of the new store.
    y : array-like, path, None or False
        Targets ``(n,)`` or ``(n, k)`` (see ``source`` for CSV's convention).
    x_name, y_name : str
        Array names inside the store.
    chunk_rows : int, optional
        Rows per shard (= per dask chunk when read back), a positive integer.  Default:
        ~32 MiB of uncompressed input per chunk (a multiple of 1024 rows when that large).
    overwrite : bool
        Replace an existing ``dest`` (only after the new store is complete).  Without it an
        existing ``dest`` raises ``FileExistsError`` before anything is read.  Even with it,
        ``dest`` must be a Zarr store (or nothing, or an empty directory), never the source
        itself, a plain file or a model directory.
    storage_options : dict, optional
        fsspec options for remote ``dest``.
    dtype : dtype, optional
        Stored dtype of ``X``; default: the source's (float32 for CSV and svmlight).
    delimiter : str
        CSV field separator.
    n_features : int, optional
        Row width of an svmlight source (default: its largest feature index + 1): give the
        training width when ingesting a test file, whose rows may stop short of it.
    zero_based : bool or "auto"
        Feature indices of an svmlight source start at 0 (``True``; scikit-learn's
        ``dump_svmlight_file``) or 1 (``False``; libsvm).  ``"auto"`` (scikit-learn's
        default) guesses 1 when no index 0 occurs, which shifts every column of a 0-based
        file that never uses feature 0: give it explicitly for train and test files alike.

    Returns
    -------
    str
        ``dest``.

    Raises
    ------
    FileExistsError
        ``dest`` exists and ``overwrite`` is False.
    InvalidInputError
        (a ``ValueError``) Row counts of ``X`` and ``y`` differ, non-numeric data, a NaN/Inf
        value (the message names the array, the chunk and its rows), a bad ``chunk_rows``,
        or a ``dest`` that is the source or not a store (before anything is read).
        Nothing is left at ``dest``.

    Notes
    -----
    Memory: one chunk of ``chunk_rows`` rows at a time for ``.npy``, CSV and dask sources;
    svmlight and in-memory sparse inputs are held whole (they are loaded whole anyway).
    """
    dest = os.fspath(dest)
    chunk_rows = check_chunk_rows(chunk_rows)
    check_absent(dest, overwrite, storage_options)
    for what, path in (("source", source), ("y", y)):
        if isinstance(path, (str, os.PathLike)) and same_path(path, dest):
            raise InvalidInputError(f"dest {dest} is the {what} {os.fspath(path)} (or contains "
                                    f"it): ingest would replace its own input; choose another dest")
    if exists(dest, storage_options):
        check_overwrite_target(dest, "dataset", storage_options)
    kind, src, yy = _resolve_source(source, y, dtype, delimiter, n_features, zero_based)
    with staged(dest, overwrite=overwrite, storage_options=storage_options) as tmp:
        group = open_group(tmp, "w", storage_options)
        if kind == "dense":
            if src.shape[0] == 0:
                raise InvalidInputError("X has no rows")
            rows = chunk_rows or default_chunk_rows(src.shape[0], src.shape[1:], src.dtype)
            n = _write_dense(group, src, x_name, y_name, yy, rows)
        else:
            if src.shape[0] == 0:
                raise InvalidInputError("X has no rows")
            n, rows = _write_csr(group, src, x_name, chunk_rows)
            if yy is not None:
                zy = create_rows_array(group, y_name, yy.shape, yy.dtype, rows)
                offsets = list(range(0, n, rows)) + [n]
                for j in range(len(offsets) - 1):
                    a, b = offsets[j], offsets[j + 1]
                    check_finite_block(np.asarray(yy[a:b]), y_name, a, j)
                    zy[a:b] = np.asarray(yy[a:b])
        group.attrs["dsketch"] = {"n_rows": int(n), "chunk_rows": int(rows),
                                  "x": x_name, "layout_version": LAYOUT_VERSION,
                                  "sparse": kind == "sparse"}
    return dest


# ======================================================================= write_array
def _write_block(block, z, block_info=None):
    """Write one dask block into its shard-aligned rows of ``z`` (a task)."""
    loc = block_info[0]["array-location"]
    z[loc[0][0]:loc[0][1]] = np.ascontiguousarray(asnumpy(block))
    return np.ones((1,) * block.ndim, dtype=np.int8)


def write_array(arr, url: str, *, name: str = "predictions", overwrite: bool = False,
                storage_options=None, chunk_rows: int | None = None) -> str:
    """Write a dask array into the store at ``url`` as array ``name``, atomically.

    The array is rechunked to uniform row chunks (``chunk_rows``, default: its first row
    chunk) with whole rows, stored with one shard per dask block, and written by the
    cluster's workers (one task per shard: no two tasks touch the same shard).  The array
    is first written next to the store and renamed in only when complete; an existing
    ``name`` is replaced only with ``overwrite=True``.  On a multi-machine cluster ``url``
    must be shared storage (an object store or a shared file system).

    Returns
    -------
    str
        ``url/name``.

    Raises
    ------
    FileExistsError
        ``url/name`` exists and ``overwrite`` is False.
    InvalidInputError
        ``url`` is a plain file, a model directory or another non-Zarr directory, or
        ``chunk_rows`` is not a positive integer: raised before anything is computed.
    """
    url = os.fspath(url)
    chunk_rows = check_chunk_rows(chunk_rows)
    check_parent(url)
    if exists(url, storage_options):
        check_overwrite_target(url, "store", storage_options)
    if not isinstance(arr, da.Array):
        arr = da.from_array(np.asarray(arr), chunks=(chunk_rows or "auto",) + (-1,) * (np.ndim(arr) - 1))
    check_dtype(arr.dtype, name)
    if not name or "/" in name or name.startswith("."):
        raise InvalidInputError(f"invalid array name {name!r}")
    target = url.rstrip("/") + "/" + name
    check_absent(target, overwrite, storage_options)
    clean_stale(url, storage_options, foreign=False)
    rows = int(chunk_rows or max(arr.chunks[0]))
    arr = arr.rechunk({0: rows, **{ax: -1 for ax in range(1, arr.ndim)}})
    tmp = sibling(url, "tmp")
    try:
        group = open_group(tmp, "w", storage_options)
        z = create_rows_array(group, name, arr.shape, arr.dtype, rows)
        assert storage_row_block(z) == rows or arr.shape[0] <= storage_row_block(z)
        done = da.map_blocks(_write_block, arr, z, dtype=np.int8,
                             chunks=tuple((1,) * len(c) for c in arr.chunks),
                             name=f"dsketch-write-{array_word(name)}-{token(arr.name, tmp)}")
        dask.compute(done.sum())
        open_group(url, "a", storage_options)  # the store exists from here on
        replace(tmp.rstrip("/") + "/" + name, target, overwrite, storage_options)
    finally:
        remove(tmp, storage_options)
    return target
