"""Dense symmetric solves on the client: a Cholesky safe at any size, ridge system families.

Owns :func:`syrk_acc` (``G += PᵀP`` in tiles: the bundled multithreaded OpenBLAS
``dsyrk`` segfaults with an output of order 16k+ here as ``potrf`` does) and
:func:`cholesky` (LAPACK ``potrf`` up to :data:`BLOCKED_MIN`, above it a blocked
right-looking factorization whose large work is GEMM and triangular solves: the bundled
multithreaded OpenBLAS ``potrf`` segfaults on 16k+ matrices on 2-core machines, see
``benchmarks/ridge_path.py``), :func:`cho_solve`, :func:`eigh` and :class:`RidgeSystem`, the
family ``(S + αI)⁻¹`` for one symmetric PSD ``S`` (an ``m × m`` Gram or an ``n × n``
kernel) and several ``α``: one Cholesky per ``α`` for short grids (a Cholesky costs
``m³/3``; ``eigh`` ~12 of them), one eigendecomposition for long ones; and
:func:`check_weights` (:class:`IllConditionedError` for non-finite solutions).

Must not stream over chunks or know about folds (``passes``/``path``); NumPy float64 only.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.linalg.blas import dsyrk
from scipy.linalg.lapack import dpotrf

from ..backend import InvalidInputError

__all__ = ["syrk_acc", "symmetrize_upper", "SYRK_MAX", "cholesky", "cho_solve", "eigh",
           "RidgeSystem", "BLOCKED_MIN", "BLOCK", "EIGH_MIN_ALPHAS", "IllConditionedError",
           "check_weights"]

#: Matrices of at least this order are factored blockwise (no LAPACK ``potrf`` above it):
#: ``potrf`` ran at 8192 and segfaulted at 16384 here; blocked costs ~1.2× it at 8192.
BLOCKED_MIN = 8192
#: Block size of the blocked Cholesky.
BLOCK = 2048
#: :class:`RidgeSystem` eigendecomposes ``S`` once for grids of more alphas than this
#: (single-threaded ``eigh`` of 2048 costs ~12 Choleskys here; 3–60 with 2 threads).
EIGH_MIN_ALPHAS = 12


#: Largest output order of one BLAS ``syrk`` (measured here: 12288 ran, 16384 segfaulted on 2
#: threads); larger Grams are updated in tiles of this order.
SYRK_MAX = 8192


def _syrk_tile(C: np.ndarray, P: np.ndarray) -> np.ndarray:
    out = dsyrk(1.0, P.T, beta=1.0, c=C, trans=0, lower=0, overwrite_c=1)
    if out is not C:  # scipy copied a non-contiguous C: write the result back
        C[...] = out
    return C


def syrk_acc(G: np.ndarray, P: np.ndarray, *, tile: int = SYRK_MAX) -> None:
    """``G += PᵀP`` on the upper triangle of the float64 ``G`` (F order), in place.

    ``P`` is ``(rows, m)`` float64.  Up to ``tile`` columns one BLAS ``syrk``; above it the
    upper triangle in ``tile × tile`` tiles: ``syrk`` on the diagonal ones, GEMM above
    them (the same ``rows·m²/2`` multiply-adds; temporaries: one tile).
    """
    m = G.shape[0]
    if m <= tile:
        _syrk_tile(G, P)
        return
    for j0 in range(0, m, tile):
        j1 = min(m, j0 + tile)
        Pj = P[:, j0:j1]
        G[j0:j1, j0:j1] = _syrk_tile(np.asfortranarray(G[j0:j1, j0:j1]), Pj)
        for i0 in range(0, j0, tile):
            i1 = min(j0, i0 + tile)
            G[i0:i1, j0:j1] += P[:, i0:i1].T @ Pj


def symmetrize_upper(G: np.ndarray, *, tile: int = SYRK_MAX) -> np.ndarray:
    """Copy the upper triangle of square ``G`` onto its lower one, in place, tile by tile."""
    m = G.shape[0]
    for j0 in range(0, m, tile):
        j1 = min(m, j0 + tile)
        D = G[j0:j1, j0:j1]
        low = np.tril_indices(j1 - j0, -1)
        D[low] = D.T[low]
        for i0 in range(0, j0, tile):
            i1 = min(j0, i0 + tile)
            G[j0:j1, i0:i1] = G[i0:i1, j0:j1].T
    return G


class IllConditionedError(InvalidInputError, FloatingPointError):
    """A solve from finite sums gave NaN/Inf: the system is numerically singular.

    Both an :class:`~dsketch.backend.InvalidInputError` (the cure is in the input: a
    larger ``alpha``, scaled features; the CLI prints it once) and a ``FloatingPointError``.
    """


def check_weights(W: np.ndarray, where: str) -> np.ndarray:
    """``W``, or :class:`IllConditionedError` when it holds NaN/Inf (never returned silently)."""
    if np.all(np.isfinite(W)):
        return W
    raise IllConditionedError(f"{where} gave non-finite weights from finite sums: the system "
                              f"is ill-conditioned or its values overflow; increase alpha or "
                              f"scale the features down")


def _potrf(D: np.ndarray, offset: int) -> np.ndarray:
    L, info = dpotrf(D, lower=1, clean=1, overwrite_a=0)
    if info > 0:
        raise np.linalg.LinAlgError(f"matrix is not positive definite (leading minor of order "
                                    f"{offset + info})")
    if info < 0:  # pragma: no cover - argument error
        raise ValueError(f"dpotrf: illegal argument {-info}")
    return L


def cholesky(A, *, block: int = BLOCK, blocked_min: int = BLOCKED_MIN,
             overwrite: bool = False) -> np.ndarray:
    """Lower Cholesky factor ``L`` (``A = L Lᵀ``) of a symmetric positive definite ``A``.

    ``overwrite=True`` factors a C-contiguous float64 ``A`` of the blocked size in place
    (``L`` is ``A``; no second ``n × n`` array), else ``A`` is left as it was.

    Only the lower triangle of ``A`` is read.  Below ``blocked_min`` one LAPACK ``potrf``;
    from ``blocked_min`` on a right-looking blocked factorization: per block column,
    ``potrf`` of a ``block × block`` diagonal block, a triangular solve for the panel
    below and a GEMM update of the trailing lower triangle, tile column by tile column
    (``n³/3`` flops as ``potrf``; extra memory: one ``n × block`` panel).

    Raises ``numpy.linalg.LinAlgError`` when ``A`` is not positive definite.
    """
    A = np.asarray(A, dtype=np.float64)
    n = A.shape[0]
    if A.ndim != 2 or A.shape[1] != n:
        raise ValueError(f"A must be square, got shape {A.shape}")
    if n < blocked_min:
        return _potrf(A, 0)
    in_place = overwrite and A.flags.c_contiguous and A.flags.writeable
    L = A if in_place else np.array(A, dtype=np.float64, order="C", copy=True)
    for j0 in range(0, n, block):
        j1 = min(n, j0 + block)
        L[j0:j1, j0:j1] = Ld = _potrf(L[j0:j1, j0:j1], j0)
        L[:j0, j0:j1] = 0.0  # the upper triangle of the result is zero
        if j1 == n:
            break
        # L21 = A21 L11⁻ᵀ  (trsm), then A22 -= L21 L21ᵀ on its lower triangle
        P = scipy.linalg.solve_triangular(Ld, L[j1:, j0:j1].T, lower=True,
                                          check_finite=False).T
        L[j1:, j0:j1] = P
        for c0 in range(j1, n, block):
            c1 = min(n, c0 + block)
            L[c0:, c0:c1] -= P[c0 - j1:] @ P[c0 - j1:c1 - j1].T
    return L


def cho_solve(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``A⁻¹ B`` from the lower factor ``L`` of :func:`cholesky` (two triangular solves)."""
    Z = scipy.linalg.solve_triangular(L, B, lower=True, check_finite=False)
    return scipy.linalg.solve_triangular(L, Z, lower=True, trans="T", check_finite=False)


