"""Compiled exact kernels of fully connected nets: the whole dual-activation chain per entry.

Owns the fast path of ``Serial.kernel`` for vector rows through ``Dense`` layers (NTK
parameterization) and the activations whose dual has a closed form here — the ReLU family
(``Relu``, ``LeakyRelu``, ``Abs``, ``ABRelu``: arc-cosine J₀/J₁), ``Erf`` and ``Gelu``.  Such a
net is encoded as a small program (:func:`fc_chain`: op codes and parameters) and a block of
entries is computed by one compiled pass (Numba, ``nogil``; on CuPy one RawKernel,
:mod:`.fc_kernel_cupy`): each entry starts from
``⟨x, y⟩/d`` (the Gram block of ``backend.pairs_matmul``) and the rows' variances, and runs
every layer's exact face — the same formulas, in the same order, as the layers' NumPy exact
faces (``Dense.kernel``, ``D.moments``, the activations' ``dual_moments``) — keeping only
the scalars, so there are no (n1, n2) temporaries per step.  Results agree with the NumPy
path to float64 rounding (tested).

Every entry is computed from its own inputs alone (no reduction across entries), so a
kernel entry is bitwise independent of the blocks it is computed in.  Other nets (images,
sparse rows, other layers or activations, ``parameterization="standard"``) keep the
layers' own exact faces.  Must not import Dask.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np
from numba import njit

from ..backend import is_cupy
from .activations import Abs, ABRelu, Erf, Gelu, LeakyRelu, Relu
from .dense import Dense
from .fc_kernel_cupy import gpu_chain_block

__all__ = ["FCChain", "ChainBlock", "fc_chain", "chain_block", "fast_acos", "fast_asin"]

_DENSE, _RELU, _ERF, _GELU = 0, 1, 2, 3
_TINY = np.finfo(np.float64).tiny
_SNAP = 1 - 4 * np.finfo(np.float64).eps
_PI = math.pi


class FCChain(NamedTuple):
    """A fully connected net as a program: ``ops[k]`` with parameters ``params[k]``."""

    ops: np.ndarray     # int64 (L,)
    params: np.ndarray  # float64 (L, 3)


class ChainBlock(NamedTuple):
    """One block's kernels (what ``nets.exact.blocked_kernel`` reads); None where not asked."""

    nngp: Optional[np.ndarray]
    ntk: Optional[np.ndarray]


def fc_chain(layers) -> Optional[FCChain]:
    """The program of bound ``layers``, or None when a layer has no compiled form here."""
    ops, params = [], []
    for layer in layers:
        kind = type(layer)
        if kind is Dense and layer.parameterization == "ntk":
            b2 = 0.0 if layer.b_std is None else layer.b_std ** 2
            ops.append(_DENSE)
            params.append((layer.W_std ** 2, b2, 0.0))
        elif kind in (Relu, LeakyRelu, Abs, ABRelu):
            a, b = layer.slopes
            ops.append(_RELU)
            params.append((float(a), float(b), 0.0))
        elif kind is Erf:
            ops.append(_ERF)
            params.append((float(layer.a), float(layer.b), float(layer.c)))
        elif kind is Gelu:
            ops.append(_GELU)
            params.append((0.0, 0.0, 0.0))
        else:
            return None
    if not ops:
        return None
    return FCChain(np.asarray(ops, dtype=np.int64), np.asarray(params, dtype=np.float64).reshape(-1, 3))


# fdlibm's rational approximation of asin on [0, 1/2] (musl e_asin.c / e_acos.c): written
# branch-free so that the entry loops vectorize (libm's acos/asin do not); ≤ 2 ulp.
_PIO2_HI = 1.57079632679489655800e+00
_PIO2_LO = 6.12323399573676603587e-17
_PS = (1.66666666666666657415e-01, -3.25565818622400915405e-01, 2.01212532134862925881e-01,
       -4.00555345006794114027e-02, 7.91534994289814532176e-04, 3.47933107596021167570e-05)
_QS = (-2.40339491173441421878e+00, 2.02094576023350569471e+00, -6.88283971605453293030e-01,
       7.70381505559019352791e-02)
_P0, _P1, _P2, _P3, _P4, _P5 = _PS
_Q1, _Q2, _Q3, _Q4 = _QS
_JIT = dict(nogil=True, cache=True, error_model="numpy")


@njit(inline="always", error_model="numpy")
def _asin_r(z):
    p = z * (_P0 + z * (_P1 + z * (_P2 + z * (_P3 + z * (_P4 + z * _P5)))))
    q = 1.0 + z * (_Q1 + z * (_Q2 + z * (_Q3 + z * _Q4)))
    return p / q


