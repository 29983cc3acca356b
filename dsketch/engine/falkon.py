"""Falkon-style Nyström kernel ridge: CG on ``(K_nmᵀK_nm + λK_mm)β = K_nmᵀY``, no ``n·m²`` Gram.

Owns :func:`fit_falkon`: the preconditioner of Rudi, Carratino & Rosasco ("FALKON", 2017)
in this module's own form — with ``K_mm + εI = T Tᵀ`` (lower Cholesky) and
``A Aᵀ = (n/m)·TᵀT + λI``, ``H = K_nmᵀK_nm + λK_mm ≈ T A Aᵀ Tᵀ``; CG runs on
``A⁻¹T⁻¹ H T⁻ᵀA⁻ᵀ u = A⁻¹T⁻¹K_nmᵀY`` and ``β = T⁻ᵀA⁻ᵀu`` — with ``K_nm`` streamed in row
chunks: cached float32 on the workers / in memory when the memory model allows
(:func:`.kernel_ops.plan_cache`), else recomputed every iteration.  Each iteration is ONE
pass ``Σ_c K_cᵀ(K_c V)`` (tasks ``dsketch-falkon-matvec``) plus four ``m × m`` triangular
solves on the client.

Must not compute kernel entries itself (``kernel_ops``) nor choose the centres (the
estimator does).  Client memory: ``K_mm``'s two triangular factors (float32 above
:data:`FACTOR32_MIN` centres) and ``m × k`` CG state.
"""

from __future__ import annotations

import time

import dask.array as da
import numpy as np
import scipy.linalg

from ..backend import InvalidInputError
from .kernel_cg import pcg
from .kernel_ops import DaskKernel, plan_cache
from .linalg import IllConditionedError, check_weights, cholesky
from .passes import reduce_rows, slabs
from .solve import FitReport, RidgeFit

__all__ = ["fit_falkon", "falkon_matvec_chunk", "falkon_setup_chunk", "gram_lower", "tri_solve",
           "FACTOR32_MIN", "BLOCK"]

#: From this many centres the two ``m × m`` factors are kept as float32 (memory).
FACTOR32_MIN = 8192
#: Rows per slab inside a chunk task (bounds the ``slab × m`` temporaries).
SLAB = 2048
#: Block of the blocked ``TᵀT`` and triangular solves: no BLAS level-3 call on a whole
#: ``m × m`` factor (scipy's bundled OpenBLAS segfaulted in one at m = 16384 here).
BLOCK = 2048


def gram_lower(T: np.ndarray, scale: float, block: int = BLOCK) -> np.ndarray:
    """``scale·TᵀT`` (float64; exact on and below the diagonal) of a lower-triangular ``T``.

    Column panel by panel: ``M[j0:, J] = T[j0:, j0:]ᵀ T[j0:, J]`` (rows above ``j0`` of a
    panel are zero), ``2m³/3`` flops as a SYRK, each GEMM at most ``m × block``.
    """
    m = T.shape[0]
    M = np.zeros((m, m))
    for j0 in range(0, m, block):
        j1 = min(m, j0 + block)
        M[j0:, j0:j1] = scale * (T[j0:, j0:].T @ T[j0:, j0:j1])
    return M


def tri_solve(T: np.ndarray, B: np.ndarray, trans: bool, block: int = BLOCK) -> np.ndarray:
    """``T⁻¹B`` (or ``T⁻ᵀB``) for lower-triangular ``T`` by block substitution, float64 out.

    Arithmetic in ``T``'s dtype; LAPACK triangular solves only on ``block × block``
    diagonal blocks, the rest GEMMs.
    """
    m = T.shape[0]
    X = np.asarray(B, dtype=T.dtype).copy()
    starts = list(range(0, m, block))
    for i0 in (reversed(starts) if trans else starts):
        i1 = min(m, i0 + block)
        if trans and i1 < m:
            X[i0:i1] -= T[i1:, i0:i1].T @ X[i1:]
        elif not trans and i0:
            X[i0:i1] -= T[i0:i1, :i0] @ X[:i0]
        X[i0:i1] = scipy.linalg.solve_triangular(T[i0:i1, i0:i1], X[i0:i1], lower=True,
                                                 trans="T" if trans else 0, check_finite=False)
    return X.astype(np.float64)


