"""The compiled CNTK steps (nets.cnn_kernel, nets.conv_shift) and the fused sketch kernels.

Against the code paths they replace, which the rest of the suite checks independently:
- exact: ``Serial.kernel`` (compiled Conv / AvgPool / ReLU-family steps) equals the layers'
  own NumPy exact faces chained by hand to float64 rounding, in cross, symmetric and
  diagonal mode, with strides, VALID/SAME padding, normalized edges, biases and zero images;
  the result is bitwise the same on 1 and 2 threads and whatever the block size;
- sketch: the compiled conv shifts (``conv_shift``), the fused signed sums
  (``compiled.signed_add``) and the gather-products of TensorSRHT (``transform_product``)
  give bitwise the features of the NumPy paths they replace.
"""

from __future__ import annotations

import numpy as np
import pytest

from dsketch.nets import (
    ABRelu, Abs, AvgPool, Conv, Dense, Erf, Flatten, GlobalAvgPool, LeakyRelu, Relu, myrtle, serial,
)
from dsketch.nets import conv as conv_module
from dsketch.nets.cnn_kernel import image_step, kernel_threads, pair_window_sum
from dsketch.nets.serial import _input_kernel, bind_layers
from dsketch.nets.spatial import geometry
from dsketch.sketch import TensorSRHT, compiled
from dsketch.sketch import linear as linear_module


def _nets():
    return {
        "myrtle5": myrtle(5),
        "myrtle5-bias": myrtle(5, b_std=0.3),
        "strided": serial(Conv((3, 2), 1.3, 0.2, "SAME", strides=(2, 1)), LeakyRelu(0.1),
                          Conv((2, 3), 1.1, None, "VALID"), ABRelu(-0.4, 1.2),
                          AvgPool((3, 2), strides=(2, 1), padding="SAME", normalize_edges=True),
                          Abs(), Conv(3), Relu(), AvgPool((2, 2), padding="SAME"), Flatten(),
                          Dense(1.0, 0.1)),
        "erf-mixed": serial(Conv(3, 1.2, 0.1), Erf(), Conv(3), Relu(), GlobalAvgPool(), Dense()),
    }


def _images(n, seed, shape=(9, 8, 3)):
    x = np.random.default_rng(seed).standard_normal((n,) + shape)
    x[1] = 0.0  # a zero image: zero variances, correlation 0
    return x


def _numpy_faces(net, x1, x2=None, diagonal=False):
    """The layers' own exact faces chained by hand (no compiled step)."""
    layers = bind_layers(net.layers, x1.shape[1:])
    k = _input_kernel(x1, x1 if x2 is None else x2, diagonal)
    for layer in layers:
        k = layer.kernel(k)
    return k


def _rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.mark.parametrize("name", list(_nets()))
@pytest.mark.parametrize("mode", ["cross", "diagonal"])
def test_exact_steps_match_the_numpy_faces(name, mode):
    net = _nets()[name]
    x1, x2 = _images(4, 1), _images(3, 2)
    if mode == "cross":
        got = net.kernel(x1, x2)
        want = _numpy_faces(net, x1, x2)
    else:
        got = net.kernel(x1, diagonal=True)
        want = _numpy_faces(net, x1, diagonal=True)
    for kind in ("nngp", "ntk"):
        assert _rel(getattr(got, kind), getattr(want, kind)) < 1e-13


def test_exact_symmetric_kernel_matches_cross_and_blocks():
    net = _nets()["strided"]
    x = _images(5, 3)
    same = net.kernel(x, get="ntk")
    cross = _numpy_faces(net, x, x).ntk
    assert _rel(same, cross) < 1e-13
    # symmetric mode mirrors blocks and symmetrizes the diagonal ones: equal to rounding
    assert _rel(net.kernel(x, get="ntk", block_size=2), cross) < 1e-13


@pytest.mark.parametrize("name", ["myrtle5", "strided"])
def test_exact_steps_are_bitwise_across_threads_and_blocks(name):
    net = _nets()[name]
    x1, x2 = _images(5, 4), _images(3, 5)
    with kernel_threads(1):
        one = net.kernel(x1, x2, get="ntk", n_jobs=1)
    two = net.kernel(x1, x2, get="ntk", n_jobs=2)
    blocked = net.kernel(x1, x2, get="ntk", block_size=2)
    assert np.array_equal(one, two) and np.array_equal(one, blocked)
    # a row alone: the same bits
    for i in range(x1.shape[0]):
        assert np.array_equal(net.kernel(x1[i:i + 1], x2, get="ntk"), one[i:i + 1])