@njit(inline="always", error_model="numpy")
def fast_acos(x):
    """arccos on [-1, 1] (fdlibm's reduction; ≤ 1 ulp, exact 0 at 1 and π at -1)."""
    ax = abs(x)
    small = ax <= 0.5
    z = x * x if small else (1.0 - ax) * 0.5
    s = math.sqrt(z)
    r = _asin_r(z)
    a_small = _PIO2_HI - (x - (_PIO2_LO - x * r))
    a_big = 2.0 * (_PIO2_HI - (s + (r * s - _PIO2_LO))) if x < 0 else 2.0 * (s + r * s)
    return a_small if small else a_big


@njit(inline="always", error_model="numpy")
def fast_asin(x):
    """arcsin on [-1, 1] (fdlibm's reduction; ≤ 2 ulp)."""
    ax = abs(x)
    small = ax <= 0.5
    z = x * x if small else (1.0 - ax) * 0.5
    s = math.sqrt(z)
    r = _asin_r(z)
    t = _PIO2_HI - (2.0 * (s + s * r) - _PIO2_LO)
    return x + x * r if small else (t if x > 0 else -t)


@njit(inline="always", error_model="numpy")
def _moments(var1, var2, cov):
    """``D.moments`` of one pair: (v1, v2, s1, s2, √(v1 v2), ρ clipped and snapped)."""
    v1 = max(var1, 0.0)
    v2 = max(var2, 0.0)
    s1 = math.sqrt(v1)
    s2 = math.sqrt(v2)
    prod = v1 if v1 == v2 else s1 * s2
    rho = cov / prod if prod > _TINY else 0.0
    rho = min(max(rho, -1.0), 1.0)
    rho = 1.0 if rho >= _SNAP else rho
    rho = -1.0 if rho <= -_SNAP else rho
    return v1, v2, s1, s2, prod, rho


@njit(inline="always", error_model="numpy")
def _relu(a, b, var1, var2, cov):
    """``ABRelu(a, b).dual_moments``: (prod·g(ρ), gdot(ρ)) with the arc-cosine J₁, J₀."""
    v1, v2, s1, s2, prod, rho = _moments(var1, var2, cov)
    theta = fast_acos(rho)
    kink = (a - b) ** 2 / (2 * _PI)
    sn = math.sqrt(max((1.0 - rho) * (1.0 + rho), 0.0))
    g = kink * (sn + (_PI - theta) * rho) + a * b * rho
    return prod * g, kink * (_PI - theta) + a * b


@njit(inline="always", error_model="numpy")
def _erf(a, b, c, var1, var2, cov):
    """``Erf(a, b, c).dual_moments``."""
    v1, v2, s1, s2, prod, rho = _moments(var1, var2, cov)
    b2 = b * b
    d1 = math.sqrt(1 + 2 * b2 * v1)
    d2 = math.sqrt(1 + 2 * b2 * v2)
    arg = min(max(2 * b2 * rho * (s1 / d1) * (s2 / d2), -1.0), 1.0)
    nngp = a * a * (2 / _PI) * fast_asin(arg) + c * c
    ps = prod * math.sqrt(max((1 - rho) * (1 + rho), 0.0))
    det = 1 + 2 * b2 * (v1 + v2) + 4 * b2 * b2 * (ps * ps)
    return nngp, a * a * b2 * (4 / _PI) / math.sqrt(det)


@njit(inline="always", error_model="numpy")
def _gelu(var1, var2, cov):
    """``Gelu().dual_moments``."""
    v1, v2, s1, s2, prod, rho = _moments(var1, var2, cov)
    cv = rho * prod
    q = prod * prod
    sp1 = math.sqrt(1 + v1) * math.sqrt(1 + v2)
    P = sp1 * sp1
    ps = prod * math.sqrt(max((1 - rho) * (1 + rho), 0.0))
    delta2 = 1 + v1 + v2 + ps * ps
    delta = math.sqrt(delta2)
    angle = fast_asin(min(max(cv / sp1, -1.0), 1.0))
    nngp = cv / 4 + cv * angle / (2 * _PI) + (q + cv * cv * (1 - q) / P) / (2 * _PI * delta)
    dot = 0.25 + angle / (2 * _PI) + cv * (1 + (1 - q) / P + 1 / delta2) / (2 * _PI * delta)
    return nngp, dot


