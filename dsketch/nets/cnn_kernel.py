"""Compiled exact steps of image nets (CNTK): pixel-pair window sums and ReLU duals.

Owns the host fast path of ``Serial.kernel`` for image records: :func:`image_step` runs one
layer's exact face with Numba kernels (``nogil``, ``cache=True``, no ``fastmath``; the
entries split over :func:`kernel_threads` threads of a pool) when the layer and the record
allow it, and returns ``None`` otherwise (the caller then uses the layer's own NumPy/CuPy
face).  Compiled here:

- ``Conv`` (``parameterization="ntk"``): the diagonal window sum over the four pixel-pair
  axes in one pass per output pixel pair (no shifted copies, no intermediate), fused with
  the scale, the bias and, for the NTK, the addition of the new NNGP;
- ``AvgPool``: the window sums over both pixels of a pair in one pass, fused with the
  divisor (also ``normalize_edges``);
- the ReLU family (``Relu``, ``LeakyRelu``, ``Abs``, ``ABRelu``): ``D.moments`` and the
  arc-cosine dual of every pixel pair in one pass, fused with Θ' = Θ·E[φ'φ'].

The formulas are the layers' exact faces (``Conv.kernel``, ``AvgPool.kernel``,
``Activation.kernel`` with ``D.moments``); only the order of the window sum's additions
(offsets in row-major order, skipped where they fall in the padding) and arccos
(``fc_kernel.fast_acos``, ≤ 1 ulp) differ, so results agree with the NumPy faces to float64
rounding (tested).  Each output entry is computed from its own window alone, in a fixed
order, whatever the batch, block or thread count: a kernel entry is bitwise independent of
the batch.  Only C-contiguous float64 NumPy arrays are handled; CuPy and other array
namespaces keep the layers' generic faces.  Must not import Dask.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from .activations import Abs, ABRelu, LeakyRelu, Relu
from .base import Kernel
from .conv import Conv
from .conv_shift import offset_taps
from .fc_kernel import fast_acos
from .pooling import AvgPool
from .spatial import geometry, map_kernel_arrays

__all__ = ["image_step", "pair_window_sum", "relu_pairs", "kernel_threads"]

_RELU_FAMILY = (Relu, LeakyRelu, Abs, ABRelu)
_TINY = np.finfo(np.float64).tiny
_SNAP = 1 - 4 * np.finfo(np.float64).eps
_PI = math.pi
_JIT = dict(cache=True, nogil=True, error_model="numpy")
#: Output entries below which a kernel runs on the calling thread alone.
_SPLIT_ENTRIES = 1 << 16


# ------------------------------------------------------------------------- window sums
# Loops index zero-based views with their range variable: an index that may look negative
# to the compiler (``row[q + off]``) costs a wraparound select per element and keeps the
# loop from vectorizing (measured 2.6× on the Myrtle conv).
@njit(**_JIT)
def _conv_pairs(lo, hi, a, th, tw, sh, sw, scale, shift, add, out):
    """``out[b, p, q] = scale · Σ_{dh, dw} a[b, s p + d − lo, s q + d − lo] + shift (+ add)``:
    the same offset moves both pixels of a pair; offsets in the padding are skipped."""
    nb, ho, wo = out.shape[0], out.shape[1], out.shape[2]
    fh, fw = th.shape[0], tw.shape[0]
    has_add = add.shape[0] > 0
    for t in range(lo, hi):
        b = t // (ho * wo)
        p1 = (t // wo) % ho
        p2 = t % wo
        o = out[b, p1, p2]
        o[:, :] = 0.0
        for dh in range(fh):
            lo1, hi1, st1 = th[dh, 0], th[dh, 1], th[dh, 2]
            if p1 < lo1 or p1 >= hi1:
                continue
            i1 = st1 + sh * (p1 - lo1)
            for dw in range(fw):
                lo2, hi2, st2 = tw[dw, 0], tw[dw, 1], tw[dw, 2]
                if p2 < lo2 or p2 >= hi2:
                    continue
                src = a[b, i1, st2 + sw * (p2 - lo2)]
                nq = hi2 - lo2
                for q1 in range(hi1 - lo1):
                    row = src[st1 + sh * q1, st2:st2 + sw * (nq - 1) + 1:sw]
                    orow = o[lo1 + q1, lo2:hi2]
                    for r in range(nq):
                        orow[r] += row[r]
        if has_add:
            _finish_add(o.reshape(ho * wo), scale, shift, add[b, p1, p2].reshape(ho * wo))
        else:
            _finish(o.reshape(ho * wo), scale, shift)


@njit(**_JIT)
def _conv_pairs_flat(lo, hi, a, th, tw, mask, scale, shift, add, out):
    """:func:`_conv_pairs` at stride 1 with rows of the input's length: each offset is one run over the flattened (q1, q2)
    plane, its entries whose column falls in the padding multiplied by ``mask = 0`` (a
    finite ``x·0`` adds ±0: the same sums, bitwise, as skipping them)."""
    nb, ho, wo = out.shape[0], out.shape[1], out.shape[2]
    w = a.shape[4]
    fh, fw = th.shape[0], tw.shape[0]
    has_add = add.shape[0] > 0
    for t in range(lo, hi):
        b = t // (ho * wo)
        p1 = (t // wo) % ho
        p2 = t % wo
        o = out[b, p1, p2].reshape(ho * wo)
        o[:] = 0.0
        for dh in range(fh):
            lo1, hi1, st1 = th[dh, 0], th[dh, 1], th[dh, 2]
            if p1 < lo1 or p1 >= hi1:
                continue
            for dw in range(fw):
                lo2, hi2, st2 = tw[dw, 0], tw[dw, 1], tw[dw, 2]
                if p2 < lo2 or p2 >= hi2:
                    continue
                src = a[b, st1 + p1 - lo1, st2 + p2 - lo2].reshape(a.shape[3] * w)
                start = lo1 * wo + lo2
                n = (hi1 - 1) * wo + hi2 - start
                first = st1 * w + st2
                ov = o[start:start + n]
                sv = src[first:first + n]
                mv = mask[dw, start:start + n]
                for r in range(n):
                    ov[r] += sv[r] * mv[r]
        if has_add:
            _finish_add(o, scale, shift, add[b, p1, p2].reshape(ho * wo))
        else:
            _finish(o, scale, shift)


@njit(inline="always")
def _finish(o, scale, shift):
    """``o = o·scale + shift`` on one flattened output plane."""
    for r in range(o.shape[0]):
        o[r] = o[r] * scale + shift


@njit(inline="always")
def _finish_add(o, scale, shift, add):
    """``o = o·scale + shift + add`` on one flattened output plane."""
    for r in range(o.shape[0]):
        o[r] = o[r] * scale + shift + add[r]


@njit(**_JIT)
def _pool_pairs(lo, hi, a, th, tw, sh, sw, div, out):
    """``out[b, P, Q] = Σ_{p ∈ P} Σ_{q ∈ Q} a[b, p, q] / (div[P] · div[Q])`` (zero padding)."""
    nb, ho, wo = out.shape[0], out.shape[1], out.shape[2]
    fh, fw = th.shape[0], tw.shape[0]
    for t in range(lo, hi):
        b = t // (ho * wo)
        p1 = (t // wo) % ho
        p2 = t % wo
        o = out[b, p1, p2]
        o[:, :] = 0.0
        for dh in range(fh):
            if p1 < th[dh, 0] or p1 >= th[dh, 1]:
                continue
            i1 = th[dh, 2] + sh * (p1 - th[dh, 0])
            for dw in range(fw):
                if p2 < tw[dw, 0] or p2 >= tw[dw, 1]:
                    continue
                src = a[b, i1, tw[dw, 2] + sw * (p2 - tw[dw, 0])]
                for eh in range(fh):
                    lo1, hi1, st1 = th[eh, 0], th[eh, 1], th[eh, 2]
                    for q1 in range(hi1 - lo1):
                        orow = o[lo1 + q1]
                        for ew in range(fw):
                            lo2, hi2, st2 = tw[ew, 0], tw[ew, 1], tw[ew, 2]
                            nq = hi2 - lo2
                            row = src[st1 + sh * q1, st2:st2 + sw * (nq - 1) + 1:sw]
                            ov = orow[lo2:hi2]
                            for r in range(nq):
                                ov[r] += row[r]
        d = div[p1, p2]
        for q1 in range(ho):
            for q2 in range(wo):
                o[q1, q2] = o[q1, q2] / (d * div[q1, q2])


def _column_mask(tw, wo: int, ho: int) -> np.ndarray:
    """``(fw, ho·wo)``: 1 where column q2 of the flattened plane sees offset dw, else 0."""
    mask = np.zeros((tw.shape[0], ho, wo))
    for dw, (lo, hi, _) in enumerate(tw):
        mask[dw, :, lo:hi] = 1.0
    return mask.reshape(tw.shape[0], ho * wo)


def _flat5(a, batch: int) -> np.ndarray:
    """``a`` as a C-contiguous float64 ``(B, H, W, H, W)`` array (``batch`` leading axes)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    return a.reshape((-1,) + a.shape[batch:])


