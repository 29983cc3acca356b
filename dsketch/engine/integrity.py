"""Stored-data integrity: checksummed arrays, the stored-chunk check, reads that name a bad chunk.

Owns how dsketch makes a damaged store fail loudly instead of reading wrong values:

* every array dsketch writes (:func:`new_array`) carries a crc32c checksum after zstd in its
  codec chain (inside the sharding codec: for every inner chunk and for the shard index),
  stores every chunk even when it equals the fill value, and uses ``NaN`` as the fill
  value of float arrays, so a chunk file that disappears reads as NaN, never as zeros;
* its attributes record ``{"dsketch": {"rows": n, "all_chunks": true}}``;
  :func:`check_stored` compares that with the array's shape (a ``shape`` edited in
  ``zarr.json``) and lists the stored chunk (shard) files: a missing or empty one raises
  :class:`~dsketch.backend.InvalidInputError` naming the store, the array and the key;
* :func:`read_rows_block` wraps a read so that a checksum mismatch or a truncated chunk
  raises ``InvalidInputError`` naming the store, the array, the chunk key and its rows.

Arrays written by other tools or older dsketch versions (no marker, no checksum) still
open; a missing chunk there only warns, since Zarr may legitimately omit a chunk equal to
the fill value.  Must not know the dataset layout (that is :mod:`dsketch.engine.dataset`).
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import zarr

from ..backend import InvalidInputError, check_int
from .store import filesystem

__all__ = ["compressors", "new_array", "has_checksum", "check_stored", "read_rows_block",
           "chunk_keys", "check_chunk_rows", "CHECKSUM_CODEC"]

#: name of the checksum codec in ``zarr.json``
CHECKSUM_CODEC = "crc32c"


def compressors() -> list:
    """The bytes-to-bytes codecs of every array dsketch writes: zstd, then a crc32c checksum."""
    return [zarr.codecs.ZstdCodec(level=3), zarr.codecs.Crc32cCodec()]


def check_chunk_rows(chunk_rows, name: str = "chunk_rows") -> int | None:
    """``chunk_rows`` as a positive ``int`` (``None`` stays ``None``: the default).

    Raises
    ------
    InvalidInputError
        Not an integer (``2.5``, ``True``, ``"8"``) or below 1.
    """
    if chunk_rows is None:
        return None
    return check_int(chunk_rows, f"{name} (rows per chunk)")


def new_array(group, name: str, shape: tuple, dtype, chunks: tuple, shards: tuple | None = None):
    """Create a checksummed array that stores every chunk (see the module docstring)."""
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    kw = {} if shards is None else {"shards": tuple(shards)}
    return group.create_array(
        name=name, shape=shape, dtype=dtype, chunks=tuple(chunks), compressors=compressors(),
        fill_value=np.nan if dtype.kind in "fc" else 0, config={"write_empty_chunks": True},
        attributes={"dsketch": {"rows": shape[0] if shape else 0, "all_chunks": True}}, **kw)


def _codec_names(codecs) -> list[str]:
    names = []
    for c in codecs or ():
        d = c.to_dict() if hasattr(c, "to_dict") else dict(c)
        names.append(d.get("name"))
    return names


def has_checksum(z) -> bool:
    """Whether every chunk of ``z`` (and the shard index, if sharded) carries a checksum."""
    doc = z.metadata.to_dict()
    codecs = doc.get("codecs") or []
    for c in codecs:
        if c.get("name") == "sharding_indexed":
            cfg = c.get("configuration") or {}
            return (CHECKSUM_CODEC in _codec_names(cfg.get("codecs"))
                    and CHECKSUM_CODEC in _codec_names(cfg.get("index_codecs")))
    return CHECKSUM_CODEC in _codec_names(codecs)


def _block_rows(z) -> int:
    return int((getattr(z, "shards", None) or z.chunks)[0])


def chunk_keys(z, start: int, stop: int) -> list[str]:
    """Keys of the chunk (shard) files holding rows ``start:stop`` of ``z`` (all columns)."""
    rows = _block_rows(z)
    grid = [range(math.ceil(s / c)) for s, c in zip(z.shape[1:], (z.shards or z.chunks)[1:])]
    enc = z.metadata.chunk_key_encoding
    return [enc.encode_chunk_key((i, *rest))
            for i in range(start // rows, max(start, stop - 1) // rows + 1)
            for rest in itertools.product(*grid)]


def _stored_sizes(url: str, name: str, storage_options) -> dict:
    """``{chunk key: size in bytes}`` of the files stored under array ``name`` of ``url``."""
    fs, root = filesystem(url, storage_options)
    base = f"{root.rstrip('/')}/{name}/"
    try:
        found = fs.find(base, detail=True)
    except FileNotFoundError:
        return {}
    return {p[len(base):]: int(info.get("size") or 0) for p, info in found.items()
            if p.startswith(base)}


def check_stored(z, url: str, name: str, storage_options=None, unit: str = "rows") -> None:
    """Check that array ``name`` of the store at ``url`` has all its rows and chunk files.

    For arrays dsketch wrote (the ``all_chunks`` marker): the shape must match the recorded
    rows, and every chunk (shard) file must exist and be non-empty, else
    ``InvalidInputError`` naming the store, the array and the first missing keys.  For
    other arrays a missing chunk warns (it reads as the fill value).  Lists the array's
    files once; reads no chunk.  ``unit`` names the first axis in messages (``"rows"``,
    or ``"entries"`` for the 1-D parts of the CSR layout).
    """
    mark = (dict(z.attrs).get("dsketch") or {}) if hasattr(z, "attrs") else {}
    strict = bool(mark.get("all_chunks"))
    where = f"store {url}: array {name!r}"
    if strict and int(mark.get("rows", -1)) != int(z.shape[0]):
        raise InvalidInputError(
            f"{where} has shape {tuple(z.shape)} but was written with {mark.get('rows')} rows: "
            f"its zarr.json was edited or damaged; restore the store or ingest it again")
    grid = [math.ceil(s / c) for s, c in zip(z.shape, z.shards or z.chunks)]
    enc = z.metadata.chunk_key_encoding
    stored = _stored_sizes(url, name, storage_options)
    missing, empty = [], []
    for coords in itertools.product(*map(range, grid)):
        key = enc.encode_chunk_key(coords)
        size = stored.get(key)
        if size is None or size == 0:
            (missing if size is None else empty).append((key, coords[0]))
    if not (missing or empty):
        return
    bad = missing or empty
    what = "missing" if missing else "empty (truncated)"
    rows = _block_rows(z)
    first = [f"{k} ({unit} {i * rows}-{min(z.shape[0], (i + 1) * rows) - 1})" for k, i in bad[:3]]
    msg = (f"{where}: {len(bad)} of {math.prod(grid)} chunk files {what}: "
           f"{', '.join(first)}{' ...' if len(bad) > 3 else ''}")
    if strict:
        raise InvalidInputError(msg + "; the store is incomplete: restore it or ingest it again")
    warnings.warn(msg + f"; they read as the fill value {z.fill_value!r} (Zarr omits chunks "
                  f"equal to it, but a deleted chunk file reads the same)", UserWarning, stacklevel=3)


def read_rows_block(z, url: str, name: str, start: int, stop: int):
    """Rows ``start:stop`` of ``z`` (a task); a damaged chunk raises ``InvalidInputError``.

    The message names the store, the array, the chunk key and its rows (a checksum
    mismatch: bit flips; a truncated or undecodable chunk).  I/O errors pass unchanged.
    """
    try:
        return z[start:stop]
    except (OSError, MemoryError, InvalidInputError):
        raise
    except Exception as exc:
        raise _damaged(z, url, name, start, stop, exc) from exc


def _damaged(z, url: str, name: str, start: int, stop: int, exc: Exception) -> InvalidInputError:
    """The error for a failed read of rows ``start:stop``, pinned to its first bad chunk."""
    rows = _block_rows(z)
    for a in range(start - start % rows, stop, rows):
        lo, hi = max(a, start), min(a + rows, stop)
        try:
            z[lo:hi]
        except Exception as one:  # noqa: BLE001 - reported below
            exc, start, stop = one, lo, hi
            break
    keys = chunk_keys(z, start, stop)
    return InvalidInputError(
        f"store {url}: array {name!r}, chunk {', '.join(keys)} (rows {start}-{stop - 1}) is "
        f"damaged and cannot be read ({type(exc).__name__}: {exc}); restore the store or "
        f"ingest it again")