def falkon_matvec_chunk(knm, v, *, slab: int = SLAB):
    """``K_cᵀ(K_c V)`` of one row chunk of ``K_nm`` as a ``(1, m·t)`` float64 row."""
    V = np.asarray(v, dtype=knm.dtype)
    out = np.zeros((knm.shape[1], V.shape[1]))
    for sl in slabs(knm.shape[0], slab):
        P = knm[sl]
        out += P.T @ (P @ V)
    return out.ravel()[None, :]


def falkon_setup_chunk(knm, y, *, slab: int = SLAB):
    """``K_cᵀ Y_c`` of one row chunk as a ``(1, m·k)`` float64 row."""
    out = np.zeros((knm.shape[1], y.shape[1]))
    for sl in slabs(knm.shape[0], slab):
        out += np.asarray(knm[sl], dtype=np.float64).T @ np.asarray(y[sl], dtype=np.float64)
    return out.ravel()[None, :]


def _cross_memory(op, C, chunk: int) -> np.ndarray:
    """``K(X, C)`` of in-memory rows as one float32 array, filled chunk by chunk."""
    out = np.empty((op.n, C.shape[0]), dtype=np.float32)
    for a in range(0, op.n, chunk):
        out[a:a + chunk] = op.kfn(op.X[a:a + chunk], C, dtype=np.float32)
    return out


def _factors(kfn, C: np.ndarray, n: int, lam: float, dtype):
    """``T`` (``K_mm + εI = TTᵀ``) and ``A`` (``AAᵀ = (n/m)TᵀT + λI``), both lower, in ``dtype``.

    Both factorizations run in place; peak: two ``m × m`` float64 arrays and ``T`` in
    ``dtype`` (measured at m = 16,384: 6.4 → 5.3 GB).
    """
    Kmm = kfn(C)
    m = Kmm.shape[0]
    eps = 1e-7 * max(float(np.trace(Kmm)) / m, 1e-300)
    for _ in range(6):
        try:
            Kmm[np.diag_indices(m)] += eps
            T = cholesky(Kmm)  # a copy: a failed try must leave K_mm as it was
            break
        except np.linalg.LinAlgError:
            Kmm[np.diag_indices(m)] -= eps
            eps *= 10
    else:  # pragma: no cover
        raise IllConditionedError("the centres' kernel K_mm is not positive definite even with jitter")
    del Kmm
    M = gram_lower(T, n / m)
    T = T.astype(dtype, copy=False)
    M[np.diag_indices(m)] += lam
    A = cholesky(M, overwrite=True)
    del M
    return T, A.astype(dtype, copy=False), eps


