"""Exact arc-cosine kernel maths (Cho & Saul 2009): ``J_n(θ)`` and ``k_n(x, y)``.

Owns the one implementation of the angular factor ``J_n(θ)`` (closed forms for
``n ≤ 2``, Gauss–Legendre quadrature above) and of the arc-cosine kernel. The ReLU-NTK
recursion (:mod:`.ntk_random_features`), the arc-cosine feature map (:mod:`.kernels`) and
the ReLU dual of :mod:`dsketch.nets` all compute through :func:`arccos_J`; no other
module re-derives these formulas. Takes and returns arrays of the caller's module
(NumPy or CuPy); must not import Dask.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import get_namespace, pairs_matmul

__all__ = ["arccos_J", "arccos_kernel"]


def arccos_J(order: int, theta, xp, quadrature: bool = False, cos=None):
    """Cho & Saul's angular factor ``J_n(θ)``.

    Parameters
    ----------
    order : int
        ``n ≥ 0``.
    theta : array
        Angles in ``[0, π]`` (any shape), of module ``xp``.
    xp : module
        ``numpy`` or ``cupy``.
    quadrature : bool
        Force the Gauss–Legendre quadrature also for ``n ≤ 2`` (the tests check it
        against the closed forms).
    cos : array, optional
        ``cos θ`` when the caller has it (a correlation ρ, θ = arccos ρ): the closed forms
        then use ``sin θ = √((1 − ρ)(1 + ρ))`` instead of two trigonometric passes, which
        is faster and exact at θ = 0 and π.

    Returns
    -------
    array
        ``J_0 = π − θ``, ``J_1 = sin θ + (π − θ)cos θ``,
        ``J_2 = 3 sin θ cos θ + (π − θ)(1 + 2cos²θ)``; higher orders from
        ``J_n(θ) = 2ⁿ n! ∫_{θ−π/2}^{π/2} cosⁿφ cosⁿ(φ−θ) dφ``.
    """
    pi = math.pi
    if not quadrature and order <= 2:
        if order == 0:
            return pi - theta
        if cos is None:
            s, c = xp.sin(theta), xp.cos(theta)
        else:
            c = cos
            s = xp.sqrt(xp.maximum((1.0 - c) * (1.0 + c), 0.0))
        if order == 1:
            return s + (pi - theta) * c
        return 3.0 * s * c + (pi - theta) * (1.0 + 2.0 * c * c)
    # A smooth integrand on a finite interval: the 2-D polar form of
    # 2∫ Θ(w·x)Θ(w·y)(w·x)ⁿ(w·y)ⁿ dN(w).
    nodes, weights = np.polynomial.legendre.leggauss(24 + 2 * order)
    half = (pi - theta) / 2.0
    mid = theta / 2.0  # the interval [θ − π/2, π/2] has midpoint θ/2
    acc = 0.0
    for t, w in zip(nodes, weights):
        phi = mid + half * float(t)
        acc = acc + float(w) * (xp.cos(phi) * xp.cos(phi - theta)) ** order
    return (2.0 ** order) * math.factorial(order) * half * acc


def arccos_kernel(x1, x2, order: int):
    """Cho & Saul arc-cosine kernel ``k_n(x, y) = (1/π)‖x‖ⁿ‖y‖ⁿ J_n(θ)`` (float64, 2-D inputs).

    ``k_n(x, y) = 2 E_{w~N(0,I)}[Θ(w·x)Θ(w·y)(w·x)ⁿ(w·y)ⁿ]``: ``k_0(x, x) = 1``,
    ``k_1(x, x) = ‖x‖²``, ``k_2(x, x) = 3‖x‖⁴`` (``J_n`` in :func:`arccos_J`). With
    ``Θ(0) = 0``, a zero row has kernel 0.
    """
    xp = get_namespace(x1, x2)
    n1 = xp.sqrt((x1 * x1).sum(1))[:, None]
    n2 = xp.sqrt((x2 * x2).sum(1))[None, :]
    prod = n1 * n2
    cos = xp.clip(pairs_matmul(x1, x2) / xp.where(prod > 0, prod, 1.0), -1.0, 1.0)
    # Within 4 ulps of ±1 the cosine is round-off (a GEMM entry next to norms from row sums):
    # snap it, since J_n's slope is infinite there (1e-16 would become 1e-8 in the kernel).
    snap = 1 - 4 * np.finfo(np.float64).eps
    cos = xp.where(cos >= snap, 1.0, xp.where(cos <= -snap, -1.0, cos))
    theta = xp.arccos(cos)
    k = arccos_J(order, theta, xp, cos=cos) / math.pi
    if order:
        k = k * prod ** order
    return xp.where(prod > 0, k, 0.0)
