"""Datasets on Zarr: the store layout, opening a store as dask arrays, and input validation.

Owns what a dsketch store looks like (dense and CSR layouts, shard and chunk sizes, the
row-sharded array every writer creates), reading it back as row-chunked dask arrays named
``dsketch-read-*``, and the checks of inputs: up front (dtype, dimensions, row chunking)
and lazily per chunk (NaN/Inf, naming the store, array, chunk and global rows), and what
is checked when a store is opened (it is a dsketch dataset, its metadata parses, its row
counts agree, no chunk file is missing: :mod:`dsketch.engine.integrity`).  Writing stores is
:mod:`dsketch.engine.ingest`; paths and URLs are :mod:`dsketch.engine.store`.  Must not
contain kernel maths and must never gather an ``n × m`` array on the client.

Store layout
------------
A dsketch store is a Zarr v3 *group*::

    store.zarr/
      zarr.json          group; attrs {"dsketch": {"n_rows": n, "chunk_rows": r, ...}}
      X/                 dense inputs: array (n, d) or (n, H, W, C), or a CSR group (below)
      y/                 targets: array (n,) or (n, k)        (optional)
      predictions/       written by ``write_array``            (optional)

Dense arrays are chunked along rows only: ``shards=(r, *row_shape)`` (``r`` =
``chunk_rows``) holding inner chunks ``(r / j, *row_shape)`` of at most ~4 MiB, compressed
with ``zarr.codecs.ZstdCodec`` and checksummed with ``zarr.codecs.Crc32cCodec`` (chunks and
shard index; see :mod:`dsketch.engine.integrity` for the fill value and the chunk check).
Every write task writes whole shards (one dask block per shard), the only way
partial-shard writes cannot corrupt data (dask#12583, zarr#3682).  Reads use the *shard*
shape (or the chunk shape of an unsharded array) along rows, never ``from_zarr``'s default
inner chunks.

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
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
import scipy.sparse as sp
import zarr
from dask.highlevelgraph import HighLevelGraph

from ..backend import InvalidInputError
from .graph import block_rows, check_finite_block, token, word
from .integrity import check_stored, has_checksum, new_array, read_rows_block
from .store import exists, open_group, target_kind

__all__ = [
    "Dataset",
    "open_dataset",
    "validate_rows",
    "read_csr_chunk",
    "CSR_FORMAT",
    "LAYOUT_VERSION",
    "TARGET_CHUNK_BYTES",
    "default_chunk_rows",
    "create_rows_array",
    "storage_row_block",
    "check_dtype",
    "check_finite_block",
    "array_word",
    "MissingArrayError",
    "open_with_targets",
    "dataset_info",
    "store_arrays",
    "has_array",
]

CSR_FORMAT = "csr"
LAYOUT_VERSION = 1
TARGET_CHUNK_BYTES = 32 * 2**20  # uncompressed bytes per row chunk (= shard) by default
_TARGET_INNER_BYTES = 4 * 2**20  # uncompressed bytes per inner chunk of a shard


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
    attrs : dict
        The store group's attributes (``attrs["dsketch"]`` for stores dsketch wrote).
    """

    X: Any
    y: Any
    url: str
    sparse: bool = False
    attrs: dict = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])


