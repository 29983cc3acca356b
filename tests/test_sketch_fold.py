"""Fast paths of the Hadamard sketches used by the CNTK sketch (issue 13).

Signed folds (``fold_signed``, ``TensorSRHT(fold=True)``, ``PolySketch(fold=True)``), the
fused sum of SRHT-rotated blocks (``srht_block_sum``) and the windowed TensorSRHT blocks:
each against an independent computation (dense transforms, per-block loops, explicit index
pairs) or, for the random ones, unbiasedness over seeds.
"""

from __future__ import annotations

import numpy as np
import pytest

from dsketch.backend import InvalidInputError
from dsketch.nets import Relu, fully_connected, myrtle
from dsketch.nets.activation_sketch import ActivationSketch
from dsketch.nets.serial import input_features
from dsketch.sketch import SRHT, PolySketch, TensorSRHT
from dsketch.sketch.hadamard import fold_signed, fwht, hadamard_blocks
from dsketch.sketch.linear import srht_block_sum


@pytest.mark.parametrize("d,n,big", [(2043, 1024, 2048), (3000, 1024, 4096), (700, 256, 1024),
                                     (9, 4, 16)])
def test_fold_signed_is_the_first_rows_of_the_wide_transform(d, n, big):
    rng = np.random.default_rng(d)
    x = rng.normal(size=(5, d))
    signs = 1.0 - 2 * rng.integers(0, 2, big)
    wide = np.zeros((5, big))
    wide[:, :d] = x * signs[:d]
    np.testing.assert_allclose(fwht(fold_signed(x, signs, n)), fwht(wide)[:, :n],
                               rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("d,n", [(2043, 256), (4086, 1024), (1024, 256), (200, 256)])
def test_fold_signed_adds_its_pieces_in_order(d, n):
    """The same float32 sums, bit for bit, as adding the signed pieces one after another."""
    rng = np.random.default_rng(d)
    x = rng.normal(size=(7, d)).astype(np.float32)
    signs = (1.0 - 2 * rng.integers(0, 2, d + n)).astype(np.float32)
    want = np.zeros((7, n), np.float32)
    want[:, :min(n, d)] = x[:, :n] * signs[:min(n, d)]
    for a in range(n, d, n):
        w = min(n, d - a)
        want[:, :w] += x[:, a:a + w] * signs[a:a + w]
    got = fold_signed(x, signs, n)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_tensorsrht_fold_only_changes_wide_factors_and_stays_unbiased():
    rng = np.random.default_rng(0)
    # no factor wider than next_pow2(d_out): fold=True is the same map
    a, b = rng.normal(size=(3, 500)), rng.normal(size=(3, 300))
    np.testing.assert_array_equal(TensorSRHT(500, 300, 1024, 1, fold=True)(a, b),
                                  TensorSRHT(500, 300, 1024, 1)(a, b))
    # a 2043-wide factor is folded to 1024 coordinates: E⟨T(x,x), T(y,y)⟩ = ⟨x,y⟩²
    x, y = rng.normal(size=(2, 2043))
    x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
    y = 0.6 * x + 0.8 * y / np.linalg.norm(y)
    maps = [TensorSRHT(2043, 2043, 256, s, fold=True) for s in range(300)]
    est = [t(x, x) @ t(y, y) for t in maps]
    exact = (x @ y) ** 2
    assert abs(np.mean(est) - exact) < 4 * np.std(est) / np.sqrt(len(est))
    assert TensorSRHT(2043, 2043, 256, 7, fold=True)(x, x).shape == (256,)


def test_polysketch_fold_degrees_unbiased_on_mixed_rows():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 2043))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rho = x[0] @ x[1]
    est = {1: [], 2: [], 3: []}
    for s in range(200):
        out = dict(PolySketch(2043, 512, 4, s, ("p",), fold=True).iter_degrees(x, [1, 2, 3]))
        for l in est:
            est[l].append(out[l][0] @ out[l][1])
    for l, e in est.items():
        assert abs(np.mean(e) - rho ** l) < 4 * np.std(e) / np.sqrt(len(e)) + 1e-3, l


@pytest.mark.parametrize("d_in,d_out", [(4086, 1024), (2100, 1024), (3000, 1024), (2048, 1024)])
def test_srht_block_sum_equals_the_sum_of_rotated_blocks(d_in, d_out):
    """One transform of the signed block sum (last block wider than d_out/2) or the loop."""
    x = np.random.default_rng(d_in).normal(size=(2, 3, d_in))
    ref = sum(SRHT(min(d_out, d_in - a), d_out, 5, ("b", "block", i))(x[..., a:a + d_out])
              for i, a in enumerate(range(0, d_in, d_out)))
    got = srht_block_sum(x, d_out, 5, ("b",))
    assert got.shape == (2, 3, d_out)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
    bad = x.copy()
    bad[0, 0, 7] = np.nan
    with pytest.raises(InvalidInputError, match="finite|NaN|nan"):
        srht_block_sum(bad, d_out, 5, ("b",))


