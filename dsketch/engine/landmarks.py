"""Choosing landmark rows on the cluster: leverage scores over row chunks, gathering rows.

Owns the data passes that Nyström features need before they exist: ridge leverage scores
of a cheap feature map's rows (one Gram pass, then one row-wise pass; nothing n × m is
gathered) and fetching the chosen rows of a dask array.  NumPy input takes the same
functions in memory.  The formulas are :mod:`dsketch.nets.nystroem`'s; this module only
schedules them.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from ..nets.nystroem import leverage_factor, leverage_rows
from .graph import token

__all__ = ["leverage_scores", "take_rows"]


def _gram_part(block):
    b = np.asarray(block, dtype=np.float64)
    return (b.T @ b)[None]


def leverage_scores(Phi, lam: float | None = None) -> np.ndarray:
    """Ridge leverage scores of the rows of ``Phi`` (NumPy or a row-chunked dask array).

    Two passes for dask input (the m × m Gram, then the per-row scores); returns the
    ``n`` scores as NumPy.  ``lam`` as in :func:`dsketch.nets.nystroem.leverage_factor`.
    """
    if not isinstance(Phi, da.Array):
        Phi = np.asarray(Phi, dtype=np.float64)
        return leverage_rows(Phi, leverage_factor(Phi.T @ Phi, lam))
    Phi = Phi.rechunk({1: -1})
    m = Phi.shape[1]
    parts = Phi.map_blocks(_gram_part, dtype=np.float64, chunks=((1,) * Phi.numblocks[0], (m,), (m,)),
                           new_axis=2, name=f"dsketch-leverage-gram-{token(Phi.name)}")
    C = leverage_factor(parts.sum(axis=0).compute(), lam)
    scores = Phi.map_blocks(leverage_rows, C, dtype=np.float64, drop_axis=1,
                            chunks=(Phi.chunks[0],), name=f"dsketch-leverage-rows-{token(Phi.name, C)}")
    return np.asarray(scores.compute())


def take_rows(X, idx) -> np.ndarray:
    """Rows ``idx`` (sorted, distinct) of ``X`` as a float64 NumPy array (one small gather)."""
    idx = np.asarray(idx, dtype=np.int64)
    if isinstance(X, da.Array):
        return np.asarray(X[idx].compute(), dtype=np.float64)
    return np.asarray(X[idx], dtype=np.float64)
