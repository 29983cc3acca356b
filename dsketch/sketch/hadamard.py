"""Fast Walsh–Hadamard transform along the last axis (NumPy or CuPy).

Owns the unnormalized Sylvester–Hadamard transform ``y = x Hₙ`` (entries ±1, ``Hₙᵀ Hₙ =
n I``) of every vector along the last axis of an array, for ``n`` a power of two. The
transform is computed as a product of small Hadamard factors, ``Hₙ = H_{b₁} ⊗ … ⊗ H_{b_t}``:
each pass is one large matrix product ``(rows·n/b, b) @ H_b`` followed by a rotation of the
factor axes, so the work is ``n·Σbᵢ`` multiply-adds per row in ``t = ⌈log₂n / 6⌉`` passes,
all of it BLAS (cuBLAS on GPU). Real and complex inputs, any leading dimensions.
:func:`hadamard_blocks` is the signed, blocked transform the SRHT family applies;
:func:`hadamard_gather` the same followed by a coordinate gather, without the work on
the half of a padded width that only a narrow tail (e.g. a bias column) occupies;
:func:`fold_signed` the signed sum of a wide row's pieces whose transform is the first
rows of the wide transform (one narrow transform for a wide input).

Must not import Dask and holds no random state.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..backend import device_key, get_namespace, rows_matmul
from .compiled import NUMBA_DTYPES, folded_fwht, fwht_rows, signed_blocks
from .compiled_cupy import gpu_fwht_rows, gpu_signed_blocks, supports

__all__ = ["fwht", "fwht_padded", "hadamard_blocks", "hadamard_gather", "fold_signed", "fold_fwht",
           "hadamard_matrix", "next_pow2", "is_pow2"]

#: Real float32/float64 arrays go through the compiled per-row kernels: :mod:`.compiled` on
#: the host (bitwise independent of the batch), :mod:`.compiled_cupy` on CuPy (rows up to
#: its ``MAX_WIDTH``); False selects the BLAS factor products below (the reference the
#: kernels are tested against).
USE_COMPILED = True

# Padded tails at most this wide are transformed by one small dense product (fwht_padded).
_TAIL_DENSE = 64

# Largest Hadamard factor applied in one matrix product: 2**_MAX_LOG = 32 (flops per
# element are the sum of the factor sizes; 32 balances that against BLAS efficiency).
_MAX_LOG = 5


def is_pow2(n: int) -> bool:
    """True when ``n`` is a positive power of two."""
    return n >= 1 and (n & (n - 1)) == 0


def next_pow2(n: int) -> int:
    """The smallest power of two ``≥ n`` (``n ≥ 1``)."""
    if n < 1:
        raise ValueError(f"next_pow2 needs a positive integer, got {n}")
    return 1 << (int(n) - 1).bit_length()


def hadamard_matrix(n: int, dtype=np.float64) -> np.ndarray:
    """The ``n × n`` Sylvester–Hadamard matrix (entries ±1) as a host array.

    Equal to ``scipy.linalg.hadamard(n)``: ``H[i, j] = (-1)^{popcount(i & j)}``.
    """
    if not is_pow2(n):
        raise ValueError(f"Hadamard size must be a power of two, got {n}")
    h = np.ones((1, 1), dtype=dtype)
    while h.shape[0] < n:  # Sylvester doubling
        h = np.block([[h, h], [h, -h]])
    return h


@functools.lru_cache(maxsize=64)
def _host_factor(b: int, dtype_str: str) -> np.ndarray:
    return hadamard_matrix(b, np.dtype(dtype_str))


_DEVICE_FACTORS: dict = {}


def _factor(xp, b: int, dtype) -> object:
    """``H_b`` in the module and real dtype of the data (cached per device)."""
    key = (device_key(xp), b, np.dtype(dtype).str)
    h = _DEVICE_FACTORS.get(key)
    if h is None:
        h = _host_factor(b, np.dtype(dtype).str)
        if xp is not np:
            h = xp.asarray(h)
        _DEVICE_FACTORS[key] = h
    return h


def _plan(n: int) -> list[int]:
    """Factor sizes (powers of two ≤ 2**_MAX_LOG, as equal as possible, smallest first)."""
    k = n.bit_length() - 1
    if k == 0:
        return []
    t = math.ceil(k / _MAX_LOG)
    base, extra = divmod(k, t)
    return sorted(1 << (base + (1 if i < extra else 0)) for i in range(t))


def fwht(x, *, normalize: bool = False):
    """Walsh–Hadamard transform of every vector along the last axis of ``x``.

    Parameters
    ----------
    x : array (NumPy or CuPy), shape ``(..., n)``
        ``n`` must be a power of two. Real (float32/float64) or complex input; the output
        has the same dtype (integers are promoted to float64).
    normalize : bool
        Divide by ``√n`` (orthonormal transform) when true.

    Returns
    -------
    array, shape ``(..., n)``
        ``x @ Hₙ`` with ``Hₙ`` the Sylvester–Hadamard matrix (``scipy.linalg.hadamard(n)``),
        which is symmetric, so this equals ``(Hₙ x)`` for each vector.

    Notes
    -----
    With ``n = b₁·…·b_t`` (each ``bᵢ ≤ 32``) and each row viewed as a ``b₁ × … × b_t``
    tensor, ``Hₙ = H_{b₁} ⊗ … ⊗ H_{b_t}`` is applied one factor at a time: the last by one
    GEMM ``(rows·n/b_t, b_t) @ H_{b_t}``, the others by batched products
    ``H_{bᵢ} @ Y[(rows·b₁⋯b_{i−1}), bᵢ, (b_{i+1}⋯b_t)]`` — no transposes, no Python loop
    over rows. Complex input is transformed as its real view (real and imaginary parts
    ride along a trailing axis of 2), so only real BLAS is used.
    """
    xp = get_namespace(x)
    n = x.shape[-1]
    if not is_pow2(n):
        raise ValueError(f"fwht needs a power-of-two last axis, got {n}")
    if x.dtype.kind not in "fc":
        x = x.astype(np.float64)
    lead = x.shape[:-1]
    rows = 1
    for s in lead:
        rows *= s
    is_complex = x.dtype.kind == "c"
    out_dtype = x.dtype
    if is_complex and xp is not np:  # pragma: no cover - GPU only: no dtype-changing views
        y = fwht(x.real, normalize=normalize) + 1j * fwht(x.imag, normalize=normalize)
        return y.astype(out_dtype, copy=False)
    y = xp.ascontiguousarray(x.reshape(rows, n))
    if is_complex:
        y = y.view(np.float32 if x.dtype == np.complex64 else np.float64)  # (rows, 2n)
    real_dtype = y.dtype
    trail = 2 if is_complex else 1
    if USE_COMPILED and xp is np and real_dtype in NUMBA_DTYPES:  # compiled per-row butterfly (host)
        y = fwht_rows(y.copy() if np.may_share_memory(y, x) else y, trail)
        y = y.view(out_dtype) if is_complex else y
        if normalize:
            y *= 1.0 / math.sqrt(n)
        return y.reshape(lead + (n,))
    if USE_COMPILED and xp is not np and not is_complex and supports(y, n):  # GPU butterfly
        y = gpu_fwht_rows(y.copy(), 1)
        if normalize:
            y *= 1.0 / math.sqrt(n)
        return y.reshape(lead + (n,))
    plan = _plan(n)
    if not plan:
        y = y.copy()
    for i in range(len(plan) - 1, -1, -1):
        b = plan[i]
        before = 1
        for f in plan[:i]:
            before *= f
        after = (n // (before * b)) * trail
        h = _factor(xp, b, real_dtype)
        if after == 1:
            y = rows_matmul(y.reshape(-1, b), h)
        else:
            y = xp.matmul(h, y.reshape(rows * before, b, after))
    y = y.reshape(rows, n * trail)
    if is_complex:
        y = y.view(out_dtype)
    if normalize:
        y = y * (1.0 / math.sqrt(n))
    return y.reshape(lead + (n,))


def _popcount_parity(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    par = np.zeros_like(a)
    while np.any(a):
        par ^= a & 1
        a >>= 1
    return par


@functools.lru_cache(maxsize=64)
def _host_rows(k: int, n: int, dtype_str: str) -> np.ndarray:
    """First ``k`` rows of ``H_n``: ``H[i, j] = (-1)^{popcount(i & j)}``."""
    i = np.arange(k, dtype=np.int64)[:, None]
    j = np.arange(n, dtype=np.int64)[None, :]
    return (1 - 2 * _popcount_parity(i & j)).astype(np.dtype(dtype_str))


def _rows_of_h(xp, k: int, n: int, dtype):
    key = (device_key(xp), "rows", k, n, np.dtype(dtype).str)
    h = _DEVICE_FACTORS.get(key)
    if h is None:
        h = _host_rows(k, n, np.dtype(dtype).str)
        if xp is not np:
            h = xp.asarray(h)
        _DEVICE_FACTORS[key] = h
    return h


def _pad_direct(d: int, n: int) -> bool:
    """Whether a width-``d`` input is best transformed zero-padded to ``n`` in one go.

    The split of :func:`fwht_padded` pays when the part past ``n/2`` is narrow; past
    ``3n/4`` its recursion (one transform per halving, each with an add/sub pass and a
    copy) costs about twice one padded transform (measured: 2043 → 2048, float32).
    """
    return 4 * d > 3 * n


def fwht_padded(x, n: int):
    """``fwht`` of real ``x`` zero-padded on the last axis to the power of two ``n ≥ width``.

    Skips the work on the zero padding: with ``h = n/2`` and ``H_n = H_2 ⊗ H_h``, the
    transform of ``[a, b]`` is ``[H a + H b, H a − H b]`` (``a`` the first ``h`` entries,
    ``b`` the rest, padded) and that of ``[a, 0]`` is ``[H a, H a]``; a narrow input (at
    most 64 entries) is one ``(width × n)`` product with the first rows of ``H_n``. So an
    input of width ``h + 1`` costs about one transform of size ``h``, not one of size ``2h``.
    An input wider than ``3n/4`` is padded and transformed at once (cheaper there).
    Output dtype is the input's (float32 or float64).
    """
    xp = get_namespace(x)
    d = x.shape[-1]
    if not is_pow2(n) or d > n:
        raise ValueError(f"fwht_padded needs a power of two n ≥ width {d}, got n={n}")
    if d == n:
        return fwht(x)
    lead = x.shape[:-1]
    if _pad_direct(d, n):
        z = xp.empty(lead + (n,), dtype=x.dtype)
        z[..., :d] = x
        z[..., d:] = 0
        return fwht(z)
    if d <= _TAIL_DENSE and n <= 4096:
        out = rows_matmul(x.reshape(-1, d), _rows_of_h(xp, d, n, x.dtype))
        return out.reshape(lead + (n,))
    h = n // 2
    out = xp.empty(lead + (n,), dtype=x.dtype)
    if d <= h:
        out[..., :h] = fwht_padded(x, h)
        out[..., h:] = out[..., :h]
        return out
    a = fwht(x[..., :h])
    b = fwht_padded(x[..., h:], h)
    xp.add(a, b, out=out[..., :h])
    xp.subtract(a, b, out=out[..., h:])
    return out


def _compiled(xp, x2, signs) -> bool:
    """Whether the fused kernel of :mod:`.compiled` (host) or :mod:`.compiled_cupy` (GPU)
    serves these real float arrays."""
    if not USE_COMPILED or x2.dtype not in NUMBA_DTYPES or signs.dtype not in NUMBA_DTYPES:
        return False
    return xp is np or supports(signs, signs.shape[1])


def _signed_blocks(xp, x2, signs, idx=None):
    return signed_blocks(x2, signs, idx) if xp is np else gpu_signed_blocks(x2, signs, idx)


def _fused_mul(xp, out_dtype, mul) -> bool:
    """Whether a gather's product with ``mul`` is fused into the compiled host kernel."""
    return xp is np and mul is not None and type(mul) is np.ndarray and mul.dtype == out_dtype


