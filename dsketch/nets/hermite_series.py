"""Hermite series of a function of a Gaussian: normalized Hermite polynomials and radial factors.

Owns :func:`normalized_hermite` (h_l = He_l/√(l!) by the stable recurrence) and
:func:`hermite_radial`, the factors R_l(v) = E[f(√v z) He_l(z)]/√(l!) with which
E[f(u) f(v)] = Σ_l R_l(v1) R_l(v2) ρ^l (Mehler), computed by
:func:`.quadrature.gaussian_expectations` at any variance.  The closed-form moments of
particular functions live in :mod:`.hermite_moments`.  No Dask, no random state.
"""

from __future__ import annotations

import math
from typing import Callable

from ..backend import get_namespace
from .quadrature import gaussian_expectations

__all__ = ["normalized_hermite", "hermite_radial"]


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
