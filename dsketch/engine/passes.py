"""One-pass streaming reductions over the row chunks of ``Φ``, for dask and in-memory input.

Owns the machinery every solver pass uses: checking ``Φ`` (``n × m`` features) and the
targets ``Y``, the per-chunk blockwise task (:func:`per_chunk`), the float64 tree sum of
its ``(1, P)`` partials (:func:`tree_sum`), and :func:`reduce_rows`, which runs one pass —
a graph on the cluster for a dask ``Φ``, a direct call for an in-memory NumPy/CuPy ``Φ``
(one "chunk": the same per-chunk kernel, so both give the same numbers).  Also owns the
row → fold hash (:func:`fold_ids`, :func:`check_folds`: no empty fold) and the Gram pass
(:class:`Gram`, :func:`gram`), and what a pass's sums say about its input: non-finite
sums are an error naming ``Phi`` or ``Y`` and the first bad row (:func:`check_finite_sums`),
never silent NaN weights.

Must not solve anything (that is ``cg``/``solve``), contain kernel maths, or gather
anything ``n × m`` (or ``n × anything``) on the client: per-chunk results are float64
partials of size ``m × m`` or ``m × k``.

Memory bounds (per worker task, ``r`` = rows of a chunk, ``m`` features, ``k`` targets,
``s`` = ``slab_rows`` ≤ r, ``F`` folds, ``e`` = ``split_every``): a gram (or CG, CV-score)
task over ``Φ = embed(X, fmap)`` computes the features slab by slab from ``X``'s chunk
(``reduce_rows(by_slabs=True)``) and holds ``r·d`` input elements, ``s × m`` features and
their float64 copy, and ``F·(m² + m·k)`` float64 partials; over any other lazy ``Φ`` it
holds that chunk's ``r·m`` features instead; a reduction task holds ``e + 1`` partials.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import dask
import dask.array as da
import numpy as np

from ..backend import InvalidInputError, asnumpy, check_int, get_namespace, is_cupy, to_namespace
from .cluster import current_client, show_progress
from .graph import EmbeddedRows, embedded_source, token
from .linalg import symmetrize_upper, syrk_acc

__all__ = ["Gram", "gram", "gram_chunk", "fold_ids", "reduce_rows", "per_chunk", "tree_sum",
           "compute", "check_features", "as_targets", "slabs", "fmt_bytes", "SLAB_ROWS",
           "SPLIT_EVERY", "first_nonfinite_row", "check_finite_sums", "check_folds",
           "fold_class_counts"]

#: Rows of a chunk converted to float64 at once (bounds the float64 copy of a chunk).
SLAB_ROWS = 8192
#: Fan-in of the tree reductions.
SPLIT_EVERY = 4


# ============================================================================ inputs
def check_features(Phi):
    """``Φ`` as a 2-D dask array in one column chunk, or a 2-D in-memory array as is."""
    if isinstance(Phi, da.Array):
        if Phi.ndim != 2:
            raise InvalidInputError(f"Phi must be (n, m), got shape {Phi.shape}")
        return Phi.rechunk({1: -1}) if len(Phi.chunks[1]) > 1 else Phi
    if not hasattr(Phi, "shape") or not hasattr(Phi, "dtype") or hasattr(Phi, "tocsr"):
        raise TypeError(f"Phi must be a dask array (dsketch.engine.embed) or a dense NumPy/CuPy "
                        f"array, got {type(Phi).__name__}")
    if Phi.ndim != 2:
        raise InvalidInputError(f"Phi must be (n, m), got shape {Phi.shape}")
    return Phi


def as_targets(Y, Phi):
    """``Y`` as 2-D float64 aligned with ``Φ``'s rows, and whether it was 1-D.

    For a dask ``Φ`` the result is a dask array chunked like ``Φ``'s rows; for an
    in-memory ``Φ`` a NumPy array.
    """
    lazy = isinstance(Phi, da.Array)
    if not isinstance(Y, da.Array):
        Y = np.asarray(asnumpy(Y))
    if Y.ndim not in (1, 2):
        raise InvalidInputError(f"Y must be (n,) or (n, k), got shape {Y.shape}")
    if Y.shape[0] != Phi.shape[0]:  # before chunking Y like Phi (dask would say "chunks")
        raise InvalidInputError(f"Phi and Y disagree in length: Phi has {Phi.shape[0]} rows, "
                                f"Y has {Y.shape[0]}; Y needs one target row per row of Phi")
    if lazy and not isinstance(Y, da.Array):
        Y = da.from_array(Y, chunks=(Phi.chunks[0],) + ((-1,) if Y.ndim == 2 else ()))
    elif not lazy and isinstance(Y, da.Array):
        Y = np.asarray(Y.compute())
    was_1d = Y.ndim == 1
    if was_1d:
        Y = Y[:, None]
    if Y.dtype != np.float64:
        Y = Y.astype(np.float64)
    if lazy and (Y.chunks[0] != Phi.chunks[0] or len(Y.chunks[1]) > 1):
        Y = Y.rechunk({0: Phi.chunks[0], 1: -1})
    return Y, was_1d


def first_nonfinite_row(A):
    """Index of the first row of ``A`` holding NaN/Inf, or None (dask: one extra pass).

    Only called once a pass has found non-finite sums, to say where they came from.
    """
    if isinstance(A, da.Array):
        bad = ~da.isfinite(A).reshape((A.shape[0], -1)).all(axis=1)
        anyb, row = dask.compute(bad.any(), da.argmax(bad))
        return int(row) if bool(anyb) else None
    bad = ~np.isfinite(asnumpy(A)).reshape(A.shape[0], -1).all(axis=1)
    return int(np.argmax(bad)) if bad.any() else None


def check_finite_sums(Phi, Y, phi_sums, y_sums, where: str) -> None:
    """Raise ``InvalidInputError`` when a pass's sums are not finite, naming the cause.

    ``phi_sums`` are sums of ``Φ`` alone (``ΦᵀΦ``, its diagonal, a sketch), ``y_sums`` those
    involving ``Y`` (``ΦᵀY``, ``ΣY²``).  Non-finite ``Φ`` sums blame ``Phi``, else ``Y``;
    the first bad row is located (an extra pass for dask input, on this error path only);
    finite rows with non-finite sums are an overflow.  Never returns silent NaN weights.
    """
    bad_phi = not all(np.all(np.isfinite(a)) for a in phi_sums)
    if not bad_phi and all(np.all(np.isfinite(a)) for a in y_sums):
        return
    name, what, A = (("Phi", "the features Φ", Phi) if bad_phi else ("Y", "the targets Y", Y))
    if A is None:  # only the sums are at hand
        raise InvalidInputError(f"the sums of {what} in {where} are not finite: {name} "
                                f"contains NaN or Inf, or its values overflow")
    row = first_nonfinite_row(A)
    if row is None:
        raise InvalidInputError(
            f"overflow in {where}: the float64 sums of {what} are not finite although {name} "
            f"is finite; its values are too large (scale {name} down)")
    raise InvalidInputError(f"{name} contains NaN or Inf (first at row {row}): {what} must be "
                            f"finite (found by {where})")


def check_folds(n: int, n_folds: int, counts=None, name: str = "n_folds") -> None:
    """Refuse k-fold CV that would leave a fold empty (as scikit-learn's ``KFold`` does).

    ``n < n_folds`` is refused before any pass; with ``counts`` (rows per fold, from the
    pass) a fold that the row hash left empty is refused too.
    """
    if n < n_folds:
        raise InvalidInputError(f"{name}={n_folds} folds need at least {n_folds} rows, got "
                                f"n_samples={n}: use fewer folds (or {name}=None for GCV)")
    empty = [f for f, c in enumerate(counts or ()) if c == 0]
    if empty:
        raise InvalidInputError(
            f"{name}={n_folds}: fold {empty[0]} of {n_folds} has no rows (n={n} rows are "
            f"assigned to folds by a hash of the row index); use fewer folds")


def slabs(n: int, slab: int):
    """Slices of at most ``slab`` rows covering ``0 .. n - 1``."""
    for s in range(0, n, slab):
        yield slice(s, min(n, s + slab))


def fmt_bytes(b: float) -> str:
    """``b`` bytes in binary units (``"12.0 MiB"``), for the solvers' reasons."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(b) < 1024 or unit == "TiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} TiB"  # pragma: no cover


# ====================================================================== the pass
def per_chunk(func: Callable, name: str, Phi, *, Y=None, V=None, rows: bool = False, P: int,
              key_parts: tuple = (), **kw):
    """Blockwise ``func(phi, [y], [v], [row0], **kw) -> (1, P)`` float64 per row chunk.

    Built so that dask's blockwise optimization fuses it with the embed (and read and
    validate) tasks of ``Phi``: ``Y`` shares ``Phi``'s index (no contraction), the small
    client array ``V`` enters as ONE delayed key (not copied into every task, and not a
    contracted blockwise input, which would stop the fusion), and the chunk's first row
    index comes from a tiny per-chunk array.  Tasks are named ``<name>-chunk``; their keys
    tokenize ``name``, ``Phi``, ``Y``, ``V``, ``kw`` and ``key_parts`` (what ``func``
    carries that ``kw`` does not show).
    """
    parts_id: list = [name, Phi.name, kw, *key_parts]
    args: list = [Phi, "ij"]
    if Y is not None:
        parts_id.append(Y.name)
        args += [Y, "ij"]
    if V is not None:
        V = np.ascontiguousarray(V)
        vtok = token(V)
        parts_id.append(vtok)
        args += [dask.delayed(V, name=f"{name}-input-{vtok}", pure=True), None]
    if rows:
        starts = np.cumsum((0,) + Phi.chunks[0][:-1]).astype(np.int64)
        args += [da.from_array(starts, chunks=1, name=f"dsketch-rows-{token(Phi.chunks[0])}"), "i"]
        parts_id.append("rows")
    key = f"{name}-chunk-{token(*parts_id)}"
    return da.blockwise(func, "ij", *args, adjust_chunks={"i": 1, "j": P}, align_arrays=False,
                        concatenate=True, dtype=np.float64, meta=np.empty((0, 0)), name=key,
                        **kw)


def _flat(x) -> list:
    if isinstance(x, (list, tuple)):
        return [a for b in x for a in _flat(b)]
    return [x]


def _rs_chunk(x, axis=None, keepdims=None):
    return x


def _rs_combine(x, axis=None, keepdims=None):
    parts = _flat(x)
    out = np.array(parts[0], dtype=np.float64, copy=True)
    for p in parts[1:]:
        out += p
    return out


def _rs_aggregate(x, axis=None, keepdims=None):
    out = _rs_combine(x)
    return out if keepdims else out[0]


def tree_sum(parts, name: str, split_every: int):
    """Σ over row chunks of ``(1, P)`` partials: a tree reduction named ``name``.

    ``name`` must be alphabetic hyphen words (dask appends the token): the levels are then
    ``name``, ``name-partial`` and ``name-aggregate`` after ``dask.utils.key_split``.
    """
    return da.reduction(parts, chunk=_rs_chunk, combine=_rs_combine, aggregate=_rs_aggregate,
                        axis=0, keepdims=False, dtype=np.float64, split_every=split_every,
                        concatenate=False, name=name, meta=np.empty((0,)))


def compute(arr, client, progress: bool | None = None) -> np.ndarray:
    """Compute ``arr`` on ``client`` (or dask's current scheduler) as a NumPy array."""
    if client is None:
        return np.asarray(arr.compute())
    fut = client.compute(arr)
    show_progress(fut, enabled=progress)
    return np.asarray(fut.result())


def reduce_rows(func: Callable, name: str, Phi, *, Y=None, V=None, rows: bool = False, P: int,
                client=None, split_every: int = SPLIT_EVERY, progress: bool | None = None,
                by_slabs: bool = False, **kw) -> np.ndarray:
    """One pass: ``Σ_c func(Φc, [Yc], [V], [row0_c], **kw)`` over the row chunks, ``(P,)``.

    A dask ``Φ`` runs :func:`per_chunk` + :func:`tree_sum` (tasks ``name``) on ``client``;
    an in-memory ``Φ`` is one chunk starting at row 0, summed by a direct call.
    ``by_slabs``: ``func`` reads ``Φc`` only as ``Φc.shape`` and row slices ``Φc[a:b]``; then
    for ``Φ = embed(X, fmap)`` (:func:`.graph.embedded_source`) the tasks run over ``X``'s
    chunks and ``func`` reads :class:`.graph.EmbeddedRows`: each slab's features computed
    when read (the same numbers), no chunk-sized feature block.
    """
    if isinstance(Phi, da.Array):
        source = embedded_source(Phi) if by_slabs else None
        if source is None:
            parts = per_chunk(func, name, Phi, Y=Y, V=V, rows=rows, P=P, **kw)
        else:
            X, fmap, m, dtype = source
            starts = tuple(int(s) for s in np.cumsum((0,) + X.chunks[0][:-1]))
            on_rows = functools.partial(_on_embedded_rows, func, rows, (fmap, m, dtype), starts)
            parts = per_chunk(on_rows, name, X, Y=Y, V=V, rows=True, P=P,
                              key_parts=(Phi.name,), **kw)
        return compute(tree_sum(parts, name, split_every), client, progress)
    args = [a for a in (Y, V) if a is not None]
    if rows:
        args.append(np.zeros(1, dtype=np.int64))
    return np.asarray(func(Phi, *args, **kw))[0]


def _on_embedded_rows(func, pass_rows: bool, source: tuple, starts: tuple, x, *args, **kw):
    """``func`` of the chunk ``x``'s features read as :class:`.graph.EmbeddedRows` of
    ``source = (fmap, m, dtype)`` (``args`` end with the chunk's first row, one of
    ``starts``, passed on to ``func`` when ``pass_rows``)."""
    start = int(np.asarray(args[-1]).ravel()[0])
    phi = EmbeddedRows(x, *source, starts.index(start), start)
    return func(phi, *(args if pass_rows else args[:-1]), **kw)


# ============================================================================= folds
def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def fold_ids(n_rows: int, n_folds: int, seed: int, start: int = 0) -> np.ndarray:
    """Fold of each of rows ``start .. start + n_rows - 1``: a hash of (row, seed).

    Row ``i``'s fold depends only on ``i`` and ``seed`` (never on chunking), so every
    chunk computes its rows' folds locally.  Folds are balanced in expectation.

    Returns
    -------
    numpy.ndarray of int64, values in ``[0, n_folds)``.
    """
    n_folds = check_int(n_folds, "n_folds", minimum=2)
    seed = check_int(seed, "fold_seed", minimum=0)
    rows = np.arange(start, start + n_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        key = _splitmix64(np.asarray([seed], dtype=np.uint64))[0]
        h = _splitmix64(rows ^ key)
    return (h % np.uint64(n_folds)).astype(np.int64)


# ============================================================================== gram
@dataclass
class Gram:
    """Sufficient statistics of ridge regression, accumulated in float64.

    ``G = ΦᵀΦ`` (m × m), ``B = ΦᵀY`` (m × k), ``yy = Σ Y²`` per target (k,), ``n`` rows.
    With folds, ``G_folds[f]`` etc. hold the same sums over the rows of fold ``f`` only
    (``G = Σ_f G_folds[f]``), so fold ``f``'s training Gram is ``G − G_folds[f]``.
    """

    G: np.ndarray
    B: np.ndarray
    yy: np.ndarray
    n: int
    G_folds: list | None = None
    B_folds: list | None = None
    yy_folds: list | None = None
    n_folds: list | None = None


def _syrk_acc(G: np.ndarray, P) -> None:
    """G += PᵀP (upper triangle, in place) for float64 P, F-ordered host G."""
    if is_cupy(P):
        G += asnumpy(P.T @ P)
        return
    syrk_acc(G, P)


def _class_counts_chunk(y, rows, *, n_folds: int, fold_seed: int):
    """One chunk's rows per (fold, class) of one-hot-like targets (class = row argmax)."""
    y = asnumpy(y)
    out = np.zeros((n_folds, y.shape[1]))
    np.add.at(out, (fold_ids(y.shape[0], n_folds, fold_seed, int(asnumpy(rows)[0])),
                    y.argmax(axis=1)), 1)
    return out.reshape(1, -1)


def fold_class_counts(Y, n_folds: int, fold_seed: int, client=None) -> np.ndarray:
    """``(n_folds, k)`` rows of each class in each fold, for class-coded targets ``Y``
    (``(n, k)``, class = the row's argmax): one pass over ``Y``, reduced on the cluster
    for dask ``Y`` (nothing per row comes to the client)."""
    k = int(Y.shape[1])
    flat = reduce_rows(_class_counts_chunk, "dsketch-fold-counts", Y, rows=True, P=n_folds * k,
                       client=current_client(client) if isinstance(Y, da.Array) else None,
                       n_folds=n_folds, fold_seed=fold_seed)
    return np.asarray(flat).reshape(n_folds, k)


def gram_chunk(phi, y, rows=None, *, n_folds: int, fold_seed: int, slab: int, m: int, k: int):
    """One row chunk's [G (upper), B, yy, n] per fold, packed in a (1, F·P) float64 row.

    ``rows`` holds the chunk's first row index (needed only with ``n_folds``).  Reads
    ``phi`` slab by slab (``by_slabs``).
    """
    xp = get_namespace(phi)
    F = max(1, n_folds)
    Gs = [np.zeros((m, m), dtype=np.float64, order="F") for _ in range(F)]
    Bs = [np.zeros((m, k)) for _ in range(F)]
    yys = [np.zeros(k) for _ in range(F)]
    cnt = [0] * F
    fid = None
    if n_folds:
        fid = fold_ids(phi.shape[0], n_folds, fold_seed, int(np.asarray(rows).ravel()[0]))
    for sl in slabs(phi.shape[0], slab):
        P = phi[sl].astype(xp.float64, copy=False)
        Yh = np.asarray(y[sl], dtype=np.float64)
        if fid is None:
            groups = [(0, None)]
        else:
            groups = [(f, np.nonzero(fid[sl] == f)[0]) for f in range(F)]
        for f, idx in groups:
            if idx is None:
                Pf, Yfh = P, Yh
            elif idx.size == 0:
                continue
            else:
                Pf, Yfh = P[to_namespace(idx, xp)], Yh[idx]
            _syrk_acc(Gs[f], Pf)
            Bs[f] += asnumpy(Pf.T @ to_namespace(Yfh, xp))
            yys[f] += np.einsum("ij,ij->j", Yfh, Yfh)
            cnt[f] += Yfh.shape[0]
        del P
    return np.concatenate([np.concatenate([Gs[f].ravel(order="F"), Bs[f].ravel(), yys[f],
                                           [float(cnt[f])]]) for f in range(F)])[None, :]


def _unpack_gram(flat: np.ndarray, m: int, k: int):
    G = symmetrize_upper(flat[:m * m].reshape((m, m), order="F"))  # in place: no m×m copies
    o = m * m
    B = flat[o:o + m * k].reshape(m, k)
    o += m * k
    yy = flat[o:o + k].copy()
    n = int(round(flat[o + k]))
    return G, B.copy(), yy, n


def gram(Phi, Y, *, n_folds: int | None = None, fold_seed: int = 0, client=None,
         split_every: int = SPLIT_EVERY, slab_rows: int = SLAB_ROWS,
         progress: bool | None = None) -> Gram:
    """ΦᵀΦ, ΦᵀY, ΣY² and n in ONE pass over the row chunks of ``Φ``, in float64.

    Parameters
    ----------
    Phi : dask.array.Array or array
        ``(n, m)`` features: lazy (``embed``; never gathered) or in memory (NumPy/CuPy).
    Y : dask.array.Array or array
        ``(n,)`` or ``(n, k)`` targets (rechunked to ``Phi``'s rows).
    n_folds : int, optional
        Also return per-fold sums, fold of row ``i`` = ``fold_ids(..., fold_seed)[i]``,
        for k-fold CV of a regularization path without another pass.
    fold_seed : int
    client : distributed.Client, optional
        Default: the current default client, else dask's local scheduler.
    split_every : int
        Fan-in of the tree reduction.
    slab_rows : int
        Rows converted to float64 at once inside a chunk (bounds the float64 copy).
    progress : bool, optional
        Show distributed's progress bar (default: only in an interactive session).

    Returns
    -------
    Gram

    Notes
    -----
    Per-task memory: one chunk of ``Φ`` (``r × m``) — for ``Φ = embed(X, fmap)`` itself only
    a chunk of ``X`` and one slab's features, computed slab by slab in the task — an
    ``slab_rows × m`` float64 slab and ``F × (m² + m·k)`` float64 partials; reduction tasks
    hold ``split_every + 1`` partials.
    The client receives only the final ``F × (m² + m·k + k + 1)`` floats.  In-memory input
    runs the same per-chunk kernel once over all rows.
    """
    Phi = check_features(Phi)
    Y2, _ = as_targets(Y, Phi)
    m, k = int(Phi.shape[1]), int(Y2.shape[1])
    F = 0 if n_folds is None else check_int(n_folds, "n_folds", minimum=2)
    if F:
        check_folds(int(Phi.shape[0]), F)
    slab_rows = check_int(slab_rows, "slab_rows")
    split_every = check_int(split_every, "split_every", minimum=2)
    P1 = m * m + m * k + k + 1
    lazy = isinstance(Phi, da.Array)
    flat = reduce_rows(gram_chunk, "dsketch-gram", Phi, Y=Y2, rows=bool(F), P=max(F, 1) * P1,
                       client=current_client(client) if lazy else None, split_every=split_every,
                       progress=progress, by_slabs=True, n_folds=F, fold_seed=int(fold_seed),
                       slab=int(slab_rows), m=m, k=k)
    check_finite_sums(Phi, Y2, [flat[p * P1:p * P1 + m * m] for p in range(max(F, 1))],
                      [flat], "the Gram pass")
    if not F:
        G, B, yy, n = _unpack_gram(flat, m, k)
        return Gram(G=G, B=B, yy=yy, n=n)
    folds = [_unpack_gram(flat[f * P1:(f + 1) * P1], m, k) for f in range(F)]
    check_folds(int(Phi.shape[0]), F, [int(f[3]) for f in folds])
    return Gram(G=sum(f[0] for f in folds), B=sum(f[1] for f in folds),
                yy=sum(f[2] for f in folds), n=int(sum(f[3] for f in folds)),
                G_folds=[f[0] for f in folds], B_folds=[f[1] for f in folds],
                yy_folds=[f[2] for f in folds], n_folds=[int(f[3]) for f in folds])
