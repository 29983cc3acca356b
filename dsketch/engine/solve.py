"""Ridge solvers over lazy features: one-pass Gram + Cholesky, and distributed block CG.

Owns the streaming reductions over row chunks of ``Φ`` (the ``n × m`` features, lazy)
and the solves of ``(ΦᵀΦ + αI) W = ΦᵀY``.  One-vs-rest least-squares classification is
the same problem with a one-hot ``Y`` built by the caller.  Must not contain kernel maths
and must never gather anything ``n × m`` (or ``n × anything``) on the client: every pass
is a tree reduction whose per-chunk results are ``m × m`` or ``m × k`` float64 partials.

Memory bounds (per worker task, ``r`` = rows of a chunk, ``m`` features, ``k`` targets,
``s`` = ``slab_rows`` ≤ r, ``F`` folds, ``e`` = ``split_every``):

* embed + gram chunk: ``r·(d + m)`` input/feature elements, plus an ``s × m`` float64
  slab, plus ``F·(m² + m·k)`` float64 partials; a reduction task holds ``e + 1`` partials.
* CG matvec chunk: ``r·(d + m)`` elements, an ``s × (m + k)`` float64 slab, one ``m × k``
  float64 partial; reduction tasks hold ``e + 1`` of those.
* with persisted ``Φ``: additionally ``n·m/workers`` feature elements per worker.

Task names (dashboard groups, via ``dask.utils.key_split``): ``dsketch-gram``,
``dsketch-cg-setup``, ``dsketch-cg-matvec``, ``dsketch-predict`` (plus ``-partial`` /
``-aggregate`` suffixes of the tree levels).
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import scipy.linalg

from ..backend import asnumpy, get_namespace, is_cupy
from .cluster import current_client, show_progress, worker_memory_limits
from .graph import token

__all__ = [
    "FitReport",
    "Gram",
    "gram",
    "solve_gram",
    "fit_ridge",
    "predict",
    "fold_ids",
    "choose_solver",
    "choose_persist",
]

_SLAB_ROWS = 8192
_SPLIT_EVERY = 4
_DIRECT_MAX_FEATURES = 8192
_PERSIST_FRACTION = 0.5  # persist Φ when it takes at most this share of worker memory


# ============================================================================= records
@dataclass
class FitReport:
    """What a ridge fit did and why.

    ``residuals`` holds, per iteration, the largest relative residual
    ``‖B − A W‖ / ‖B‖`` over targets (``A = ΦᵀΦ + αI``, ``B = ΦᵀY``); a direct solve
    reports its single final residual.  ``persisted`` is None for direct solves.
    """

    solver: str
    reason: str
    n_samples: int
    n_features: int
    n_targets: int
    alpha: float
    iterations: int | None = None
    residuals: list = field(default_factory=list)
    converged: bool = True
    seconds: float = 0.0
    persisted: bool | None = None
    preconditioner: str | None = None
    passes: int = 0
    seconds_per_iteration: float | None = None
    timings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["residuals"] = [float(r) for r in self.residuals]
        return d


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


# ============================================================================== folds
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


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
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    rows = np.arange(start, start + n_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        key = _splitmix64(np.asarray([seed], dtype=np.uint64))[0]
        h = _splitmix64(rows ^ key)
    return (h % np.uint64(n_folds)).astype(np.int64)


# ===================================================================== graph helpers
def _targets(Y, Phi):
    """Y as a 2-D float64 dask array row-chunked like Φ; and whether it was 1-D."""
    import dask.array as da

    if not isinstance(Y, da.Array):
        Y = da.from_array(np.asarray(Y), chunks=(Phi.chunks[0],) + ((-1,) if np.ndim(Y) == 2 else ()))
    if Y.ndim not in (1, 2):
        raise ValueError(f"Y must be (n,) or (n, k), got shape {Y.shape}")
    if Y.shape[0] != Phi.shape[0]:
        raise ValueError(f"Phi has {Phi.shape[0]} rows but Y has {Y.shape[0]}")
    was_1d = Y.ndim == 1
    if was_1d:
        Y = Y[:, None]
    if Y.dtype != np.float64:
        Y = Y.astype(np.float64)
    if Y.chunks[0] != Phi.chunks[0] or len(Y.chunks[1]) > 1:
        Y = Y.rechunk({0: Phi.chunks[0], 1: -1})
    return Y, was_1d


def _check_phi(Phi):
    import dask.array as da

    if not isinstance(Phi, da.Array):
        raise TypeError(f"Phi must be a dask array (dsketch.engine.embed), got {type(Phi).__name__}")
    if Phi.ndim != 2:
        raise ValueError(f"Phi must be (n, m), got shape {Phi.shape}")
    if len(Phi.chunks[1]) > 1:
        Phi = Phi.rechunk({1: -1})
    return Phi


def _per_chunk(func, name: str, Phi, *, Y=None, V=None, rows: bool = False, P: int, **kw):
    """Blockwise ``func(phi, [y], [v], [row0], **kw) -> (1, P)`` float64 per row chunk.

    Built so that dask's blockwise optimization fuses it with the embed (and read and
    validate) tasks of ``Phi``: ``Y`` shares ``Phi``'s index (no contraction), the small
    client array ``V`` enters as ONE delayed key (not copied into every task, and not a
    contracted blockwise input, which would stop the fusion), and the chunk's first row
    index comes from a tiny per-chunk array.
    """
    import dask
    import dask.array as da

    parts_id: list = [name, Phi.name, kw]
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


def _tree_sum(parts, name: str, split_every: int):
    """Σ over row chunks of ``(1, P)`` partials: a tree reduction named ``name``.

    ``name`` must be alphabetic hyphen words (dask appends the token): the levels are then
    ``name``, ``name-partial`` and ``name-aggregate`` after ``dask.utils.key_split``.
    """
    import dask.array as da

    return da.reduction(parts, chunk=_rs_chunk, combine=_rs_combine, aggregate=_rs_aggregate,
                        axis=0, keepdims=False, dtype=np.float64, split_every=split_every,
                        concatenate=False, name=name, meta=np.empty((0,)))


def _compute(arr, client, progress: bool | None = None) -> np.ndarray:
    if client is None:
        return np.asarray(arr.compute())
    fut = client.compute(arr)
    show_progress(fut, enabled=progress)
    return np.asarray(fut.result())


# ======================================================================= chunk kernels
def _slabs(n: int, slab: int):
    for s in range(0, n, slab):
        yield slice(s, min(n, s + slab))


def _syrk_acc(G: np.ndarray, P: np.ndarray) -> None:
    """G += PᵀP (upper triangle, in place) for NumPy float64 P, F-ordered G."""
    if is_cupy(P):
        G += asnumpy(P.T @ P)
        return
    from scipy.linalg.blas import dsyrk

    out = dsyrk(1.0, P.T, beta=1.0, c=G, trans=0, lower=0, overwrite_c=1)
    if out is not G:  # pragma: no cover - scipy copied: keep the result
        G[...] = out


def _gram_chunk(phi, y, rows=None, *, n_folds: int, fold_seed: int, slab: int, m: int, k: int):
    """One row chunk's [G (upper), B, yy, n] per fold, packed in a (1, F·P) float64 row."""
    xp = get_namespace(phi)
    F = max(1, n_folds)
    Gs = [np.zeros((m, m), dtype=np.float64, order="F") for _ in range(F)]
    Bs = [np.zeros((m, k)) for _ in range(F)]
    yys = [np.zeros(k) for _ in range(F)]
    cnt = [0] * F
    fid = None
    if n_folds:
        fid = fold_ids(phi.shape[0], n_folds, fold_seed, int(np.asarray(rows).ravel()[0]))
    for sl in _slabs(phi.shape[0], slab):
        P = phi[sl].astype(xp.float64)
        Yh = np.asarray(y[sl], dtype=np.float64)
        Yd = xp.asarray(Yh) if xp is not np else Yh
        if fid is None:
            groups = [(0, None)]
        else:
            groups = [(f, np.nonzero(fid[sl] == f)[0]) for f in range(F)]
        for f, idx in groups:
            if idx is not None:
                if idx.size == 0:
                    continue
                Pf, Yf, Yfh = P[xp.asarray(idx) if xp is not np else idx], None, Yh[idx]
                Yf = Yd[xp.asarray(idx) if xp is not np else idx]
            else:
                Pf, Yf, Yfh = P, Yd, Yh
            _syrk_acc(Gs[f], Pf)
            Bs[f] += asnumpy(Pf.T @ Yf)
            yys[f] += np.einsum("ij,ij->j", Yfh, Yfh)
            cnt[f] += Yfh.shape[0]
    return np.concatenate([np.concatenate([Gs[f].ravel(order="F"), Bs[f].ravel(), yys[f],
                                           [float(cnt[f])]]) for f in range(F)])[None, :]


