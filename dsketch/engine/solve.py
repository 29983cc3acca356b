"""Ridge regression on features: the solver policy, direct solves, the path and predict.

Owns :class:`FitReport` (what a fit did and why), :func:`fit_ridge` (one entry point:
direct or CG, chosen by :func:`choose_solver` with ONE direct-solver cut-off), the direct
solve of a :class:`.passes.Gram` by Cholesky (:func:`solve_gram`), the regularization
path from one Gram (:func:`ridge_path`: eigen path, k-fold CV from the per-fold Grams,
GCV, the posterior factor) and the lazy products with the weights (:func:`predict`,
:func:`predict_std`).  Everything serves a dask ``Φ`` (on the cluster) and an in-memory
NumPy one alike.  One-vs-rest least-squares classification is the same problem with a
one-hot ``Y`` built by the caller.

Must not contain kernel maths or stream over chunks itself (passes are ``passes``/``cg``);
the client only ever holds ``m × m`` or ``m × k`` float64 arrays.  Task names:
``dsketch-gram`` and ``dsketch-cg-*`` (passes), ``dsketch-predict`` (here).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import dask
import dask.array as da
import numpy as np
import scipy.linalg

from ..backend import get_namespace, to_namespace
from .cg import block_cg
from .cluster import current_client, worker_memory_limits
from .graph import token
from .passes import SLAB_ROWS, SPLIT_EVERY, Gram, as_targets, check_features, fmt_bytes, gram

__all__ = ["FitReport", "RidgePath", "fit_ridge", "choose_solver", "solve_gram", "ridge_path",
           "predict", "predict_std", "DIRECT_MAX_FEATURES"]

#: ``solver="auto"`` forms and factors the m × m Gram up to this many features, else CG.
DIRECT_MAX_FEATURES = 8192


# =========================================================================== records
@dataclass
class FitReport:
    """What a ridge fit did and why.

    ``residuals`` holds, per iteration, the largest relative residual
    ``‖B − A W‖ / ‖B‖`` over targets (``A = ΦᵀΦ + αI``, ``B = ΦᵀY``); a direct solve
    reports its single final residual (none for a regularization path).  ``persisted`` is
    None unless CG ran on a dask ``Φ``.
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
        """The report as a JSON-able dict (estimators' ``fit_report_``)."""
        d = asdict(self)
        d["residuals"] = [float(r) for r in self.residuals]
        return d


@dataclass
class RidgePath:
    """Result of :func:`ridge_path`: weights ``W`` (m, k) at the selected ``alpha``."""

    W: np.ndarray
    alpha: float
    cv_results: dict | None = None
    posterior_factor: np.ndarray | None = None


# ===================================================================== direct solve
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


# ================================================================ regularization path
def _eig(G):
    lam, V = scipy.linalg.eigh(G, driver="evd")
    return np.maximum(lam, 0.0), V


def _path_errors(G, B, Gv, Bv, yyv, alphas):
    """Squared validation error Σ‖Y_v − Φ_v W(α)‖² of ridge fitted on (G, B), per alpha.

    One eigendecomposition G = V Λ Vᵀ; for each α, W = V (VᵀB / (λ + α)) and
    err = yy_v − 2·tr(WᵀB_v) + tr(Wᵀ G_v W): O(m²·k) per alpha after the O(m³) eigh.
    """
    lam, V = _eig(G)
    C = V.T @ B
    out = np.empty(len(alphas))
    for j, a in enumerate(alphas):
        W = V @ (C / (lam + a)[:, None])
        out[j] = float(np.sum(yyv) - 2.0 * np.sum(W * Bv) + np.sum(W * (Gv @ W)))
    return np.maximum(out, 0.0)


def _cv_curve(gram: Gram, alphas):
    """Per-fold validation MSE of every alpha from the per-fold partial Grams.

    The train Gram of fold k is G − G_k (and B − B_k): no extra pass over the data.
    """
    nf = len(gram.G_folds)
    t = gram.B.shape[1]
    errs = np.empty((nf, len(alphas)))
    for k in range(nf):
        sq = _path_errors(gram.G - gram.G_folds[k], gram.B - gram.B_folds[k],
                          gram.G_folds[k], gram.B_folds[k], gram.yy_folds[k], alphas)
        errs[k] = sq / max(gram.n_folds[k] * t, 1)
    weights = np.asarray(gram.n_folds, dtype=float)
    mean = (weights[:, None] * errs).sum(axis=0) / weights.sum()
    results = {"alphas": [float(a) for a in alphas], "mean_test_mse": mean.tolist(),
               "std_test_mse": errs.std(axis=0).tolist()}
    for k in range(nf):
        results[f"split{k}_test_mse"] = errs[k].tolist()
    return results, mean


