"""Ridge regression on features: the solver policy, direct solves, the path and predict.

Owns :class:`FitReport` (what a fit did and why), :class:`RidgeFit` (weights, λ, selection
scores and report: what every solver hands :func:`.ridge.fit_ridge_model`), :func:`fit_ridge`
(features: direct or CG, chosen by :func:`choose_solver` with ONE direct-solver cut-off), the direct
solve of a :class:`.passes.Gram` by Cholesky (:func:`solve_gram`, through
:func:`.linalg.cholesky`, blocked for large ``m``) and the lazy products with the weights
(:func:`predict`, :func:`predict_std`); re-exports the regularization path of
:mod:`.path` (:func:`fit_path`, :func:`ridge_path`).  Everything serves a dask ``Φ`` (on the cluster) and an in-memory
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

from ..backend import (InvalidInputError, check_floats, check_int, check_seed, get_namespace,
                       rows_matmul, to_namespace)
from .cg import block_cg
from .cluster import current_client, worker_memory_limits
from .graph import token
from .linalg import cho_solve, check_weights, cholesky
from .passes import (SLAB_ROWS, SPLIT_EVERY, Gram, as_targets, check_features,
                     fmt_bytes, gram)
from .path import AlphaGridWarning, RidgePath, fit_path, ridge_path

__all__ = ["FitReport", "RidgeFit", "RidgePath", "fit_ridge", "choose_solver", "solve_gram",
           "ridge_path", "fit_path", "AlphaGridWarning", "predict", "predict_std", "DIRECT_MAX_FEATURES"]

#: ``solver="auto"`` forms and factors the m × m Gram up to this many features, else CG.
DIRECT_MAX_FEATURES = 8192


# =========================================================================== records
@dataclass
class FitReport:
    """What a ridge fit did and why.

    ``residuals`` holds, per iteration, the largest relative residual
    ``‖B − A W‖ / ‖B‖`` over targets (``A = ΦᵀΦ + αI``, ``B = ΦᵀY``); :func:`fit_ridge`'s
    direct solve reports its single final residual (the regularization path, the direct
    solve of :func:`.ridge.fit_ridge_model`, none);
    ``column_residuals`` the final relative residual per target column of a CG fit.
    ``persisted`` is None unless CG ran on a dask ``Φ``.
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
    column_residuals: list | None = None

    def to_dict(self) -> dict:
        """The report as a JSON-able dict (estimators' ``fit_report_``)."""
        d = asdict(self)
        d["residuals"] = [float(r) for r in self.residuals]
        if self.column_residuals is not None:
            d["column_residuals"] = [float(r) for r in self.column_residuals]
        return d


@dataclass
class RidgeFit:
    """A ridge fit: weights ``W``, the λ used, the selection scores (``None`` for a single
    λ), the :class:`FitReport` and solver-specific ``extra`` fields.

    ``W`` is ``(m, k)``: primal weights on features, centre weights (Falkon), or ``(n, k)``
    dual coefficients (the full kernel system).
    """

    W: np.ndarray
    alpha: float
    cv_results: dict | None
    report: FitReport
    extra: dict = field(default_factory=dict)


# ===================================================================== direct solve
def solve_gram(gram: Gram, alpha) -> np.ndarray:
    """Ridge weights ``(G + αI)⁻¹ B`` by Cholesky (:func:`.linalg.cholesky`), float64.

    Parameters
    ----------
    gram : Gram
    alpha : float or array of shape (k,)
        Penalty (> 0), one for all targets or one per target.

    Returns
    -------
    numpy.ndarray ``(m, k)`` float64.

    Raises ``InvalidInputError`` for a non-finite Gram (NaN/Inf in the features or
    targets that built it), :class:`.linalg.IllConditionedError` for non-finite weights.
    """
    G = np.asarray(gram.G, dtype=np.float64)
    B = np.asarray(gram.B, dtype=np.float64)
    if B.ndim == 1:
        B = B[:, None]
    for name, arr in (("G (the Gram ΦᵀΦ)", G), ("B (ΦᵀY)", B)):
        if not np.all(np.isfinite(arr)):
            raise InvalidInputError(f"{name} contains NaN or Inf: the features or targets it "
                                    f"was summed from are not finite")
    m = G.shape[0]
    a = check_floats(alpha, "alpha")
    if np.any(~np.isfinite(a)) or np.any(a < 0):
        raise InvalidInputError(f"alpha must be finite and non-negative, got {alpha}")
    if a.ndim == 0:
        return check_weights(_cho_solve(G, float(a), B), f"the direct solve (alpha={float(a)})")
    if a.shape != (B.shape[1],):
        raise InvalidInputError(f"alpha has shape {a.shape}; expected a scalar or "
                                f"({B.shape[1]},) (one per target)")
    W = np.empty((m, B.shape[1]))
    for j, aj in enumerate(a):
        W[:, j] = _cho_solve(G, float(aj), B[:, j:j + 1])[:, 0]
    return check_weights(W, f"the direct solve (alpha={a.tolist()})")


def _cho_solve(G, alpha, B):
    try:
        L = cholesky(G + alpha * np.eye(G.shape[0]))
    except np.linalg.LinAlgError:
        raise np.linalg.LinAlgError(
            f"G + alpha·I is not positive definite (alpha={alpha}); increase alpha") from None
    return cho_solve(L, B)


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
def _non_negative(value, name: str) -> float:
    """``value`` as a finite float ≥ 0, or :class:`InvalidInputError` naming ``name``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out) or out < 0:
        raise InvalidInputError(f"{name} must be finite and non-negative, got {value!r}")
    return out


def fit_ridge(Phi, Y, *, alpha: float, solver: str = "auto", tol: float = 1e-6,
              maxiter: int = 200, preconditioner: str | None = "nystrom",
              persist: bool | str = "auto", x0=None, client=None,
              callback: Callable | None = None, rank: int | None = None, seed: int = 0,
              split_every: int = SPLIT_EVERY, slab_rows: int = SLAB_ROWS,
              progress: bool | None = None, reason: str | None = None):
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
    reason : str, optional
        Why the caller chose ``solver`` (the report's reason starts with it).

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
    alpha = _non_negative(alpha, "alpha")
    maxiter = check_int(maxiter, "maxiter")
    seed = check_seed(seed)
    slab_rows = check_int(slab_rows, "slab_rows")
    split_every = check_int(split_every, "split_every", minimum=2)
    if rank is not None:
        rank = check_int(rank, "rank", minimum=0)
    tol = _non_negative(tol, "tol")
    client = current_client(client) if isinstance(Phi, da.Array) else None
    if solver == "auto":
        solver, reason = choose_solver(n, m, k, client, split_every=split_every)
    elif solver in ("direct", "cg"):
        reason = reason or f"solver={solver!r} requested"
    else:
        raise InvalidInputError(f"solver must be 'auto', 'direct' or 'cg', got {solver!r}")
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
    """``φ W`` of one block, each row's prediction independent of the block (rows_matmul)."""
    W = to_namespace(w, get_namespace(phi))
    return np.asarray(rows_matmul(phi, W)) if hasattr(phi, "tocsr") else rows_matmul(phi, W)


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