class MissingArrayError(InvalidInputError, KeyError):
    """A store lacks an array asked for (an ``InvalidInputError`` and a ``KeyError``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def array_word(name: str) -> str:
    """The alphabetic word of an array name in task names (``dsketch-read-<word>``)."""
    return word(name) or "array"


# ====================================================================== chunk choices
def _row_bytes(row_shape: tuple, dtype) -> int:
    return max(1, int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize)


def default_chunk_rows(n: int, row_shape: tuple, dtype) -> int:
    """Rows per shard holding ~32 MiB uncompressed (a multiple of 1024 when that large)."""
    rows = max(1, TARGET_CHUNK_BYTES // _row_bytes(row_shape, dtype))
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


def create_rows_array(group, name: str, shape: tuple, dtype, chunk_rows: int):
    """A row-sharded, zstd-compressed, checksummed array: shards (chunk_rows, *row), inner
    chunks divide it (:func:`dsketch.engine.integrity.new_array`)."""
    row_shape = tuple(shape[1:])
    chunk_rows = int(max(1, min(chunk_rows, max(shape[0], 1))))
    inner = _inner_rows(chunk_rows, row_shape, dtype)
    if inner < chunk_rows:
        return new_array(group, name, shape, dtype, (inner,) + row_shape, (chunk_rows,) + row_shape)
    return new_array(group, name, shape, dtype, (chunk_rows,) + row_shape)


def storage_row_block(z) -> int:
    """Rows per whole write unit of a Zarr array: its shard, else its chunk."""
    shards = getattr(z, "shards", None)
    return int((shards or z.chunks)[0])


# ========================================================================= validation
def check_dtype(dtype, name: str) -> None:
    """Raise ``InvalidInputError`` unless ``dtype`` is numeric (float, int, unsigned or bool)."""
    kind = np.dtype(dtype).kind if not hasattr(dtype, "kind") else dtype.kind
    if kind not in "fiub":
        raise InvalidInputError(f"{name} must be numeric, got dtype {dtype}")


def _validate_block(block, name: str, where=None, block_info=None):
    idx, start = block_rows(block, block_info)
    return check_finite_block(block, name, start, idx, where)


def validate_rows(X, name: str = "X", *, ndim: int | tuple | None = None,
                  where: str | None = None):
    """Check a row-chunked dask array up front and lazily check its values per chunk.

    Up front (no cluster time): numeric dtype, number of dimensions (``ndim``, default any
    of 1..4), and chunking along rows only — an array split along any other axis is
    rechunked to whole rows with a ``UserWarning`` saying so.  Lazily: every block is
    checked for NaN/Inf when computed (on the workers); the first bad block raises
    ``InvalidInputError`` naming the store (``where``), the array, the chunk index, its
    row range and the first bad row, all as global row numbers.  The check fuses with the next
    operation (``embed``), so it costs no extra pass or memory.

    Parameters
    ----------
    X : dask.array.Array
        Dense (NumPy or CuPy blocks) or sparse (``scipy.sparse`` blocks) rows.
    name : str
        Name used in error messages (``"X"``, ``"y"``...).
    ndim : int or tuple of int, optional
        Allowed numbers of dimensions.
    where : str, optional
        The store the rows come from, for error messages.

    Returns
    -------
    dask.array.Array
        The same values, row-chunked, with the finite check attached.
    """
    if not isinstance(X, da.Array):
        raise TypeError(f"{name} must be a dask array, got {type(X).__name__}")
    check_dtype(X.dtype, name)
    allowed = (1, 2, 3, 4) if ndim is None else ((ndim,) if isinstance(ndim, int) else tuple(ndim))
    if X.ndim not in allowed:
        raise InvalidInputError(f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                                f"got shape {X.shape}")
    if X.shape[0] == 0:
        raise InvalidInputError(f"{name} has no rows")
    X = _rows_only(X, name)
    return da.map_blocks(_validate_block, X, name, where, dtype=X.dtype, meta=X._meta,
                         name=f"dsketch-validate-{array_word(name)}-{token(X.name, name, where)}")


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
    p = np.asarray(indptr[start:stop + 1], dtype=np.int64)
    lo, hi = int(p[0]), int(p[-1])
    vals = np.asarray(data[lo:hi])
    cols = np.asarray(indices[lo:hi])
    return sp.csr_matrix((vals, cols, p - lo), shape=(stop - start, n_cols))


def _guarded_csr_chunk(url: str, name: str, data, indices, indptr, start: int, stop: int,
                       n_cols: int):
    """:func:`read_csr_chunk` as a task: a damaged part raises ``InvalidInputError``."""
    try:
        return read_csr_chunk(data, indices, indptr, start, stop, n_cols)
    except (OSError, MemoryError, InvalidInputError):
        raise
    except Exception as exc:
        raise InvalidInputError(f"store {url}: CSR array {name!r}, rows {start}-{stop - 1} "
                                f"cannot be read ({type(exc).__name__}: {exc}); a part "
                                f"(data/indices/indptr) is damaged: restore the store or "
                                f"ingest it again") from exc


def _open_csr(group, url: str, name: str, check: bool = True, storage_options=None):
    attrs = dict(group.attrs)
    n, d = (int(s) for s in attrs["shape"])
    parts = {}
    for part in ("data", "indices", "indptr", "chunk_offsets"):
        parts[part] = _member(group, part, url, f"{name}/{part}", storage_options)
        if not isinstance(parts[part], zarr.Array):
            raise InvalidInputError(f"store {url}: CSR array {name!r} has no {part!r} array "
                                    f"(the store is incomplete: ingest it again)")
        if check:
            check_stored(parts[part], url, f"{name}/{part}", storage_options, "entries")
    data, indices, indptr = parts["data"], parts["indices"], parts["indptr"]
    offsets = np.asarray(read_rows_block(parts["chunk_offsets"], url, f"{name}/chunk_offsets",
                                         0, parts["chunk_offsets"].shape[0]), dtype=np.int64)
    if offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) <= 0):
        raise InvalidInputError(f"{url}/{name}: chunk_offsets must rise strictly from 0 to {n}")
    if indptr.shape[0] != n + 1:
        raise InvalidInputError(f"{url}/{name}: indptr has {indptr.shape[0]} entries, "
                                f"expected {n + 1}")
    nnz = int(read_rows_block(indptr, url, f"{name}/indptr", n, n + 1)[0])
    if check and not data.shape[0] == indices.shape[0] == nnz:
        raise InvalidInputError(f"{url}/{name}: data has {data.shape[0]} and indices "
                                f"{indices.shape[0]} entries but indptr ends at {nnz}")
    dtype = np.dtype(attrs.get("dtype", data.dtype))
    tok = token(url, name, offsets.tobytes(), n, d, str(dtype))
    key = f"dsketch-read-{array_word(name)}-{tok}"
    dsk = {(key, j, 0): (_guarded_csr_chunk, url, name, data, indices, indptr,
                         int(offsets[j]), int(offsets[j + 1]), d)
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


def _read_rows(z, name: str, rows: int, url: str):
    """``z`` as a dask array of ``rows``-row chunks, tasks named ``dsketch-read-<name>``.

    Each task reads through :func:`~dsketch.engine.integrity.read_rows_block`, so a damaged
    chunk raises ``InvalidInputError`` naming ``url``, ``name``, the chunk key and its rows.
    """
    n = int(z.shape[0])
    rest = tuple(int(s) for s in z.shape[1:])
    key = f"dsketch-read-{array_word(name)}-{token(_zarr_id(z), rows, url, name)}"
    zeros = (0,) * len(rest)
    # the zarr array is inlined (a few hundred bytes): fused task names then read
    # dsketch-... end to end on the dashboard
    starts = range(0, max(n, 1), rows)
    dsk = {(key, j) + zeros: (read_rows_block, z, url, name, a, min(a + rows, n))
           for j, a in enumerate(starts)}
    chunks = (tuple(min(rows, n - a) for a in starts),) + tuple((s,) for s in rest)
    graph = HighLevelGraph.from_collections(key, dsk, dependencies=())
    return da.Array(graph, key, chunks=chunks, meta=np.empty((0,) * z.ndim, dtype=z.dtype))


def _open_dense(z, name: str, chunk_rows: int | None, url: str):
    block = storage_row_block(z)
    if chunk_rows:
        rows = max(block, int(math.ceil(chunk_rows / block)) * block)  # multiple of shards
    else:
        rows = block
    return _read_rows(z, name, rows, url)


def _not_a_dataset(url: str, what: str) -> InvalidInputError:
    return InvalidInputError(f"{url} is not a dsketch dataset ({what}); write one with "
                             f"`dsketch ingest SOURCE {url}` (or dsketch.engine.ingest)")


def _member(group, name: str, url: str, path: str | None = None, storage_options=None):
    """``group[name]`` (``None`` when absent); corrupted or missing metadata of a member
    that is there raises ``InvalidInputError`` naming the file."""
    meta = f"{url}/{path or name}/zarr.json"
    try:
        return group[name]
    except KeyError:
        if exists(f"{url}/{path or name}", storage_options):
            raise InvalidInputError(f"{meta} is missing or not Zarr metadata; restore the store "
                                    f"or ingest it again") from None
        return None
    except (OSError, InvalidInputError):
        raise
    except Exception as exc:
        raise InvalidInputError(f"{meta} is corrupted ({type(exc).__name__}: {exc}); restore "
                                f"the store or ingest it again") from None


def _check_rows(node, url: str, name: str, attrs: dict, n: int) -> None:
    """The row count recorded in the group attributes must match the array's."""
    rec = (attrs.get("dsketch") or {}).get("n_rows")
    if rec is not None and int(rec) != n:
        raise InvalidInputError(f"store {url}: array {name!r} has {n} rows but the store was "
                                f"written with {rec}: its zarr.json was edited or damaged; "
                                f"restore the store or ingest it again")