def _gcv_curve(gram: Gram, lam, V, alphas):
    """Generalized cross-validation n·RSS/(n − df)² from the full Gram only."""
    C = V.T @ gram.B
    n, t = gram.n, gram.B.shape[1]
    scores = np.empty(len(alphas))
    for j, a in enumerate(alphas):
        Wr = C / (lam + a)[:, None]
        rss = float(np.sum(gram.yy) - 2.0 * np.sum(Wr * C) + np.sum(Wr * (lam[:, None] * Wr)))
        df = float(np.sum(lam / (lam + a)))
        scores[j] = n * max(rss, 0.0) / t / max(n - df, 1e-12) ** 2
    return {"alphas": [float(a) for a in alphas], "gcv_mse": scores.tolist()}, scores


def ridge_path(gram: Gram, alphas, *, posterior: bool = False) -> RidgePath:
    """Select alpha from a grid and solve, from ONE Gram (no further pass over the data).

    Parameters
    ----------
    gram : Gram
        With per-fold sums (``gram(..., n_folds=F)``) a grid is scored by F-fold CV: fold
        ``f`` trains on ``G − G_f`` and is validated in closed form for every alpha after
        one eigendecomposition per fold.  Without folds, by generalized CV (GCV).
    alphas : array of float
        One value (no selection) or a grid; the selected one is the first minimum.
    posterior : bool
        Also return ``posterior_factor`` ``S = V diag(√(α/(λ + α)))`` (``ΦᵀΦ = VΛVᵀ``),
        so that ``α·φᵀ(ΦᵀΦ + αI)⁻¹φ = ‖φᵀS‖²`` (see :func:`predict_std`).

    Returns
    -------
    RidgePath
        ``cv_results`` holds ``alphas`` and ``mean_test_mse``, ``std_test_mse``,
        ``split{f}_test_mse`` (CV) or ``gcv_mse`` (GCV); None for a single alpha.  A grid
        or ``posterior`` solves through the eigendecomposition, a single alpha by Cholesky.
    """
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    grid = alphas.size > 1
    lam = V = cv_results = None
    if grid:
        if gram.G_folds is not None:
            cv_results, score = _cv_curve(gram, alphas)
        else:
            lam, V = _eig(gram.G)
            cv_results, score = _gcv_curve(gram, lam, V, alphas)
        alpha = float(alphas[int(np.argmin(score))])
    else:
        alpha = float(alphas[0])
    if not (grid or posterior):
        return RidgePath(W=np.asarray(solve_gram(gram, alpha), dtype=np.float64), alpha=alpha)
    if lam is None:
        lam, V = _eig(gram.G)
    W = V @ ((V.T @ gram.B) / (lam + alpha)[:, None])
    factor = V * np.sqrt(alpha / (lam + alpha))[None, :] if posterior else None
    return RidgePath(W=W, alpha=alpha, cv_results=cv_results, posterior_factor=factor)


# ========================================================================== policy
def choose_solver(n: int, m: int, k: int, client=None, *, split_every: int = SPLIT_EVERY,
                  direct_max_features: int = DIRECT_MAX_FEATURES) -> tuple[str, str]:
    """``("direct" | "cg", reason)`` from sizes and the workers' memory.

    Direct reads the data once (``n·m²`` flops, ``(split_every + 2)`` float64 ``m × m``
    Grams per reduction task, an ``O(m³)`` factorization on the client); CG needs
    ``1 + iterations`` passes (``4·n·m·k`` flops each, plus re-embedding when ``Φ`` is not
    persisted) but only ``m × k`` state.  Direct wins whenever its Gram fits: one pass
    beats tens of passes, so CG is chosen only for ``m > direct_max_features`` or when
    the Gram reduction would not fit half of the smallest worker's memory.  Without a
    client (in-memory input) only the feature count decides.
    """
    workers, wmin, _ = worker_memory_limits(client)
    gram_b = 8.0 * m * m
    need = gram_b * (split_every + 2)
    if m > direct_max_features:
        return "cg", (f"cg: m={m} features > {direct_max_features}; the m×m Gram "
                      f"({fmt_bytes(gram_b)}) and its O(m³) factorization cost more than CG's "
                      f"m×k state ({fmt_bytes(8.0 * m * k)})")
    if wmin and need > 0.5 * wmin:
        return "cg", (f"cg: the Gram reduction needs ~{fmt_bytes(need)} per task, more than half "
                      f"of the smallest worker's memory ({fmt_bytes(wmin)})")
    mem = f", fits worker memory ({fmt_bytes(wmin)})" if wmin else ""
    return "direct", (f"direct: m={m} features ≤ {direct_max_features}; one pass over n={n} rows "
                      f"builds the m×m Gram ({fmt_bytes(gram_b)}{mem}), then Cholesky on the client")


