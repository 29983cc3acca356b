"""Datasets on Zarr: open as dask arrays, validate, ingest, and write results atomically.

Owns every byte dsketch reads from or writes to storage: opening a Zarr v3 store (a local
path or any fsspec URL zarr understands) as row-chunked dask arrays, the documented sparse
(CSR) layout, ingestion of ``.npy`` / ``.csv`` / svmlight files and in-memory arrays, the
up-front and per-chunk validation of inputs, and atomic writes of results (predictions).
Must not contain kernel maths and must never gather an ``n × m`` array on the client.

Store layout
------------
A dsketch store is a Zarr v3 *group*::

    store.zarr/
      zarr.json          group; attrs {"dsketch": {"n_rows": n, "chunk_rows": r, ...}}
      X/                 dense inputs: array (n, d) or (n, H, W, C), or a CSR group (below)
      y/                 targets: array (n,) or (n, k)        (optional)
      predictions/       written by :func:`write_array`       (optional)

Dense arrays are chunked along rows only: ``shards=(r, *row_shape)`` (``r`` =
``chunk_rows``) holding inner chunks ``(r / j, *row_shape)`` of at most ~4 MiB, compressed
with ``zarr.codecs.ZstdCodec``.  Every write task writes whole shards (one dask block per
shard), the only way partial-shard writes cannot corrupt data (dask#12583, zarr#3682).
Reads use the *shard* shape (or the chunk shape of an unsharded array) along rows,
never ``from_zarr``'s default inner chunks.

Sparse layout (CSR), version 1
------------------------------
A sparse ``X`` is a Zarr group with attrs
``{"format": "csr", "shape": [n, d], "dtype": "<float dtype>", "layout_version": 1}``
and four 1-D arrays:

``data`` (nnz,) float
    the non-zero values, row by row (``scipy.sparse.csr_matrix.data``);
``indices`` (nnz,) int32 or int64
    their column indices (``csr_matrix.indices``, sorted within each row);
``indptr`` (n + 1,) int64
    the *global* row pointer: row ``i`` holds ``data[indptr[i]:indptr[i+1]]``;
``chunk_offsets`` (c + 1,) int64
    row boundaries of the ``c`` row chunks: chunk ``j`` is rows
    ``chunk_offsets[j]:chunk_offsets[j+1]`` (``0`` first, ``n`` last).

:func:`open_dataset` reads it as a dask array whose blocks are ``scipy.sparse.csr_matrix``
row chunks (one per ``chunk_offsets`` interval, shape ``(rows, d)``); a task reads only its
slice of ``indptr`` and the matching ``data``/``indices`` range.

Atomicity
---------
:func:`ingest` and :func:`write_array` write into a temporary sibling directory
(``.<name>.tmp-<uuid>``) and rename it into place only after every chunk was written and
validated.  A failure (bad value, exception in the source, interrupted worker) removes the
temporary directory; an existing destination is never touched unless ``overwrite=True``,
and even then it is replaced only by a complete new store (rename-aside, rename-in,
delete-old).  On local file systems the final step is an ``os.rename`` (atomic on POSIX);
on object stores (``s3://``, ``gs://``...) it is a copy-then-delete through fsspec, which
is not atomic: a crash during that last step can leave a partial destination.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .graph import token

__all__ = [
    "Dataset",
    "open_dataset",
    "ingest",
    "write_array",
    "validate_rows",
    "read_csr_chunk",
    "CSR_FORMAT",
]

CSR_FORMAT = "csr"
_LAYOUT_VERSION = 1
_TARGET_CHUNK_BYTES = 32 * 2**20  # uncompressed bytes per row chunk (= shard) by default
_TARGET_INNER_BYTES = 4 * 2**20  # uncompressed bytes per inner chunk of a shard


# ============================================================================= dataset
@dataclass
class Dataset:
    """A dataset opened from a Zarr store.

    Attributes
    ----------
    X : dask.array.Array
        ``(n, d)`` or ``(n, H, W, C)``, chunked along rows only (shard aligned).  For the
        sparse layout, a 2-D dask array whose blocks are ``scipy.sparse.csr_matrix``.
    y : dask.array.Array or None
        ``(n,)`` or ``(n, k)``, chunked like ``X`` along rows.
    url : str
        Where the store lives.
    sparse : bool
        True for the CSR layout.
    """

    X: Any
    y: Any
    url: str
    sparse: bool = False
    attrs: dict = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])


# ======================================================================== URL helpers
def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _local_path(url: str) -> Path:
    return Path(url[len("file://"):] if url.startswith("file://") else url).expanduser()


def _fs(url: str, storage_options: dict | None):
    from fsspec.core import url_to_fs

    return url_to_fs(url, **(storage_options or {}))


def _exists(url: str, storage_options: dict | None) -> bool:
    if _is_local(url):
        return _local_path(url).exists()
    fs, path = _fs(url, storage_options)
    return fs.exists(path)


def _sibling(url: str, tag: str) -> str:
    """A hidden sibling of ``url`` (same directory/bucket prefix) for temporary writes."""
    stripped = url.rstrip("/")
    head, _, tail = stripped.rpartition("/")
    name = f".{tail}.{tag}-{uuid.uuid4().hex[:12]}"
    return f"{head}/{name}" if head else name


def _remove(url: str, storage_options: dict | None) -> None:
    try:
        if _is_local(url):
            shutil.rmtree(_local_path(url), ignore_errors=True)
        else:
            fs, path = _fs(url, storage_options)
            if fs.exists(path):
                fs.rm(path, recursive=True)
    except Exception:  # pragma: no cover - best effort cleanup
        pass


def _move(src: str, dst: str, storage_options: dict | None) -> None:
    if _is_local(src):
        os.rename(_local_path(src), _local_path(dst))
    else:
        fs, s = _fs(src, storage_options)
        _, d = _fs(dst, storage_options)
        fs.mv(s, d, recursive=True)


def _replace(tmp: str, dest: str, overwrite: bool, storage_options: dict | None) -> None:
    """Put the complete ``tmp`` at ``dest``; an existing ``dest`` survives any failure."""
    if _exists(dest, storage_options):
        if not overwrite:
            raise FileExistsError(f"{dest} already exists; pass overwrite=True to replace it")
        old = _sibling(dest, "old")
        _move(dest, old, storage_options)
        try:
            _move(tmp, dest, storage_options)
        except BaseException:
            _move(old, dest, storage_options)
            raise
        _remove(old, storage_options)
    else:
        if _is_local(dest):
            _local_path(dest).parent.mkdir(parents=True, exist_ok=True)
        _move(tmp, dest, storage_options)


def _open_group(url: str, mode: str, storage_options: dict | None):
    import zarr

    if _is_local(url):
        return zarr.open_group(str(_local_path(url)), mode=mode)
    return zarr.open_group(url, mode=mode, storage_options=storage_options)


# ====================================================================== chunk choices
def _row_bytes(row_shape: tuple, dtype) -> int:
    return max(1, int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize)


def _default_chunk_rows(n: int, row_shape: tuple, dtype) -> int:
    rows = max(1, _TARGET_CHUNK_BYTES // _row_bytes(row_shape, dtype))
    if rows >= 1024:  # a multiple of 1024 so inner chunks divide it evenly
        rows = rows // 1024 * 1024
    return int(max(1, min(rows, n)))


def _inner_rows(chunk_rows: int, row_shape: tuple, dtype) -> int:
    """Largest divisor of ``chunk_rows`` whose inner chunk stays under ~4 MiB."""
    rb = _row_bytes(row_shape, dtype)
    if chunk_rows * rb <= _TARGET_INNER_BYTES:
        return chunk_rows
    for k in range(2, 4097):
        if chunk_rows % k == 0 and (chunk_rows // k) * rb <= _TARGET_INNER_BYTES:
            return chunk_rows // k
    return chunk_rows  # no good divisor: one inner chunk per shard


def _create_rows_array(group, name: str, shape: tuple, dtype, chunk_rows: int):
    """A row-sharded, zstd-compressed array: shards (chunk_rows, *row), inner chunks divide it."""
    import zarr

    row_shape = tuple(shape[1:])
    chunk_rows = int(max(1, min(chunk_rows, max(shape[0], 1))))
    inner = _inner_rows(chunk_rows, row_shape, dtype)
    kw = dict(name=name, shape=tuple(int(s) for s in shape), dtype=np.dtype(dtype),
              compressors=zarr.codecs.ZstdCodec(level=3), fill_value=0)
    if inner < chunk_rows:
        return group.create_array(chunks=(inner,) + row_shape, shards=(chunk_rows,) + row_shape, **kw)
    return group.create_array(chunks=(chunk_rows,) + row_shape, **kw)


def _storage_row_block(z) -> int:
    """Rows per whole write unit of a Zarr array: its shard, else its chunk."""
    shards = getattr(z, "shards", None)
    return int((shards or z.chunks)[0])


# ========================================================================= validation
def _check_dtype(dtype, name: str) -> None:
    kind = np.dtype(dtype).kind if not hasattr(dtype, "kind") else dtype.kind
    if kind not in "fiub":
        raise ValueError(f"{name} must be numeric, got dtype {dtype}")


def _check_finite_block(block, name: str, start: int, index: int):
    """Raise ValueError naming array, chunk and rows when ``block`` holds NaN/Inf."""
    from ..backend import asnumpy, get_namespace

    import scipy.sparse as sp

    if sp.issparse(block):
        vals = block.data
        if vals.size and not np.isfinite(vals).all():
            coo = block.tocoo()
            bad = ~np.isfinite(coo.data)
            row = start + int(coo.row[np.argmax(bad)])
            stop = start + block.shape[0]
            raise ValueError(f"{name} has non-finite values (NaN or Inf) in chunk {index} "
                             f"(rows {start}-{stop - 1}); first at row {row}")
        return block
    if np.dtype(block.dtype).kind != "f":
        return block
    xp = get_namespace(block)
    ok = xp.isfinite(block)
    if not bool(ok.all()):
        rows_bad = ~ok.reshape(block.shape[0], -1).all(axis=1) if block.ndim > 1 else ~ok
        row = start + int(asnumpy(xp.argmax(rows_bad)))
        stop = start + block.shape[0]
        raise ValueError(f"{name} has non-finite values (NaN or Inf) in chunk {index} "
                         f"(rows {start}-{stop - 1}); first at row {row}")
    return block


def _validate_block(block, name: str, block_info=None):
    info = (block_info or {}).get(0) or {}
    loc = info.get("array-location") or [(0, block.shape[0])]
    idx = (info.get("chunk-location") or (0,))[0]
    return _check_finite_block(block, name, int(loc[0][0]), int(idx))


def _alpha_word(name: str) -> str:
    word = "".join(ch for ch in str(name).lower() if ch.isalpha())
    return word or "array"


def validate_rows(X, name: str = "X", *, ndim: int | tuple | None = None):
    """Check a row-chunked dask array up front and lazily check its values per chunk.

    Up front (no cluster time): numeric dtype, number of dimensions (``ndim``, default any
    of 1..4), and chunking along rows only — an array split along any other axis is
    rechunked to whole rows with a ``UserWarning`` saying so.  Lazily: every block is
    checked for NaN/Inf when computed; the first bad block raises ``ValueError`` naming
    the array, the chunk index and its row range.  The check fuses with the next
    operation (``embed``), so it costs no extra pass or memory.

    Parameters
    ----------
    X : dask.array.Array
        Dense (NumPy or CuPy blocks) or sparse (``scipy.sparse`` blocks) rows.
    name : str
        Name used in error messages (``"X"``, ``"y"``...).
    ndim : int or tuple of int, optional
        Allowed numbers of dimensions.

    Returns
    -------
    dask.array.Array
        The same values, row-chunked, with the finite check attached.
    """
    import dask.array as da

    if not isinstance(X, da.Array):
        raise TypeError(f"{name} must be a dask array, got {type(X).__name__}")
    _check_dtype(X.dtype, name)
    allowed = (1, 2, 3, 4) if ndim is None else ((ndim,) if isinstance(ndim, int) else tuple(ndim))
    if X.ndim not in allowed:
        raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                         f"got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    X = _rows_only(X, name)
    return da.map_blocks(_validate_block, X, name, dtype=X.dtype, meta=X._meta,
                         name=f"dsketch-validate-{_alpha_word(name)}-{token(X.name, name)}")


def _rows_only(X, name: str):
    """Rechunk ``X`` to whole rows (one chunk along every non-row axis), warning if needed."""
    split = [ax for ax in range(1, X.ndim) if len(X.chunks[ax]) > 1]
    if split:
        warnings.warn(f"{name} is chunked along axis {split} (chunks {X.chunksize}); "
                      f"dsketch needs row chunks holding whole rows, so it is rechunked to "
                      f"{{axis 0: as is, others: whole}}. Store it chunked by rows to avoid "
                      f"this extra shuffle.", UserWarning, stacklevel=3)
        X = X.rechunk({ax: -1 for ax in split})
    return X


# ============================================================================ reading
def read_csr_chunk(data, indices, indptr, start: int, stop: int, n_cols: int):
    """Read rows ``start:stop`` of the CSR layout as a ``scipy.sparse.csr_matrix``."""
    import scipy.sparse as sp

    p = np.asarray(indptr[start:stop + 1], dtype=np.int64)
    lo, hi = int(p[0]), int(p[-1])
    vals = np.asarray(data[lo:hi])
    cols = np.asarray(indices[lo:hi])
    return sp.csr_matrix((vals, cols, p - lo), shape=(stop - start, n_cols))


def _open_csr(group, url: str, name: str):
    import dask.array as da
    import scipy.sparse as sp
    from dask.highlevelgraph import HighLevelGraph

    attrs = dict(group.attrs)
    n, d = (int(s) for s in attrs["shape"])
    offsets = np.asarray(group["chunk_offsets"][:], dtype=np.int64)
    if offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) <= 0):
        raise ValueError(f"{url}/{name}: chunk_offsets must rise strictly from 0 to {n}")
    data, indices, indptr = group["data"], group["indices"], group["indptr"]
    if indptr.shape[0] != n + 1:
        raise ValueError(f"{url}/{name}: indptr has {indptr.shape[0]} entries, expected {n + 1}")
    dtype = np.dtype(attrs.get("dtype", data.dtype))
    tok = token(url, name, offsets.tobytes(), n, d, str(dtype))
    key = f"dsketch-read-{_alpha_word(name)}-{tok}"
    dsk = {(key, j, 0): (read_csr_chunk, data, indices, indptr, int(offsets[j]),
                         int(offsets[j + 1]), d)
           for j in range(len(offsets) - 1)}
    graph = HighLevelGraph.from_collections(key, dsk, dependencies=())
    chunks = (tuple(int(r) for r in np.diff(offsets)), (d,))
    return da.Array(graph, key, chunks=chunks, meta=sp.csr_matrix((0, d), dtype=dtype))


def _zarr_id(z) -> tuple:
    """Identity of a stored array for task names: where it is, what it is, when written."""
    try:
        stamp = z.metadata.to_dict()
    except Exception:  # pragma: no cover
        stamp = None
    return (str(z.store), z.path, z.shape, str(z.dtype), repr(stamp))


def _open_dense(z, name: str, chunk_rows: int | None):
    import dask.array as da

    block = _storage_row_block(z)
    if chunk_rows:
        rows = max(block, int(math.ceil(chunk_rows / block)) * block)  # multiple of shards
    else:
        rows = block
    chunks = (rows,) + tuple(int(s) for s in z.shape[1:])
    # named dsketch-read-*, zarr array inlined (a few hundred bytes): fused task names then
    # read dsketch-... end to end on the dashboard
    return da.from_zarr(z, chunks=chunks, inline_array=True,
                        name=f"dsketch-read-{_alpha_word(name)}-{token(_zarr_id(z), chunks)}")


def open_dataset(url: str, *, x: str = "X", y: str | None = "y", storage_options=None,
                 validate: bool = True, chunk_rows: int | None = None) -> Dataset:
    """Open a dsketch Zarr store as row-chunked dask arrays.

    Parameters
    ----------
    url : str
        Local path or fsspec URL of a Zarr v3 group (see the module docstring).
    x, y : str
        Names of the input and target arrays; ``y=None`` opens inputs only.  A missing
        ``y`` raises ``KeyError`` (open with ``y=None`` for a store without targets).
    storage_options : dict, optional
        Passed to fsspec for remote URLs.
    validate : bool
        Check shapes and dtypes now, and attach the lazy per-chunk finite-value check of
        :func:`validate_rows` to ``X`` and ``y``.
    chunk_rows : int, optional
        Rows per dask chunk, rounded up to a multiple of the stored shard (or chunk) rows
        so that chunks stay shard aligned.  Default: one shard per dask chunk.

    Returns
    -------
    Dataset
    """
    import zarr

    url = os.fspath(url)
    if not _exists(url, storage_options):
        raise FileNotFoundError(f"no Zarr store at {url}")
    group = _open_group(url, "r", storage_options)
    if x not in group:
        raise KeyError(f"{url} has no array {x!r} (members: {sorted(group.keys())})")
    node = group[x]
    sparse = isinstance(node, zarr.Group)
    if sparse:
        fmt = node.attrs.get("format")
        if fmt != CSR_FORMAT:
            raise ValueError(f"{url}/{x} is a group but not the CSR layout (format={fmt!r})")
        X = _open_csr(node, url, x)
    else:
        X = _open_dense(node, x, chunk_rows)
    Y = None
    if y is not None:
        if y not in group:
            raise KeyError(f"{url} has no target array {y!r}; open it with y=None to read "
                           f"inputs only (members: {sorted(group.keys())})")
        zy = group[y]
        if isinstance(zy, zarr.Group):
            raise ValueError(f"{url}/{y} must be a dense array")
        import dask.array as da

        ych = (_storage_row_block(zy),) + tuple(zy.shape[1:])
        Y = da.from_zarr(zy, chunks=ych, inline_array=True,
                         name=f"dsketch-read-{_alpha_word(y)}-{token(_zarr_id(zy), ych)}")
        if Y.shape[0] != X.shape[0]:
            raise ValueError(f"{url}: {x} has {X.shape[0]} rows but {y} has {Y.shape[0]}")
        if Y.ndim not in (1, 2):
            raise ValueError(f"{url}/{y} must be (n,) or (n, k), got shape {Y.shape}")
        Y = Y.rechunk({0: X.chunks[0]})
    if validate:
        _check_dtype(X.dtype, x)
        if not sparse:
            X = validate_rows(X, name=x, ndim=(2, 4))
        else:
            X = validate_rows(X, name=x, ndim=2)
        if Y is not None:
            Y = validate_rows(Y, name=y, ndim=(1, 2))
    attrs = dict(group.attrs)
    return Dataset(X=X, y=Y, url=url, sparse=sparse, attrs=attrs)


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
            raise ValueError(f"{path} is empty")
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
        raise ValueError(f"{path} has no data rows")
    target_last = y is None
    d = ncols - 1 if target_last else ncols
    if d < 1:
        raise ValueError(f"{path} has {ncols} column(s); need at least one input column"
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
                    raise ValueError(f"{path}: could not parse rows as numbers: {exc}") from None
                if arr.shape[1] != ncols:
                    raise ValueError(f"{path}: expected {ncols} columns, got {arr.shape[1]}")
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
            raise ValueError(f"y file {p} must be .npy or .csv")
    if hasattr(y, "compute") and hasattr(y, "chunks"):
        y = y.compute()
    y = np.asarray(y)
    if y.ndim not in (1, 2):
        raise ValueError(f"y must be (n,) or (n, k), got shape {y.shape}")
    _check_dtype(y.dtype, "y")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"X has {n} rows but y has {y.shape[0]}")
    return y


def _resolve_source(source, y, dtype, delimiter):
    """-> ('dense', _DenseSource, y) or ('sparse', csr_matrix, y)."""
    import scipy.sparse as sp

    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.exists():
            raise FileNotFoundError(f"source {p} does not exist")
        suf = p.suffix.lower()
        if suf == ".npy":
            arr = np.load(p, mmap_mode="r")
            _check_dtype(arr.dtype, "X")
            yy = _load_y(y, arr.shape[0])
            dt = np.dtype(dtype) if dtype is not None else arr.dtype
            return "dense", _DenseSource(arr.shape, dt, _array_blocks(arr)), yy
        if suf in (".csv", ".txt"):
            dt = np.dtype(dtype) if dtype is not None else np.dtype(np.float32)
            src = _csv_source(p, None if y is None else y, dt, delimiter)
            yy = _load_y(y, src.shape[0]) if y is not None else None
            return "dense", src, yy
        if suf in (".svm", ".svmlight", ".libsvm"):
            from sklearn.datasets import load_svmlight_file

            dt = np.dtype(dtype) if dtype is not None else np.dtype(np.float32)
            Xs, ys = load_svmlight_file(str(p), dtype=dt)
            yy = _load_y(y, Xs.shape[0]) if y is not None else ys
            return "sparse", Xs.tocsr(), yy
        raise ValueError(f"unsupported source file {p}: use .npy, .csv, .svm/.svmlight/.libsvm")
    if sp.issparse(source):
        Xs = source.tocsr()
        _check_dtype(Xs.dtype, "X")
        if dtype is not None:
            Xs = Xs.astype(dtype)
        return "sparse", Xs, _load_y(y, Xs.shape[0])
    if hasattr(source, "chunks") and hasattr(source, "compute"):  # dask array
        _check_dtype(source.dtype, "X")
        dt = np.dtype(dtype) if dtype is not None else np.dtype(source.dtype)
        return "dense", _DenseSource(source.shape, dt, _dask_blocks(source)), _load_y(y, source.shape[0])
    if isinstance(source, np.ndarray) or hasattr(source, "__array__"):
        arr = np.asarray(source)
        _check_dtype(arr.dtype, "X")
        if arr.ndim not in (2, 4):
            raise ValueError(f"X must be (n, d) or (n, H, W, C), got shape {arr.shape}")
        dt = np.dtype(dtype) if dtype is not None else arr.dtype
        return "dense", _DenseSource(arr.shape, dt, _array_blocks(arr)), _load_y(y, arr.shape[0])
    if callable(getattr(source, "__iter__", None)):
        raise TypeError("iterators are not supported as sources; pass an array or a file path")
    raise TypeError(f"unsupported source type {type(source).__name__}")


# ============================================================================= ingest
def _write_dense(group, src: _DenseSource, x_name: str, y_name: str, y, chunk_rows: int):
    n = src.shape[0]
    zx = _create_rows_array(group, x_name, src.shape, src.dtype, chunk_rows)
    zy = None
    if y is not None:
        zy = _create_rows_array(group, y_name, y.shape, y.dtype, chunk_rows)
    r0 = 0
    for j, (blk, yblk) in enumerate(src.blocks(chunk_rows)):
        blk = np.ascontiguousarray(blk, dtype=src.dtype)
        if blk.shape[1:] != src.shape[1:]:
            raise ValueError(f"X rows {r0}.. have shape {blk.shape[1:]}, expected {src.shape[1:]}")
        r1 = r0 + blk.shape[0]
        if r1 > n:
            raise ValueError(f"source yields more than its {n} rows")
        _check_finite_block(blk, x_name, r0, j)
        zx[r0:r1] = blk  # whole shard(s): block rows == shard rows
        if yblk is not None:
            if zy is None:
                zy = _create_rows_array(group, y_name, (n,), np.float64, chunk_rows)
            _check_finite_block(yblk, y_name, r0, j)
            zy[r0:r1] = yblk
        elif y is not None:
            yb = np.asarray(y[r0:r1])
            _check_finite_block(yb, y_name, r0, j)
            zy[r0:r1] = yb
        r0 = r1
    if r0 != n:
        raise ValueError(f"source yielded {r0} rows, expected {n}")
    return n


def _write_csr(group, Xs, x_name: str, chunk_rows: int | None):
    import zarr

    n, d = Xs.shape
    Xs.sort_indices()
    nnz_row = max(1.0, Xs.nnz / max(n, 1))
    if not chunk_rows:
        per = Xs.data.itemsize + Xs.indices.itemsize
        chunk_rows = int(max(1, min(n, _TARGET_CHUNK_BYTES // max(1, int(nnz_row * per)))))
    offsets = np.unique(np.r_[np.arange(0, n, chunk_rows, dtype=np.int64), n])
    for j in range(len(offsets) - 1):
        a, b = int(offsets[j]), int(offsets[j + 1])
        _check_finite_block(Xs[a:b], x_name, a, j)
    sub = group.create_group(x_name, attributes={
        "format": CSR_FORMAT, "shape": [int(n), int(d)], "dtype": str(Xs.dtype),
        "layout_version": _LAYOUT_VERSION})
    comp = zarr.codecs.ZstdCodec(level=3)
    elem_chunk = 1 << 20
    nnz = int(Xs.nnz)
    for nm, arr in (("data", Xs.data), ("indices", Xs.indices)):
        z = sub.create_array(name=nm, shape=(nnz,), dtype=arr.dtype,
                             chunks=(max(1, min(elem_chunk, nnz)),), compressors=comp, fill_value=0)
        if nnz:
            z[:] = arr
    indptr = Xs.indptr.astype(np.int64)
    z = sub.create_array(name="indptr", shape=(n + 1,), dtype=np.int64,
                         chunks=(min(elem_chunk, n + 1),), compressors=comp, fill_value=0)
    z[:] = indptr
    z = sub.create_array(name="chunk_offsets", shape=offsets.shape, dtype=np.int64,
                         chunks=offsets.shape, compressors=comp, fill_value=0)
    z[:] = offsets
    return n, int(chunk_rows)


def ingest(source, dest: str, *, y=None, x_name: str = "X", y_name: str = "y",
           chunk_rows: int | None = None, overwrite: bool = False, storage_options=None,
           dtype=None, delimiter: str = ",") -> str:
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
        Rows per shard (= per dask chunk when read back).  Default: ~32 MiB of
        uncompressed input per chunk (a multiple of 1024 rows when that large).
    overwrite : bool
        Replace an existing ``dest`` (only after the new store is complete).  Without it an
        existing ``dest`` raises ``FileExistsError`` before anything is read.
    storage_options : dict, optional
        fsspec options for remote ``dest``.
    dtype : dtype, optional
        Stored dtype of ``X``; default: the source's (float32 for CSV and svmlight).
    delimiter : str
        CSV field separator.

    Returns
    -------
    str
        ``dest``.

    Raises
    ------
    FileExistsError
        ``dest`` exists and ``overwrite`` is False.
    ValueError
        Row counts of ``X`` and ``y`` differ, non-numeric data, or a NaN/Inf value (the
        message names the array, the chunk and its rows).  Nothing is left at ``dest``.

    Notes
    -----
    Memory: one chunk of ``chunk_rows`` rows at a time for ``.npy``, CSV and dask sources;
    svmlight and in-memory sparse inputs are held whole (they are loaded whole anyway).
    """
    dest = os.fspath(dest)
    if _exists(dest, storage_options) and not overwrite:
        raise FileExistsError(f"{dest} already exists; pass overwrite=True to replace it")
    kind, src, yy = _resolve_source(source, y, dtype, delimiter)
    tmp = _sibling(dest, "tmp")
    try:
        if _is_local(tmp):
            _local_path(tmp).parent.mkdir(parents=True, exist_ok=True)
        group = _open_group(tmp, "w", storage_options)
        if kind == "dense":
            if src.shape[0] == 0:
                raise ValueError("X has no rows")
            rows = int(chunk_rows) if chunk_rows else _default_chunk_rows(
                src.shape[0], src.shape[1:], src.dtype)
            if rows < 1:
                raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
            n = _write_dense(group, src, x_name, y_name, yy, rows)
        else:
            if src.shape[0] == 0:
                raise ValueError("X has no rows")
            n, rows = _write_csr(group, src, x_name, chunk_rows)
            if yy is not None:
                zy = _create_rows_array(group, y_name, yy.shape, yy.dtype, rows)
                offsets = list(range(0, n, rows)) + [n]
                for j in range(len(offsets) - 1):
                    a, b = offsets[j], offsets[j + 1]
                    _check_finite_block(np.asarray(yy[a:b]), y_name, a, j)
                    zy[a:b] = np.asarray(yy[a:b])
        group.attrs["dsketch"] = {"n_rows": int(n), "chunk_rows": int(rows),
                                  "x": x_name, "layout_version": _LAYOUT_VERSION,
                                  "sparse": kind == "sparse"}
        _replace(tmp, dest, overwrite, storage_options)
    except BaseException:
        _remove(tmp, storage_options)
        raise
    return dest


