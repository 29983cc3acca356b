"""The embed graph: a lazy ``map_blocks`` of a feature map over row chunks.

Owns turning a row-chunked dask array ``X`` into the lazy feature array ``Φ = fmap(X)``
with readable task names (``dsketch-embed-<word>``), correct ``meta`` (dtype, NumPy or
CuPy) and no random matrix in the graph: the only thing a task carries is the feature
map's small frozen spec; each worker derives (and caches) its random matrices from the
spec's seed.  Also owns the one wording of a chunk holding NaN/Inf
(:func:`check_finite_block`: array, chunk index and *global* rows), which ``embed`` uses
when a map refuses unvalidated input (a map only sees chunk-local rows) and
:mod:`.dataset` / :mod:`.ingest` use per chunk.  Must not contain kernel maths (that is
``dsketch.nets`` / ``dsketch.sketch``) and must never compute anything.

Memory: a task holds one input chunk and its features, ``rows × (d + m) × itemsize``
plus the feature map's own working memory for that chunk.  A pass that only reduces the
features slab by slab (the Gram and CG passes) can ask :func:`embedded_source` for ``X`` and
the map and read a chunk's features as :class:`EmbeddedRows`, computed slab by slab on
demand, never holding a chunk's features.
"""

from __future__ import annotations

import warnings
from typing import Any

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp
from dask.base import tokenize

from ..backend import (InvalidInputError, NonFiniteError, asnumpy, get_namespace, is_cupy,
                       tune_allocator)

__all__ = ["embed", "EmbeddedRows", "embedded_source", "task_word", "word",
           "check_feature_map", "to_gpu", "token", "check_finite_block", "block_rows"]

#: Attribute of an :func:`embed` result: ``(its name, X, fmap, m, dtype)``.
_SOURCE = "_dsketch_embed_source"


def token(*args) -> str:
    """A deterministic dask token of ``args`` (names graph keys)."""
    return tokenize(*args)


def word(text: str) -> str:
    """``text`` as a task-name word: lower-case letters only, hyphens kept between words.

    ``dask.utils.key_split`` keeps hyphen words only while purely alphabetic, so digits
    and punctuation are dropped (``"X_train-2"`` → ``"xtrain"``); ``""`` when nothing is left.
    """
    parts = ["".join(ch for ch in p.lower() if ch.isalpha()) for p in str(text).split("-")]
    return "-".join(p for p in parts if p)


def task_word(fmap: Any, name: str | None = None) -> str:
    """The alphabetic word naming ``fmap``'s tasks (``dsketch-embed-<word>``).

    The first non-empty :func:`word` of: ``name``, ``fmap.task_name``, ``fmap.which``
    (``"ntk"``/``"nngp"`` of ``net.sketch(...).output(which)``), the class name.
    """
    for cand in (name, getattr(fmap, "task_name", None), getattr(fmap, "which", None),
                 type(fmap).__name__):
        if isinstance(cand, str) and word(cand):
            return word(cand)
    return "features"


def check_feature_map(fmap: Any) -> None:
    """Raise ``TypeError`` unless ``fmap`` follows the engine's feature-map protocol."""
    missing = [a for a in ("n_features", "dtype") if not hasattr(fmap, a)]
    if missing or not callable(fmap):
        raise TypeError(f"{type(fmap).__name__} is not a feature map: needs n_features, dtype, "
                        f"input_shape and __call__(block) (missing {missing or ['__call__']})")
    try:
        hash(fmap)
    except TypeError:
        raise TypeError(f"{type(fmap).__name__} must be hashable (a frozen spec), so that "
                        f"workers can cache its random matrices") from None


def _non_finite(name: str, index: int, start: int, stop: int, row: int, where: str | None,
                all_nan: bool) -> InvalidInputError:
    hint = ("; every value of the chunk is NaN: its chunk file may be missing from the store"
            if all_nan else "")
    return InvalidInputError(f"{f'store {where}: ' if where else ''}{name} has non-finite values "
                             f"(NaN or Inf) in chunk {index} (rows {start}-{stop - 1}); first at "
                             f"row {row}{hint}")


