"""Exact kernel ridge classification for the real-data benchmarks (the baseline's maths).

One-vs-rest ±1 targets, accuracy, λ chosen on held-out training rows from one
eigendecomposition, and the solve through the engine's Cholesky (blocked at large n).
"""

from __future__ import annotations

import numpy as np

from dsketch.engine.linalg import cho_solve, cholesky


def signed(y, classes):
    """One-vs-rest targets: +1 for the row's class, −1 elsewhere, ``(n, n_classes)``."""
    return np.where(y[:, None] == classes[None, :], 1.0, -1.0)


def accuracy(scores, classes, y) -> float:
    return float(np.mean(classes[np.argmax(scores, axis=1)] == y))


def best_lambda(K, Kv, y, yv, classes, lambdas) -> float:
    """The λ of ``lambdas`` with the best held-out accuracy: train kernel ``K``, held-out ×
    train kernel ``Kv`` (all training rows; never test data), one ``eigh`` for the grid."""
    s, U = np.linalg.eigh(K)
    C = U.T @ signed(y, classes)
    acc = [accuracy(Kv @ (U @ (C / (s + lam)[:, None])), classes, yv) for lam in lambdas]
    return float(lambdas[int(np.argmax(acc))])


def solve(K, Y, lam):
    """(K + λI)⁻¹ Y; ``K``'s diagonal is overwritten (pass a copy to keep it)."""
    K[np.diag_indices_from(K)] += lam
    return cho_solve(cholesky(K), Y)