# ======================================================================= write_array
def _write_block(block, z, block_info=None):
    """Write one dask block into its shard-aligned rows of ``z`` (a task)."""
    from ..backend import asnumpy

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
    """
    import dask
    import dask.array as da

    url = os.fspath(url)
    if not isinstance(arr, da.Array):
        arr = da.from_array(np.asarray(arr), chunks=(chunk_rows or "auto",) + (-1,) * (np.ndim(arr) - 1))
    _check_dtype(arr.dtype, name)
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid array name {name!r}")
    target = url.rstrip("/") + "/" + name
    if _exists(target, storage_options) and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
    rows = int(chunk_rows or max(arr.chunks[0]))
    arr = arr.rechunk({0: rows, **{ax: -1 for ax in range(1, arr.ndim)}})
    tmp = _sibling(url, f"{name}.tmp")
    try:
        group = _open_group(tmp, "w", storage_options)
        z = _create_rows_array(group, name, arr.shape, arr.dtype, rows)
        assert _storage_row_block(z) == rows or arr.shape[0] <= _storage_row_block(z)
        done = da.map_blocks(_write_block, arr, z, dtype=np.int8,
                             chunks=tuple((1,) * len(c) for c in arr.chunks),
                             name=f"dsketch-write-{_alpha_word(name)}-{token(arr.name, tmp)}")
        dask.compute(done.sum())
        _open_group(url, "a", storage_options)  # the store exists from here on
        _replace(tmp.rstrip("/") + "/" + name, target, overwrite, storage_options)
    finally:
        _remove(tmp, storage_options)
    return target
