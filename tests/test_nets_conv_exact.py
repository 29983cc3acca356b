"""Exact CNTK face of Conv / AvgPool / GlobalAvgPool / Flatten and the presets.

Independent references, never the code against itself:
- a naive reference written here with Python loops over pixel pairs (conv, pooling, and
  the Erf / ReLU duals on the joint kernel of all images), agreeing to 1e-10 (1e-7
  through ReLU, whose dual is ill-conditioned at correlation 1);
- finite, wide random conv nets written here in NumPy (neural-tangents NTK
  parameterization): the NNGP from their penultimate features and the NTK from
  per-example Jacobians (checked by finite differences), whose error against the exact
  kernel shrinks as the width grows;
- identities: 1×1 convolutions are Dense per pixel pair, Flatten of an image equals Dense
  on the flattened vector, 1×1 images give the fully connected kernel.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsketch.nets import (
    AvgPool, Conv, Dense, Erf, Flatten, GlobalAvgPool, Relu, fully_connected, myrtle, serial,
)

RNG = np.random.default_rng(20240611)


def _images(n, h, w, c, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, w, c))


# =========================================================================================
# naive reference: joint kernel of all images, loops over pixel pairs
# =========================================================================================
def _pads(size, window, stride, padding):
    if padding == "VALID":
        return 0, (size - window) // stride + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, out


class Naive:
    """State: joint ``nngp``/``ntk`` of shape (N, N, H, W, H, W) or (N, N)."""

    def __init__(self, x):
        n, h, w, c = x.shape
        self.nngp = np.zeros((n, n, h, w, h, w))
        for p1 in range(h):
            for p2 in range(w):
                for q1 in range(h):
                    for q2 in range(w):
                        self.nngp[:, :, p1, p2, q1, q2] = x[:, p1, p2, :] @ x[:, q1, q2, :].T / c
        self.ntk = np.zeros_like(self.nngp)

    @property
    def spatial(self):
        return self.nngp.shape[2:4]

    def conv(self, fshape, W_std, b_std, padding, strides=(1, 1)):
        (fh, fw), (sh, sw) = fshape, strides
        h, w = self.spatial
        lh, oh = _pads(h, fh, sh, padding)
        lw, ow = _pads(w, fw, sw, padding)
        n = self.nngp.shape[0]
        new_s = np.zeros((n, n, oh, ow, oh, ow))
        new_t = np.zeros_like(new_s)
        for p1 in range(oh):
            for p2 in range(ow):
                for q1 in range(oh):
                    for q2 in range(ow):
                        for d1 in range(fh):
                            for d2 in range(fw):
                                a1, a2 = p1 * sh + d1 - lh, p2 * sw + d2 - lw
                                b1, b2 = q1 * sh + d1 - lh, q2 * sw + d2 - lw
                                if 0 <= a1 < h and 0 <= a2 < w and 0 <= b1 < h and 0 <= b2 < w:
                                    new_s[:, :, p1, p2, q1, q2] += self.nngp[:, :, a1, a2, b1, b2]
                                    new_t[:, :, p1, p2, q1, q2] += self.ntk[:, :, a1, a2, b1, b2]
        c = W_std ** 2 / (fh * fw)
        self.nngp = c * new_s + b_std ** 2
        self.ntk = self.nngp + c * new_t

    def dense(self, W_std, b_std):
        assert self.nngp.ndim == 2
        self.nngp = W_std ** 2 * self.nngp + b_std ** 2
        self.ntk = self.nngp + W_std ** 2 * self.ntk

    def relu(self):
        s = self.nngp
        n = s.shape[0]
        if s.ndim == 2:
            var = np.diag(s).copy()
            v1, v2 = var[:, None], var[None, :]
        else:
            var = np.einsum("iiabab->iab", s)
            v1 = var[:, None, :, :, None, None]
            v2 = var[None, :, None, None, :, :]
        nrm = np.sqrt(v1 * v2)
        rho = np.clip(s / np.where(nrm > 0, nrm, 1.0), -1.0, 1.0)
        theta = np.arccos(rho)
        self.nngp = (np.sqrt(np.maximum(v1 * v2 - s ** 2, 0.0)) + (np.pi - theta) * s) / (2 * np.pi)
        self.ntk = self.ntk * (np.pi - theta) / (2 * np.pi)
        assert n == s.shape[0]

    def erf(self):
        """neural-tangents ``Erf()`` = erf(x): arcsin kernel (well conditioned at ρ = 1)."""
        s = self.nngp
        if s.ndim == 2:
            var = np.diag(s).copy()
            v1, v2 = var[:, None], var[None, :]
        else:
            var = np.einsum("iiabab->iab", s)
            v1 = var[:, None, :, :, None, None]
            v2 = var[None, :, None, None, :, :]
        den = (1 + 2 * v1) * (1 + 2 * v2)
        self.nngp = 2 / np.pi * np.arcsin(2 * s / np.sqrt(den))
        self.ntk = self.ntk * 4 / np.pi / np.sqrt(den - 4 * s ** 2)

    def avgpool(self, window, strides=None, padding="VALID", normalize_edges=False):
        strides = strides or window
        (fh, fw), (sh, sw) = window, strides
        h, w = self.spatial
        lh, oh = _pads(h, fh, sh, padding)
        lw, ow = _pads(w, fw, sw, padding)

        def members(p1, p2):
            return [(p1 * sh + d1 - lh, p2 * sw + d2 - lw) for d1 in range(fh) for d2 in range(fw)
                    if 0 <= p1 * sh + d1 - lh < h and 0 <= p2 * sw + d2 - lw < w]

        n = self.nngp.shape[0]
        outs = []
        for arr in (self.nngp, self.ntk):
            new = np.zeros((n, n, oh, ow, oh, ow))
            for p1 in range(oh):
                for p2 in range(ow):
                    for q1 in range(oh):
                        for q2 in range(ow):
                            mp, mq = members(p1, p2), members(q1, q2)
                            tot = sum(arr[:, :, a1, a2, b1, b2] for a1, a2 in mp for b1, b2 in mq)
                            div = (len(mp) * len(mq)) if normalize_edges else (fh * fw) ** 2
                            new[:, :, p1, p2, q1, q2] = tot / div
            outs.append(new)
        self.nngp, self.ntk = outs

    def gap(self):
        self.nngp = self.nngp.mean(axis=(2, 3, 4, 5))
        self.ntk = self.ntk.mean(axis=(2, 3, 4, 5))

    def flatten(self):
        h, w = self.spatial
        self.nngp = sum(self.nngp[:, :, a, b, a, b] for a in range(h) for b in range(w)) / (h * w)
        self.ntk = sum(self.ntk[:, :, a, b, a, b] for a in range(h) for b in range(w)) / (h * w)

    def cross(self, n1):
        return self.nngp[:n1, n1:], self.ntk[:n1, n1:]


def _naive_run(ops, x1, x2):
    ref = Naive(np.concatenate([x1, x2]))
    for name, kw in ops:
        getattr(ref, name)(**kw)
    return ref.cross(len(x1))


def _net_from_ops(ops):
    layers = []
    for name, kw in ops:
        if name == "conv":
            layers.append(Conv(kw["fshape"], kw["W_std"], kw["b_std"], kw["padding"], kw.get("strides", (1, 1))))
        elif name == "relu":
            layers.append(Relu())
        elif name == "erf":
            layers.append(Erf())
        elif name == "dense":
            layers.append(Dense(kw["W_std"], kw["b_std"]))
        elif name == "avgpool":
            layers.append(AvgPool(kw["window"], kw.get("strides"), kw.get("padding", "VALID"),
                                  kw.get("normalize_edges", False)))
        elif name == "gap":
            layers.append(GlobalAvgPool())
        elif name == "flatten":
            layers.append(Flatten())
    return serial(*layers)


def _conv(fshape=(3, 3), W_std=1.3, b_std=0.0, padding="SAME", strides=(1, 1)):
    return ("conv", dict(fshape=fshape, W_std=W_std, b_std=b_std, padding=padding, strides=strides))


RELU = ("relu", {})
ERF = ("erf", {})

# Maps are checked to 1e-10 between Erf layers.  Through a ReLU the tolerance is 1e-7: its
# dual has an infinite slope at correlation 1 (√(1−ρ²), arccos ρ), so a last-bit difference
# in a pixel's self-correlation becomes ~1e-8 in any two implementations.
NAIVE_CASES = {
    "same-nobias": ([_conv(), ERF, _conv(W_std=1.1)], (4, 4)),
    "same-bias": ([_conv(b_std=0.4), ERF, _conv(b_std=0.2)], (4, 4)),
    "valid-bias": ([_conv(padding="VALID", b_std=0.3), ERF, _conv((2, 2), padding="VALID")], (5, 4)),
    "rect-filter-strides": ([_conv((2, 3), strides=(2, 1), b_std=0.1), ERF, _conv((3, 2), strides=(1, 2))], (5, 5)),
    "even-filter-same": ([_conv((2, 2), b_std=0.2), ERF, _conv((4, 4))], (4, 5)),
    "avgpool-valid": ([_conv(), ERF, ("avgpool", dict(window=(2, 2)))], (5, 5)),
    "avgpool-same-overlap": ([_conv(b_std=0.1), ERF,
                              ("avgpool", dict(window=(3, 2), strides=(2, 1), padding="SAME"))], (5, 4)),
    "avgpool-same-normalize": ([_conv(), ERF, ("avgpool", dict(window=(3, 3), strides=(1, 2), padding="SAME",
                                                               normalize_edges=True))], (4, 5)),
    "gap-dense": ([_conv(b_std=0.3), ERF, _conv(), ("gap", {}), ("dense", dict(W_std=0.9, b_std=0.2))], (4, 4)),
    "flatten-dense": ([_conv(padding="VALID"), ERF, _conv(), ("flatten", {}), ERF,
                       ("dense", dict(W_std=1.2, b_std=0.0))], (5, 4)),
    "pool-conv-gap": ([_conv(), ERF, ("avgpool", dict(window=(2, 2))), _conv(b_std=0.5), ERF,
                       ("gap", {}), ("dense", dict(W_std=1.0, b_std=0.1))], (4, 4)),
    "relu-same-bias": ([_conv(b_std=0.4), RELU, _conv(b_std=0.2), RELU, ("avgpool", dict(window=(2, 2)))], (4, 4)),
    "relu-flatten": ([_conv(padding="VALID"), RELU, _conv(), ("flatten", {}), RELU,
                      ("dense", dict(W_std=1.2, b_std=0.1))], (5, 4)),
}


@pytest.mark.parametrize("case", sorted(NAIVE_CASES))
def test_layers_match_naive_pixel_loop_reference(case):
    ops, (h, w) = NAIVE_CASES[case]
    x1, x2 = _images(3, h, w, 2, seed=1), _images(2, h, w, 2, seed=2)
    net = _net_from_ops(ops)
    got = net.kernel(x1, x2)
    want_nngp, want_ntk = _naive_run(ops, x1, x2)
    tol = 1e-7 if RELU in ops else 1e-10
    assert got.nngp.shape == want_nngp.shape
    np.testing.assert_allclose(got.nngp, want_nngp, rtol=tol, atol=tol)
    np.testing.assert_allclose(got.ntk, want_ntk, rtol=tol, atol=tol)
    # the self-kernel path (x2 omitted) and the diagonal mode agree with the same reference
    ref_nngp, ref_ntk = _naive_run(ops, x1, x1)
    full = net.kernel(x1)
    np.testing.assert_allclose(full.nngp, ref_nngp, rtol=tol, atol=tol)
    np.testing.assert_allclose(full.ntk, ref_ntk, rtol=tol, atol=tol)
    diag = net.kernel(x1, diagonal=True)
    np.testing.assert_allclose(diag.nngp, np.stack([ref_nngp[i, i] for i in range(3)]), rtol=tol, atol=tol)
    np.testing.assert_allclose(diag.ntk, np.stack([ref_ntk[i, i] for i in range(3)]), rtol=tol, atol=tol)


def test_self_kernel_keeps_pixel_pair_symmetry():
    """K(x, x) with pixel axes: K[i, j, p, q] = K[j, i, q, p] (serial symmetrizes blocks)."""
    x = _images(3, 4, 4, 2, seed=1)
    net = serial(Conv((3, 3), 1.3, 0.2), Relu(), Conv((2, 2), 1.1))
    full, cross = net.kernel(x), net.kernel(x, x.copy())
    np.testing.assert_allclose(full.nngp, cross.nngp, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(full.ntk, cross.ntk, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(full.ntk, full.ntk.transpose(1, 0, 4, 5, 2, 3), rtol=1e-12, atol=1e-14)


def test_window_geometry_matches_explicit_zero_padding():
    """Window sums (implicit padding) equal sums over an explicitly zero-padded copy."""
    from dsketch.nets.spatial import axis_geometry, window_sum

    r = np.random.default_rng(0)
    for size in range(1, 9):
        for win in range(1, 6):
            for stride in range(1, 4):
                for padding in ("SAME", "VALID"):
                    if padding == "VALID" and win > size:
                        continue
                    g = axis_geometry(size, win, stride, padding, "window")
                    a = r.normal(size=(2, size))
                    lo, out = _pads(size, win, stride, padding)
                    padded = np.zeros((2, size + 2 * win))
                    padded[:, win:win + size] = a
                    want = np.stack([padded[:, win - lo + stride * p:win - lo + stride * p + win].sum(axis=1)
                                     for p in range(out)], axis=1)
                    np.testing.assert_allclose(window_sum(a, 1, g), want, atol=1e-14)


def test_output_shapes_match_kernel_shapes():
    x = _images(2, 7, 6, 3)
    for layer, want in [
        (Conv((3, 3), padding="SAME"), (7, 6, 3)),
        (Conv((3, 2), padding="VALID"), (5, 5, 3)),
        (Conv((3, 3), padding="SAME", strides=(2, 2)), (4, 3, 3)),
        (Conv((3, 3), padding="VALID", strides=(2, 3)), (3, 2, 3)),
        (AvgPool((2, 2)), (3, 3, 3)),
        (AvgPool((3, 3), strides=(1, 1), padding="SAME"), (7, 6, 3)),
        (AvgPool((2, 2), padding="SAME"), (4, 3, 3)),
        (GlobalAvgPool(), (3,)),
        (Flatten(), (126,)),
    ]:
        assert layer.output_shape(x.shape[1:]) == want, layer
        k = serial(layer).kernel(x)
        assert k.nngp.shape == (2, 2) + (want[:2] * 2 if len(want) == 3 else ()), layer
        assert k.nngp.shape[2:] == ((want[0], want[1]) * 2 if len(want) == 3 else ())


# =========================================================================================
# identities
# =========================================================================================
def test_conv_1x1_is_dense_per_pixel_pair():
    x1, x2 = _images(3, 3, 2, 4, seed=3), _images(2, 3, 2, 4, seed=4)
    img = serial(Conv((1, 1), 1.4, 0.3), Relu(), Conv((1, 1), 0.8, 0.5), Relu(), Conv((1, 1), 1.1, 0.0))
    vec = serial(Dense(1.4, 0.3), Relu(), Dense(0.8, 0.5), Relu(), Dense(1.1, 0.0))
    k = img.kernel(x1, x2)
    for p in np.ndindex(3, 2):
        for q in np.ndindex(3, 2):
            kv = vec.kernel(x1[:, p[0], p[1], :], x2[:, q[0], q[1], :])
            np.testing.assert_allclose(k.nngp[:, :, p[0], p[1], q[0], q[1]], kv.nngp, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(k.ntk[:, :, p[0], p[1], q[0], q[1]], kv.ntk, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pool", [Flatten, GlobalAvgPool])
def test_one_pixel_image_gives_fully_connected_kernel(pool):
    x = _images(5, 1, 1, 6, seed=5)
    img = serial(Conv((1, 1), 1.5, 0.2), Relu(), Conv((3, 3), 1.5, 0.2, "SAME"), Relu(), pool(), Dense(1.5, 0.2))
    # a 3×3 SAME filter on a 1×1 image sees one real pixel out of |F| = 9
    fc = serial(Dense(1.5, 0.2), Relu(), Dense(1.5 / 3, 0.2), Relu(), Dense(1.5, 0.2))
    k, kf = img.kernel(x), fc.kernel(x.reshape(5, 6))
    np.testing.assert_allclose(k.nngp, kf.nngp, rtol=1e-12)
    np.testing.assert_allclose(k.ntk, kf.ntk, rtol=1e-12)
    assert k.nngp.shape == (5, 5)
    np.testing.assert_allclose(fully_connected(2, W_std=1.5, b_std=0.2).kernel(x.reshape(5, 6)).ntk,
                               serial(Flatten(), Dense(1.5, 0.2), Relu(), Dense(1.5, 0.2), Relu(),
                                      Dense(1.5, 0.2)).kernel(x).ntk, rtol=1e-12)


def test_flatten_first_equals_dense_on_flattened_vectors():
    x = _images(4, 3, 5, 2, seed=6)
    img = serial(Flatten(), Dense(1.2, 0.1), Relu(), Dense(0.7, 0.3))
    vec = serial(Dense(1.2, 0.1), Relu(), Dense(0.7, 0.3))
    k, kv = img.kernel(x), vec.kernel(x.reshape(4, -1))
    # (1e-7: the ReLU dual's arccos amplifies round-off of the correlation 1 on the diagonal)
    np.testing.assert_allclose(k.nngp, kv.nngp, rtol=1e-7)
    np.testing.assert_allclose(k.ntk, kv.ntk, rtol=1e-7)
    assert Flatten().output_shape((30,)) == (30,)  # vectors pass through


def test_global_avg_pool_of_constant_images_is_fully_connected():
    # constant images: every pixel pair sees the same kernel, so GAP changes nothing
    base = _images(4, 1, 1, 3, seed=7)
    x = np.broadcast_to(base, (4, 3, 3, 3)).copy()
    img = serial(Conv((1, 1), 1.3, 0.2), Relu(), GlobalAvgPool(), Dense(0.9, 0.1))
    fc = serial(Dense(1.3, 0.2), Relu(), Dense(0.9, 0.1))
    np.testing.assert_allclose(img.kernel(x).ntk, fc.kernel(base.reshape(4, 3)).ntk, rtol=1e-12)


# =========================================================================================
# finite wide conv nets in NumPy (neural-tangents NTK parameterization)
# =========================================================================================
def _patches(x, fh, fw, padding):
    n, h, w, c = x.shape
    lh, oh = _pads(h, fh, 1, padding)
    lw, ow = _pads(w, fw, 1, padding)
    xp = np.zeros((n, h + 2 * fh, w + 2 * fw, c))
    xp[:, fh:fh + h, fw:fw + w] = x
    cols = [xp[:, fh - lh + d1:fh - lh + d1 + oh, fw - lw + d2:fw - lw + d2 + ow, :]
            for d1 in range(fh) for d2 in range(fw)]
    return np.concatenate(cols, axis=-1)


def _patches_adjoint(g, shape, fh, fw, padding):
    """Adjoint of ``_patches``: scatter-add patch gradients back onto the image."""
    n, h, w, c = shape
    lh, oh = _pads(h, fh, 1, padding)
    lw, ow = _pads(w, fw, 1, padding)
    out = np.zeros((n, h + 2 * fh, w + 2 * fw, c))
    k = 0
    for d1 in range(fh):
        for d2 in range(fw):
            out[:, fh - lh + d1:fh - lh + d1 + oh, fw - lw + d2:fw - lw + d2 + ow, :] += g[..., k * c:(k + 1) * c]
            k += 1
    return out[:, fh:fh + h, fw:fw + w]


def _pool_matrix(kind, h, w):
    """Readout pooling over pixels as a matrix (out_pixels, h*w)."""
    if kind == "gap":
        return np.full((1, h * w), 1.0 / (h * w))
    if kind == "flatten":
        return np.eye(h * w)
    if kind == "avgpool":  # AvgPool 2×2 stride 1 VALID, then Flatten
        rows = []
        for a in range(h - 1):
            for b in range(w - 1):
                r = np.zeros((h, w))
                r[a:a + 2, b:b + 2] = 0.25
                rows.append(r.ravel())
        return np.array(rows)
    raise AssertionError(kind)


def _matmul(a, b, scale):
    """``scale * a @ b`` over the last axis of ``a`` as one 2-D BLAS call."""
    return (scale * (a.reshape(-1, a.shape[-1]) @ b)).reshape(a.shape[:-1] + (b.shape[1],))


class FiniteConvNet:
    """Conv(f, SAME|VALID) - ReLU - Conv(f) - pooling readout - Dense(1), NTK parameterization."""

    def __init__(self, width, c_in, f, padding, head, W_std, b_std, seed):
        r = np.random.default_rng(seed)
        self.f, self.padding, self.head, self.W, self.b = f, padding, head, W_std, b_std
        F = f[0] * f[1]
        self.params = {
            "W1": r.normal(size=(F * c_in, width)), "b1": r.normal(size=width),
            "W2": r.normal(size=(F * width, width)), "b2": r.normal(size=width),
        }
        self._readout_rng = r
        self.s1, self.s2 = W_std / math.sqrt(F * c_in), W_std / math.sqrt(F * width)
        self.width = width

    def _forward(self, x, params=None):
        p = self.params if params is None else params
        P1 = _patches(x, *self.f, self.padding)
        z1 = _matmul(P1, p["W1"], self.s1) + self.b * p["b1"]
        a1 = np.maximum(z1, 0)
        P2 = _patches(a1, *self.f, self.padding)
        z2 = _matmul(P2, p["W2"], self.s2) + self.b * p["b2"]
        n, h2, w2, c = z2.shape
        A = _pool_matrix(self.head, h2, w2)
        hfeat = np.einsum("jp,npc->njc", A, z2.reshape(n, h2 * w2, c)).reshape(n, -1)
        return P1, z1, a1, P2, z2, A, hfeat

    def _readout_init(self, d_h):
        if not hasattr(self, "W3"):
            self.W3, self.b3 = self._readout_rng.normal(size=d_h), self._readout_rng.normal()
        return self.W3, self.b3

    def output(self, x, params=None, W3=None):
        *_, hfeat = self._forward(x, params)
        w3, b3 = self._readout_init(hfeat.shape[1])
        w3 = w3 if W3 is None else W3
        return self.W / math.sqrt(hfeat.shape[1]) * hfeat @ w3 + self.b * b3

    def nngp(self, x):
        *_, hfeat = self._forward(x)
        return self.W ** 2 * hfeat @ hfeat.T / hfeat.shape[1] + self.b ** 2

    def grads(self, x):
        """Per-example gradients of the scalar output, one flat vector per example."""
        P1, z1, a1, P2, z2, A, hfeat = self._forward(x)
        n, h2, w2, c = z2.shape
        d_h = hfeat.shape[1]
        w3, _ = self._readout_init(d_h)
        s3 = self.W / math.sqrt(d_h)
        dh = np.broadcast_to(s3 * w3, (n, d_h)).reshape(n, A.shape[0], c)
        dz2 = np.einsum("jp,njc->npc", A, dh).reshape(n, h2, w2, c)
        gW2 = self.s2 * np.matmul(P2.reshape(n, -1, P2.shape[-1]).transpose(0, 2, 1), dz2.reshape(n, -1, c))
        gb2 = self.b * dz2.sum(axis=(1, 2))
        dP2 = _matmul(dz2, self.params["W2"].T, self.s2)
        da1 = _patches_adjoint(dP2, a1.shape, *self.f, self.padding)
        dz1 = da1 * (z1 > 0)
        gW1 = self.s1 * np.matmul(P1.reshape(n, -1, P1.shape[-1]).transpose(0, 2, 1), dz1.reshape(n, -1, dz1.shape[-1]))
        gb1 = self.b * dz1.sum(axis=(1, 2))
        parts = [gW1.reshape(n, -1), gb1, gW2.reshape(n, -1), gb2, s3 * hfeat, np.full((n, 1), self.b)]
        return np.concatenate(parts, axis=1)

    def ntk(self, x):
        g = self.grads(x)
        return g @ g.T


def test_finite_net_gradients_match_finite_differences():
    x = _images(2, 4, 4, 2, seed=8)
    net = FiniteConvNet(3, 2, (3, 3), "SAME", "avgpool", 1.3, 0.4, seed=0)
    g = net.grads(x)
    r = np.random.default_rng(1)
    dirs = {k: r.normal(size=v.shape) for k, v in net.params.items()}
    d3, db3 = r.normal(size=net.W3.shape), r.normal()
    eps = 1e-6

    def out(t):
        params = {k: v + t * dirs[k] for k, v in net.params.items()}
        saved = net.b3
        net.b3 = saved + t * db3
        try:
            return net.output(x, params, W3=net.W3 + t * d3)
        finally:
            net.b3 = saved

    fd = (out(eps) - out(-eps)) / (2 * eps)
    flat = np.concatenate([dirs["W1"].ravel(), dirs["b1"], dirs["W2"].ravel(), dirs["b2"], d3, [db3]])
    np.testing.assert_allclose(g @ flat, fd, rtol=1e-6, atol=1e-7)


EMPIRICAL_CASES = {
    # head, padding, image side, filter, W_std, b_std
    "gap-same-nobias": ("gap", "SAME", 4, (3, 3), 1.5, 0.0),
    "gap-same-bias": ("gap", "SAME", 4, (3, 3), 1.2, 0.5),
    "flatten-valid-bias": ("flatten", "VALID", 6, (3, 3), 1.4, 0.3),
    "avgpool-same": ("avgpool", "SAME", 4, (2, 2), 1.0, 0.2),
}


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("case", sorted(EMPIRICAL_CASES))
def test_cntk_matches_wide_finite_conv_nets(case):
    """Empirical NNGP/NTK of finite nets → exact kernel: error ~ 1/√width, and no bias."""
    head, padding, side, f, W_std, b_std = EMPIRICAL_CASES[case]
    x = _images(4, side, side, 3, seed=9)
    pool = {"gap": [GlobalAvgPool()], "flatten": [Flatten()],
            "avgpool": [AvgPool((2, 2), strides=(1, 1)), Flatten()]}[head]
    inf = serial(Conv(f, W_std, b_std, padding), Relu(), Conv(f, W_std, b_std, padding), *pool,
                 Dense(W_std, b_std)).kernel(x)

    def nets(width, seeds):
        return [FiniteConvNet(width, 3, f, padding, head, W_std, b_std, 1000 * width + s) for s in range(seeds)]

    # one finite net: relative error, averaged over 3 nets, shrinks like 1/sqrt(width)
    errs = {}
    for width in (16, 64, 256):
        ks = [(net.nngp(x), net.ntk(x)) for net in nets(width, 3)]
        errs[width] = tuple(float(np.mean([_rel(k[i], ref) for k in ks])) for i, ref in enumerate((inf.nngp, inf.ntk)))
    # the mean over many narrow nets has no bias: it converges to the exact kernel
    ks = [(net.nngp(x), net.ntk(x)) for net in nets(32, 100)]
    mean_err = (_rel(np.mean([k[0] for k in ks], 0), inf.nngp), _rel(np.mean([k[1] for k in ks], 0), inf.ntk))
    print(case, "single-net errors", errs, "mean of 100 width-32 nets", mean_err)
    for i in (0, 1):
        assert errs[256][i] < 0.12, errs
        assert errs[256][i] < 0.6 * errs[16][i], errs
        assert mean_err[i] < 0.06, mean_err


# =========================================================================================
# structure: symmetry, PSD, diagonal mode, block invariance
# =========================================================================================
def _psd_ok(k):
    k = (k + k.T) / 2
    return np.linalg.eigvalsh(k).min() >= -1e-8 * np.trace(k)


def test_symmetry_psd_diagonal_and_block_invariance():
    x = _images(7, 5, 5, 3, seed=10)
    net = serial(Conv((3, 3), 1.4, 0.1), Relu(), AvgPool((2, 2), strides=(1, 1), padding="SAME"),
                 Conv((3, 3), 1.4, 0.1, "VALID"), Relu(), GlobalAvgPool(), Dense(1.0, 0.1))
    full = net.kernel(x, block_size=7)
    for arr in (full.nngp, full.ntk):
        np.testing.assert_allclose(arr, arr.T, rtol=1e-13, atol=1e-13)
        assert _psd_ok(arr)
    for bs in (1, 3):
        k = net.kernel(x, block_size=bs)
        np.testing.assert_allclose(k.nngp, full.nngp, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(k.ntk, full.ntk, rtol=1e-12, atol=1e-14)
        d = net.kernel(x, diagonal=True, block_size=bs)
        np.testing.assert_allclose(d.nngp, np.diag(full.nngp), rtol=1e-12)
        np.testing.assert_allclose(d.ntk, np.diag(full.ntk), rtol=1e-12)
    # cross blocks: rows of x against a different set, in pieces
    y = _images(4, 5, 5, 3, seed=11)
    kc = net.kernel(x, y, block_size=2)
    np.testing.assert_allclose(kc.ntk, net.kernel(x, y, block_size=100).ntk, rtol=1e-12)
    kxy = net.kernel(np.concatenate([x, y]))
    np.testing.assert_allclose(kc.ntk, kxy.ntk[:7, 7:], rtol=1e-12)


def test_pixel_pair_output_keeps_spatial_axes_and_is_psd():
    x = _images(3, 4, 4, 2, seed=12)
    k = serial(Conv((3, 3), 1.2, 0.2), Relu(), Conv((3, 3), 1.2)).kernel(x)
    assert k.ntk.shape == (3, 3, 4, 4, 4, 4)
    mat = k.ntk.transpose(0, 2, 3, 1, 4, 5).reshape(48, 48)
    np.testing.assert_allclose(mat, mat.T, atol=1e-13)
    assert _psd_ok(mat)


# =========================================================================================
# presets
# =========================================================================================
def test_myrtle_structure():
    net = myrtle(5)
    names = [type(layer).__name__ for layer in net.layers]
    assert names == ["Conv", "Relu", "Conv", "Relu", "AvgPool", "Conv", "Relu", "AvgPool",
                     "Conv", "Relu", "GlobalAvgPool", "Dense"]
    assert sum(n == "Conv" for n in (type(layer).__name__ for layer in myrtle(7).layers)) == 6
    assert sum(n == "Conv" for n in (type(layer).__name__ for layer in myrtle(10).layers)) == 9
    assert myrtle(5).layers[0].W_std == pytest.approx(math.sqrt(2))
    for bad in (4, 6, "5", None, True):
        with pytest.raises(ValueError, match="depth"):
            myrtle(bad)
    fc = fully_connected(3, W_std=1.5, b_std=0.1)
    assert [type(layer).__name__ for layer in fc.layers] == ["Dense", "Relu"] * 3 + ["Dense"]
    with pytest.raises(ValueError, match="depth"):
        fully_connected(-1)


def test_myrtle5_matches_naive_reference_on_tiny_images():
    x = _images(3, 8, 8, 3, seed=13)
    W = math.sqrt(2)
    ops = [_conv(W_std=W), RELU, _conv(W_std=W), RELU, ("avgpool", dict(window=(2, 2))),
           _conv(W_std=W), RELU, ("avgpool", dict(window=(2, 2))), _conv(W_std=W), RELU,
           ("gap", {}), ("dense", dict(W_std=W, b_std=0.0))]
    ref = Naive(x)
    for name, kw in ops:
        getattr(ref, name)(**kw)
    k = myrtle(5).kernel(x)
    np.testing.assert_allclose(k.nngp, ref.nngp, rtol=1e-6)
    np.testing.assert_allclose(k.ntk, ref.ntk, rtol=1e-6)


@pytest.mark.parametrize("side", [8, 16])
def test_myrtle5_runs_and_is_psd(side):
    x = _images(6, side, side, 3, seed=14)
    k = myrtle(5).kernel(x)
    assert k.ntk.shape == (6, 6)
    for arr in (k.nngp, k.ntk):
        assert np.all(np.isfinite(arr))
        np.testing.assert_allclose(arr, arr.T, rtol=1e-12)
        assert _psd_ok(arr)
    d = myrtle(5).kernel(x, diagonal=True)
    np.testing.assert_allclose(d.ntk, np.diag(k.ntk), rtol=1e-10)


# =========================================================================================
# bad input
# =========================================================================================
def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="padding"):
        Conv((3, 3), padding="CIRCULAR")
    with pytest.raises(ValueError, match="padding"):
        AvgPool((2, 2), padding="FULL")
    with pytest.raises(ValueError, match="filter_shape"):
        Conv((3, 3, 3))
    with pytest.raises(ValueError, match="filter_shape"):
        Conv((0, 3))
    with pytest.raises(ValueError, match="strides"):
        Conv((3, 3), strides=(0, 1))
    with pytest.raises(ValueError, match="W_std"):
        Conv((3, 3), W_std=float("nan"))
    x = _images(2, 4, 4, 3)
    with pytest.raises(ValueError, match="larger than the image"):
        serial(Conv((5, 5), padding="VALID")).kernel(x)
    with pytest.raises(ValueError, match="larger than the image"):
        serial(AvgPool((3, 3)), AvgPool((2, 2))).kernel(x)
    vec = np.ones((3, 10))
    for layer in (Conv((3, 3)), AvgPool((2, 2)), GlobalAvgPool()):
        with pytest.raises(ValueError, match=r"\(H, W, C\)"):
            serial(Dense(), layer).kernel(vec)
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        serial(Conv((3, 3)), GlobalAvgPool(), Conv((3, 3))).kernel(x)
    with pytest.raises(ValueError, match="dimensions"):
        serial(Conv((3, 3))).kernel(np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match="differ in shape"):
        serial(Conv((3, 3))).kernel(x, _images(2, 5, 4, 3))
