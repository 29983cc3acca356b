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
from dsketch.nets import fully_connected, myrtle
from dsketch.nets.activation_sketch import ActivationSketch
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
