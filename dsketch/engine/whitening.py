"""ZCA whitening of image rows: fitted in one pass (mean and second moment), applied per row.

ZCA ("zero-phase component analysis") whitening maps a row ``x`` (flattened) to
``W (x − μ)`` with ``W = U diag((s + ε·mean(s))^(-1/2)) Uᵀ`` from the covariance
``C = U diag(s) Uᵀ`` of the training rows: the symmetric whitening that stays closest to
the pixels, regularized by ``ε`` times the mean eigenvalue (``ε → ∞`` is plain centring up
to a scale, ``ε → 0`` full whitening).  The kernel literature preprocesses images this way
before a CNTK/NNGP (Lee et al. 2020, *Finite versus infinite neural networks*; Shankar et
al. 2020): it evens out the spectrum of the pixel covariance, so the kernel weighs edges and
detail more against mean intensity and low frequencies.  NumPy, CuPy and dask rows
(``(n, ...)``) are accepted; every output row is bitwise independent of its batch
(:func:`dsketch.backend.rows_matmul`).
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np

from ..backend import InvalidInputError, get_namespace, rows_matmul, to_namespace
from .passes import gram

__all__ = ["fit_zca", "apply_zca"]


def _moments(X) -> tuple[int, np.ndarray, np.ndarray]:
    """``(n, Σx, Σxxᵀ)`` in float64 over the flattened rows of ``X``: one
    :func:`.passes.gram` pass with a column of ones as the target (NumPy, CuPy or dask)."""
    n, d = int(X.shape[0]), math.prod(int(s) for s in X.shape[1:])
    if isinstance(X, da.Array):
        flat = X.reshape(n, d)
        ones = da.ones((n, 1), chunks=(flat.chunks[0], 1))
    else:
        flat, ones = get_namespace(X).reshape(X, (n, d)), np.ones((n, 1))
    sums = gram(flat, ones)
    return sums.n, sums.B[:, 0], sums.G


def fit_zca(X, regularization: float) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, matrix)``: the ZCA whitening of the rows of ``X`` (float64 NumPy).

    ``mean`` has the flattened row width ``d``, ``matrix`` is the symmetric ``d × d``
    ``W`` above with ``ε = regularization`` (> 0) times the covariance's mean eigenvalue.
    One pass over ``X``; a dask ``X`` is reduced on the cluster.
    """
    if not (isinstance(regularization, (int, float)) and math.isfinite(regularization)
            and regularization > 0):
        raise InvalidInputError(f"the ZCA regularization must be a positive number, got {regularization!r}")
    n, total, second = _moments(X)
    if n < 2:
        raise InvalidInputError(f"ZCA whitening needs at least 2 rows, got {n}")
    mean = total / n
    cov = second / n - np.outer(mean, mean)
    s, U = np.linalg.eigh((cov + cov.T) / 2)
    s = np.clip(s, 0.0, None)
    if not s.mean() > 0:
        raise InvalidInputError("ZCA whitening: the rows do not vary (zero covariance)")
    matrix = (U / np.sqrt(s + regularization * s.mean())) @ U.T
    return mean, (matrix + matrix.T) / 2


def _astype(x, dtype, xp):
    return xp.astype(x, dtype) if hasattr(xp, "astype") else x.astype(dtype)


def _apply_block(block, mean, matrix):
    xp = get_namespace(block)
    n = block.shape[0]
    flat = xp.reshape(block, (n, mean.shape[0])) - _astype(to_namespace(mean, xp), block.dtype, xp)
    out = rows_matmul(flat, to_namespace(matrix, xp))
    return xp.reshape(_astype(out, block.dtype, xp), block.shape)


def apply_zca(X, mean: np.ndarray, matrix: np.ndarray):
    """``W (x − μ)`` for every row of ``X``, in ``X``'s dtype and shape (lazy for dask).

    A dask ``X`` keeps its row chunks (its other axes become one chunk); ``mean`` and
    ``matrix`` enter its graph once, as single-chunk arrays shared by every block.
    """
    d = math.prod(int(s) for s in X.shape[1:])
    if mean.shape != (d,) or matrix.shape != (d, d):
        raise InvalidInputError(f"ZCA whitening of width {mean.shape[0]} applied to rows of width {d}")
    if not isinstance(X, da.Array):
        return _apply_block(X, mean, matrix)
    if any(len(c) > 1 for c in X.chunks[1:]):
        X = X.rechunk({i: -1 for i in range(1, X.ndim)})
    idx = "".join(chr(ord("a") + i) for i in range(X.ndim))
    return da.blockwise(_apply_block, idx, X, idx,
                        da.from_array(mean, chunks=-1), "y", da.from_array(matrix, chunks=-1), "yz",
                        dtype=X.dtype, concatenate=True, meta=X._meta)