def pair_window_sum(a, geom, *, diagonal: bool, scale: float = 1.0, shift: float = 0.0,
                    add=None, div=None) -> np.ndarray:
    """Window sums over the pixel-pair axes of a ``batch + (H, W, H, W)`` float64 array.

    ``diagonal=True`` (``Conv``): ``scale · Σ_d a[.., s p + d, s q + d] + shift`` (+ ``add``,
    an array of the output's shape); ``diagonal=False`` (``AvgPool``): the sum over both
    windows divided by ``div[P] · div[Q]`` (``div``: ``(H', W')`` per-pixel divisors).
    """
    gh, gw = geom
    batch = a.ndim - 4
    lead = a.shape[:batch]
    x = _flat5(a, batch)
    out = np.empty((x.shape[0], gh.out, gw.out, gh.out, gw.out), dtype=np.float64)
    th, tw = offset_taps(gh), offset_taps(gw)
    if diagonal:
        extra = np.empty((0, 1, 1, 1, 1)) if add is None else _flat5(add, batch)
        if gh.stride == 1 and gw.stride == 1 and gw.out == gw.size:  # rows keep their length
            _split(_conv_pairs_flat, out, x, th, tw, _column_mask(tw, gw.out, gh.out),
                   float(scale), float(shift), extra, out)
        else:
            _split(_conv_pairs, out, x, th, tw, gh.stride, gw.stride, float(scale), float(shift),
                   extra, out)
    else:
        _split(_pool_pairs, out, x, th, tw, gh.stride, gw.stride,
               np.ascontiguousarray(div, dtype=np.float64), out)
    return out.reshape(lead + out.shape[1:])