def _check_checksums(z, url: str, name: str, attrs: dict) -> None:
    if "dsketch" in attrs and not has_checksum(z):
        warnings.warn(f"store {url}: array {name!r} has no checksum in its codec chain "
                      f"(written by an older dsketch): damaged chunks cannot be detected; "
                      f"ingest it again to add checksums", UserWarning, stacklevel=4)


def open_dataset(url: str, *, x: str = "X", y: str | None = "y", storage_options=None,
                 validate: bool = True, chunk_rows: int | None = None) -> Dataset:
    """Open a dsketch Zarr store as row-chunked dask arrays.

    Parameters
    ----------
    url : str
        Local path or fsspec URL of a Zarr v3 group (see the module docstring).
    x, y : str
        Names of the input and target arrays; ``y=None`` opens inputs only.  A missing
        ``y`` raises :class:`MissingArrayError` (a ``KeyError``; open with ``y=None`` for a
        store without targets).
    storage_options : dict, optional
        Passed to fsspec for remote URLs.
    validate : bool
        Check shapes and dtypes now, check that every chunk file of the arrays is stored
        and their row counts match what was written (one listing, no chunk read), and
        attach the lazy per-chunk finite-value check of :func:`validate_rows` to ``X`` and
        ``y``.  Damaged chunks (checksum mismatch, truncation) raise when read, either way.
    chunk_rows : int, optional
        Rows per dask chunk, rounded up to a multiple of the stored shard (or chunk) rows
        so that chunks stay shard aligned.  Default: one shard per dask chunk.

    Returns
    -------
    Dataset

    Raises
    ------
    FileNotFoundError
        Nothing at ``url``.
    InvalidInputError
        ``url`` is not a dsketch dataset (a plain file, an empty directory, a group without
        ``x``), its metadata is corrupted, a chunk file is missing, the row counts disagree
        (the message names the store, the array and the chunk).
    """
    url = os.fspath(url)
    if not exists(url, storage_options):
        raise FileNotFoundError(f"no Zarr store at {url}; write one with `dsketch ingest "
                                f"SOURCE {url}`")
    kind = target_kind(url, storage_options)
    if kind in ("file", "empty", "model", "directory"):
        raise _not_a_dataset(url, {"file": "it is a plain file", "empty": "an empty directory",
                                   "model": "it is a dsketch model directory",
                                   "directory": "no zarr.json"}[kind])
    try:
        group = open_group(url, "r", storage_options)
    except zarr.errors.GroupNotFoundError:
        raise _not_a_dataset(url, "no Zarr group") from None
    attrs = dict(group.attrs)
    node = _member(group, x, url, storage_options=storage_options)
    if node is None:
        raise MissingArrayError(f"{url} has no array {x!r} (members: {sorted(group.keys())})"
                                + ("" if "dsketch" in attrs else
                                   f": it is not a dsketch dataset; write one with "
                                   f"`dsketch ingest SOURCE {url}`"))
    sparse = isinstance(node, zarr.Group)
    if sparse:
        fmt = node.attrs.get("format")
        if fmt != CSR_FORMAT:
            raise InvalidInputError(f"{url}/{x} is a group but not the CSR layout (format={fmt!r})")
        X = _open_csr(node, url, x, validate, storage_options)
    else:
        if validate:
            check_stored(node, url, x, storage_options)
            _check_checksums(node, url, x, attrs)
        X = _open_dense(node, x, chunk_rows, url)
    _check_rows(node, url, x, attrs, int(X.shape[0]))
    Y = None
    if y is not None:
        zy = _member(group, y, url, storage_options=storage_options)
        if zy is None:
            raise MissingArrayError(f"{url} has no target array {y!r}; open it with y=None to "
                                    f"read inputs only (members: {sorted(group.keys())})")
        if isinstance(zy, zarr.Group):
            raise InvalidInputError(f"{url}/{y} must be a dense array")
        if validate:
            check_stored(zy, url, y, storage_options)
            _check_checksums(zy, url, y, attrs)
        Y = _read_rows(zy, y, storage_row_block(zy), url)
        if Y.shape[0] != X.shape[0]:
            raise InvalidInputError(f"{url}: {x} has {X.shape[0]} rows but {y} has {Y.shape[0]}")
        if Y.ndim not in (1, 2):
            raise InvalidInputError(f"{url}/{y} must be (n,) or (n, k), got shape {Y.shape}")
        Y = Y.rechunk({0: X.chunks[0]})
    if validate:
        check_dtype(X.dtype, x)
        X = validate_rows(X, name=x, ndim=2 if sparse else (2, 4), where=url)
        if Y is not None:
            Y = validate_rows(Y, name=y, ndim=(1, 2), where=url)
    return Dataset(X=X, y=Y, url=url, sparse=sparse, attrs=attrs)