def _matvec_chunk(phi, v, *, slab: int):
    """Φcᵀ(Φc V) of one row chunk, float64, as a (1, m·t) row."""
    xp = get_namespace(phi)
    V = xp.asarray(v, dtype=xp.float64) if xp is not np else np.asarray(v, dtype=np.float64)
    out = xp.zeros((phi.shape[1], V.shape[1]), dtype=xp.float64)
    for sl in _slabs(phi.shape[0], slab):
        P = phi[sl].astype(xp.float64)
        out += P.T @ (P @ V)
    return asnumpy(out).ravel()[None, :]


@functools.lru_cache(maxsize=4)
def _omega(m: int, rank: int, seed: int) -> np.ndarray:
    """The seeded Gaussian test matrix of the Nyström sketch (same in every process)."""
    from ..backend import rng

    return rng(seed, "engine", "nystrom", m, rank).standard_normal((m, rank))


def _setup_chunk(phi, y, v=None, *, slab: int, m: int, k: int, rank: int, seed: int):
    """CG setup for one chunk: [ΦᵀY, Σ Φ² (diag), Φᵀ(Φ [Ω | x0]), ΣY², rows] packed."""
    xp = get_namespace(phi)
    cols = []
    if rank:
        cols.append(_omega(m, rank, seed))
    if v is not None:
        cols.append(np.asarray(v, dtype=np.float64))
    Vh = np.concatenate(cols, axis=1) if cols else np.zeros((m, 0))
    V = xp.asarray(Vh) if xp is not np else Vh
    B = xp.zeros((m, k), dtype=xp.float64)
    diag = xp.zeros(m, dtype=xp.float64)
    AV = xp.zeros((m, Vh.shape[1]), dtype=xp.float64)
    yy = np.zeros(k)
    for sl in _slabs(phi.shape[0], slab):
        P = phi[sl].astype(xp.float64)
        Yh = np.asarray(y[sl], dtype=np.float64)
        Yd = xp.asarray(Yh) if xp is not np else Yh
        B += P.T @ Yd
        diag += xp.einsum("ij,ij->j", P, P)
        if Vh.shape[1]:
            AV += P.T @ (P @ V)
        yy += np.einsum("ij,ij->j", Yh, Yh)
    return np.concatenate([asnumpy(B).ravel(), asnumpy(diag), asnumpy(AV).ravel(), yy,
                           [float(phi.shape[0])]])[None, :]


