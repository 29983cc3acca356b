"""Choosing landmark rows on the cluster: leverage scores over row chunks, gathering rows.

Owns the data passes that Nyström features need before they exist: ridge leverage scores
of a cheap feature map's rows (one Gram pass, then one row-wise pass; nothing n × m is
gathered) and fetching the chosen rows of a dask array.  NumPy input takes the same
functions in memory.  The formulas are :mod:`dsketch.nets.nystroem`'s; this module only
schedules them.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import scipy.sparse

from ..nets.nystroem import leverage_factor, leverage_rows
from .graph import token
from .passes import reduce_rows

__all__ = ["leverage_scores", "take_rows"]


def _gram_chunk(phi):
    """ΦcᵀΦc of one row chunk, flattened to ``(1, m²)`` float64 (a :func:`reduce_rows` part)."""
    p = np.asarray(phi, dtype=np.float64)
    return (p.T @ p).reshape(1, -1)


def leverage_scores(Phi, lam: float | None = None) -> np.ndarray:
    """Ridge leverage scores of the rows of ``Phi`` (NumPy or a row-chunked dask array).

    Two passes for dask input (the m × m Gram, then the per-row scores); returns the
    ``n`` scores as NumPy.  ``lam`` as in :func:`dsketch.nets.nystroem.leverage_factor`.
    """
    m = int(Phi.shape[1])
    G = reduce_rows(_gram_chunk, "dsketch-leverage-gram", Phi, P=m * m).reshape(m, m)
    C = leverage_factor(G, lam)
    if not isinstance(Phi, da.Array):
        return leverage_rows(Phi, C)
    tok = token(Phi.name, C)
    C = dask.delayed(C, name=f"dsketch-leverage-factor-{tok}", pure=True)  # one key, not per task
    scores = Phi.map_blocks(leverage_rows, C, dtype=np.float64, drop_axis=1, meta=np.empty((0,)),
                            chunks=(Phi.chunks[0],), name=f"dsketch-leverage-rows-{tok}")
    return np.asarray(scores.compute())


def take_rows(X, idx):
    """Rows ``idx`` (sorted, distinct) of ``X`` as a float64 NumPy array (one small gather).

    Sparse rows (SciPy, or dask blocks of them) come back as a float64 CSR matrix.
    """
    idx = np.asarray(idx, dtype=np.int64)
    rows = X[idx].compute() if isinstance(X, da.Array) else X[idx]
    if scipy.sparse.issparse(rows):
        return scipy.sparse.csr_matrix(rows, dtype=np.float64)
    return np.asarray(rows, dtype=np.float64)