def fit_falkon(op, C, Y, lam: float, *, tol: float = 1e-3, maxiter: int = 100, cache="auto",
               client=None, chunk: int = 4096, callback=None, phase=None) -> RidgeFit:
    """Nyström kernel ridge with centres ``C`` (``m`` rows) by Falkon's preconditioned CG.

    ``op`` is the training rows' :class:`.kernel_ops.MemoryKernel` / ``DaskKernel`` (only its
    rows, kernel function and cross kernel are used); ``Y`` ``(n, k)`` NumPy targets.
    Returns :class:`.kernel_cg.RidgeFit` whose ``W`` are the ``(m, k)`` centre weights.
    """
    phase = phase or (lambda name: None)
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    n, k = Y.shape
    C = np.asarray(C, dtype=np.float64)
    m = int(C.shape[0])
    if not (0 < m <= n):
        raise InvalidInputError(f"n_components={m} centres need 1 ≤ m ≤ n={n} rows")
    if not (np.isfinite(lam) and lam > 0):
        raise InvalidInputError(f"alpha must be finite and > 0, got {lam}")
    timings: dict = {}
    dtype = np.float32 if m >= FACTOR32_MIN else np.float64
    t = time.perf_counter()
    phase("factor")
    T, A, eps = _factors(op.kfn, C, n, float(lam), dtype)
    timings["factor_s"] = time.perf_counter() - t
    t = time.perf_counter()
    phase("kernel")
    cached, why = plan_cache(4.0 * n * m, cache, client, what="K_nm")
    lazy = isinstance(op.X, da.Array) or not cached
    if lazy:
        X = op.X if isinstance(op.X, da.Array) else da.from_array(
            op.X.reshape(n, -1), chunks=(chunk, -1))
        Knm = _lazy_cross(op, X, C)
        if cached:
            Knm = client.persist(Knm) if client is not None else Knm.persist()
        Yd = da.from_array(Y, chunks=(Knm.chunks[0], k))
    else:
        Knm, Yd = _cross_memory(op, C, chunk), Y
    run = dict(client=client, progress=False)
    B = reduce_rows(falkon_setup_chunk, "dsketch-falkon-setup", Knm, Y=Yd, P=m * k,
                    **run).reshape(m, k)
    timings["kernel_s"] = time.perf_counter() - t

    def tri(M, R, trans):
        return tri_solve(M, R, trans == "T")

    def operator(U):
        V = tri(T, tri(A, U, "T"), "T")  # T⁻ᵀA⁻ᵀU
        KV = reduce_rows(falkon_matvec_chunk, "dsketch-falkon-matvec", Knm, V=V,
                         P=m * U.shape[1], **run).reshape(m, U.shape[1])
        TtV = np.zeros_like(V)
        for j0 in range(0, m, BLOCK):  # TᵀV, panel by panel (T is lower triangular)
            TtV[j0:j0 + BLOCK] = T[j0:, j0:j0 + BLOCK].T @ V[j0:].astype(T.dtype)
        return tri(A, tri(T, KV, 0) + lam * TtV, 0)

    rhs = tri(A, tri(T, B, 0), 0)
    t = time.perf_counter()
    phase("cg")
    U, info = _cg(operator, rhs, tol=tol, maxiter=maxiter, callback=callback)
    timings["cg_s"] = time.perf_counter() - t
    W = check_weights(tri(T, tri(A, U, "T"), "T"), f"Falkon CG (alpha={lam})")
    report = FitReport(solver="falkon",
                       reason=f"Nyström with m={m} centres by Falkon's preconditioned CG; "
                              f"{why}; factors {np.dtype(dtype).name} (jitter {eps:.2g})",
                       n_samples=n, n_features=m, n_targets=k, alpha=float(lam),
                       iterations=info["iterations"], residuals=info["residuals"],
                       converged=info["converged"], persisted=bool(cached),
                       preconditioner="falkon (Cholesky of K_mm)",
                       passes=1 + info["iterations"],
                       seconds_per_iteration=info["seconds_per_iteration"], timings=timings)
    extra = {"column_residuals": info["column_residuals"], "cache": why,
             "cache_bytes": 4.0 * n * m if cached else 0.0,
             "factor_bytes": float(T.nbytes + A.nbytes)}
    return RidgeFit(W=W, alpha=float(lam), cv_results=None, report=report, extra=extra)


def _lazy_cross(op, X, C):
    if hasattr(op, "cross") and op.X is X:
        return op.cross(C, np.float32)
    return DaskKernel(X, op.kfn, cache=False).cross(C, np.float32)


def _cg(A, B, *, tol, maxiter, callback):
    """Plain block CG for the SPD operator ``A`` (columns independent, shared products)."""
    return pcg(A, B, 0.0, lambda R, lam: R, tol=tol, maxiter=maxiter, callback=callback,
               what="Falkon CG")