@pytest.mark.parametrize("padding,strides,window", [("SAME", (1, 1), (3, 3)), ("VALID", (1, 1), (3, 2)),
                                                    ("SAME", (2, 1), (2, 3)), ("SAME", (1, 1), (4, 4))])
def test_conv_window_sum_matches_the_numpy_pairs(padding, strides, window):
    a = np.random.default_rng(6).standard_normal((3, 7, 6, 7, 6))
    geom = geometry((7, 6), window, strides, padding, "Conv filter")
    got = pair_window_sum(a, geom, diagonal=True, scale=0.7, shift=0.2)
    want = conv_module.conv_pairs(a, geom) * 0.7 + 0.2
    assert _rel(got, want) < 1e-14


def test_image_step_declines_what_it_does_not_compile():
    k = _input_kernel(_images(2, 7), _images(2, 8), False)
    assert image_step(Erf(), k) is None
    assert image_step(Conv(3, parameterization="standard").bind((9, 8, 3)), k) is None
    vec = _input_kernel(np.ones((2, 4)), np.ones((3, 4)), False)
    assert image_step(Relu(), vec) is None


# ------------------------------------------------------------------------------ sketch
def _sketch_nets():
    return {"myrtle5": myrtle(5),
            "strided": serial(Conv((3, 2), 1.3, 0.2, "SAME", strides=(2, 1)), Relu(),
                              Conv((2, 3), 1.1, None, "VALID"), Erf(), AvgPool(2, padding="SAME"),
                              Conv(3, b_std=0.1), Relu(), Flatten(), Dense())}


@pytest.mark.parametrize("name", ["myrtle5", "strided"])
@pytest.mark.parametrize("m,dtype", [(64, "float32"), (512, "float64")])
def test_compiled_sketch_steps_give_the_numpy_features_bitwise(name, m, dtype, monkeypatch):
    x = _images(4, 9).astype(np.float32)
    net = _sketch_nets()[name]
    fast = net.sketch(x.shape[1:], n_features=m, seed=3, dtype=dtype)(x)
    monkeypatch.setattr(conv_module, "_compiled", lambda x, out: False)
    monkeypatch.setattr(linear_module, "_fused_add", lambda *a: False)
    monkeypatch.setattr(TensorSRHT, "transform_product",
                        lambda self, t1, x2: self.combine(t1, self.transform(x2, 2)))
    slow = net.sketch(x.shape[1:], n_features=m, seed=3, dtype=dtype)(x)
    assert np.array_equal(fast.nngp, slow.nngp) and np.array_equal(fast.ntk, slow.ntk)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_signed_add_rounds_as_numpy(dtype):
    rng = np.random.default_rng(10)
    a = rng.standard_normal((7, 12)).astype(dtype)[:, :9]   # a strided view, as the tree yields
    signs = (rng.integers(0, 2, 12) * 2 - 1).astype(dtype)
    scale = rng.standard_normal((7, 1)).astype(dtype)
    acc = rng.standard_normal((7, 11)).astype(dtype)
    want = acc.copy()
    want[:, :9] += (a * signs[:9]) * scale
    assert np.array_equal(compiled.signed_add(acc.copy(), a, signs, scale), want)
    assert np.array_equal(compiled.signed_add(None, a, signs), a * signs[:9])
    wide = np.zeros((7, 11), dtype=dtype)
    wide[:, :9] += a * signs[:9]
    assert np.array_equal(compiled.signed_add(None, a, signs, None, 11), wide)
    # a column prefix is read through its parent's rows; other views are copied first
    base = rng.standard_normal((9, 14)).astype(dtype)
    for view in (base[:7, :9], base[2:, :9], base[:7, 3:12], base[:9, :7].T[:7, :9],
                 base[::2, :9][:4]):
        r = view.shape[0]
        want = acc[:r].copy()
        want[:, :9] += (view * signs[:9]) * scale[:r]
        assert np.array_equal(compiled.signed_add(acc[:r].copy(), view, signs, scale[:r]), want)


@pytest.mark.parametrize("d1,d2,m,fold", [(300, 200, 256, True), (1024, 1024, 1024, False),
                                          (9, 9, 1024, False), (64, 64, 100, False)])
def test_tensor_srht_product_is_the_combine(d1, d2, m, fold):
    rng = np.random.default_rng(11)
    t = TensorSRHT(d1, d2, m, 4, fold=fold)
    x1 = rng.standard_normal((6, d1)).astype(np.float32)
    x2 = rng.standard_normal((6, d2)).astype(np.float32)
    t1 = t.transform(x1, 1)
    assert np.array_equal(t.transform_product(t1, x2), t.combine(t1, t.transform(x2, 2)))
