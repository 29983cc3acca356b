"""Block conjugate gradients for ``(ΦᵀΦ + αI) W = ΦᵀY``, each iteration ONE pass over ``Φ``.

Owns the CG iteration (one CG per target, all sharing each pass), its two passes — the
setup pass (``ΦᵀY``, ``diag ΦᵀΦ``, the Nyström sketch ``ΦᵀΦΩ`` and ``ΦᵀΦ x0`` in one
reduction, tasks ``dsketch-cg-setup``) and the matvec pass ``V ↦ Σ_c Φcᵀ(Φc V)`` (tasks
``dsketch-cg-matvec``) — the randomized Nyström and Jacobi preconditioners, and whether to
persist ``Φ`` on the workers.  The passes go through :func:`.passes.reduce_rows`, so the
same iteration serves a dask ``Φ`` (on the cluster) and an in-memory one.

Must not form or factor the ``m × m`` Gram (that is ``solve``) or gather anything ``n × m``.
Memory per matvec task: one chunk (``r·(d + m)`` elements), an ``s × (m + k)`` float64 slab
and one ``m × k`` float64 partial; with persisted ``Φ`` also ``n·m/workers`` elements per
worker.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
import warnings
from typing import Callable

import dask.array as da
import numpy as np
import scipy.linalg

from ..backend import InvalidInputError, asnumpy, get_namespace, rng, to_namespace
from .cluster import worker_memory_limits
from .linalg import IllConditionedError, check_weights
from .passes import check_finite_sums, fmt_bytes, reduce_rows, slabs

__all__ = ["block_cg", "choose_persist", "matvec_chunk", "setup_chunk", "PERSIST_FRACTION"]

#: Persist ``Φ`` during CG when it takes at most this share of the workers' memory.
PERSIST_FRACTION = 0.5


# ===================================================================== chunk kernels
def matvec_chunk(phi, v, *, slab: int):
    """Φcᵀ(Φc V) of one row chunk, float64, as a (1, m·t) row."""
    xp = get_namespace(phi)
    V = to_namespace(np.asarray(v, dtype=np.float64), xp)
    out = xp.zeros((phi.shape[1], V.shape[1]), dtype=xp.float64)
    for sl in slabs(phi.shape[0], slab):
        P = phi[sl].astype(xp.float64, copy=False)
        out += P.T @ (P @ V)
    return asnumpy(out).ravel()[None, :]


@functools.lru_cache(maxsize=4)
def _omega(m: int, rank: int, seed: int) -> np.ndarray:
    """The seeded Gaussian test matrix of the Nyström sketch (same in every process)."""
    return rng(seed, "engine", "nystrom", m, rank).standard_normal((m, rank))


def setup_chunk(phi, y, v=None, *, slab: int, m: int, k: int, rank: int, seed: int):
    """CG setup for one chunk: [ΦᵀY, Σ Φ² (diag), Φᵀ(Φ [Ω | x0]), ΣY², rows] packed."""
    xp = get_namespace(phi)
    cols = []
    if rank:
        cols.append(_omega(m, rank, seed))
    if v is not None:
        cols.append(np.asarray(v, dtype=np.float64))
    Vh = np.concatenate(cols, axis=1) if cols else np.zeros((m, 0))
    V = to_namespace(Vh, xp)
    B = xp.zeros((m, k), dtype=xp.float64)
    diag = xp.zeros(m, dtype=xp.float64)
    AV = xp.zeros((m, Vh.shape[1]), dtype=xp.float64)
    yy = np.zeros(k)
    for sl in slabs(phi.shape[0], slab):
        P = phi[sl].astype(xp.float64, copy=False)
        Yh = np.asarray(y[sl], dtype=np.float64)
        B += P.T @ to_namespace(Yh, xp)
        diag += xp.einsum("ij,ij->j", P, P)
        if Vh.shape[1]:
            AV += P.T @ (P @ V)
        yy += np.einsum("ij,ij->j", Yh, Yh)
    return np.concatenate([asnumpy(B).ravel(), asnumpy(diag), asnumpy(AV).ravel(), yy,
                           [float(phi.shape[0])]])[None, :]


# ========================================================================== persist
def choose_persist(Phi, client, persist) -> tuple[bool, str]:
    """Whether to keep ``Φ`` in worker memory during CG, and why."""
    nbytes = float(Phi.shape[0]) * Phi.shape[1] * np.dtype(Phi.dtype).itemsize
    if persist is True:
        if client is None:
            return False, "persist=True but no distributed client: Φ recomputed each iteration"
        return True, f"persist=True: Φ ({fmt_bytes(nbytes)}) kept on workers"
    if persist is False:
        return False, "persist=False: Φ recomputed from the spec each iteration"
    if persist != "auto":
        raise InvalidInputError(f"persist must be True, False or 'auto', got {persist!r}")
    if client is None:
        return False, ("no distributed client: Φ recomputed from the spec each iteration "
                       "(nothing n×m is held in this process)")
    workers, wmin, total = worker_memory_limits(client)
    budget = PERSIST_FRACTION * total
    if total and nbytes <= budget:
        return True, (f"Φ ({fmt_bytes(nbytes)}) fits in {int(PERSIST_FRACTION * 100)}% of "
                      f"the {workers} workers' memory ({fmt_bytes(total)}): persisted")
    return False, (f"Φ ({fmt_bytes(nbytes)}) exceeds {int(PERSIST_FRACTION * 100)}% of the "
                   f"{workers} workers' memory ({fmt_bytes(total)}): recomputed from the spec "
                   f"each iteration")


# =================================================================== preconditioners
class _LowRankPreconditioner:
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


# ======================================================================== iteration
def takes_columns(callback) -> bool:
    """Whether a CG ``callback`` accepts ``columns=`` (the residual of every column)."""
    try:
        params = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "columns" or p.kind is p.VAR_KEYWORD for p in params)


def pcg_columns(apply_A: Callable, B: np.ndarray, X: np.ndarray, R: np.ndarray,
                M: Callable, *, tol: float, maxiter: int, callback: Callable | None,
                breakdown: Callable) -> tuple[int, list, np.ndarray, list]:
    """The one preconditioned block-CG iteration of the engine (features, kernel, Falkon).

    Solves ``A x_j = b_j`` for the columns of ``B`` in place in ``X`` (``R = B − A X`` on
    entry), every column sharing each product: ``apply_A(D, cols)`` returns ``A D`` for the
    still-active columns ``cols``, ``M(R, cols)`` applies the preconditioner.  A column stops
    at relative residual ``‖r_j‖/‖b_j‖ ≤ tol``.  A non-positive or non-finite ``dᵀAd`` raises
    ``breakdown(iteration, dᵀAd)``; ``callback(largest residual, iteration)`` (with
    ``columns=`` every column's residual when it accepts that keyword) never breaks a fit.
    Returns ``(iterations, history of the largest residual, residual per column, seconds
    per product)``.
    """
    bnorm = np.linalg.norm(B, axis=0)
    bnorm = np.where(bnorm > 0, bnorm, 1.0)
    res = np.linalg.norm(R, axis=0) / bnorm
    history = [float(res.max())]
    cols = np.arange(B.shape[1])
    Z = M(R, cols)
    D = Z.copy()
    rz = np.einsum("ij,ij->j", R, Z)
    it, times = 0, []
    wants_columns = callback is not None and takes_columns(callback)
    while it < maxiter and not np.all(res <= tol):
        act = np.flatnonzero(res > tol)
        t = time.perf_counter()
        Da = D[:, act]
        AD = apply_A(Da, act)
        times.append(time.perf_counter() - t)
        it += 1
        pAp = np.einsum("ij,ij->j", Da, AD)
        if not np.all(np.isfinite(pAp) & (pAp > 0)):
            raise breakdown(it, pAp)
        a = rz[act] / pAp
        X[:, act] += Da * a
        R[:, act] -= AD * a
        res[act] = np.linalg.norm(R[:, act], axis=0) / bnorm[act]
        Za = M(R[:, act], act)
        rz_new = np.einsum("ij,ij->j", R[:, act], Za)
        D[:, act] = Za + Da * (rz_new / rz[act])
        rz[act] = rz_new
        history.append(float(res.max()))
        if callback is not None:
            try:
                if wants_columns:
                    callback(float(res.max()), it, columns=res.tolist())
                else:
                    callback(float(res.max()), it)
            except Exception as exc:  # progress must never break a fit
                warnings.warn(f"CG callback raised {exc!r}; ignored", RuntimeWarning)
    return it, history, res, times


def block_cg(Phi, Y2, *, alpha: float, tol: float, maxiter: int,
             preconditioner: str | None, persist: bool | str, x0, client,
             callback: Callable | None, rank: int | None, seed: int, split_every: int,
             slab_rows: int, progress: bool | None) -> tuple[np.ndarray, dict]:
    """Preconditioned block CG; the weights ``(m, k)`` and the report's CG fields.

    ``Phi`` is checked and ``Y2`` 2-D float64 aligned with it
    (:func:`.passes.as_targets`); the parameters are those of :func:`.solve.fit_ridge`.
    Passes: 1 setup + 1 per iteration.  The returned dict holds ``reason``,
    ``iterations``, ``residuals``, ``column_residuals``, ``converged``, ``persisted``,
    ``preconditioner``, ``passes``, ``seconds_per_iteration`` and ``timings``.
    """
    m, k = int(Phi.shape[1]), int(Y2.shape[1])
    if alpha <= 0:
        raise InvalidInputError("cg needs alpha > 0 (the system must be positive definite)")
    if preconditioner not in ("nystrom", "jacobi", None):
        raise InvalidInputError(f"preconditioner must be 'nystrom', 'jacobi' or None, got {preconditioner!r}")
    timings: dict = {}
    if isinstance(Phi, da.Array):
        do_persist, why_persist = choose_persist(Phi, client, persist)
    else:
        do_persist, why_persist = None, "Φ in memory"
    Phi_run = client.persist(Phi) if do_persist else Phi
    run = dict(client=client, split_every=split_every)
    if x0 is not None:
        X = np.array(x0, dtype=np.float64, copy=True)
        if X.ndim == 1:
            X = X[:, None]
        if X.shape != (m, k):
            raise InvalidInputError(f"x0 has shape {np.shape(x0)}, expected ({m}, {k}) or ({m},)")
        if not np.all(np.isfinite(X)):
            raise InvalidInputError("x0 contains NaN or Inf")
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
    w = ell + (k if x0 is not None else 0)
    flat = reduce_rows(setup_chunk, "dsketch-cg-setup", Phi_run, Y=Y2,
                       V=X if x0 is not None else None, P=m * k + m + m * w + k + 1,
                       progress=progress, by_slabs=True, slab=int(slab_rows), m=m, k=k,
                       rank=ell, seed=int(seed), **run)
    B = flat[:m * k].reshape(m, k)
    diag = flat[m * k:m * k + m]
    AV = flat[m * k + m:m * k + m + m * w].reshape(m, w)
    check_finite_sums(Phi, Y2, [diag, AV], [B, flat[m * k + m + m * w:]], "the CG setup pass")
    timings["setup_s"] = time.perf_counter() - t
    if preconditioner == "nystrom":
        try:
            M = _LowRankPreconditioner(_omega(m, ell, int(seed)), AV[:, :ell], alpha)
            pc = f"nystrom (rank {ell})"
        except np.linalg.LinAlgError as exc:  # pragma: no cover - numerical fallback
            M, pc = _Jacobi(diag, alpha), f"jacobi (Nyström failed: {exc})"
    elif preconditioner == "jacobi":
        M, pc = _Jacobi(diag, alpha), "jacobi"
    else:
        M, pc = _identity, "none"
    R = B - (AV[:, ell:] + alpha * X) if x0 is not None else B.copy()

    def apply_A(Da, act):  # no progress bar per iteration (the residual callback reports it)
        AD = reduce_rows(matvec_chunk, "dsketch-cg-matvec", Phi_run, V=Da, P=m * len(act),
                         progress=False, by_slabs=True, slab=int(slab_rows),
                         **run).reshape(m, len(act))
        return AD + alpha * Da

    def breakdown(it, pAp):
        return IllConditionedError(
            f"CG broke down at iteration {it} (dᵀAd = {pAp.min():.3g} is not a positive finite "
            f"number): ΦᵀΦ + αI is numerically singular or overflows for alpha={alpha}; "
            f"increase alpha or scale the features down")

    it, history, res, iter_times = pcg_columns(apply_A, B, X, R, lambda R_, act: M(R_), tol=tol,
                                               maxiter=maxiter, callback=callback,
                                               breakdown=breakdown)
    converged = bool(np.all(res <= tol))
    del Phi_run
    check_weights(X, f"CG (alpha={alpha}, {it} iterations)")
    timings["iterations_s"] = float(sum(iter_times))
    if not converged:
        warnings.warn(f"CG did not reach tol={tol} in {maxiter} iterations "
                      f"(largest relative residual {res.max():.2e})", RuntimeWarning)
    return X, dict(reason=f"{why_persist}; preconditioner {pc}", iterations=it,
                   residuals=history, column_residuals=res.tolist(), converged=converged,
                   persisted=do_persist,
                   preconditioner=pc, passes=1 + it,
                   seconds_per_iteration=float(np.mean(iter_times)) if iter_times else None,
                   timings=timings)