def check_finite_block(block, name: str, start: int, index: int, where: str | None = None):
    """Return ``block``, or raise ``InvalidInputError`` naming the array, chunk and global
    rows (and the store ``where``, if given) if it holds NaN/Inf.

    ``block`` is chunk ``index`` of array ``name`` and starts at row ``start``; it may be
    NumPy, CuPy or ``scipy.sparse``.  The one wording of a bad chunk: ``embed`` (on
    unvalidated input), the per-chunk checks of :mod:`.dataset` and ingestion share it.
    """
    stop = start + block.shape[0]
    if sp.issparse(block):
        vals = block.data
        if vals.size and not np.isfinite(vals).all():
            coo = block.tocoo()
            bad = ~np.isfinite(coo.data)
            raise _non_finite(name, index, start, stop, start + int(coo.row[np.argmax(bad)]),
                              where, False)
        return block
    if np.dtype(block.dtype).kind != "f":
        return block
    xp = get_namespace(block)
    ok = xp.isfinite(block)
    if not bool(ok.all()):
        rows_bad = ~ok.reshape(block.shape[0], -1).all(axis=1) if block.ndim > 1 else ~ok
        raise _non_finite(name, index, start, stop, start + int(asnumpy(xp.argmax(rows_bad))),
                          where, bool(xp.isnan(block).all()))
    return block


def block_rows(block, block_info=None) -> tuple[int, int]:
    """``(chunk index, first global row)`` of a ``map_blocks`` block (``(0, 0)`` unknown)."""
    info = (block_info or {}).get(0) or {}
    loc = info.get("array-location") or [(0, block.shape[0])]
    idx = (info.get("chunk-location") or (0,))[0]
    return int(idx), int(loc[0][0])


class EmbeddedRows:
    """One chunk's features ``fmap(chunk)``, computed when read: ``rows[a:b]`` are the
    features of rows ``a:b`` — the numbers that chunk's embed task computes, and a NaN/Inf in
    the chunk reported as that task reports it (chunk ``index``, global rows from ``start``).

    Only row slices can be read (``shape`` and ``dtype`` are the feature chunk's), so a
    reduction that reads its chunk slab by slab holds one slab's features, never the
    chunk's ``rows × m``.
    """

    def __init__(self, chunk, fmap, m: int, dtype, index: int, start: int):
        self.chunk, self.fmap, self.m, self.dtype = chunk, fmap, int(m), np.dtype(dtype)
        self.index, self.start = int(index), int(start)

    @property
    def shape(self) -> tuple:
        return (self.chunk.shape[0], self.m)

    def __getitem__(self, sl):
        if not isinstance(sl, slice) or sl.step not in (None, 1):
            raise TypeError(f"EmbeddedRows reads row slices a:b only, got {sl!r}")
        a, b, _ = sl.indices(self.chunk.shape[0])
        tune_allocator()
        try:
            return _features(self.chunk[a:b], self.fmap, self.m, self.dtype)
        except NonFiniteError:
            check_finite_block(self.chunk, "X", self.start, self.index)
            raise


def _apply(block, fmap, m: int, dtype, block_info=None):
    """One task: features of one row chunk (NumPy/CuPy in, same device out).

    A NaN/Inf in the chunk is reported with the chunk index and *global* rows (the map
    itself only sees chunk-local rows); one the map found in finite input (an overflow)
    is re-raised unchanged.
    """
    tune_allocator()
    try:
        return _features(block, fmap, m, dtype)
    except NonFiniteError:
        index, start = block_rows(block, block_info)
        check_finite_block(block, "X", start, index)
        raise


def _features(block, fmap, m: int, dtype):
    """``fmap(block)`` checked to be ``(rows, m)`` and cast to ``dtype``."""
    out = fmap(block)
    if out.ndim != 2 or out.shape[0] != block.shape[0] or out.shape[1] != m:
        raise ValueError(f"{type(fmap).__name__} returned shape {tuple(out.shape)} for a "
                         f"block of {block.shape[0]} rows; expected ({block.shape[0]}, {m})")
    if out.dtype != dtype:
        out = out.astype(dtype)
    return out


def _spec_token(fmap) -> str:
    # repr of a frozen dataclass spec is deterministic and skips cache fields (repr=False)
    return tokenize(type(fmap).__module__, type(fmap).__qualname__, repr(fmap))


def _to_cupy(block):
    import cupy

    if hasattr(block, "tocsr"):  # scipy.sparse → cupyx.scipy.sparse
        import cupyx.scipy.sparse as csp

        return csp.csr_matrix(block)
    return cupy.asarray(block)


def to_gpu(X):
    """Move the blocks of ``X`` to the current GPU (lazily; tasks ``dsketch-togpu``)."""
    import cupy

    meta = cupy.empty((0,) * X.ndim, dtype=X.dtype)
    return da.map_blocks(_to_cupy, X, dtype=X.dtype, meta=meta,
                         name=f"dsketch-togpu-{tokenize(X.name)}")