# ----------------------------------------------------------------------------- duals
@njit(inline="always", error_model="numpy")
def _relu_entry(sa, sb, var1, var2, cov):
    """``D.moments`` then ``ABRelu(sa, sb).dual_moments``: (√(v1 v2)·g(ρ), gdot(ρ))."""
    v1 = max(var1, 0.0)
    v2 = max(var2, 0.0)
    prod = v1 if v1 == v2 else math.sqrt(v1) * math.sqrt(v2)
    rho = cov / prod if prod > _TINY else 0.0
    rho = min(max(rho, -1.0), 1.0)
    rho = 1.0 if rho >= _SNAP else rho
    rho = -1.0 if rho <= -_SNAP else rho
    theta = fast_acos(rho)
    kink = (sa - sb) ** 2 / (2 * _PI)
    sn = math.sqrt(max((1.0 - rho) * (1.0 + rho), 0.0))
    g = kink * (sn + (_PI - theta) * rho) + sa * sb * rho
    return prod * g, kink * (_PI - theta) + sa * sb


@njit(**_JIT)
def _relu_pairs(lo, hi, cov, ntk, vl, vr, same, sa, sb, out, out_ntk):
    """Every entry ``(i, j, p, q)`` of ``cov`` with variances ``vl[i, p]`` and ``vr[i or j, q]``."""
    n1, n2, pp, qq = cov.shape
    has_ntk = ntk.shape[0] > 0
    for t in range(lo, hi):
        i = t // (n2 * pp)
        j = (t // pp) % n2
        p = t % pp
        v = vl[i, p]
        w = vr[i] if same else vr[j]
        c = cov[i, j, p]
        o = out[i, j, p]
        if has_ntk:
            th = ntk[i, j, p]
            ot = out_ntk[i, j, p]
            for q in range(qq):
                x, dot = _relu_entry(sa, sb, v, w[q], c[q])
                o[q] = x
                ot[q] = th[q] * dot
        else:
            for q in range(qq):
                o[q] = _relu_entry(sa, sb, v, w[q], c[q])[0]


def relu_pairs(slopes, cov, vl, vr, *, same: bool, ntk=None):
    """ReLU-family dual of ``cov`` ``(n1, n2, P, P)`` (``n2 = 1`` when ``same``): ``(nngp', ntk')``.

    Left variances ``vl[i, p]``, right ``vr[j, q]`` (``vr[i, q]`` when ``same``: a record's
    self pairs); ``ntk'`` (``Θ·E[φ'φ']``) only when ``ntk`` is given.
    """
    cov = np.ascontiguousarray(cov, dtype=np.float64)
    out = np.empty_like(cov)
    if ntk is None:
        th, out_ntk = np.empty((0, 1, 1, 1)), np.empty((0, 1, 1, 1))
    else:
        th = np.ascontiguousarray(ntk, dtype=np.float64)
        out_ntk = np.empty_like(th)
    _split(_relu_pairs, cov, cov, th, np.ascontiguousarray(vl, dtype=np.float64),
           np.ascontiguousarray(vr, dtype=np.float64), bool(same), float(slopes[0]),
           float(slopes[1]), out, out_ntk)
    return out, (None if ntk is None else out_ntk)


def _pixel_variances(cov, spatial) -> np.ndarray:
    """``(n, P)``: the diagonal of a self record ``(n,) + S + S``."""
    pix = int(math.prod(spatial)) if spatial else 1
    return np.ascontiguousarray(cov.reshape(cov.shape[0], pix, pix).diagonal(axis1=1, axis2=2))


def _relu_step(act, k: Kernel) -> Kernel:
    pix = int(math.prod(k.spatial)) if k.spatial else 1
    slopes = act.slopes
    d1 = _pixel_variances(k.cov1, k.spatial)

    def self_dual(cov, d):
        n = cov.shape[0]
        return relu_pairs(slopes, cov.reshape(n, 1, pix, pix), d, d, same=True)[0].reshape(cov.shape)

    if k.diagonal:
        n = k.nngp.shape[0]
        nngp, ntk = relu_pairs(slopes, k.nngp.reshape(n, 1, pix, pix), d1, d1, same=True,
                               ntk=k.ntk.reshape(n, 1, pix, pix))
        nngp = nngp.reshape(k.nngp.shape)
        return k.replace(nngp=nngp, ntk=ntk.reshape(k.ntk.shape), cov1=nngp, cov2=None)
    d2 = _pixel_variances(k.cov2, k.spatial)
    n1, n2 = k.nngp.shape[:2]
    nngp, ntk = relu_pairs(slopes, k.nngp.reshape(n1, n2, pix, pix), d1, d2, same=False,
                           ntk=k.ntk.reshape(n1, n2, pix, pix))
    return k.replace(nngp=nngp.reshape(k.nngp.shape), ntk=ntk.reshape(k.ntk.shape),
                     cov1=self_dual(k.cov1, d1), cov2=self_dual(k.cov2, d2))


# ----------------------------------------------------------------------------- layers
def _conv_step(layer: Conv, k: Kernel) -> Kernel:
    geom = geometry(k.spatial, layer.filter_shape, layer.strides, layer.padding, "Conv filter")
    scale = layer.W_std ** 2 / (layer.filter_shape[0] * layer.filter_shape[1])
    b2 = 0.0 if layer.b_std is None else layer.b_std ** 2

    def affine(a):
        return pair_window_sum(a, geom, diagonal=True, scale=scale, shift=b2)

    new = map_kernel_arrays(k, affine, spatial=(geom[0].out, geom[1].out))
    if not k.ntk.any():  # first layer: Θ = 0, skip its window sums; Θ' = Σ' (shared:
        return new.replace(ntk=new.nngp)  # no exact face writes into its input record)
    return new.replace(ntk=pair_window_sum(k.ntk, geom, diagonal=True, scale=scale, add=new.nngp))


def _pool_step(layer: AvgPool, k: Kernel) -> Kernel:
    geom = geometry(k.spatial, layer.window_shape, layer.strides, layer.padding, "AvgPool")
    gh, gw = geom
    if layer.normalize_edges and layer.padding == "SAME":
        ch = _taps_count(gh)
        cw = _taps_count(gw)
        div = ch[:, None] * cw[None, :]
    else:
        div = np.full((gh.out, gw.out), float(layer.window_shape[0] * layer.window_shape[1]))

    def pool(a):
        return pair_window_sum(a, geom, diagonal=False, div=div)

    new = map_kernel_arrays(k, pool, spatial=(gh.out, gw.out))
    return new.replace(ntk=pool(k.ntk))


def _taps_count(g) -> np.ndarray:
    """Real (non-padding) input positions in each output window of one dimension."""
    count = np.zeros(g.out)
    for lo, hi, _ in offset_taps(g):
        count[lo:hi] += 1
    return count


def _compilable(k: Kernel) -> bool:
    arrays = [k.nngp, k.ntk, k.cov1] + ([] if k.cov2 is None else [k.cov2])
    return all(type(a) is np.ndarray and a.dtype == np.float64 for a in arrays)


def image_step(layer, k: Kernel):
    """``layer.kernel(k)`` by the compiled kernels, or ``None`` where they do not apply
    (other layers, ``parameterization="standard"``, vector records, non-NumPy arrays)."""
    if len(k.spatial) != 2 or not _compilable(k):
        return None
    kind = type(layer)
    if kind is Conv and layer.parameterization == "ntk":
        return _conv_step(layer, k)
    if kind is AvgPool:
        return _pool_step(layer, k)
    if kind in _RELU_FAMILY:
        return _relu_step(layer, k)
    return None


_LOCAL = threading.local()
_POOL: dict = {}
_POOL_LOCK = threading.Lock()


def _threads() -> int:
    """Threads the calling thread's kernels may use (:func:`kernel_threads`; default 1)."""
    return getattr(_LOCAL, "threads", 1)


def _split(kernel, out, *args) -> None:
    """``kernel(lo, hi, *args)`` over the outer entries ``[0, T)`` of ``out`` (``T`` = the
    product of its axes but the last two for window sums, but the last one for duals —
    the kernels' own loop counts), cut into contiguous ranges on :func:`_threads` threads.

    Every entry is computed by the same code whatever range holds it, so the split never
    changes a bit.  A pool of Python threads runs the ``nogil`` kernels: waiting is passive
    (OpenMP's spinning barriers measured 30× slower on a loaded 2-core machine).
    """
    inner = 2 if kernel is not _relu_pairs else 1
    total = int(np.prod(out.shape[:-inner]))
    threads = min(_threads(), max(1, out.size // _SPLIT_ENTRIES), total)
    if threads <= 1:
        kernel(0, total, *args)
        return
    key = (os.getpid(), threads)  # a forked child builds its own pool
    with _POOL_LOCK:
        pool = _POOL.get(key)
        if pool is None:
            pool = _POOL[key] = ThreadPoolExecutor(max_workers=threads - 1,
                                                   thread_name_prefix="dsketch-cnn")
    bounds = [total * i // threads for i in range(threads + 1)]
    jobs = [pool.submit(kernel, lo, hi, *args) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    kernel(bounds[0], bounds[1], *args)
    for job in jobs:
        job.result()


@contextlib.contextmanager
def kernel_threads(n: int):
    """Run this thread's compiled kernels on ``n`` threads (a per-thread setting)."""
    old = _threads()
    _LOCAL.threads = max(1, int(n))
    try:
        yield
    finally:
        _LOCAL.threads = old