# ====================================================================== introspection
def open_with_targets(url: str, storage_options=None) -> Dataset:
    """:func:`open_dataset` with ``y`` when the store has one, without it otherwise (metadata
    only: no chunk is read, nothing computed)."""
    try:
        return open_dataset(url, y="y", validate=False, storage_options=storage_options)
    except MissingArrayError:
        return open_dataset(url, y=None, validate=False, storage_options=storage_options)


def dataset_info(ds: Dataset) -> dict:
    """JSON-ready summary of an opened dataset: rows, row shape, dtype, row chunks, sparse,
    target shape and dtype."""
    X, y = ds.X, ds.y
    return {"kind": "dataset", "url": ds.url, "n_rows": int(X.shape[0]),
            "row_shape": list(X.shape[1:]), "dtype": str(X.dtype),
            "row_chunks": len(X.chunks[0]) if hasattr(X, "chunks") else None,
            "sparse": bool(ds.sparse),
            "y_shape": list(y.shape) if y is not None else None,
            "y_dtype": str(y.dtype) if y is not None else None}


def store_arrays(url: str, storage_options=None) -> list[dict] | None:
    """Name, shape and dtype of every array at the top of the Zarr group at ``url``
    (``None``: not a readable group)."""
    try:
        group = open_group(url, "r", storage_options)
    except Exception:
        return None
    return [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype)}
            for k, v in sorted(group.arrays())]


def has_array(url: str, name: str, storage_options=None) -> bool:
    """Whether the store at ``url`` already holds a member ``name`` (an array written by
    ``write_array``); ``False`` when nothing is there."""
    if not exists(url, storage_options):
        return False
    try:
        return name in open_group(url, "r", storage_options)
    except Exception:
        return exists(url.rstrip("/") + "/" + name, storage_options)