# ================================================================================ gram
def _unpack_gram(flat: np.ndarray, m: int, k: int):
    G = flat[:m * m].reshape((m, m), order="F")
    G = np.triu(G) + np.triu(G, 1).T
    o = m * m
    B = flat[o:o + m * k].reshape(m, k)
    o += m * k
    yy = flat[o:o + k].copy()
    n = int(round(flat[o + k]))
    return G, B.copy(), yy, n


def gram(Phi, Y, *, n_folds: int | None = None, fold_seed: int = 0, client=None,
         split_every: int = _SPLIT_EVERY, slab_rows: int = _SLAB_ROWS,
         progress: bool | None = None) -> Gram:
    """ΦᵀΦ, ΦᵀY, ΣY² and n in ONE pass over the row chunks of ``Φ``, in float64.

    Parameters
    ----------
    Phi : dask.array.Array
        ``(n, m)`` lazy features (``embed``); never gathered.
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
    Per-task memory: one chunk of ``Φ`` (``r × m``), an ``slab_rows × m`` float64 slab and
    ``F × (m² + m·k)`` float64 partials; reduction tasks hold ``split_every + 1`` partials.
    The client receives only the final ``F × (m² + m·k + k + 1)`` floats.
    """
    Phi = _check_phi(Phi)
    Y2, _ = _targets(Y, Phi)
    m, k = int(Phi.shape[1]), int(Y2.shape[1])
    F = int(n_folds or 0)
    if F == 1 or F < 0:
        raise ValueError(f"n_folds must be None or at least 2, got {n_folds}")
    P1 = m * m + m * k + k + 1
    parts = _per_chunk(_gram_chunk, "dsketch-gram", Phi, Y=Y2, rows=bool(F), P=max(F, 1) * P1,
                       n_folds=F, fold_seed=int(fold_seed), slab=int(slab_rows), m=m, k=k)
    total = _tree_sum(parts, "dsketch-gram", split_every)
    flat = _compute(total, current_client(client), progress)
    if not F:
        G, B, yy, n = _unpack_gram(flat, m, k)
        return Gram(G=G, B=B, yy=yy, n=n)
    folds = [_unpack_gram(flat[f * P1:(f + 1) * P1], m, k) for f in range(F)]
    G = sum(f[0] for f in folds)
    B = sum(f[1] for f in folds)
    yy = sum(f[2] for f in folds)
    n = sum(f[3] for f in folds)
    return Gram(G=G, B=B, yy=yy, n=int(n), G_folds=[f[0] for f in folds],
                B_folds=[f[1] for f in folds], yy_folds=[f[2] for f in folds],
                n_folds=[int(f[3]) for f in folds])