def hadamard_blocks(x2, signs):
    """``fwht_padded(x ⊙ D_b)`` for every sign block ``b``: ``(R, d) → (R, B·n)``.

    ``signs`` is ``(B, n)`` (``n`` a power of two ``≥ d``, real or complex); block ``b``
    multiplies the rows of ``x2`` by the first ``d`` signs of row ``b`` and transforms them
    zero-padded to ``n``, without materializing or transforming the padding. The SRHT and
    TensorSRHT families are built on it.
    """
    xp = get_namespace(x2)
    r, d = x2.shape
    blocks, n = signs.shape
    if _compiled(xp, x2, signs):
        return _signed_blocks(xp, x2, signs)
    if d != n and _pad_direct(d, n):  # signed input written straight into the padded buffer
        z = xp.empty((r, blocks, n), dtype=xp.result_type(x2.dtype, signs.dtype))
        xp.multiply(x2[:, None, :], signs[None, :, :d], out=z[:, :, :d])
        z[:, :, d:] = 0
        return fwht(z).reshape(r, blocks * n)
    z = x2[:, None, :] * (signs if d == n else signs[:, :d])[None, :, :]
    return fwht_padded(z, n).reshape(r, blocks * n)


def fold_signed(x2, signs, n: int):
    """``Σ_a x2[:, a:a+n] ⊙ signs[a:a+n]`` over the ``n``-wide pieces of each row: ``(R, d) → (R, n)``.

    ``signs`` has at least ``d`` entries (the last piece is zero padded).  With ``n`` a power
    of two, ``fwht`` of the result is ``(H_N D x̃)[:n]`` for any ``N ≥ d`` (the first ``n`` rows
    of ``H_N`` are ``[H_n, H_n, …]``): an unbiased signed transform that costs one size-``n``
    transform however wide the row is.
    """
    xp = get_namespace(x2)
    r, d = x2.shape
    pieces = -(-d // n)
    # signed row written once into a buffer padded to whole pieces, then summed over the
    # piece axis (a strided reduction: pieces added in order, as a loop of adds would)
    z = xp.empty((r, pieces * n), dtype=xp.result_type(x2.dtype, signs.dtype))
    xp.multiply(x2, signs[:d], out=z[:, :d])
    z[:, d:] = 0
    return z if pieces == 1 else z.reshape(r, pieces, n).sum(axis=1)


def fold_fwht(x2, signs, n: int, idx=None, mul=None):
    """``fwht(fold_signed(x2, signs, n))`` (then ``[:, idx]`` when given, and ``mul *`` that
    when ``mul`` is given): on the host one compiled pass per row
    (:func:`.compiled.folded_fwht`: the pieces added in the same order, the butterfly, the
    gather, the product)."""
    xp = get_namespace(x2)
    if USE_COMPILED and xp is np and x2.dtype in NUMBA_DTYPES and signs.dtype in NUMBA_DTYPES:
        dt = np.result_type(x2.dtype, signs.dtype)
        if idx is not None and _fused_mul(xp, dt, mul):
            return folded_fwht(x2, signs, n, idx, mul)
        y = folded_fwht(x2, signs, n, idx)
    else:
        y = fwht(fold_signed(x2, signs, n))
        y = y if idx is None else xp.take(y, idx, axis=1)
    return y if mul is None else mul * y


@functools.lru_cache(maxsize=256)
def _split_index(idx_bytes: bytes, h: int):
    """``(idx mod h, ±1 per idx)``: position in the half and the half's sign (host)."""
    idx = np.frombuffer(idx_bytes, dtype=np.int64)
    return idx % h, np.where(idx < h, 1.0, -1.0)


_SPLIT: dict = {}


def _split(xp, idx, h: int, dtype):
    key = (device_key(xp), id(idx), h, np.dtype(dtype).str)
    hit = _SPLIT.get(key)
    if hit is None or hit[0] is not idx:
        host = idx if xp is np else idx.get()
        pos, sgn = _split_index(np.ascontiguousarray(host, dtype=np.int64).tobytes(), h)
        hit = (idx, xp.asarray(pos), xp.asarray(sgn.astype(dtype)))
        if len(_SPLIT) > 256:
            _SPLIT.clear()
        _SPLIT[key] = hit
    return hit[1], hit[2]


def hadamard_gather(x2, signs, idx, mul=None):
    """``hadamard_blocks(x2, signs)[:, idx]`` for one sign block, without the padding work
    (``mul *`` that when ``mul`` is given: fused into the compiled host kernel).

    ``signs`` is ``(1, n)``. When the input is wider than ``n/2`` (a width-``n/2`` array plus
    a narrow tail, e.g. a bias column), ``H_n [a; b] = [H a + H b, H a − H b]`` is never
    formed: the gathered output is ``(H a)[idx mod h] ± (H b)[idx mod h]``, and a
    one-column tail transforms to a constant. Otherwise as ``hadamard_blocks`` + gather.
    """
    xp = get_namespace(x2)
    r, d = x2.shape
    n = signs.shape[1]
    h = n // 2
    if mul is not None:
        dt = xp.result_type(x2.dtype, signs.dtype)
        if _compiled(xp, x2, signs) and _fused_mul(xp, dt, mul):
            return signed_blocks(x2, signs, idx, mul)
        return mul * hadamard_gather(x2, signs, idx)
    if _compiled(xp, x2, signs):
        return _signed_blocks(xp, x2, signs, idx)
    if signs.shape[0] != 1 or d <= h or d == n or d - h > _TAIL_DENSE:
        return xp.take(hadamard_blocks(x2, signs), idx, axis=1)
    sg = signs[0]
    a = fwht(x2[:, :h] * sg[:h])
    pos, sgn = _split(xp, idx, h, a.real.dtype)
    out = xp.take(a, pos, axis=1)
    tail = x2[:, h:] * sg[h:d]
    if d - h == 1:
        out += tail * sgn        # H_h e_0 is all ones
    else:
        t = xp.take(fwht_padded(tail, h), pos, axis=1)
        t *= sgn
        out += t
    return out
