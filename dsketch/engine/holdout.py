"""Alpha on one hold-out fold, for in-memory features too wide for per-fold Grams.

Owns :func:`holdout_scores` and :func:`holdout_refit` (:func:`.path.fit_path` chooses
and reports): the regularization path of :mod:`.path` with ``F``-fold CV
replaced by one validation fold (fold 0 of the same :func:`.passes.fold_ids`), so the
``m × m`` float64 arrays alive at once are two (the training Gram and one factor),
never the ``F + 1`` Grams of the CV pass: at m = 16,384 that is 4 GiB instead of 8 GiB
plus their copies.  Steps: ``G = Φ_trᵀΦ_tr`` by ``syrk`` over row slabs (float64, fixed
slab order: the same sums for the same rows); per alpha one Cholesky of ``G + αI`` (in
place on a copy) and the validation fold's predictions; then the validation rows are
added into ``G`` and ``G + α*I`` is factored in place for the weights on all rows.

Must not stream over dask chunks (in-memory NumPy ``Φ`` only) or hold kernel maths;
factorizations are :mod:`.linalg`'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .linalg import check_weights, cho_solve, cholesky, syrk_acc
from .passes import SLAB_ROWS, fold_ids, slabs

__all__ = ["HoldoutGram", "holdout_scores", "holdout_refit", "HOLDOUT_MIN_FEATURES"]

#: ``fit_path`` selects a grid on one hold-out fold of an in-memory ``Φ`` above this many
#: features (``solve.DIRECT_MAX_FEATURES``: where the ``m × m`` arrays become the memory).
HOLDOUT_MIN_FEATURES = 8192


def _add_gram(G: np.ndarray, B: np.ndarray, Phi, Y, rows: np.ndarray, slab: int) -> None:
    """``G += Φ[rows]ᵀΦ[rows]`` (upper triangle of the F-ordered ``G``), ``B += Φ[rows]ᵀY[rows]``."""
    for sl in slabs(len(rows), slab):
        idx = rows[sl]
        P = np.asarray(Phi[idx], dtype=np.float64)
        syrk_acc(G, P)
        B += P.T @ Y[idx]


def _factor(G: np.ndarray, alpha: float, *, overwrite: bool) -> np.ndarray:
    """Lower Cholesky factor of ``G + αI`` from ``G``'s upper triangle (F order).

    ``G.T`` is the C-ordered view whose lower triangle holds the Gram; ``overwrite`` factors
    it in place (``G`` is consumed), else a copy.
    """
    A = G.T if overwrite else np.array(G.T, order="C")
    A[np.diag_indices_from(A)] += alpha
    try:
        return cholesky(A, overwrite=True)
    except np.linalg.LinAlgError:
        raise np.linalg.LinAlgError(f"G + alpha·I is not positive definite (alpha={alpha}); "
                                    f"increase alpha") from None


@dataclass
class HoldoutGram:
    """The training fold's sums: ``G`` (upper triangle, F order), ``B``, and the row split."""

    G: np.ndarray
    B: np.ndarray
    train: np.ndarray
    val: np.ndarray


def holdout_scores(Phi, Y, alphas, *, n_folds: int, fold_seed: int = 0,
                   slab_rows: int = SLAB_ROWS) -> tuple:
    """Validation MSE and accuracy of every alpha, fold 0 of ``n_folds`` held out.

    Parameters
    ----------
    Phi : numpy.ndarray (n, m)
    Y : numpy.ndarray (n, k)
        Float targets; accuracy is the share of validation rows whose prediction's argmax
        is the target's (one-vs-rest encodings).
    alphas : 1-D array
    n_folds, fold_seed : rows of fold 0 of :func:`.passes.fold_ids` are the validation rows

    Returns
    -------
    (HoldoutGram, errs, accs, timings)
        ``errs``/``accs``: ``(1, len(alphas))`` mean squared error per target entry and
        accuracy on the validation rows; ``timings``: ``gram_s``, ``path_s``.
    """
    t0 = time.perf_counter()
    n, m = Phi.shape
    k = Y.shape[1]
    ids = fold_ids(n, n_folds, fold_seed)
    g = HoldoutGram(G=np.zeros((m, m), order="F"), B=np.zeros((m, k)),
                    train=np.flatnonzero(ids != 0), val=np.flatnonzero(ids == 0))
    _add_gram(g.G, g.B, Phi, Y, g.train, slab_rows)
    t1 = time.perf_counter()
    Yv = Y[g.val]
    labels = Yv.argmax(axis=1)
    errs = np.empty((1, len(alphas)))
    accs = np.empty_like(errs)
    for j, a in enumerate(alphas):
        W = check_weights(cho_solve(_factor(g.G, float(a), overwrite=False), g.B),
                          f"the hold-out solve (alpha={float(a):g})")
        pred = np.concatenate([np.asarray(Phi[g.val[sl]], dtype=np.float64) @ W
                               for sl in slabs(len(g.val), slab_rows)]) if len(g.val) else Yv
        errs[0, j] = np.sum((Yv - pred) ** 2) / max(Yv.size, 1)
        accs[0, j] = np.mean(pred.argmax(axis=1) == labels) if len(g.val) else 0.0
    return g, errs, accs, {"gram_s": t1 - t0, "path_s": time.perf_counter() - t1}


def holdout_refit(g: HoldoutGram, Phi, Y, alpha: float, *, slab_rows: int = SLAB_ROWS) -> np.ndarray:
    """Weights on all rows at ``alpha``: the validation rows added into ``g`` (consumed)."""
    _add_gram(g.G, g.B, Phi, Y, g.val, slab_rows)
    L = _factor(g.G, float(alpha), overwrite=True)
    return check_weights(cho_solve(L, g.B), f"the ridge path's solve (alpha={float(alpha):g})")
