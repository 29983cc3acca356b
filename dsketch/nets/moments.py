"""Second moments of a pair of jointly Gaussian pre-activations, made safe for every input.

Owns :class:`Moments` and :func:`moments`: the variances, standard deviations, √(v1 v2) and
the correlation of (u, v) ~ N(0, [[v1, c], [c, v2]]), safe for zero variances, |ρ| = 1 and
huge norms (variances clipped at 0, ρ clipped to [-1, 1] and snapped to ±1 within 4 ulps, 0
where √(v1 v2) underflows), in the arrays' dtype and on their device.  Every activation's
exact face starts from them.  No Dask, no random state.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..backend import get_namespace

__all__ = ["Moments", "moments"]


class Moments(NamedTuple):
    """Second moments of a Gaussian pair, sanitized (see :func:`moments`)."""

    v1: object   # variance of u (≥ 0)
    v2: object   # variance of v (≥ 0)
    s1: object   # √v1
    s2: object   # √v2
    rho: object  # correlation in [-1, 1]; 0 where a variance is 0
    sqrt_prod: object = None  # √(v1 v2) when :func:`moments` computed it (else derived)

    @property
    def prod(self):
        """√(v1 v2), computed without overflow (exactly v1 where v1 == v2)."""
        if self.sqrt_prod is not None:
            return self.sqrt_prod
        return _sqrt_prod(self.v1, self.v2, self.s1, self.s2)

    @property
    def cov(self):
        """Covariance consistent with the clipped correlation: ρ √(v1 v2)."""
        return self.rho * self.prod

    @property
    def sin(self):
        """√(1 − ρ²), computed as √((1 − ρ)(1 + ρ)) to keep precision near |ρ| = 1."""
        xp = get_namespace(self.rho)
        return xp.sqrt(xp.maximum((1 - self.rho) * (1 + self.rho), 0))


def _sqrt_prod(v1, v2, s1, s2):
    """√(v1 v2) as s1·s2, exactly v1 where v1 == v2 (so ρ = 1 exactly on diagonals)."""
    xp = get_namespace(v1, v2)
    prod = s1 * s2
    if xp is np:  # in place: the (n1, n2) arrays are the exact kernel's main cost
        prod = np.array(np.broadcast_to(prod, np.broadcast_shapes(prod.shape, v1.shape, v2.shape)))
        np.copyto(prod, v1, where=(v1 == v2))
        return prod
    return xp.where(v1 == v2, v1, prod)


def moments(var1, var2, cov) -> Moments:
    """Broadcast and sanitize the moments of (u, v) ~ N(0, [[var1, cov], [cov, var2]]).

    Negative variances (round-off) are clipped to 0, the correlation ρ = cov/√(var1 var2)
    is clipped to [-1, 1] (and snapped to ±1 within 4 ulps) and set to 0 where
    √(var1 var2) underflows to 0. The result keeps
    the floating dtype of the inputs (float32 stays float32).
    """
    xp = get_namespace(var1, var2, cov)
    var1, var2, cov = (xp.asarray(a) for a in (var1, var2, cov))
    dt = np.result_type(var1.dtype, var2.dtype, cov.dtype)
    if dt.kind != "f":
        dt = np.dtype(np.float64)
    var1, var2, cov = (a.astype(dt, copy=False) for a in (var1, var2, cov))
    v1 = xp.maximum(var1, 0)
    v2 = xp.maximum(var2, 0)
    s1 = xp.sqrt(v1)
    s2 = xp.sqrt(v2)
    prod = _sqrt_prod(v1, v2, s1, s2)
    tiny = np.finfo(dt).tiny
    # Within a few ulps of ±1 the correlation is round-off (e.g. a Gram diagonal from a
    # matmul next to variances from a row sum): snap it, so that arccos-type duals, whose
    # slope is infinite at ±1, do not turn 1e-16 into 1e-8.
    snap = 1 - 4 * np.finfo(dt).eps
    shape = np.broadcast_shapes(v1.shape, v2.shape, cov.shape)
    if xp is np:  # the same steps in place (a third of the passes over (n1, n2) arrays)
        ok = prod > tiny
        rho = np.zeros(shape, dtype=dt)
        np.divide(cov, prod, out=rho, where=ok)
        np.clip(rho, -1, 1, out=rho)
        np.copyto(rho, 1, where=rho >= snap)
        np.copyto(rho, -1, where=rho <= -snap)
        prod = np.broadcast_to(prod, shape) if prod.shape != shape else prod
        return Moments(v1, v2, s1, s2, rho, prod)
    ok = prod > tiny
    rho = xp.where(ok, cov / xp.where(ok, prod, 1), 0)
    rho = xp.clip(rho, -1, 1)
    rho = xp.where(rho >= snap, 1, xp.where(rho <= -snap, -1, rho)).astype(dt, copy=False)
    rho = xp.broadcast_to(rho, shape)
    return Moments(v1, v2, s1, s2, rho)