# ============================================================================= fit
def fit_ridge(Phi, Y, *, alpha: float, solver: str = "auto", tol: float = 1e-6,
              maxiter: int = 200, preconditioner: str | None = "nystrom",
              persist: bool | str = "auto", x0=None, client=None,
              callback: Callable | None = None, rank: int | None = None, seed: int = 0,
              split_every: int = SPLIT_EVERY, slab_rows: int = SLAB_ROWS,
              progress: bool | None = None):
    """Ridge regression ``min ‖Y − ΦW‖² + α‖W‖²`` on features.

    Parameters
    ----------
    Phi : dask.array.Array or array
        ``(n, m)`` features: lazy (``embed``; never gathered, passes run on the cluster)
        or in memory (NumPy/CuPy; the same passes as direct calls).
    Y : dask.array.Array or array
        ``(n,)`` or ``(n, k)`` float targets (one-hot for least-squares classification).
    alpha : float
        Penalty (> 0 for CG).
    solver : {"auto", "direct", "cg"}
        "direct": one pass for the Gram, Cholesky on the client.  "cg": block CG (one CG
        per target, all sharing each pass), each iteration exactly ONE tree reduction
        ``Σ_c Φcᵀ(Φc V)`` over chunks.  "auto": see :func:`choose_solver`.
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
        Keep a dask ``Φ`` in worker memory during CG (``"auto"``: when it fits half the
        workers' memory; see :func:`.cg.choose_persist`), else recompute it each pass.
    x0 : array (m,) or (m, k), optional
        CG warm start.
    client : distributed.Client, optional
        Default: the current client, else dask's local scheduler (unused for in-memory
        ``Φ``).
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
    ``m × m`` (direct) or ``m × (k + rank)`` (CG) partials; see :mod:`.passes`.
    """
    t0 = time.perf_counter()
    Phi = check_features(Phi)
    Y2, _ = as_targets(Y, Phi)
    n, m, k = int(Phi.shape[0]), int(Phi.shape[1]), int(Y2.shape[1])
    alpha = float(alpha)
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be finite and non-negative, got {alpha}")
    client = current_client(client) if isinstance(Phi, da.Array) else None
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
    W, info = block_cg(Phi, Y2, alpha=alpha, tol=tol, maxiter=maxiter,
                       preconditioner=preconditioner, persist=persist, x0=x0, client=client,
                       callback=callback, rank=rank, seed=seed, split_every=split_every,
                       slab_rows=slab_rows, progress=progress)
    info["reason"] = reason + "; " + info["reason"]
    rep = FitReport(solver="cg", n_samples=n, n_features=m, n_targets=k, alpha=alpha,
                    seconds=time.perf_counter() - t0, **info)
    return W, rep


# ========================================================================= predict
def _predict_chunk(phi, w):
    W = to_namespace(w, get_namespace(phi))
    if hasattr(phi, "tocsr"):  # scipy.sparse block
        return np.asarray(phi @ W)
    return phi.astype(W.dtype, copy=False) @ W


def predict(Phi, W):
    """``Φ W`` (``(n, k)``, or ``(n,)`` for a 1-D ``W``) in float64; lazy for a dask ``Φ``.

    A dask result is row-chunked like ``Φ`` with tasks named ``dsketch-predict``; ``W`` is
    one key in the graph.  Blocks follow ``Φ``'s device (CuPy in, CuPy out).  Memory per
    task: one chunk of ``Φ`` plus its ``rows × k`` float64 output.
    """
    Phi = check_features(Phi) if isinstance(Phi, da.Array) else Phi
    W = np.asarray(W, dtype=np.float64)
    one_d = W.ndim == 1
    W2 = W[:, None] if one_d else W
    if W2.ndim != 2 or W2.shape[0] != Phi.shape[1]:
        raise ValueError(f"W has shape {W.shape}; expected ({Phi.shape[1]},) or ({Phi.shape[1]}, k)")
    W2 = np.ascontiguousarray(W2)
    if isinstance(Phi, da.Array):
        Wd = dask.delayed(W2, name=f"dsketch-predict-weights-{token(W2)}", pure=True)
        meta = get_namespace(Phi._meta).empty((0, 0), dtype=np.float64)
        out = da.blockwise(_predict_chunk, "ij", Phi, "ij", Wd, None,
                           adjust_chunks={"j": W2.shape[1]}, align_arrays=False,
                           concatenate=True, dtype=np.float64, meta=meta,
                           name=f"dsketch-predict-{token(Phi.name, Wd.key)}")
    else:
        out = _predict_chunk(Phi, W2)
    return out[:, 0] if one_d else out


def predict_std(Phi, S):
    """``‖φ(x)ᵀ S‖`` per row: the posterior std for ``S`` = :func:`ridge_path`'s factor.

    Lazy for a dask ``Φ`` (through :func:`predict`, ``S`` travels as one key).
    """
    return (predict(Phi, S) ** 2).sum(axis=1) ** 0.5
