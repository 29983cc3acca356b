"""Sketch face of Conv / AvgPool / GlobalAvgPool / Flatten (CNTK features linear in pixels).

References are the exact faces (checked against naive loops and finite nets in
``test_nets_conv_exact.py``):
- linear conv nets whose features are never reduced give the exact kernel (every pixel
  pair) and the exact per-pixel variances;
- with SRHT reductions the features are unbiased (mean over seeds → exact kernel) and the
  error shrinks as n_features grows;
- nets with ReLU (the activation sketch faces): error of F Fᵀ against the exact CNTK
  shrinks from m = 256 to m = 2048;
- seeds are deterministic and a row's features do not depend on the batch it is in.
"""

from __future__ import annotations


import numpy as np
import pytest
from _gpu import cupy_or_none

from dsketch.nets import AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Relu, myrtle, serial
from dsketch.nets.base import SketchOptions
from dsketch.nets.readout import WIDTH_FACTOR
from dsketch.nets.serial import input_feature_shape, input_features


def _images(n, h, w, c, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, w, c))


def _run_layers(layers, x, m, seed=0, dtype="float64"):
    """Plan and apply the layers' sketch faces by hand (no readout): pixel features stay."""
    shape = input_feature_shape(x.shape[1:])
    f = input_features(x, np.dtype(dtype))
    opts = SketchOptions(n_features=m, dtype=dtype)
    for i, layer in enumerate(layers):
        step = layer.sketch(shape, opts, seed, (f"layer{i}", type(layer).__name__))
        f = step(f)
        assert f.nngp.shape[1:] == tuple(step.out.spatial) + (step.out.nngp,), (layer, f.nngp.shape, step.out)
        assert f.ntk.shape[1:] == tuple(step.out.spatial) + (step.out.ntk,)
        shape = step.out
    return f


def _gram(a):
    """Pixel-pair Gram ⟨a_i(p), a_j(q)⟩: (n, H, W, w) → (n, n, H, W, H, W); vectors: (n, n)."""
    a = a.astype(np.float64)
    if a.ndim == 2:
        return a @ a.T
    return np.einsum("iabk,jcdk->ijabcd", a, a)


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


LINEAR = [Conv((3, 3), 1.3, 0.2, "SAME"), Conv((2, 2), 0.9, 0.0, "VALID"),
          AvgPool((2, 2), strides=(1, 1), padding="SAME", normalize_edges=True),
          Conv((3, 3), 1.1, 0.3, "SAME", strides=(2, 1)), AvgPool((2, 2), padding="SAME")]


