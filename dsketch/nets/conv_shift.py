"""Compiled shifts of per-pixel image features: the gather step of ``Conv``'s sketch face.

Owns :func:`shift_features`: for every output pixel and filter offset, the (zero-padded,
strided) input pixel's features — or ``k`` chosen coordinates of them — times a scale,
written into that offset's columns of the output, in one pass over the output (Numba,
``nogil``, serial: the feature-map chunks already run on a thread pool).  It replaces a
scale pass, a take per offset and the copies into the output of the NumPy path of
``conv._ShiftConcat.write``, with the same products (one multiplication per value), so the
features are bitwise the same.  Each output pixel reads its own window only: a row's
features do not depend on the batch.  Host NumPy arrays only (the caller checks); no Dask.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .spatial import offset_range

__all__ = ["shift_features", "offset_taps"]


def offset_taps(g) -> np.ndarray:
    """``(window, 3)`` int64 for one dimension: per offset d, the output range ``[lo, hi)``
    that sees an input pixel at d and the input index of its first output (``hi = lo``:
    none)."""
    t = np.zeros((g.window, 3), dtype=np.int64)
    for d in range(g.window):
        r = offset_range(g, d)
        if r is not None:
            t[d] = (r[0].start, r[0].stop, r[1].start)
    return t


@njit(nogil=True, cache=True)
def _shift(x, th, tw, sh, sw, idx, k, scale, out):
    """``out[b, p, o·k:(o+1)·k] = scale · x[b, s p + d_o − lo][idx[o] or :k]`` (0 in the padding)."""
    n, ho, wo = out.shape[0], out.shape[1], out.shape[2]
    fh, fw = th.shape[0], tw.shape[0]
    gather = idx.shape[0] > 0
    for b in range(n):
        for p1 in range(ho):
            for p2 in range(wo):
                row = out[b, p1, p2]
                for dh in range(fh):
                    inside_h = th[dh, 0] <= p1 < th[dh, 1]
                    i1 = th[dh, 2] + sh * (p1 - th[dh, 0])
                    for dw in range(fw):
                        o = dh * fw + dw
                        dst = row[o * k:(o + 1) * k]
                        if not (inside_h and tw[dw, 0] <= p2 < tw[dw, 1]):
                            for c in range(k):
                                dst[c] = 0
                            continue
                        src = x[b, i1, tw[dw, 2] + sw * (p2 - tw[dw, 0])]
                        if gather:
                            sel = idx[o]
                            for c in range(k):
                                dst[c] = src[np.uint64(sel[c])] * scale
                        else:
                            for c in range(k):
                                dst[c] = src[c] * scale


def shift_features(x: np.ndarray, geom, k: int, scale, out: np.ndarray, idx=None) -> None:
    """Write the |F| shifted copies of ``x`` ``(n, H, W, D)`` into ``out[..., :|F|·k]``.

    Offset ``o`` (row-major ``(dh, dw)``) fills columns ``o·k:(o+1)·k`` of every output pixel
    with ``scale · x[pixel + offset][idx[o]]`` (``idx``: ``(|F|, k)`` coordinates of ``D``),
    or ``scale · x[pixel + offset][:k]`` without ``idx`` (``k = D``); zeros where the offset
    falls in the padding.  ``x`` and ``out`` share a real dtype, ``out`` is C-contiguous
    ``(n, H', W', ≥ |F|·k)`` and ``scale`` a scalar of that dtype.
    """
    gh, gw = geom
    x = np.ascontiguousarray(x)
    sel = np.zeros((0, 1), dtype=np.int64) if idx is None else np.ascontiguousarray(idx, dtype=np.int64)
    _shift(x, offset_taps(gh), offset_taps(gw), gh.stride, gw.stride, sel, int(k),
           out.dtype.type(scale), out)
