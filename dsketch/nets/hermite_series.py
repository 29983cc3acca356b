"""Hermite series of a function of a Gaussian: normalized Hermite polynomials and radial factors.

Owns :func:`normalized_hermite` (h_l = He_l/√(l!) by the stable recurrence),
:func:`subtract_series` (a function's values minus its truncated series, one compiled pass on
the host) and :func:`hermite_radial`, the factors R_l(v) = E[f(√v z) He_l(z)]/√(l!) with which
E[f(u) f(v)] = Σ_l R_l(v1) R_l(v2) ρ^l (Mehler), computed by
:func:`.quadrature.gaussian_expectations` at any variance.  The closed-form moments of
particular functions live in :mod:`.hermite_moments`.  No Dask, no random state.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from numba import njit

from ..backend import get_namespace
from .quadrature import gaussian_expectations

__all__ = ["normalized_hermite", "subtract_series", "hermite_radial"]


def normalized_hermite(t, degree: int):
    """h_l(t) = He_l(t)/√(l!) for l = 0..degree, stacked on a new last axis.

    Uses the stable recurrence h_{l+1} = (t h_l − √l h_{l−1})/√(l+1).
    """
    xp = get_namespace(t)
    out = [xp.ones_like(t)]
    if degree >= 1:
        out.append(t)
    for l in range(1, degree):
        out.append((t * out[l] - math.sqrt(l) * out[l - 1]) / math.sqrt(l + 1))
    return xp.stack(out, axis=-1)


def subtract_series(values, z, coef, top: int, overwrite: bool = False):
    """``values − Σ_{l≤top} coef[:, l] · h_l(z)`` per row (a new array; with ``overwrite``,
    float64 C-contiguous host ``values`` are updated in place and returned).

    ``values`` and ``z`` are ``(rows, k)``, ``coef`` is ``(rows, ≥ top+1)``.  Float64 NumPy
    arrays go through one compiled pass (per row, degree by degree, vectorized); other
    arrays (CuPy, other namespaces) through whole-array steps.  Both do the same operations
    in the same order: ``(values − c_0 h_0) − c_1 h_1 …`` and the recurrence of
    :func:`normalized_hermite`, so an entry depends on its own inputs only.
    """
    xp = get_namespace(z)
    if xp is np and all(isinstance(a, np.ndarray) and a.dtype == np.float64 and a.ndim == 2
                        for a in (values, z, coef)):
        inplace = overwrite and values.flags.c_contiguous and values.flags.writeable
        out = values if inplace else np.array(values, dtype=np.float64, order="C", copy=True)
        _subtract_series(out, np.ascontiguousarray(z), np.ascontiguousarray(coef), int(top))
        return out
    out = values
    h_prev, h = xp.zeros_like(z), xp.ones_like(z)
    for l in range(top + 1):
        out = out - coef[:, l:l + 1] * h
        h_prev, h = h, (z * h - math.sqrt(l) * h_prev) / math.sqrt(l + 1)
    return out


@njit(nogil=True, cache=True)
def _subtract_series(out, z, coef, top):
    """Degree by degree over a whole row (the entries' loop innermost, so it vectorizes);
    each entry sees the same operations in the same order as the whole-array steps."""
    rows, k = z.shape
    root = np.sqrt(np.arange(top + 2).astype(np.float64))
    h_prev = np.empty(k, dtype=np.float64)
    h = np.empty(k, dtype=np.float64)
    for r in range(rows):
        c = coef[r]
        o = out[r]
        zr = z[r]
        for j in range(k):
            h_prev[j] = 0.0
            h[j] = 1.0
        for l in range(top + 1):
            cl, a, b = c[l], root[l], root[l + 1]
            for j in range(k):
                o[j] = o[j] - cl * h[j]
                nxt = (zr[j] * h[j] - a * h_prev[j]) / b
                h_prev[j] = h[j]
                h[j] = nxt


def hermite_radial(f: Callable, var, degree: int, quad_degree: int = 128, scale: float = 1.0):
    """R_l(v) = E[f(√v z) He_l(z)]/√(l!), l = 0..degree, by :func:`gaussian_expectations`.

    Returns an array ``var.shape + (degree + 1,)`` (``quad_degree`` Gauss–Legendre nodes per
    piece of the four-piece rule, accurate at any variance); with these,
    E[f(u) f(v)] = Σ_l R_l(v1) R_l(v2) ρ^l (Mehler's formula).
    """
    xp = get_namespace(var)
    var = xp.asarray(var)
    dt = var.dtype if var.dtype.kind == "f" else xp.float64

    def h(y, z):
        return f(y)[..., None] * normalized_hermite(z, degree)

    return gaussian_expectations((h,), var, quad_degree, scale)[0].astype(dt, copy=False)