def test_linear_conv_features_are_exact_without_reduction():
    x = _images(4, 6, 5, 3, seed=1)
    exact = serial(*LINEAR).kernel(x, x.copy())  # cross path (pixel-pair symmetric)
    f = _run_layers(LINEAR, x, m=4096)
    assert f.nngp.shape[-1] < WIDTH_FACTOR * 4096 and f.ntk.shape[-1] < WIDTH_FACTOR * 4096
    np.testing.assert_allclose(_gram(f.nngp), exact.nngp, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(_gram(f.ntk), exact.ntk, rtol=1e-10, atol=1e-12)
    # per-pixel variances: exact through Conv, pooled-feature norms through AvgPool
    d = serial(*LINEAR).kernel(x, diagonal=True).nngp
    hw = d.shape[1] * d.shape[2]
    var = d.reshape(4, hw, hw).diagonal(axis1=1, axis2=2).reshape(f.var.shape)
    np.testing.assert_allclose(f.var, var, rtol=1e-10)


@pytest.mark.parametrize("head", ["gap", "flatten"])
def test_linear_net_feature_map_is_exact_without_reduction(head):
    x = _images(5, 5, 5, 2, seed=2)  # widest feature: NTK after Dense, 4618 < 8192
    pool = GlobalAvgPool() if head == "gap" else Flatten()
    net = serial(Conv((3, 3), 1.2, 0.1), Conv((3, 3), 0.8, 0.0, "VALID"), pool, Dense(1.1, 0.2))
    exact = net.kernel(x)
    out = net.sketch(x.shape[1:], n_features=8192, seed=3, dtype="float64")(x)
    assert out.nngp.shape == (5, 8192) and out.ntk.shape == (5, 8192)
    np.testing.assert_allclose(out.nngp @ out.nngp.T, exact.nngp, rtol=1e-10)
    np.testing.assert_allclose(out.ntk @ out.ntk.T, exact.ntk, rtol=1e-10)


def test_flatten_and_gap_variances():
    x = _images(3, 4, 4, 3, seed=4)
    for pool in (GlobalAvgPool(), Flatten()):
        layers = [Conv((3, 3), 1.2, 0.3), pool]
        f = _run_layers(layers, x, m=4096)
        k = serial(*layers).kernel(x, diagonal=True).nngp
        np.testing.assert_allclose(f.var, k, rtol=1e-10)
        np.testing.assert_allclose(np.sum(f.nngp ** 2, axis=-1), k, rtol=1e-10)


def test_reduced_features_are_unbiased_and_improve_with_width():
    """Small m forces SRHT reductions in Conv and Flatten: mean over seeds → exact."""
    x = _images(3, 5, 5, 3, seed=5)
    layers = [Conv((3, 3), 1.3, 0.2), Conv((3, 3), 1.0, 0.1), Flatten()]
    exact = serial(*layers).kernel(x)
    errs = {}
    for m in (16, 256):
        grams = [(_gram(f.nngp), _gram(f.ntk)) for f in (_run_layers(layers, x, m, seed=s) for s in range(40))]
        assert grams[0][0].shape == exact.nngp.shape
        single = np.mean([[_rel(g[0], exact.nngp), _rel(g[1], exact.ntk)] for g in grams], axis=0)
        mean = [_rel(np.mean([g[i] for g in grams], 0), ref) for i, ref in enumerate((exact.nngp, exact.ntk))]
        errs[m] = (single, mean)
    print(errs)
    for i in (0, 1):
        assert errs[256][0][i] < 0.5 * errs[16][0][i], errs       # ~1/√m per sketch
        assert errs[16][1][i] < 0.5 * errs[16][0][i], errs        # averaging seeds removes it
        assert errs[256][0][i] < 0.1, errs


def test_conv_sketch_widths_and_reduction_plan():
    from dsketch.nets.base import FeatureShape

    opts = SketchOptions(n_features=64)
    s = Conv((3, 3), 1.0, 0.5).sketch(FeatureShape((8, 8), 3, 0), opts, 0, ("c",))
    assert s.out == FeatureShape((8, 8), 28, 28)
    s = Conv((3, 3), 1.0, 0.0).sketch(FeatureShape((8, 8), 64, 64), opts, 0, ("c",))
    k = WIDTH_FACTOR * 64 // 9  # per-offset SRHT width
    assert s.out == FeatureShape((8, 8), 9 * k, 18 * k)
    s = Conv((3, 3), 1.0, 0.5).sketch(FeatureShape((8, 8), 64, 10), opts, 0, ("c",))
    assert s.out == FeatureShape((8, 8), 9 * k + 1, 90 + 9 * k + 1)
    s = Conv((3, 3), 1.0, 0.0, "VALID", (2, 2)).sketch(FeatureShape((8, 8), 4, 4), opts, 0, ("c",))
    assert s.out == FeatureShape((3, 3), 36, 72)
    s = AvgPool((2, 2)).sketch(FeatureShape((5, 5), 7, 9), opts, 0, ("p",))
    assert s.out == FeatureShape((2, 2), 7, 9)
    assert GlobalAvgPool().sketch(FeatureShape((5, 5), 7, 9), opts, 0, ()).out == FeatureShape((), 7, 9)
    assert Flatten().sketch(FeatureShape((2, 2), 7, 9), opts, 0, ()).out == FeatureShape((), 28, 36)
    assert Flatten().sketch(FeatureShape((4, 4), 70, 90), opts, 0, ()).out == FeatureShape((), 128, 128)
    hash(s)  # plans are small hashable specs
    for layer in (Conv((3, 3)), AvgPool((2, 2)), GlobalAvgPool()):
        with pytest.raises(ValueError, match="image"):
            layer.sketch(FeatureShape((), 5, 5), opts, 0, ())


def test_deterministic_chunk_invariant_and_dtype():
    x = _images(6, 6, 6, 3, seed=6)
    layers = [Conv((3, 3), 1.3, 0.2), Conv((3, 3), 1.0, 0.0), AvgPool((2, 2)), Flatten()]
    a = _run_layers(layers, x, m=16, seed=7, dtype="float32")
    b = _run_layers(layers, x, m=16, seed=7, dtype="float32")
    c = _run_layers(layers, x, m=16, seed=8, dtype="float32")
    assert a.nngp.dtype == np.float32 and a.ntk.dtype == np.float32
    np.testing.assert_array_equal(a.nngp, b.nngp)
    np.testing.assert_array_equal(a.ntk, b.ntk)
    assert not np.allclose(a.ntk, c.ntk)
    rows = [_run_layers(layers, x[i:i + 1], m=16, seed=7, dtype="float32") for i in range(6)]
    np.testing.assert_allclose(np.concatenate([r.nngp for r in rows]), a.nngp, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.concatenate([r.ntk for r in rows]), a.ntk, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.concatenate([r.var for r in rows]), a.var, rtol=1e-12)


def test_offset_srht_cuts_disjoint_coordinates_from_shared_transforms():
    from dsketch.nets.conv import _OffsetSRHT

    s = _OffsetSRHT(d_in=100, k=30, offsets=9, seed=3, path=("c",))
    assert s.blocks == 3  # 9·30 = 270 coordinates from ⌈270 / 128⌉ signed transforms
    signs, idx = s._params(np, np.float64)
    assert signs.shape == (3, 128) and idx.shape == (9, 30)
    assert len(np.unique(idx)) == idx.size and idx.max() < 3 * 128
    x = _images(2, 3, 3, 100, seed=12)
    t = s.transform(x)
    assert t.shape == (2, 3, 3, 384)
    # each offset is an SRHT: an isometry in expectation, ⟨Sx, Sx⟩ ≈ ‖x‖²
    norms = [np.sum(np.take(t, idx[o], axis=-1) ** 2, axis=-1) for o in range(9)]
    np.testing.assert_allclose(np.mean(norms, axis=0), np.sum(x ** 2, axis=-1), rtol=0.3)


def test_feature_map_chunks_rows_on_threads_with_batch_invariant_rows():
    from dsketch.nets import chunks
    from dsketch.nets.chunks import chunk_rows, map_row_chunks

    assert chunk_rows((8, 8, 3)) == chunks.IMAGE_CHUNK_PIXELS // 64 and chunk_rows((784,)) == chunks.PIXEL_ROWS
    assert chunk_rows((14, 14, 1), gpu=True) > chunk_rows((14, 14, 1))
    x = _images(19, 8, 8, 1, seed=13)
    fmap = myrtle(5).sketch(x.shape[1:], n_features=64, seed=4)
    whole = fmap(x)  # 8×8 layers on pieces of 4 rows, merged to 16 after the first pool, ...
    assert chunks.IMAGE_PIXEL_ROWS // 64 == 4
    one = [fmap(x[i:i + 1]) for i in (0, 9, 18)]
    for j, i in enumerate((0, 9, 18)):
        np.testing.assert_allclose(whole.ntk[i], one[j].ntk[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(whole.nngp[i], one[j].nngp[0], rtol=1e-5, atol=1e-6)
    fn = lambda a: (a.sum(axis=(1, 2, 3)), a[:, 0, 0, :] * 2)  # noqa: E731
    for rows, jobs in ((3, 2), (5, 1), (100, None)):
        got = map_row_chunks(fn, x, rows=rows, n_jobs=jobs)
        for g, w in zip(got, fn(x)):
            np.testing.assert_array_equal(g, w)


# =========================================================================================
# with ReLU: fidelity of the whole CNTK sketch (needs the activation sketch faces)
# =========================================================================================
def _fidelity(net, x, ms, seeds, **kw):
    exact = net.kernel(x)
    errs = {}
    for m in ms:
        e = []
        for s in range(seeds):
            out = net.sketch(x.shape[1:], n_features=m, seed=100 + s, **kw)(x)
            kn = out.nngp.astype(np.float64) @ out.nngp.T.astype(np.float64)
            kt = out.ntk.astype(np.float64) @ out.ntk.T.astype(np.float64)
            e.append((_rel(kn, exact.nngp), _rel(kt, exact.ntk)))
        errs[m] = tuple(float(v) for v in np.mean(e, axis=0))
    return errs


@pytest.mark.parametrize("name", ["conv-relu-gap", "myrtle5-8x8"])
def test_cntk_sketch_fidelity_improves_with_width(name):
    """Relative Frobenius error of F Fᵀ against the exact CNTK, m = 256 → 2048.

    With the default degree-8 polynomial ReLU sketch the error levels off near 1–4 % (the
    truncation bias of the activation, not of these layers, which are exact or unbiased:
    see the linear-net tests above).
    """
    if name == "conv-relu-gap":
        net = serial(Conv((3, 3), 1.4, 0.1), Relu(), Conv((3, 3), 1.4, 0.1), Relu(), GlobalAvgPool(),
                     Dense(1.0, 0.1))
        x = _images(8, 6, 6, 3, seed=9)
    else:
        net = myrtle(5)
        x = _images(6, 8, 8, 3, seed=10)
    errs = {**_fidelity(net, x, (256,), seeds=4), **_fidelity(net, x, (2048,), seeds=2)}
    print(name, errs)
    # the NNGP error of one sketch at m = 256 is already small and very seed-dependent, so
    # the trend is asserted on the NTK and on the sum of both
    assert errs[2048][1] < errs[256][1], errs
    assert sum(errs[2048]) < sum(errs[256]), errs
    assert errs[2048][0] < 0.06 and errs[2048][1] < 0.08, errs


# =========================================================================================
# GPU: the same numbers from CuPy arrays (skipped without CuPy and a CUDA device)
# =========================================================================================
_cupy = cupy_or_none


@pytest.mark.gpu
@pytest.mark.skipif(_cupy() is None, reason="needs CuPy and a CUDA device")
def test_gpu_matches_cpu():
    cp = _cupy()
    x = _images(4, 6, 5, 3, seed=11)
    net = serial(*LINEAR, Relu(), Flatten(), Dense(1.0, 0.1))
    cpu, gpu = net.kernel(x), net.kernel(cp.asarray(x))
    np.testing.assert_allclose(cp.asnumpy(gpu.ntk), cpu.ntk, rtol=1e-10)
    np.testing.assert_allclose(cp.asnumpy(gpu.nngp), cpu.nngp, rtol=1e-10)
    layers = LINEAR + [Flatten()]
    for dtype, tol in (("float64", 1e-10), ("float32", 1e-4)):
        a = _run_layers(layers, x, m=16, seed=3, dtype=dtype)
        b = _run_layers(layers, cp.asarray(x), m=16, seed=3, dtype=dtype)
        assert type(b.ntk).__module__.startswith("cupy") and b.ntk.dtype == np.dtype(dtype)
        for u, v in ((a.nngp, b.nngp), (a.ntk, b.ntk), (a.var, b.var)):
            np.testing.assert_allclose(cp.asnumpy(v), u, rtol=tol, atol=tol * float(np.abs(u).max()))


# =========================================================================================
# hidden width / degree: narrow on the large maps, wide on the smallest one
# =========================================================================================
def test_hidden_width_and_degree_plan():
    """Layers whose map is larger than the smallest get the hidden width and degree."""
    net = myrtle(5)
    fmap = net.sketch((8, 8, 3), n_features=512, seed=0, hidden_features=128, hidden_degree=2)
    plan = fmap.plan
    acts = [s for s in plan if type(s).__name__ == "ActivationSketch"]
    # Myrtle-5 on 8×8: two activations on 8×8, one on 4×4, one on 2×2 (the smallest map)
    assert [a.out.nngp for a in acts] == [128, 128, 128, 512]
    assert [a.degree for a in acts] == [2, 2, 2, 8]
    assert fmap(_images(3, 8, 8, 3)).ntk.shape == (3, 512)
    # None, or the same values as n_features/degree: the uniform map, bit for bit
    x = _images(4, 8, 8, 3, seed=3)
    same = net.sketch((8, 8, 3), n_features=256, seed=1, hidden_features=256, hidden_degree=8)(x)
    base = net.sketch((8, 8, 3), n_features=256, seed=1)(x)
    np.testing.assert_array_equal(same.ntk, base.ntk)
    np.testing.assert_array_equal(same.nngp, base.nngp)


def test_hidden_width_sketch_error_shrinks_with_either_width():
    """Against the exact CNTK: widening the smallest map's features (hidden fixed) and
    widening the hidden ones (output fixed) both reduce the error."""
    net = myrtle(5)
    x = _images(6, 8, 8, 3, seed=10)
    narrow = _fidelity(net, x, (256,), seeds=3, hidden_features=256)[256]
    wide_out = _fidelity(net, x, (2048,), seeds=3, hidden_features=256)[2048]
    wide_all = _fidelity(net, x, (2048,), seeds=3, hidden_features=2048)[2048]
    print(narrow, wide_out, wide_all)
    assert sum(wide_out) < sum(narrow), (narrow, wide_out)
    assert sum(wide_all) < sum(wide_out), (wide_out, wide_all)
    assert wide_all[0] < 0.06 and wide_all[1] < 0.08, wide_all


def test_hidden_features_are_checked():
    from dsketch.backend import InvalidInputError
    with pytest.raises(InvalidInputError, match="hidden_features"):
        myrtle(5).sketch((8, 8, 3), 256, hidden_features=1.5)
    with pytest.raises(InvalidInputError, match="hidden_degree"):
        myrtle(5).sketch((8, 8, 3), 256, hidden_degree=0)
