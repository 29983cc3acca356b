"""Compiled host kernels of the Hadamard family (Numba): per-row, cache-resident butterflies.

Owns the NumPy-side compiled forms of :mod:`.hadamard`'s transforms:

- :func:`fwht_rows` — the unnormalized Walsh–Hadamard butterfly, in place, on every row of a
  C-contiguous 2-D real array (a complex array goes in as its real view with ``step=2``); its
  four shortest levels run on 16-entry vectors written in LLVM IR (:func:`_wht16_at`, a Numba
  ``intrinsic``: shuffles the vectorizers do not find), the longer ones as vectorized loops;
- :func:`signed_blocks` — ``hadamard_blocks`` fused: each row's signed input, zero padded,
  transformed per sign block and (optionally) gathered to given coordinates — and times
  another factor (a TensorSRHT's product) — in one pass through a row-sized scratch buffer
  that stays in L1/L2;
- :func:`folded_fwht` — ``fwht(fold_signed(x, signs, n))`` fused (and gathered, multiplied);
- :func:`signed_add` — ``SignedSum.add``: a signed, scaled block added into an accumulator
  in one pass (the products and sums NumPy does, in its order);
- :func:`window_product` — a TensorSRHT's windowed pairing of a narrow first factor with
  consecutive windows of the second (``out[t·w + k] = a[k] · b[t + k]``), or the first factor
  repeated, written straight into the output.

Every kernel computes a row from that row alone, in a fixed order (no reduction across
rows, no ``fastmath``), so a row's result is bitwise the same whatever batch, position or
row order it is computed in, on every CPU.  Kernels are compiled once per dtype (float32,
float64; ``cache=True``), run serially and release the GIL (``nogil``): the callers'
thread pools (``nets.chunks``, ``nets.exact``, Dask's workers) spread rows over the cores.
Only real dtypes; complex sign blocks stay on the NumPy path of :mod:`.hadamard`.
Must not import Dask; holds no random state.  The CuPy mirror is :mod:`.compiled_cupy`
(without the fused product and signed add: on CuPy the callers multiply and add after).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["fwht_rows", "signed_blocks", "folded_fwht", "signed_add", "window_product",
           "NUMBA_DTYPES"]

#: Dtypes the kernels are compiled for (one specialization each).
NUMBA_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# Loops index zero-based views with a counter running from 0 (``for g in range(...)``): an
# index the compiler cannot prove non-negative (``dst[base + k]``, a stepped range) costs a
# wraparound select per element and keeps the loop from vectorizing (measured 1.4-5x on
# these kernels, the same additions in the same order).
@njit(nogil=True, cache=True, inline="always")
def _wht8(v, width):
    """The 8-point transform of every ``v[8g:8g+8]`` in registers (levels 1, 2, 4)."""
    for g in range(width // 8):
        i = 8 * g
        a0 = v[i]
        a1 = v[i + 1]
        a2 = v[i + 2]
        a3 = v[i + 3]
        a4 = v[i + 4]
        a5 = v[i + 5]
        a6 = v[i + 6]
        a7 = v[i + 7]
        b0, b1, b2, b3 = a0 + a1, a0 - a1, a2 + a3, a2 - a3
        b4, b5, b6, b7 = a4 + a5, a4 - a5, a6 + a7, a6 - a7
        c0, c1, c2, c3 = b0 + b2, b1 + b3, b0 - b2, b1 - b3
        c4, c5, c6, c7 = b4 + b6, b5 + b7, b4 - b6, b5 - b7
        v[i] = c0 + c4
        v[i + 1] = c1 + c5
        v[i + 2] = c2 + c6
        v[i + 3] = c3 + c7
        v[i + 4] = c0 - c4
        v[i + 5] = c1 - c5
        v[i + 6] = c2 - c6
        v[i + 7] = c3 - c7


@njit(nogil=True, cache=True)
def _levels(v, h, width):
    """Butterfly levels of spans ``h, 2h, …, width/2`` on the 1-D view ``v`` (two at a time)."""
    while h < width:
        if 4 * h <= width:
            for i in range(0, width, 4 * h):
                p0 = v[i:i + h]
                p1 = v[i + h:i + 2 * h]
                p2 = v[i + 2 * h:i + 3 * h]
                p3 = v[i + 3 * h:i + 4 * h]
                for k in range(h):
                    s01 = p0[k] + p1[k]
                    d01 = p0[k] - p1[k]
                    s23 = p2[k] + p3[k]
                    d23 = p2[k] - p3[k]
                    p0[k] = s01 + s23
                    p1[k] = d01 + d23
                    p2[k] = s01 - s23
                    p3[k] = d01 - d23
            h *= 4
        else:
            for i in range(0, width, 2 * h):
                p0 = v[i:i + h]
                p1 = v[i + h:i + 2 * h]
                for k in range(h):
                    a = p0[k]
                    b = p1[k]
                    p0[k] = a + b
                    p1[k] = a - b
            h *= 2


#: Entries per SIMD group of :func:`_wht16_at` (its four butterfly levels stay in registers).
_GROUP = 16


@intrinsic
def _wht16_at(typingctx, arr, start):
    """Butterfly levels 1, 2, 4, 8 of ``arr[start:start + 16]`` in place, as one vector.

    Written in LLVM IR because neither of Numba's vectorizers turns spans below the vector
    width into shuffles (their scalar code for these levels took 4x as long).  Level ``s``:
    ``v ← swap_s(v) + v ⊙ (±1)`` (``swap_s`` exchanges entries ``s`` apart; the sign is −1
    where bit ``s`` of the position is set), which is ``a + b`` / ``a − b`` of the scalar
    butterfly, rounded alike: the same bits.  ``arr`` must be 1-D C-contiguous, real.
    """
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"
            and arr.dtype in (types.float32, types.float64) and isinstance(start, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        elt = context.get_data_type(sig.args[0].dtype)
        vec = ir.VectorType(elt, _GROUP)
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), vec.as_pointer())
        align = context.get_abi_sizeof(elt)        # rows are only element-aligned
        v = builder.load(ptr, align=align)
        span = 1
        while span < _GROUP:
            mask = ir.Constant(ir.VectorType(ir.IntType(32), _GROUP), [i ^ span for i in range(_GROUP)])
            sign = ir.Constant(vec, [-1.0 if i & span else 1.0 for i in range(_GROUP)])
            v = builder.fadd(builder.shuffle_vector(v, v, mask), builder.fmul(v, sign))
            span *= 2
        builder.store(v, ptr, align=align)
        return context.get_dummy_value()

    return types.void(arr, start), codegen


@njit(nogil=True, cache=True)
def _butterfly(v, lo, width, step):
    """In-place unnormalized WHT of ``v[lo:lo+width]``.

    ``width`` is a power of two times ``step`` (``step=2``: interleaved complex pairs).  A
    real transform does its first four levels per 16 entries in vector registers (first
    three per 8 at width 8), then the rest two levels per pass over the (cache-resident)
    row.
    """
    w = v[lo:lo + width]
    if step == 1 and width >= _GROUP:
        for g in range(width // _GROUP):
            _wht16_at(w, g * _GROUP)
        _levels(w, _GROUP, width)
    elif step == 1 and width >= 8:
        _wht8(w, width)
        _levels(w, 8, width)
    else:
        _levels(w, step, width)


@njit(nogil=True, cache=True)
def _fwht_rows(y, step):
    rows, width = y.shape
    for r in range(rows):
        _butterfly(y[r], 0, width, step)


def fwht_rows(y: np.ndarray, step: int = 1) -> np.ndarray:
    """Walsh–Hadamard transform of every row of ``y`` in place (``y`` returned).

    ``y`` is a C-contiguous float32/float64 ``(rows, width)`` array; ``width / step`` must be
    a power of two.  ``step=2`` transforms interleaved (real, imaginary) pairs: a complex
    row given as its real view.
    """
    _fwht_rows(y, step)
    return y


@njit(nogil=True, cache=True, inline="always")
def _gather(dst, src, idx, mul):
    """``dst[k] = src[idx[k]]``, times ``mul[k]`` when ``mul`` is not empty (``idx``
    non-negative: read as unsigned, no wraparound)."""
    if mul.shape[0] > 0:
        for k in range(idx.shape[0]):
            dst[k] = mul[k] * src[np.uint64(idx[k])]
    else:
        for k in range(idx.shape[0]):
            dst[k] = src[np.uint64(idx[k])]


@njit(nogil=True, cache=True)
def _signed_blocks(x, signs, d, h, idx, mul, out):
    """Per row: for each block b, ``w = H_n pad(x ⊙ signs[b, :d])`` written to ``buf[b·n:]``;
    the transform is computed at width ``h`` (≥ d, a power of two) and tiled ``n/h`` times
    (``H_n [a; 0] = [H_h a; H_h a; …]``); then ``out[r] = buf`` or ``buf[idx]`` (times
    ``mul[r]`` when ``mul`` has columns)."""
    rows = x.shape[0]
    blocks, n = signs.shape
    gather = idx.shape[0] > 0
    buf = np.empty(blocks * n, dtype=out.dtype)
    for r in range(rows):
        dst = buf if gather else out[r]
        xr = x[r]
        for b in range(blocks):
            blk = dst[b * n:(b + 1) * n]
            sg = signs[b]
            for k in range(d):
                blk[k] = xr[k] * sg[k]
            for k in range(d, h):
                blk[k] = 0
            _butterfly(blk, 0, h, 1)
            for t in range(1, n // h):
                tile = blk[t * h:(t + 1) * h]
                for k in range(h):
                    tile[k] = blk[k]
        if gather:
            _gather(out[r], buf, idx, mul[r] if mul.shape[1] > 0 else mul[0])


_NO_INDEX = np.zeros(0, dtype=np.int64)


def _c(a: np.ndarray, dtype) -> np.ndarray:
    """C-contiguous, writeable ``a`` in ``dtype`` (read-only arrays would compile another
    specialization of every kernel: copied instead)."""
    a = np.ascontiguousarray(a, dtype=dtype)
    return a if a.flags.writeable else a.copy()


def _width(d: int) -> int:
    return 1 << max(0, (int(d) - 1).bit_length())


def _mul(mul, dt, rows: int, cols: int) -> np.ndarray:
    """The factor of a fused gather-product (``(rows, cols)``), or an empty ``(1, 0)``."""
    if mul is None:
        return np.empty((1, 0), dtype=dt)
    if mul.shape != (rows, cols) or mul.dtype != dt:
        raise ValueError(f"mul must be a {dt} array of shape {(rows, cols)}, got {mul.dtype} {mul.shape}")
    return _c(mul, dt)


def signed_blocks(x2: np.ndarray, signs: np.ndarray, idx=None, mul=None) -> np.ndarray:
    """``fwht(pad_n(x2 ⊙ signs[b, :d]))`` for each sign block ``b``, concatenated: ``(R, B·n)``;
    with ``idx``, only those coordinates of the concatenation: ``(R, len(idx))``, and with
    ``mul`` (``(R, len(idx))``, the output dtype) ``mul * that`` (one product per entry).

    ``x2`` is real ``(R, d)``, ``signs`` real ``(B, n)`` with ``n ≥ d`` a power of two.  The
    work per block is a width-``next_pow2(d)`` butterfly (the padding's share is a copy).
    """
    dt = np.result_type(x2.dtype, signs.dtype)
    x2 = _c(x2, dt)
    signs = _c(signs, dt)
    d = x2.shape[1]
    blocks, n = signs.shape
    idx = _NO_INDEX if idx is None else _c(idx, np.int64)
    if mul is not None and not idx.shape[0]:
        raise ValueError("mul needs idx")
    out = np.empty((x2.shape[0], idx.shape[0] if idx.shape[0] else blocks * n), dtype=dt)
    _signed_blocks(x2, signs, d, min(n, _width(d)), idx, _mul(mul, dt, *out.shape), out)
    return out


@njit(nogil=True, cache=True)
def _folded_fwht(x, signs, n, idx, mul, out):
    """Per row: ``w = H_n Σ_a x[r, a·n:(a+1)·n] ⊙ signs[a·n:(a+1)·n]`` (pieces added in order);
    ``out[r] = w`` or ``w[idx]`` (times ``mul[r]`` when ``mul`` has columns)."""
    rows, d = x.shape
    gather = idx.shape[0] > 0
    buf = np.empty(n, dtype=out.dtype)
    first = min(n, d)
    for r in range(rows):
        o = buf if gather else out[r]
        xr = x[r]
        for k in range(first):
            o[k] = xr[k] * signs[k]
        for k in range(first, n):
            o[k] = 0
        for a in range(1, -(-d // n)):
            piece = xr[a * n:min(d, (a + 1) * n)]
            sp = signs[a * n:min(d, (a + 1) * n)]
            for k in range(piece.shape[0]):
                o[k] += piece[k] * sp[k]
        _butterfly(o, 0, n, 1)
        if gather:
            _gather(out[r], buf, idx, mul[r] if mul.shape[1] > 0 else mul[0])


def folded_fwht(x2: np.ndarray, signs: np.ndarray, n: int, idx=None, mul=None) -> np.ndarray:
    """``fwht(fold_signed(x2, signs, n))``: ``(R, d) → (R, n)``, real, one pass per row; with
    ``idx`` only those columns, ``(R, len(idx))`` (times ``mul`` as in :func:`signed_blocks`)."""
    dt = np.result_type(x2.dtype, signs.dtype)
    x2 = _c(x2, dt)
    signs = _c(signs[: x2.shape[1]], dt)
    idx = _NO_INDEX if idx is None else _c(idx, np.int64)
    if mul is not None and not idx.shape[0]:
        raise ValueError("mul needs idx")
    out = np.empty((x2.shape[0], idx.shape[0] if idx.shape[0] else n), dtype=dt)
    _folded_fwht(x2, signs, n, idx, _mul(mul, dt, *out.shape), out)
    return out


@njit(nogil=True, cache=True)
def _signed_add(acc, a, w, signs, scale, fresh):
    """``acc[r, :w] (+)= (a[r, :w] ⊙ signs[:w]) · scale[r]`` (no scale when ``scale`` has no
    columns; ``fresh``: written, not added): SignedSum's term, rounded as NumPy rounds it."""
    rows = a.shape[0]
    scaled = scale.shape[1] > 0
    for r in range(rows):
        ar = a[r, :w]
        dst = acc[r, :w]
        if scaled:
            s = scale[r, 0]
            for k in range(w):
                v = ar[k] * signs[k]
                v = v * s
                dst[k] = v if fresh else dst[k] + v
        else:
            for k in range(w):
                v = ar[k] * signs[k]
                dst[k] = v if fresh else dst[k] + v


def signed_add(acc, a: np.ndarray, signs: np.ndarray, scale=None, width=None) -> np.ndarray:
    """``acc[:, :w] += (a ⊙ signs[:w]) · scale`` in one pass (``SignedSum.add`` on the host).

    ``a`` real ``(R, w)`` (any strides), ``signs`` its dtype, ``scale`` None or ``(R, 1)`` of
    that dtype; ``acc`` C-contiguous ``(R, width)`` of that dtype, or None: a new array
    (``width = w``: the term itself; wider: zeros plus the term in the first ``w`` columns).
    """
    dt = a.dtype
    rows, w = a.shape
    sc = np.empty((1, 0), dtype=dt) if scale is None else _c(scale, dt)
    rows_of = _rows_of(a)
    if acc is None:
        width = w if width is None else width
        out = np.empty((rows, width), dtype=dt) if width == w else np.zeros((rows, width), dtype=dt)
        _signed_add(out, rows_of, w, _c(signs[:w], dt), sc, width == w)
        return out
    _signed_add(acc, rows_of, w, _c(signs[:w], dt), sc, False)
    return acc


def _rows_of(a: np.ndarray) -> np.ndarray:
    """``a`` as C-contiguous rows whose first ``a.shape[1]`` columns are ``a``: a column
    prefix ``p[:, :w]`` of a C-contiguous ``p`` gives ``p`` itself (no copy; a compiled loop
    over unit-stride rows vectorizes, one over strided rows does not: 4x measured)."""
    if a.flags.c_contiguous:
        return a
    p = a.base
    if (isinstance(p, np.ndarray) and p.ndim == 2 and p.flags.c_contiguous and p.dtype == a.dtype
            and p.shape[0] == a.shape[0] and p.shape[1] >= a.shape[1]
            and p.__array_interface__["data"][0] == a.__array_interface__["data"][0]
            and a.strides == p.strides):
        return p
    return np.ascontiguousarray(a)



@njit(nogil=True, cache=True)
def _window_product(a, b, windows, out):
    """``out[r, t·w:(t+1)·w] = a[r] ⊙ b[r, t:t+w]`` (``a[r]`` when ``b`` has no columns)."""
    rows, w = a.shape
    paired = b.shape[1] > 0
    for r in range(rows):
        ar = a[r]
        o = out[r]
        for t in range(windows):
            seg = o[t * w:(t + 1) * w]
            if paired:
                bw = b[r, t:t + w]
                for k in range(w):
                    seg[k] = ar[k] * bw[k]
            else:
                for k in range(w):
                    seg[k] = ar[k]


def window_product(a: np.ndarray, b, windows: int, out: np.ndarray) -> np.ndarray:
    """Write ``a[r] ⊙ b[r, t:t+w]`` (``b`` None: ``a[r]``) into ``out[r, t·w:(t+1)·w]`` for
    ``t < windows`` (``w = a.shape[1]``); the rest of ``out`` is left alone.

    ``a`` ``(R, w)`` and ``b`` ``(R, ≥ windows + w − 1)`` real, of ``out``'s dtype; ``out``
    C-contiguous ``(R, ≥ windows·w)``.  One product per entry, as NumPy's broadcast product.
    """
    dt = out.dtype
    rows, w = a.shape
    if out.shape[0] != rows or out.shape[1] < windows * w or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous ({rows}, >= {windows * w}), got {out.shape}")
    if b is None:
        b = np.empty((rows, 0), dtype=dt)
    elif b.shape[0] != rows or b.shape[1] < windows + w - 1:
        raise ValueError(f"b must have {rows} rows and >= {windows + w - 1} columns, got {b.shape}")
    _window_product(_c(a, dt), _c(b, dt), int(windows), out)
    return out