@njit(**_JIT)
def _run(ops, params, nngp, ntk, V1, i, V2):
    """The chain on one row ``i`` of entries: ``nngp``, ``ntk`` in place; the left row's
    variances are ``V1[k, i]``, the right rows' ``V2[k, :]``."""
    n = nngp.shape[0]
    for k in range(ops.shape[0]):
        op = ops[k]
        p0, p1, p2 = params[k, 0], params[k, 1], params[k, 2]
        a = V1[k, i]
        w = V2[k]
        if op == _DENSE:
            for j in range(n):
                x = p0 * nngp[j] + p1
                nngp[j] = x
                ntk[j] = x + p0 * ntk[j]
        elif op == _RELU:
            for j in range(n):
                x, dot = _relu(p0, p1, a, w[j], nngp[j])
                nngp[j] = x
                ntk[j] = ntk[j] * dot
        elif op == _ERF:
            for j in range(n):
                x, dot = _erf(p0, p1, p2, a, w[j], nngp[j])
                nngp[j] = x
                ntk[j] = ntk[j] * dot
        else:
            for j in range(n):
                x, dot = _gelu(a, w[j], nngp[j])
                nngp[j] = x
                ntk[j] = ntk[j] * dot


@njit(**_JIT)
def _run_self(ops, params, nngp, ntk, out):
    """The chain on self pairs ``(x_i, x_i)``: both variances are the current NNGP entry;
    ``out[k, i]`` records the variance of row ``i`` entering op ``k``."""
    n = nngp.shape[0]
    for k in range(ops.shape[0]):
        op = ops[k]
        p0, p1, p2 = params[k, 0], params[k, 1], params[k, 2]
        out[k] = nngp
        if op == _DENSE:
            for j in range(n):
                x = p0 * nngp[j] + p1
                nngp[j] = x
                ntk[j] = x + p0 * ntk[j]
        elif op == _RELU:
            for j in range(n):
                v = nngp[j]
                x, dot = _relu(p0, p1, v, v, v)
                nngp[j] = x
                ntk[j] = ntk[j] * dot
        elif op == _ERF:
            for j in range(n):
                v = nngp[j]
                x, dot = _erf(p0, p1, p2, v, v, v)
                nngp[j] = x
                ntk[j] = ntk[j] * dot
        else:
            for j in range(n):
                v = nngp[j]
                x, dot = _gelu(v, v, v)
                nngp[j] = x
                ntk[j] = ntk[j] * dot
    out[ops.shape[0]] = nngp


@njit(**_JIT)
def _entries(ops, params, g, V1, V2, nngp_out, ntk_out, want_nngp, want_ntk):
    """Every entry ``(i, j)``: the chain from ``nngp = g[i, j]``, ``ntk = 0``, row by row."""
    n1, n2 = g.shape
    nngp = np.empty(n2)
    ntk = np.empty(n2)
    for i in range(n1):
        nngp[:] = g[i]
        ntk[:] = 0.0
        _run(ops, params, nngp, ntk, V1, i, V2)
        if want_nngp:
            nngp_out[i] = nngp
        if want_ntk:
            ntk_out[i] = ntk


def _self_chain(chain: FCChain, x):
    """(variances (L+1, n), diagonal NNGP, diagonal NTK) of the rows ``x``."""
    nngp = np.ascontiguousarray(np.sum(x * x, axis=-1) / x.shape[-1], dtype=np.float64)
    ntk = np.zeros_like(nngp)
    out = np.empty((chain.ops.shape[0] + 1, nngp.shape[0]), dtype=np.float64)
    _run_self(chain.ops, chain.params, nngp, ntk, out)
    return out, nngp, ntk


def chain_block(chain: FCChain, a, b, diagonal: bool, gram, kinds=("nngp", "ntk")) -> ChainBlock:
    """The exact NNGP/NTK of rows ``a`` × ``b`` (or k(a_i, a_i) when ``diagonal``).

    ``gram(a, b)`` computes ``a @ b.T`` (``backend.pairs_matmul``: each entry independent of
    the batches).  Float64 arrays in, float64 out; CuPy rows go to :mod:`.fc_kernel_cupy`.
    """
    if is_cupy(a):
        return gpu_chain_block(chain, a, b, diagonal, gram, kinds, ChainBlock)
    va, dn, dt = _self_chain(chain, a)
    want_nngp, want_ntk = "nngp" in kinds, "ntk" in kinds
    if diagonal:
        return ChainBlock(dn if want_nngp else None, dt if want_ntk else None)
    g = np.ascontiguousarray(gram(a, b) / a.shape[-1], dtype=np.float64)
    vb = _self_chain(chain, b)[0]
    shape = (a.shape[0], b.shape[0])
    nngp = np.empty(shape) if want_nngp else np.empty((0, 0))
    ntk = np.empty(shape) if want_ntk else np.empty((0, 0))
    _entries(chain.ops, chain.params, g, va, vb, nngp, ntk, want_nngp, want_ntk)
    return ChainBlock(nngp if want_nngp else None, ntk if want_ntk else None)