def solve_gram(gram: Gram, alpha) -> np.ndarray:
    """Ridge weights ``(G + αI)⁻¹ B`` by Cholesky (``scipy.linalg.cho_factor``), float64.

    Parameters
    ----------
    gram : Gram
    alpha : float or array of shape (k,)
        Penalty (> 0), one for all targets or one per target.

    Returns
    -------
    numpy.ndarray ``(m, k)`` float64.
    """
    G = np.asarray(gram.G, dtype=np.float64)
    B = np.asarray(gram.B, dtype=np.float64)
    if B.ndim == 1:
        B = B[:, None]
    m = G.shape[0]
    a = np.asarray(alpha, dtype=np.float64)
    if np.any(~np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"alpha must be finite and non-negative, got {alpha}")
    if a.ndim == 0:
        return _cho_solve(G, float(a), B)
    if a.shape != (B.shape[1],):
        raise ValueError(f"alpha has shape {a.shape}; expected a scalar or ({B.shape[1]},) "
                         f"(one per target)")
    W = np.empty((m, B.shape[1]))
    for j, aj in enumerate(a):
        W[:, j] = _cho_solve(G, float(aj), B[:, j:j + 1])[:, 0]
    return W


def _cho_solve(G, alpha, B):
    A = G + alpha * np.eye(G.shape[0])
    try:
        c = scipy.linalg.cho_factor(A, lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        raise np.linalg.LinAlgError(
            f"G + alpha·I is not positive definite (alpha={alpha}); increase alpha") from None
    return scipy.linalg.cho_solve(c, B, check_finite=False)


# ====================================================================== decisions
def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(b) < 1024 or unit == "TiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} TiB"  # pragma: no cover


def choose_solver(n: int, m: int, k: int, client=None, *, split_every: int = _SPLIT_EVERY,
                  direct_max_features: int = _DIRECT_MAX_FEATURES) -> tuple[str, str]:
    """``("direct" | "cg", reason)`` from sizes and the workers' memory.

    Direct reads the data once (``n·m²`` flops, ``(split_every + 2)`` float64 ``m × m``
    Grams per reduction task, an ``O(m³)`` factorization on the client); CG needs
    ``1 + iterations`` passes (``4·n·m·k`` flops each, plus re-embedding when ``Φ`` is not
    persisted) but only ``m × k`` state.  Direct wins whenever its Gram fits: one pass
    beats tens of passes, so CG is chosen only for ``m > direct_max_features`` or when
    the Gram reduction would not fit half of the smallest worker's memory.
    """
    workers, wmin, _ = worker_memory_limits(client)
    gram_b = 8.0 * m * m
    need = gram_b * (split_every + 2)
    if m > direct_max_features:
        return "cg", (f"cg: m={m} features > {direct_max_features}; the m×m Gram "
                      f"({_fmt_bytes(gram_b)}) and its O(m³) factorization cost more than CG's "
                      f"m×k state ({_fmt_bytes(8.0 * m * k)})")
    if wmin and need > 0.5 * wmin:
        return "cg", (f"cg: the Gram reduction needs ~{_fmt_bytes(need)} per task, more than half "
                      f"of the smallest worker's memory ({_fmt_bytes(wmin)})")
    mem = f", fits worker memory ({_fmt_bytes(wmin)})" if wmin else ""
    return "direct", (f"direct: m={m} features ≤ {direct_max_features}; one pass over n={n} rows "
                      f"builds the m×m Gram ({_fmt_bytes(gram_b)}{mem}), then Cholesky on the client")


def choose_persist(Phi, client, persist) -> tuple[bool, str]:
    """Whether to keep ``Φ`` in worker memory during CG, and why."""
    nbytes = float(Phi.shape[0]) * Phi.shape[1] * np.dtype(Phi.dtype).itemsize
    if persist is True:
        if client is None:
            return False, "persist=True but no distributed client: Φ recomputed each iteration"
        return True, f"persist=True: Φ ({_fmt_bytes(nbytes)}) kept on workers"
    if persist is False:
        return False, "persist=False: Φ recomputed from the spec each iteration"
    if persist != "auto":
        raise ValueError(f"persist must be True, False or 'auto', got {persist!r}")
    if client is None:
        return False, ("no distributed client: Φ recomputed from the spec each iteration "
                       "(nothing n×m is held in this process)")
    workers, wmin, total = worker_memory_limits(client)
    budget = _PERSIST_FRACTION * total
    if total and nbytes <= budget:
        return True, (f"Φ ({_fmt_bytes(nbytes)}) fits in {int(_PERSIST_FRACTION * 100)}% of "
                      f"the {workers} workers' memory ({_fmt_bytes(total)}): persisted")
    return False, (f"Φ ({_fmt_bytes(nbytes)}) exceeds {int(_PERSIST_FRACTION * 100)}% of the "
                   f"{workers} workers' memory ({_fmt_bytes(total)}): recomputed from the spec "
                   f"each iteration")


# ======================================================================= preconditioners
class _Nystrom:
    """Randomized Nyström preconditioner (Frangella, Tropp & Udell, 2023).

    From the sketch ``Y = A_nys Ω`` (``A_nys = ΦᵀΦ``, ``Ω = QR`` of a seeded Gaussian),
    ``Â = U Λ̂ Uᵀ`` and ``P⁻¹ = (λ̂_ℓ + μ) U (Λ̂ + μI)⁻¹ Uᵀ + (I − UUᵀ)``, ``μ = α``.
    """

    def __init__(self, omega: np.ndarray, sketch: np.ndarray, mu: float):
        m = omega.shape[0]
        Q, R = np.linalg.qr(omega)
        Yq = scipy.linalg.solve_triangular(R, sketch.T, trans="T", lower=False).T  # Y R⁻¹
        nu = math.sqrt(m) * np.finfo(np.float64).eps * max(np.linalg.norm(Yq, 2), 1e-300)
        Ynu = Yq + nu * Q
        core = Q.T @ Ynu
        core = (core + core.T) / 2
        shift = 0.0
        for _ in range(8):
            try:
                C = scipy.linalg.cholesky(core + shift * np.eye(core.shape[0]), lower=False)
                break
            except np.linalg.LinAlgError:
                shift = max(shift * 10, nu * 10, 1e-12 * float(np.trace(core)) / core.shape[0])
        else:  # pragma: no cover
            raise np.linalg.LinAlgError("Nyström core is not positive definite")
        Bm = scipy.linalg.solve_triangular(C, Ynu.T, trans="T", lower=False).T
        U, S, _ = np.linalg.svd(Bm, full_matrices=False)
        lam = np.maximum(S ** 2 - nu, 0.0)
        self.U = U
        self.lam = lam
        self.mu = float(mu)
        self.scale = (lam[-1] + self.mu) / (lam + self.mu)

    def __call__(self, R: np.ndarray) -> np.ndarray:
        UtR = self.U.T @ R
        return R + self.U @ ((self.scale - 1.0)[:, None] * UtR)


class _Jacobi:
    def __init__(self, diag: np.ndarray, mu: float):
        self.inv = 1.0 / np.maximum(diag + mu, np.finfo(np.float64).tiny)

    def __call__(self, R):
        return self.inv[:, None] * R


def _identity(R):
    return R


# ============================================================================== fit
def fit_ridge(Phi, Y, *, alpha: float, solver: str = "auto", tol: float = 1e-6,
              maxiter: int = 200, preconditioner: str | None = "nystrom",
              persist: bool | str = "auto", x0=None, client=None,
              callback: Callable | None = None, rank: int | None = None, seed: int = 0,
              split_every: int = _SPLIT_EVERY, slab_rows: int = _SLAB_ROWS,
              progress: bool | None = None):
    """Ridge regression ``min ‖Y − ΦW‖² + α‖W‖²`` on lazy features.

    Parameters
    ----------
    Phi : dask.array.Array
        ``(n, m)`` features (``embed``); never gathered.
    Y : dask.array.Array
        ``(n,)`` or ``(n, k)`` float targets (one-hot for least-squares classification).
    alpha : float
        Penalty (> 0 for CG).
    solver : {"auto", "direct", "cg"}
        "direct": one pass for the Gram, Cholesky on the client.  "cg": distributed block
        CG (one CG per target, all sharing each pass), each iteration exactly ONE tree
        reduction ``Σ_c Φcᵀ(Φc V)`` over chunks.  "auto": see :func:`choose_solver`.
    tol : float
        CG stops when every target's relative residual ``‖b − Aw‖/‖b‖ ≤ tol``.  The
        relative error of ``w`` is at most ``cond(A)`` times that (much less with the
        Nyström preconditioner on a well-captured spectrum).
    maxiter : int
    preconditioner : {"nystrom", "jacobi", None}
        "nystrom" (default): randomized Nyström preconditioner of rank ``rank`` from a
        sketch ``ΦᵀΦΩ`` computed in the setup pass (seeded Gaussian ``Ω``).
        "jacobi": ``diag(ΦᵀΦ) + α``.
    persist : bool or "auto"
        Keep ``Φ`` in worker memory during CG (``"auto"``: when it fits half the workers'
        memory; see :func:`choose_persist`), else recompute it from the spec each pass.
    x0 : array (m,) or (m, k), optional
        CG warm start.
    client : distributed.Client, optional
        Default: the current client, else dask's local scheduler.
    callback : callable, optional
        ``callback(residual, iteration)`` after each CG iteration (largest relative
        residual over targets).
    rank : int, optional
        Nyström sketch size; default ``min(256, max(8, m // 8), m // 2)`` (the sketch costs
        about ``rank / k`` matvecs in the setup pass).
    seed : int
        Seed of the Nyström test matrix.

    Returns
    -------
    W : numpy.ndarray ``(m, k)`` float64
    report : FitReport

    Notes
    -----
    Passes over the data: direct 1; CG ``1 + iterations`` (setup + one per iteration).
    Worker memory per task is bounded by one chunk (``rows × (d + m)``) plus float64
    ``m × m`` (direct) or ``m × (k + rank)`` (CG) partials; see the module docstring.
    """
    t0 = time.perf_counter()
    Phi = _check_phi(Phi)
    Y2, _ = _targets(Y, Phi)
    n, m, k = int(Phi.shape[0]), int(Phi.shape[1]), int(Y2.shape[1])
    alpha = float(alpha)
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be finite and non-negative, got {alpha}")
    client = current_client(client)
    if solver == "auto":
        solver, reason = choose_solver(n, m, k, client, split_every=split_every)
    elif solver in ("direct", "cg"):
        reason = f"solver={solver!r} requested"
    else:
        raise ValueError(f"solver must be 'auto', 'direct' or 'cg', got {solver!r}")
    if solver == "direct":
        g = gram(Phi, Y2, client=client, split_every=split_every, slab_rows=slab_rows,
                 progress=progress)
        t_pass = time.perf_counter() - t0
        W = solve_gram(g, alpha)
        bnorm = np.linalg.norm(g.B, axis=0)
        res = np.linalg.norm(g.B - (g.G @ W + alpha * W), axis=0) / np.where(bnorm > 0, bnorm, 1)
        rep = FitReport(solver="direct", reason=reason, n_samples=n, n_features=m, n_targets=k,
                        alpha=alpha, iterations=None, residuals=[float(res.max())],
                        converged=True, seconds=time.perf_counter() - t0, persisted=None,
                        passes=1, timings={"gram_s": t_pass,
                                           "solve_s": time.perf_counter() - t0 - t_pass})
        return W, rep
    W, rep = _cg(Phi, Y2, alpha=alpha, tol=tol, maxiter=maxiter, preconditioner=preconditioner,
                 persist=persist, x0=x0, client=client, callback=callback, rank=rank, seed=seed,
                 split_every=split_every, slab_rows=slab_rows, progress=progress)
    rep.reason = reason + "; " + rep.reason
    rep.seconds = time.perf_counter() - t0
    return W, rep


def _cg(Phi, Y2, *, alpha, tol, maxiter, preconditioner, persist, x0, client, callback, rank,
        seed, split_every, slab_rows, progress):
    n, m, k = int(Phi.shape[0]), int(Phi.shape[1]), int(Y2.shape[1])
    if alpha <= 0:
        raise ValueError("cg needs alpha > 0 (the system must be positive definite)")
    if preconditioner not in ("nystrom", "jacobi", None):
        raise ValueError(f"preconditioner must be 'nystrom', 'jacobi' or None, got {preconditioner!r}")
    timings: dict = {}
    do_persist, why_persist = choose_persist(Phi, client, persist)
    Phi_run = client.persist(Phi) if do_persist else Phi
    if x0 is not None:
        X = np.array(x0, dtype=np.float64, copy=True)
        if X.ndim == 1:
            X = X[:, None]
        if X.shape != (m, k):
            raise ValueError(f"x0 has shape {np.shape(x0)}, expected ({m}, {k}) or ({m},)")
    else:
        X = np.zeros((m, k))
    ell = 0
    if preconditioner == "nystrom":
        # the sketch pass costs ~ell/k matvecs: keep ell a small fraction of m by default
        ell = int(rank) if rank else min(256, max(8, m // 8), m // 2)
        ell = max(0, min(ell, m))
        if ell < 1:
            preconditioner = "jacobi"
    # ---- setup pass: B, diag, sketch (and A x0) in ONE reduction
    t = time.perf_counter()
    x0d = X if x0 is not None else None
    P_setup = m * k + m + m * (ell + (k if x0 is not None else 0)) + k + 1
    parts = _per_chunk(_setup_chunk, "dsketch-cg-setup", Phi_run, Y=Y2, V=x0d, P=P_setup,
                       slab=int(slab_rows), m=m, k=k, rank=ell, seed=int(seed))
    flat = _compute(_tree_sum(parts, "dsketch-cg-setup", split_every),
                    client, progress)
    o = 0
    B = flat[o:o + m * k].reshape(m, k); o += m * k
    diag = flat[o:o + m]; o += m
    w = ell + (k if x0 is not None else 0)
    AV = flat[o:o + m * w].reshape(m, w); o += m * w
    timings["setup_s"] = time.perf_counter() - t
    if preconditioner == "nystrom":
        try:
            M = _Nystrom(_omega(m, ell, int(seed)), AV[:, :ell], alpha)
            pc = f"nystrom (rank {ell})"
        except np.linalg.LinAlgError as exc:  # pragma: no cover - numerical fallback
            M, pc = _Jacobi(diag, alpha), f"jacobi (Nyström failed: {exc})"
    elif preconditioner == "jacobi":
        M, pc = _Jacobi(diag, alpha), "jacobi"
    else:
        M, pc = _identity, "none"
    R = B - (AV[:, ell:] + alpha * X) if x0 is not None else B.copy()
    bnorm = np.linalg.norm(B, axis=0)
    bnorm = np.where(bnorm > 0, bnorm, 1.0)
    res = np.linalg.norm(R, axis=0) / bnorm
    history = [float(res.max())]
    Z = M(R)
    D = Z.copy()
    rz = np.einsum("ij,ij->j", R, Z)
    it = 0
    iter_times = []
    while it < maxiter and not np.all(res <= tol):
        active = np.nonzero(res > tol)[0]
        t = time.perf_counter()
        parts = _per_chunk(_matvec_chunk, "dsketch-cg-matvec", Phi_run, V=D[:, active],
                           P=m * len(active),
                           slab=int(slab_rows))
        # no progress bar per iteration (the residual callback reports progress)
        AD = _compute(_tree_sum(parts, "dsketch-cg-matvec", split_every), client,
                      False).reshape(m, len(active))
        AD += alpha * D[:, active]
        iter_times.append(time.perf_counter() - t)
        it += 1
        Da = D[:, active]
        pAp = np.einsum("ij,ij->j", Da, AD)
        a = rz[active] / pAp
        X[:, active] += Da * a
        R[:, active] -= AD * a
        res[active] = np.linalg.norm(R[:, active], axis=0) / bnorm[active]
        Za = M(R[:, active])
        rz_new = np.einsum("ij,ij->j", R[:, active], Za)
        beta = rz_new / rz[active]
        D[:, active] = Za + Da * beta
        rz[active] = rz_new
        history.append(float(res.max()))
        if callback is not None:
            try:
                callback(float(res.max()), it)
            except Exception as exc:  # progress must never break a fit
                warnings.warn(f"CG callback raised {exc!r}; ignored", RuntimeWarning)
    converged = bool(np.all(res <= tol))
    del Phi_run
    timings["iterations_s"] = float(sum(iter_times))
    rep = FitReport(solver="cg", reason=f"{why_persist}; preconditioner {pc}", n_samples=n,
                    n_features=m, n_targets=k, alpha=alpha, iterations=it, residuals=history,
                    converged=converged, persisted=do_persist, preconditioner=pc,
                    passes=1 + it, seconds_per_iteration=(float(np.mean(iter_times))
                                                          if iter_times else None),
                    timings=timings)
    if not converged:
        warnings.warn(f"CG did not reach tol={tol} in {maxiter} iterations "
                      f"(largest relative residual {res.max():.2e})", RuntimeWarning)
    return X, rep


# ============================================================================ predict
def _predict_chunk(phi, w):
    xp = get_namespace(phi)
    W = xp.asarray(w) if xp is not np else w
    if hasattr(phi, "tocsr"):  # scipy.sparse block
        return np.asarray(phi @ W)
    return phi.astype(W.dtype, copy=False) @ W


def predict(Phi, W):
    """Lazy ``Φ W`` (``(n, k)``, or ``(n,)`` for a 1-D ``W``), row-chunked like ``Φ``.

    Tasks are named ``dsketch-predict``; ``W`` is one key in the graph.  Blocks follow
    ``Φ``'s device (CuPy in, CuPy out).  Memory per task: one chunk of ``Φ`` plus its
    ``rows × k`` float64 output.
    """
    import dask.array as da

    Phi = _check_phi(Phi)
    W = np.asarray(W, dtype=np.float64)
    one_d = W.ndim == 1
    W2 = W[:, None] if one_d else W
    if W2.ndim != 2 or W2.shape[0] != Phi.shape[1]:
        raise ValueError(f"W has shape {W.shape}; expected ({Phi.shape[1]},) or ({Phi.shape[1]}, k)")
    import dask

    W2 = np.ascontiguousarray(W2)
    Wd = dask.delayed(W2, name=f"dsketch-predict-weights-{token(W2)}", pure=True)
    meta_mod = type(Phi._meta).__module__.split(".")[0]
    if meta_mod == "cupy":
        import cupy

        meta = cupy.empty((0, 0), dtype=np.float64)
    else:
        meta = np.empty((0, 0), dtype=np.float64)
    out = da.blockwise(_predict_chunk, "ij", Phi, "ij", Wd, None, adjust_chunks={"j": W2.shape[1]},
                       align_arrays=False, concatenate=True, dtype=np.float64, meta=meta,
                       name=f"dsketch-predict-{token(Phi.name, Wd.key)}")
    return out[:, 0] if one_d else out