def embed(X, fmap, *, name: str | None = None, device: str | None = None):
    """Lazy features ``Φ = fmap(X)`` of a row-chunked dask array.

    Parameters
    ----------
    X : dask.array.Array
        ``(n, d)`` or ``(n, H, W, C)`` with NumPy or CuPy blocks, or ``(n, d)`` with
        ``scipy.sparse`` blocks (passed to ``fmap`` unchanged: every map of flat rows takes
        them, with their dense copy's features; image nets refuse them, naming the layer).
        Chunks along non-row axes are merged (whole rows per block).
    fmap : feature map
        Hashable spec with ``n_features``, ``dtype``, ``input_shape`` and
        ``__call__(block) -> (rows, n_features)``; row ``i``'s features must not depend on
        the block it sits in.  It is the only object the graph carries per task; a map
        with ``carries_data = True`` (landmark rows) travels once, as one graph key.
    name : str, optional
        Word for the task names (``dsketch-embed-<name>``); default from ``fmap``
        (see :func:`task_word`).
    device : {"gpu", "cpu", None}
        ``"gpu"`` moves NumPy blocks to CuPy first (see :func:`to_gpu`; the features then
        stay on the GPU); ``None`` keeps each block where it is.

    Returns
    -------
    dask.array.Array
        ``(n, m)`` of ``fmap.dtype``, row chunks equal to ``X``'s, one chunk along
        features; block type follows ``X`` (CuPy in, CuPy out; sparse in, NumPy out).

    Notes
    -----
    Peak memory per task: ``rows × (d + m)`` elements plus the map's working set for the
    chunk; nothing is computed here.
    """
    if not isinstance(X, da.Array):
        raise TypeError(f"X must be a dask array, got {type(X).__name__} (use dask.array.from_array "
                        f"or dsketch.engine.open_dataset)")
    check_feature_map(fmap)
    if device not in (None, "cpu", "gpu", "cuda"):
        raise InvalidInputError(f"device must be 'cpu', 'gpu' or None, got {device!r}")
    if device in ("gpu", "cuda") and not is_cupy(X._meta):
        X = to_gpu(X)
    m = int(fmap.n_features)
    dtype = np.dtype(fmap.dtype)
    in_shape = getattr(fmap, "input_shape", None)
    if in_shape is not None and tuple(X.shape[1:]) != tuple(in_shape):
        raise InvalidInputError(f"X rows have shape {tuple(X.shape[1:])} but the feature map expects "
                         f"{tuple(in_shape)}")
    if X.ndim < 2:
        raise InvalidInputError(f"X must have at least 2 dimensions (rows, features), "
                                f"got shape {X.shape}")
    split = [ax for ax in range(1, X.ndim) if len(X.chunks[ax]) > 1]
    if split:
        warnings.warn(f"X is chunked along axis {split}; rechunking to whole rows per block "
                      f"before embedding", UserWarning, stacklevel=2)
        X = X.rechunk({ax: -1 for ax in split})
    if is_cupy(X._meta):
        import cupy

        meta = cupy.empty((0, 0), dtype=dtype)
    else:
        meta = np.empty((0, 0), dtype=dtype)
    key = f"dsketch-embed-{task_word(fmap, name)}-{tokenize(X.name, _spec_token(fmap))}"
    kw = {}
    if X.ndim > 2:
        kw["drop_axis"] = list(range(2, X.ndim))
    spec = fmap
    if getattr(fmap, "carries_data", False):  # e.g. Nyström landmarks: ship them once
        spec = dask.delayed(fmap, name=f"dsketch-map-{task_word(fmap, name)}-{_spec_token(fmap)}",
                            pure=True)
    Phi = da.map_blocks(_apply, X, spec, m, dtype, chunks=(X.chunks[0], (m,)), dtype=dtype,
                        meta=meta, name=key, **kw)
    if X.ndim == 2 and spec is fmap and not is_cupy(X._meta):
        setattr(Phi, _SOURCE, (Phi.name, X, fmap, m, dtype))
    return Phi


def embedded_source(Phi):
    """``(X, fmap, m, dtype)`` when ``Phi`` is (still) the array :func:`embed` returned for
    host rows ``(n, d)`` and a map without data of its own, else None.

    A pass that reduces ``Φ`` chunk by chunk may then read each chunk's features slab by
    slab (:class:`EmbeddedRows`) from ``X``'s chunks — the same rows, the same numbers —
    rather than hold a whole chunk's ``rows × m`` features (a gigabyte for 250,000 rows at
    m = 1024, faulted in afresh by every task).  Any array derived from ``Φ`` (sliced,
    rechunked, persisted) is not an embed result: None.
    """
    src = getattr(Phi, _SOURCE, None)
    if src is None or src[0] != getattr(Phi, "name", None):
        return None
    return src[1:]