def test_tensorsrht_full_blocks_use_the_documented_index_pairs():
    """Several full blocks (windowed): block b pairs π₁ᵇ[j mod n₁] with π₂ᵇ[(j mod n₁ + j // n₁) mod n₂]."""
    from dsketch.backend import rng as seeded
    from dsketch.sketch._base import random_signs

    x1, x2 = np.random.default_rng(3).normal(size=(2, 4, 9))
    t = TensorSRHT(9, 9, 1024, 3, ("a",))
    gen = seeded(3, "a", "tensorsrht")
    s1 = random_signs(gen, (4, 16), False) / 32
    s2 = random_signs(gen, (4, 16), False)
    j = np.arange(256)
    i1, i2 = [], []
    for b in range(4):
        p1, p2 = gen.permutation(16), gen.permutation(16)
        i1.append(b * 16 + p1[j % 16])
        i2.append(b * 16 + p2[(j % 16 + j // 16) % 16])
    want = hadamard_blocks(x1, s1)[:, np.concatenate(i1)] * hadamard_blocks(x2, s2)[:, np.concatenate(i2)]
    np.testing.assert_allclose(t(x1, x2), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(t.left(x1) * t.right(x2), want, rtol=1e-12, atol=1e-12)


def test_only_per_pixel_activations_fold_their_input():
    """Folds suit Hadamard-mixed Conv outputs; FC rows [features, bias] keep the full SRHT."""
    image = myrtle(5).sketch((14, 14, 1), 1024, seed=0).plan
    fc = fully_connected(2).sketch((30,), 1024, seed=0).plan
    acts = lambda plan: [s for s in plan if isinstance(s, ActivationSketch)]  # noqa: E731
    assert all(a._poly().fold for a in acts(image))
    assert not any(a._poly().fold for a in acts(fc))


def test_polysketch_high_width_narrows_only_the_high_degrees_and_stays_unbiased():
    """``high_width``: degrees ≤ q/2 unchanged (same nodes, same values), the others narrower
    and still unbiased (the root and its right subtree run at that width)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 2043))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rho = x[0] @ x[1]
    full = PolySketch(2043, 512, 8, 3, ("p",), fold=True)
    narrow = PolySketch(2043, 512, 8, 3, ("p",), fold=True, high_width=128)
    a = dict(full.iter_degrees(x, range(1, 9)))
    b = dict(narrow.iter_degrees(x, range(1, 9)))
    for l in range(1, 9):
        assert b[l].shape == (2, 512 if l <= 4 else 128) and narrow.degree_width(l) == b[l].shape[1]
        if l <= 4:
            np.testing.assert_array_equal(a[l], b[l])
    assert narrow.evaluate(x, [6])[6].shape == (2, 128)
    est = {5: [], 6: [], 8: []}
    for s in range(300):
        out = dict(PolySketch(2043, 512, 8, s, ("p",), fold=True, high_width=128).iter_degrees(x, [5, 6, 8]))
        for l in est:
            est[l].append(out[l][0] @ out[l][1])
    for l, e in est.items():
        assert abs(np.mean(e) - rho ** l) < 4 * np.std(e) / np.sqrt(len(e)) + 1e-3, l
    with pytest.raises(ValueError, match="high_width"):
        PolySketch(20, 64, 4, 0, high_width=-1)


def test_signed_sum_adds_a_narrow_block_into_its_first_columns():
    from dsketch.sketch.linear import SignedSum

    a = np.random.default_rng(5).normal(size=(3, 16))
    b = np.random.default_rng(6).normal(size=(3, 4))
    mix = SignedSum(16, 2, 9)
    signs = mix._params(np, np.float64)
    got = mix.add(mix.add(None, 0, a), 1, b, 2.0)
    want = a * signs[0]
    want[:, :4] += 2.0 * b * signs[1, :4]
    np.testing.assert_allclose(got, want, rtol=1e-14)
    first = mix.add(None, 1, b)  # a narrow first block: zeros elsewhere
    assert first.shape == (3, 16) and not first[:, 4:].any()


def test_relu_image_activations_narrow_their_high_degrees_and_others_keep_them():
    """The width rule of ``high_degree_width``: ReLU (high-degree mass ≤ HIGH_MASS) narrows, per
    pixel only; a narrowed net keeps each row's features independent of its chunk pieces."""
    from dsketch.nets import Erf
    from dsketch.nets.activation_sketch import HIGH_MASS, HIGH_SHARE, high_degree_width
    from dsketch.nets import chunks

    assert high_degree_width(Relu(), 8, 1024) == 1024 // HIGH_SHARE
    assert high_degree_width(Erf(), 8, 1024) == 0 and HIGH_MASS < 0.5
    image = myrtle(5).sketch((14, 14, 1), 1024, seed=0).plan
    fc = fully_connected(2).sketch((30,), 1024, seed=0).plan
    acts = lambda plan: [s for s in plan if isinstance(s, ActivationSketch)]  # noqa: E731
    assert all(a._poly().high_width == 256 for a in acts(image))
    assert not any(a._poly().high_width for a in acts(fc))
    # pieces of IMAGE_PIXEL_ROWS pixel rows, merged after each pool: the same rows
    x = np.random.default_rng(7).normal(size=(7, 8, 8, 1))
    fmap = myrtle(5).sketch((8, 8, 1), 64, seed=2)
    whole = chunks.run_steps(fmap.plan, input_features(x, np.float32))
    for i in (0, 6):
        one = fmap(x[i:i + 1])
        np.testing.assert_allclose(whole.ntk[i], one.ntk[0], rtol=1e-5, atol=1e-6)