def eigh(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (clipped at 0) and eigenvectors of a symmetric PSD ``S``."""
    lam, V = scipy.linalg.eigh(S, driver="evd", check_finite=False)
    return np.maximum(lam, 0.0), V


class RidgeSystem:
    """Solves with ``S + αI`` for one symmetric PSD ``S`` and a grid of ``α`` (> 0).

    ``method="auto"``: one :func:`cholesky` per ``α`` (cached for the last ``α``) for at
    most :data:`EIGH_MIN_ALPHAS` alphas, else one :func:`eigh` shared by all.  Both give
    the same numbers up to rounding.
    """

    def __init__(self, S: np.ndarray, n_alphas: int = 1, method: str = "auto"):
        if method not in ("auto", "cholesky", "eigh"):
            raise ValueError(f"method must be 'auto', 'cholesky' or 'eigh', got {method!r}")
        self.S = S
        self.method = method if method != "auto" else (
            "eigh" if n_alphas > EIGH_MIN_ALPHAS else "cholesky")
        self._eig = eigh(S) if self.method == "eigh" else None
        self._alpha = None
        self._L = None

    def _factor(self, alpha: float) -> np.ndarray:
        if self._alpha != alpha:
            self._L = None  # free the previous factor before making the next
            A = self.S + alpha * np.eye(self.S.shape[0])
            try:
                self._L = cholesky(A)
            except np.linalg.LinAlgError:
                raise np.linalg.LinAlgError(f"S + alpha·I is not positive definite "
                                            f"(alpha={alpha}); increase alpha") from None
            self._alpha = alpha
        return self._L

    def solve(self, alpha: float, B: np.ndarray) -> np.ndarray:
        """``(S + αI)⁻¹ B``."""
        if self._eig is not None:
            lam, V = self._eig
            C = V.T @ B
            return V @ (C / (lam + alpha).reshape((-1,) + (1,) * (C.ndim - 1)))
        return cho_solve(self._factor(alpha), B)

    def trace_inv(self, alpha: float) -> float:
        """``tr (S + αI)⁻¹``."""
        if self._eig is not None:
            return float(np.sum(1.0 / (self._eig[0] + alpha)))
        Linv = scipy.linalg.solve_triangular(self._factor(alpha), np.eye(self.S.shape[0]),
                                             lower=True, check_finite=False)
        return float(np.einsum("ij,ij->", Linv, Linv))

    def posterior_factor(self, alpha: float) -> np.ndarray:
        """``F`` with ``F Fᵀ = α (S + αI)⁻¹``: ``V diag(√(α/(λ+α)))`` or ``√α L⁻ᵀ``."""
        if self._eig is not None:
            lam, V = self._eig
            return V * np.sqrt(alpha / (lam + alpha))[None, :]
        Linv = scipy.linalg.solve_triangular(self._factor(alpha), np.eye(self.S.shape[0]),
                                             lower=True, check_finite=False)
        return np.sqrt(alpha) * Linv.T
