"""The compiled Hadamard kernels of :mod:`.compiled` on CuPy arrays (CUDA RawKernels).

Owns the GPU mirror of :func:`.compiled.fwht_rows` and :func:`.compiled.signed_blocks`: one
thread block per row (and sign block), the row in shared memory, the butterfly levels
``h = step, 2·step, …`` separated by ``__syncthreads()`` — the same additions as the host
butterfly up to their order (float32 results agree to rounding; each row is computed
from that row alone, so it is independent of the batch).  Widths up to :data:`MAX_WIDTH`
(the row must fit in 48 KB of shared memory); wider rows keep the cuBLAS factor products of
:mod:`.hadamard`.  CuPy is imported inside the functions (an optional dependency); kernels
are compiled once per dtype and device by CuPy's cache.  Must not import Dask.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["MAX_WIDTH", "gpu_fwht_rows", "gpu_signed_blocks", "supports"]

#: Widest row transformed in shared memory (float64: 32 KB).
MAX_WIDTH = 4096
_THREADS = 256

_SOURCE = r"""
template <typename T>
__device__ void butterfly(T* s, int width, int step) {
    int half = width / 2;
    for (int h = step; h < width; h *= 2) {
        __syncthreads();
        for (int j = threadIdx.x; j < half; j += blockDim.x) {
            int pair = j / step, lane = j % step;        // step = 2: (re, im) ride together
            int i = (pair / (h / step)) * 2 * h + (pair % (h / step)) * step + lane;
            T a = s[i], b = s[i + h];
            s[i] = a + b;
            s[i + h] = a - b;
        }
    }
    __syncthreads();
}

template <typename T>
__global__ void fwht_rows(T* y, int width, int step) {
    extern __shared__ __align__(16) unsigned char raw[];
    T* s = reinterpret_cast<T*>(raw);
    T* row = y + (long long)blockIdx.x * width;
    for (int k = threadIdx.x; k < width; k += blockDim.x) s[k] = row[k];
    butterfly<T>(s, width, step);
    for (int k = threadIdx.x; k < width; k += blockDim.x) row[k] = s[k];
}

// grid (rows, blocks): out[r, b*n + t*h + k] = (H_h pad_h(x[r] * signs[b, :d]))[k], t < n/h
template <typename T>
__global__ void signed_blocks(const T* x, const T* signs, T* out, int d, int n, int h, int blocks) {
    extern __shared__ __align__(16) unsigned char raw[];
    T* s = reinterpret_cast<T*>(raw);
    long long r = blockIdx.x;
    int b = blockIdx.y;
    for (int k = threadIdx.x; k < h; k += blockDim.x)
        s[k] = k < d ? x[r * d + k] * signs[(long long)b * n + k] : (T)0;
    butterfly<T>(s, h, 1);
    T* dst = out + r * (long long)blocks * n + (long long)b * n;
    for (int k = threadIdx.x; k < n; k += blockDim.x) dst[k] = s[k % h];
}
"""


@functools.lru_cache(maxsize=None)
def _module():
    import cupy

    names = [f"{k}<{t}>" for k in ("fwht_rows", "signed_blocks") for t in ("float", "double")]
    return cupy.RawModule(code=_SOURCE, options=("-std=c++11",), name_expressions=names)


def _kernel(name: str, dtype):
    return _module().get_function(f"{name}<{'float' if np.dtype(dtype) == np.float32 else 'double'}>")


def supports(x, width: int) -> bool:
    """Whether a CuPy array of this dtype and row width goes through these kernels."""
    return np.dtype(x.dtype) in (np.dtype(np.float32), np.dtype(np.float64)) and width <= MAX_WIDTH


def gpu_fwht_rows(y, step: int = 1):
    """:func:`.compiled.fwht_rows` on a C-contiguous CuPy array ``(rows, width)``, in place."""
    rows, width = y.shape
    if rows:
        _kernel("fwht_rows", y.dtype)((rows,), (_THREADS,), (y, np.int32(width), np.int32(step)),
                                      shared_mem=width * y.itemsize)
    return y


def gpu_signed_blocks(x2, signs, idx=None):
    """:func:`.compiled.signed_blocks` on CuPy arrays (the gather by ``cupy.take``)."""
    import cupy

    dt = np.result_type(x2.dtype, signs.dtype)
    x2 = cupy.ascontiguousarray(x2, dtype=dt)
    signs = cupy.ascontiguousarray(signs, dtype=dt)
    rows, d = x2.shape
    blocks, n = signs.shape
    h = min(n, 1 << max(0, (int(d) - 1).bit_length()))
    out = cupy.empty((rows, blocks * n), dtype=dt)
    if rows:
        _kernel("signed_blocks", dt)((rows, blocks), (_THREADS,),
                                     (x2, signs, out, np.int32(d), np.int32(n), np.int32(h),
                                      np.int32(blocks)), shared_mem=h * out.itemsize)
    return out if idx is None else cupy.take(out, idx, axis=1)
