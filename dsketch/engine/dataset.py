"""Datasets on Zarr: the store layout, opening a store as dask arrays, and input validation.

Owns what a dsketch store looks like (dense and CSR layouts, shard and chunk sizes, the
row-sharded array every writer creates), reading it back as row-chunked dask arrays named
``dsketch-read-*``, and the checks of inputs: up front (dtype, dimensions, row chunking)
and lazily per chunk (NaN/Inf, naming the array, chunk and rows).  Writing stores is
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

from ..backend import asnumpy, get_namespace
from .graph import token, word
from .store import exists, open_group

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
    """A row-sharded, zstd-compressed array: shards (chunk_rows, *row), inner chunks divide it."""
    row_shape = tuple(shape[1:])
    chunk_rows = int(max(1, min(chunk_rows, max(shape[0], 1))))
    inner = _inner_rows(chunk_rows, row_shape, dtype)
    kw = dict(name=name, shape=tuple(int(s) for s in shape), dtype=np.dtype(dtype),
              compressors=zarr.codecs.ZstdCodec(level=3), fill_value=0)
    if inner < chunk_rows:
        return group.create_array(chunks=(inner,) + row_shape, shards=(chunk_rows,) + row_shape, **kw)
    return group.create_array(chunks=(chunk_rows,) + row_shape, **kw)


def storage_row_block(z) -> int:
    """Rows per whole write unit of a Zarr array: its shard, else its chunk."""
    shards = getattr(z, "shards", None)
    return int((shards or z.chunks)[0])


# ========================================================================= validation
def check_dtype(dtype, name: str) -> None:
    """Raise ``ValueError`` unless ``dtype`` is numeric (float, int, unsigned or bool)."""
    kind = np.dtype(dtype).kind if not hasattr(dtype, "kind") else dtype.kind
    if kind not in "fiub":
        raise ValueError(f"{name} must be numeric, got dtype {dtype}")


def _non_finite(name: str, index: int, start: int, stop: int, row: int) -> ValueError:
    return ValueError(f"{name} has non-finite values (NaN or Inf) in chunk {index} "
                      f"(rows {start}-{stop - 1}); first at row {row}")


def check_finite_block(block, name: str, start: int, index: int):
    """Return ``block``, or raise ``ValueError`` naming array, chunk and rows if it holds NaN/Inf.

    ``block`` is chunk ``index`` of array ``name`` and starts at row ``start``; it may be
    NumPy, CuPy or ``scipy.sparse``.
    """
    stop = start + block.shape[0]
    if sp.issparse(block):
        vals = block.data
        if vals.size and not np.isfinite(vals).all():
            coo = block.tocoo()
            bad = ~np.isfinite(coo.data)
            raise _non_finite(name, index, start, stop, start + int(coo.row[np.argmax(bad)]))
        return block
    if np.dtype(block.dtype).kind != "f":
        return block
    xp = get_namespace(block)
    ok = xp.isfinite(block)
    if not bool(ok.all()):
        rows_bad = ~ok.reshape(block.shape[0], -1).all(axis=1) if block.ndim > 1 else ~ok
        raise _non_finite(name, index, start, stop, start + int(asnumpy(xp.argmax(rows_bad))))
    return block


def _validate_block(block, name: str, block_info=None):
    info = (block_info or {}).get(0) or {}
    loc = info.get("array-location") or [(0, block.shape[0])]
    idx = (info.get("chunk-location") or (0,))[0]
    return check_finite_block(block, name, int(loc[0][0]), int(idx))


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
    if not isinstance(X, da.Array):
        raise TypeError(f"{name} must be a dask array, got {type(X).__name__}")
    check_dtype(X.dtype, name)
    allowed = (1, 2, 3, 4) if ndim is None else ((ndim,) if isinstance(ndim, int) else tuple(ndim))
    if X.ndim not in allowed:
        raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                         f"got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    X = _rows_only(X, name)
    return da.map_blocks(_validate_block, X, name, dtype=X.dtype, meta=X._meta,
                         name=f"dsketch-validate-{array_word(name)}-{token(X.name, name)}")


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


def _open_csr(group, url: str, name: str):
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
    key = f"dsketch-read-{array_word(name)}-{tok}"
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


def _read_rows(z, name: str, rows: int):
    """``z`` as a dask array of ``rows``-row chunks, tasks named ``dsketch-read-<name>``."""
    chunks = (rows,) + tuple(int(s) for s in z.shape[1:])
    # the zarr array is inlined (a few hundred bytes): fused task names then read
    # dsketch-... end to end on the dashboard
    return da.from_zarr(z, chunks=chunks, inline_array=True,
                        name=f"dsketch-read-{array_word(name)}-{token(_zarr_id(z), chunks)}")


def _open_dense(z, name: str, chunk_rows: int | None):
    block = storage_row_block(z)
    if chunk_rows:
        rows = max(block, int(math.ceil(chunk_rows / block)) * block)  # multiple of shards
    else:
        rows = block
    return _read_rows(z, name, rows)


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
    url = os.fspath(url)
    if not exists(url, storage_options):
        raise FileNotFoundError(f"no Zarr store at {url}")
    group = open_group(url, "r", storage_options)
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
        Y = _read_rows(zy, y, storage_row_block(zy))
        if Y.shape[0] != X.shape[0]:
            raise ValueError(f"{url}: {x} has {X.shape[0]} rows but {y} has {Y.shape[0]}")
        if Y.ndim not in (1, 2):
            raise ValueError(f"{url}/{y} must be (n,) or (n, k), got shape {Y.shape}")
        Y = Y.rechunk({0: X.chunks[0]})
    if validate:
        check_dtype(X.dtype, x)
        X = validate_rows(X, name=x, ndim=2 if sparse else (2, 4))
        if Y is not None:
            Y = validate_rows(Y, name=y, ndim=(1, 2))
    return Dataset(X=X, y=Y, url=url, sparse=sparse, attrs=dict(group.attrs))
