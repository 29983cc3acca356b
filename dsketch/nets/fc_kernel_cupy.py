"""The compiled exact FC kernels of :mod:`.fc_kernel` on CuPy arrays (one CUDA RawKernel).

Owns the GPU mirror of :func:`.fc_kernel.chain_block`: one thread per kernel entry runs the
net's program (``FCChain``: Dense, ReLU family, Erf, GeLU) from ``⟨x, y⟩/d`` and the rows'
variances, with the same formulas in the same order as the host kernels (CUDA's ``acos`` /
``asin`` / ``sqrt``: results agree with the host to float64 rounding); self mode runs the chain
on the pairs ``(x_i, x_i)`` and records each row's variance entering every op.  CuPy is
imported inside the functions (an optional dependency).  Must not import Dask.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["gpu_chain_block"]

_THREADS = 256

_SOURCE = r"""
#define PI 3.141592653589793
#define TINY 2.2250738585072014e-308
#define SNAP (1.0 - 4.0 * 2.220446049250313e-16)

__device__ void dual(long long op, double p0, double p1, double p2, double var1, double var2,
                     double cov, double* nngp, double* dot) {
    double v1 = fmax(var1, 0.0), v2 = fmax(var2, 0.0);
    double s1 = sqrt(v1), s2 = sqrt(v2);
    double prod = v1 == v2 ? v1 : s1 * s2;
    double rho = prod > TINY ? cov / prod : 0.0;
    rho = fmin(fmax(rho, -1.0), 1.0);
    rho = rho >= SNAP ? 1.0 : rho;
    rho = rho <= -SNAP ? -1.0 : rho;
    double sn = sqrt(fmax((1.0 - rho) * (1.0 + rho), 0.0));
    if (op == 1) {            // ReLU family a·min(x, 0) + b·max(x, 0)
        double theta = acos(rho);
        double kink = (p0 - p1) * (p0 - p1) / (2 * PI);
        double g = kink * (sn + (PI - theta) * rho) + p0 * p1 * rho;
        *nngp = prod * g;
        *dot = kink * (PI - theta) + p0 * p1;
    } else if (op == 2) {     // a·erf(b x) + c
        double b2 = p1 * p1;
        double d1 = sqrt(1 + 2 * b2 * v1), d2 = sqrt(1 + 2 * b2 * v2);
        double arg = fmin(fmax(2 * b2 * rho * (s1 / d1) * (s2 / d2), -1.0), 1.0);
        *nngp = p0 * p0 * (2 / PI) * asin(arg) + p2 * p2;
        double ps = prod * sn;
        double det = 1 + 2 * b2 * (v1 + v2) + 4 * b2 * b2 * (ps * ps);
        *dot = p0 * p0 * b2 * (4 / PI) / sqrt(det);
    } else {                  // GeLU
        double cv = rho * prod, q = prod * prod;
        double sp1 = sqrt(1 + v1) * sqrt(1 + v2);
        double P = sp1 * sp1, ps = prod * sn;
        double delta2 = 1 + v1 + v2 + ps * ps, delta = sqrt(delta2);
        double angle = asin(fmin(fmax(cv / sp1, -1.0), 1.0));
        *nngp = cv / 4 + cv * angle / (2 * PI) + (q + cv * cv * (1 - q) / P) / (2 * PI * delta);
        *dot = 0.25 + angle / (2 * PI) + cv * (1 + (1 - q) / P + 1 / delta2) / (2 * PI * delta);
    }
}

// self_mode: entry i is the pair (x_i, x_i), start g[i]; vars[k * n1 + i] = variance entering op k
// else: entry (i, j) of an n1 x n2 block, start g[i * n2 + j]
extern "C" __global__ void fc_entries(const double* g, const double* V1, const double* V2,
        const long long* ops, const double* params, int L, int n1, int n2, int self_mode,
        double* nngp_out, double* ntk_out, double* vars) {
    long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long total = self_mode ? (long long)n1 : (long long)n1 * n2;
    if (e >= total) return;
    int i = self_mode ? (int)e : (int)(e / n2), j = self_mode ? 0 : (int)(e % n2);
    double nngp = g[e], ntk = 0.0, dot;
    for (int k = 0; k < L; ++k) {
        const double* p = params + 3 * k;
        if (self_mode) vars[(long long)k * n1 + i] = nngp;
        if (ops[k] == 0) {
            nngp = p[0] * nngp + p[1];
            ntk = nngp + p[0] * ntk;
        } else {
            double a = self_mode ? nngp : V1[(long long)k * n1 + i];
            double b = self_mode ? nngp : V2[(long long)k * n2 + j];
            dual(ops[k], p[0], p[1], p[2], a, b, nngp, &nngp, &dot);
            ntk = ntk * dot;
        }
    }
    if (self_mode) vars[(long long)L * n1 + i] = nngp;
    nngp_out[e] = nngp;
    ntk_out[e] = ntk;
}
"""


@functools.lru_cache(maxsize=None)
def _kernel():
    import cupy

    return cupy.RawKernel(_SOURCE, "fc_entries")


def _launch(cp, chain, g, V1, V2, n1, n2, self_mode):
    ops = cp.asarray(chain.ops, dtype=cp.int64)
    params = cp.asarray(chain.params, dtype=cp.float64)
    L = int(chain.ops.shape[0])
    total = n1 if self_mode else n1 * n2
    nngp = cp.empty(total, dtype=cp.float64)
    ntk = cp.empty(total, dtype=cp.float64)
    vars_ = cp.empty((L + 1, n1) if self_mode else (1,), dtype=cp.float64)
    if total:
        _kernel()(((total + _THREADS - 1) // _THREADS,), (_THREADS,),
                  (g, V1, V2, ops, params, np.int32(L), np.int32(n1), np.int32(n2),
                   np.int32(self_mode), nngp, ntk, vars_))
    return nngp, ntk, vars_


def gpu_chain_block(chain, a, b, diagonal: bool, gram, kinds, block_type):
    """:func:`.fc_kernel.chain_block` on CuPy rows; ``block_type(nngp, ntk)`` builds the result."""
    import cupy as cp

    a = cp.ascontiguousarray(a, dtype=cp.float64)
    v0 = cp.ascontiguousarray(cp.sum(a * a, axis=-1) / a.shape[-1])
    dn, dt, va = _launch(cp, chain, v0, v0, v0, a.shape[0], 1, 1)
    want_nngp, want_ntk = "nngp" in kinds, "ntk" in kinds
    if diagonal:
        return block_type(dn if want_nngp else None, dt if want_ntk else None)
    b = cp.ascontiguousarray(b, dtype=cp.float64)
    w0 = cp.ascontiguousarray(cp.sum(b * b, axis=-1) / b.shape[-1])
    vb = _launch(cp, chain, w0, w0, w0, b.shape[0], 1, 1)[2]
    g = cp.ascontiguousarray(gram(a, b) / a.shape[-1], dtype=cp.float64)
    n1, n2 = a.shape[0], b.shape[0]
    nngp, ntk, _ = _launch(cp, chain, g, va, vb, n1, n2, 0)
    return block_type(nngp.reshape(n1, n2) if want_nngp else None,
                      ntk.reshape(n1, n2) if want_ntk else None)
