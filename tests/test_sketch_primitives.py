"""Tests of dsketch.sketch.hadamard, .linear, .tensor and .polysketch (the primitives)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _gpu import cupy_or_none
import scipy.linalg
import scipy.sparse as sp

from dsketch.sketch import (
    SRHT,
    ComplexSRHT,
    ComplexTensorSRHT,
    CountSketch,
    CtRPolySketch,
    CtRTensorSRHT,
    DotProductSketch,
    GaussianProjection,
    PolySketch,
    TensorSketch,
    TensorSketchPower,
    TensorSRHT,
    ctr_real,
    fwht,
    hadamard_matrix,
)

D = 12  # input width used by the generic tests (not a power of two on purpose)


def _unit(rng, n, d):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _pair(rng, d, rho):
    """Two unit vectors with inner product about rho."""
    x = rng.normal(size=d)
    x /= np.linalg.norm(x)
    z = rng.normal(size=d)
    z -= (z @ x) * x
    z /= np.linalg.norm(z)
    return x, rho * x + math.sqrt(1 - rho * rho) * z


# ------------------------------------------------------------------------------ FWHT
@pytest.mark.parametrize("n", [1, 2, 4, 8, 32, 64, 256, 1024, 2048])
def test_fwht_matches_scipy_hadamard(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(3, 2, n))
    h = scipy.linalg.hadamard(n)
    np.testing.assert_array_equal(hadamard_matrix(n), h)
    h = h.astype(np.float64)
    np.testing.assert_allclose(fwht(x), x @ h, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(fwht(x, normalize=True), x @ h / math.sqrt(n), atol=1e-10)
    z = x + 1j * rng.normal(size=x.shape)
    np.testing.assert_allclose(fwht(z), x @ h + 1j * (z.imag @ h), atol=1e-10)
    x32 = x.astype(np.float32)
    y32 = fwht(x32)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, x @ h, rtol=1e-4, atol=1e-4 * math.sqrt(n))
    assert fwht(z.astype(np.complex64)).dtype == np.complex64


@pytest.mark.parametrize("d,n", [(1, 1), (3, 4), (5, 8), (65, 128), (100, 1024), (700, 1024),
                                 (1023, 1024), (1025, 2048), (3000, 8192), (7, 8192)])
def test_fwht_padded_matches_padded_fwht(d, n):
    from dsketch.sketch.hadamard import fwht_padded

    rng = np.random.default_rng(d + n)
    x = rng.normal(size=(3, 2, d))
    z = np.zeros((3, 2, n))
    z[..., :d] = x
    np.testing.assert_allclose(fwht_padded(x, n), fwht(z), rtol=1e-12, atol=1e-10)
    y32 = fwht_padded(x.astype(np.float32), n)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, fwht(z), rtol=1e-4, atol=1e-4 * math.sqrt(n))
    c = x + 1j * rng.normal(size=x.shape)
    zc = np.zeros((3, 2, n), dtype=complex)
    zc[..., :d] = c
    np.testing.assert_allclose(fwht_padded(c, n), fwht(zc), atol=1e-10)
    with pytest.raises(ValueError, match="fwht_padded"):
        fwht_padded(x, max(1, d // 2) if d > 1 else 3)


@pytest.mark.parametrize("d,n,k", [(65, 128, 100), (70, 128, 128), (33, 64, 200),
                                   (129, 256, 256), (40, 64, 64), (64, 64, 10), (20, 64, 30)])
@pytest.mark.parametrize("complex_signs", [False, True])
def test_hadamard_gather_matches_transform_then_take(d, n, k, complex_signs):
    """The gathered transform skips the padding work but gives the same numbers."""
    from dsketch.sketch.hadamard import hadamard_blocks, hadamard_gather

    rng = np.random.default_rng(d + n + k)
    x = rng.normal(size=(5, d))
    signs = (1 - 2 * rng.integers(0, 2, (1, n))).astype(float)
    if complex_signs:
        signs = signs * 1j ** rng.integers(0, 4, (1, n))
    idx = rng.integers(0, n, k)
    np.testing.assert_allclose(hadamard_gather(x, signs, idx), hadamard_blocks(x, signs)[:, idx],
                               rtol=1e-12, atol=1e-10)


def test_fwht_large_and_involution():
    x = np.random.default_rng(0).normal(size=(2, 2**15))
    y = fwht(x)
    np.testing.assert_allclose(fwht(y) / 2**15, x, atol=1e-10)
    np.testing.assert_allclose(np.sum(y * y, axis=1), 2**15 * np.sum(x * x, axis=1), rtol=1e-10)


def test_fwht_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="power-of-two"):
        fwht(np.ones((2, 12)))


# ------------------------------------------------------------------ generic primitive zoo
# (name, factory(seed, width) -> spec, how to apply) ; kind: "lin" (x), "pair" (x1, x2),
# "list" (PolySketch-like: list output, concatenated without the ones).
def _zoo():
    return [
        ("srht", lambda s, m=16: SRHT(D, m, s), "lin"),
        ("srht-expand", lambda s, m=40: SRHT(D, m, s), "lin"),
        ("gaussian", lambda s, m=16: GaussianProjection(D, m, s), "lin"),
        ("countsketch", lambda s, m=16: CountSketch(D, m, s), "lin"),
        ("tensorsrht", lambda s, m=16: TensorSRHT(D, 5, m, s), "pair"),
        ("tensorsrht-odd", lambda s, m=15: TensorSRHT(D, 5, m, s), "pair"),
        ("ctr-tensorsrht", lambda s, m=16: CtRTensorSRHT(D, 5, m, s), "pair"),
        ("ctr-tensorsrht-odd", lambda s, m=15: CtRTensorSRHT(D, 5, m, s), "pair"),
        ("tensorsketch", lambda s, m=16: TensorSketch(D, 5, m, s), "pair"),
        ("tensorsketch-power", lambda s, m=16: TensorSketchPower(D, m, 3, s), "lin"),
        ("polysketch", lambda s, m=16: PolySketch(D, m, 3, s), "list"),
        ("polysketch-cs", lambda s, m=16: PolySketch(D, m, 3, s, leaf="countsketch"), "list"),
        ("ctr-polysketch", lambda s, m=15: CtRPolySketch(D, m, 3, s), "list"),
        ("dotproduct", lambda s, m=16: DotProductSketch(D, m, (1.0, 1.0, 0.5, 1 / 6), s), "lin"),
        ("dotproduct-ctr", lambda s, m=15: DotProductSketch(D, m, (0.0, 1.0, 0.5), s,
                                                            method="ctr"), "lin"),
    ]


ZOO = _zoo()
IDS = [z[0] for z in ZOO]


def _apply(spec, kind, x, **kw):
    if kind == "pair":
        return spec(x, x[..., :5] * 2.0 - 0.5, **kw)
    if kind == "list":
        return np.concatenate(spec(x, **kw)[1:], axis=-1)
    return spec(x, **kw)


def _clear_caches():
    SRHT._params_f32.cache_clear()


@pytest.mark.parametrize("name,make,kind", ZOO, ids=IDS)
def test_determinism_and_seed_dependence(name, make, kind):
    x = np.random.default_rng(1).normal(size=(6, D))
    a = _apply(make(3), kind, x)
    _clear_caches()  # rebuild the random matrices from the seed
    b = _apply(make(3), kind, x)
    np.testing.assert_array_equal(a, b)
    c = _apply(make(4), kind, x)
    assert not np.allclose(a, c)


def test_path_changes_stream():
    x = np.random.default_rng(1).normal(size=(4, D))
    a = SRHT(D, 16, 0, ("layer1",))(x)
    b = SRHT(D, 16, 0, ("layer2",))(x)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, SRHT(D, 16, 0, ["layer1"])(x))  # list → tuple


@pytest.mark.parametrize("name,make,kind", ZOO, ids=IDS)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_chunk_invariance(name, make, kind, dtype, tol):
    x = np.random.default_rng(2).normal(size=(9, D)).astype(dtype)
    spec = make(7)
    whole = _apply(spec, kind, x)
    halves = np.concatenate([_apply(spec, kind, x[:4]), _apply(spec, kind, x[4:])])
    rows = np.concatenate([_apply(spec, kind, x[i:i + 1]) for i in range(len(x))])
    scale = np.abs(whole).max()
    np.testing.assert_allclose(halves, whole, rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(rows, whole, rtol=tol, atol=tol * scale)
    # leading dimensions: (3, 3, D) gives the same rows as (9, D)
    lead = _apply(spec, kind, x.reshape(3, 3, D))
    np.testing.assert_allclose(lead.reshape(whole.shape), whole, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("name,make,kind", ZOO, ids=IDS)
def test_dtype_and_width(name, make, kind):
    spec = make(0)
    x = np.random.default_rng(3).normal(size=(5, D))
    y64 = _apply(spec, kind, x)
    y32 = _apply(spec, kind, x.astype(np.float32))
    assert y64.dtype == np.float64 and y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-3, atol=1e-4 * np.abs(y64).max())
    yint = _apply(spec, kind, np.arange(5 * D).reshape(5, D) % 3)
    assert yint.dtype == np.float64
    width = spec.d_out * (3 if kind == "list" else 1)
    assert y64.shape == (5, width)
    one = _apply(spec, kind, x[0])
    assert one.shape == (width,)


@pytest.mark.parametrize("name,make,kind", ZOO, ids=IDS)
def test_bad_input(name, make, kind):
    spec = make(0)
    x = np.random.default_rng(3).normal(size=(5, D))
    with pytest.raises(ValueError, match="d_in=12|d1=12"):
        _apply(spec, kind, np.ones((5, D + 1)))
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf.*row 3"):
        _apply(spec, kind, bad)
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        _apply(spec, kind, bad)
    with pytest.raises(ValueError, match="numeric"):
        if kind == "pair":
            spec(np.array(["a"] * D), x[:, :5])
        else:
            spec(np.array(["a"] * D))


@pytest.mark.parametrize("kwargs", [
    dict(d_in=0, d_out=4, seed=0), dict(d_in=3, d_out=-1, seed=0),
    dict(d_in=3.5, d_out=4, seed=0), dict(d_in=True, d_out=4, seed=0),
    dict(d_in=3, d_out=4, seed=-1), dict(d_in=3, d_out=4, seed=1.0),
    dict(d_in=3, d_out=4, seed=0, path=(-1,)), dict(d_in=3, d_out=4, seed=0, path="layer"),
])
def test_bad_spec(kwargs):
    for cls in (SRHT, GaussianProjection, CountSketch, ComplexSRHT):
        with pytest.raises(ValueError):
            cls(**kwargs)


def test_bad_spec_tensor_and_poly():
    for bad in [(0, 4, 8), (4, 0, 8), (4, 4, 0)]:
        for cls in (TensorSRHT, CtRTensorSRHT, TensorSketch, ComplexTensorSRHT):
            with pytest.raises(ValueError):
                cls(*bad, 0)
    for bad in [dict(degree=0), dict(d_out=0), dict(leaf="gaussian")]:
        kw = dict(d_in=4, d_out=8, degree=2, seed=0) | bad
        with pytest.raises(ValueError):
            PolySketch(**kw)
    with pytest.raises(ValueError):
        CtRPolySketch(4, 8, 2, 0, leaf="countsketch")
    with pytest.raises(ValueError):
        TensorSketchPower(4, 8, 0, 0)
    for coeffs in [(1.0,), (1.0, -1.0), (1.0, 0.0, 0.0), (1.0, float("nan")), "ab"]:
        with pytest.raises(ValueError):
            DotProductSketch(4, 8, coeffs, 0)
    with pytest.raises(ValueError):
        DotProductSketch(4, 1, (1.0, 1.0), 0)
    p = PolySketch(4, 8, 3, 0)
    with pytest.raises(ValueError, match="outside"):
        p.evaluate(np.ones((2, 4)), [4])


def test_specs_are_small_hashable_values():
    a, b = PolySketch(4, 8, 3, 0, ("x", 1)), PolySketch(4, 8, 3, 0, ("x", 1))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(Exception):
        a.d_out = 3  # frozen


# ---------------------------------------------------------------------- exactness facts
def test_srht_is_isometry_when_width_is_multiple_of_padded_dim():
    x = np.random.default_rng(0).normal(size=(4, D))  # padded to 16
    for m in (16, 32, 48):
        y = SRHT(D, m, 5)(x)
        np.testing.assert_allclose(y @ y.T, x @ x.T, rtol=1e-12, atol=1e-12)


def test_tensorsrht_against_e0_is_isometry():
    """T(x, e₀) is a signed full SRHT of x when d_out equals the padded width of x."""
    x = np.random.default_rng(0).normal(size=(4, 16))
    e0 = np.zeros(8)
    e0[0] = 1
    y = TensorSRHT(16, 8, 16, 1)(x, e0[None, :])
    np.testing.assert_allclose(y @ y.T, x @ x.T, rtol=1e-12, atol=1e-12)


def test_tensorsrht_all_pairs_is_exact():
    """d_out = n₁·n₂ uses every index pair once: ⟨T(x₁,x₂), T(y₁,y₂)⟩ is exact."""
    rng = np.random.default_rng(0)
    x1, y1 = rng.normal(size=(2, 4))
    x2, y2 = rng.normal(size=(2, 8))
    t = TensorSRHT(4, 8, 32, 3)
    got = t(x1, x2) @ t(y1, y2)
    assert got == pytest.approx((x1 @ y1) * (x2 @ y2), rel=1e-12)
    t2 = TensorSRHT(4, 8, 64, 3)  # two independent full blocks
    assert t2(x1, x2) @ t2(y1, y2) == pytest.approx((x1 @ y1) * (x2 @ y2), rel=1e-12)


def test_tensorsrht_fused_product_matches_factor_product():
    """``combine`` (windowed, no d_out-wide gathers) equals left ⊙ right, any shapes."""
    rng = np.random.default_rng(1)
    for d1, d2, m in [(12, 5, 16), (12, 5, 40), (65, 65, 100), (33, 9, 15), (3, 2, 20)]:
        t = TensorSRHT(d1, d2, m, 4)
        x1, x2 = rng.normal(size=(6, d1)), rng.normal(size=(6, d2))
        np.testing.assert_allclose(t(x1, x2), t.left(x1) * t.right(x2), rtol=1e-12, atol=1e-12)
        # broadcast leading dimensions
        np.testing.assert_allclose(t(x1[:, None], x2[None, :3]),
                                   t.left(x1)[:, None] * t.right(x2[:3])[None], atol=1e-12)


def test_signed_sum_is_unbiased_and_needs_no_transform():
    from dsketch.sketch.linear import SignedSum

    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 2, 16))              # three blocks, two rows
    est = []
    for s in range(400):
        mix = SignedSum(16, 3, s)
        f = None
        for t in range(3):
            f = mix.add(f, t, a[t], 0.5 if t == 1 else None)
        est.append(f[0] @ f[1])
    truth = a[0, 0] @ a[0, 1] + 0.25 * a[1, 0] @ a[1, 1] + a[2, 0] @ a[2, 1]
    se = np.std(est) / math.sqrt(len(est))
    assert abs(np.mean(est) - truth) <= 4 * se
    # the blocks themselves are never written to
    a0 = a.copy()
    SignedSum(16, 3, 0).add(None, 0, a[0], 2.0)
    np.testing.assert_array_equal(a, a0)


def test_kernel_maps_run_in_row_slabs_with_identical_results(monkeypatch):
    """A batch larger than one slab gives the rows' features of the unslabbed call."""
    from dsketch.sketch import _base
    from dsketch.sketch.kernels import PolynomialSketch

    x = _unit(np.random.default_rng(3), 70, D)
    sk = PolynomialSketch(input_dim=D, n_features=32, degree=4, coef0=1.0, seed=1)
    whole = sk(x)
    monkeypatch.setitem(_base.SLAB_ELEMENTS, "cpu", 16 * 32)   # 16-row slabs
    np.testing.assert_array_equal(sk(x), whole)


def test_countsketch_matches_explicit_matrix_and_sparse_input():
    cs = CountSketch(30, 7, 11)
    h, s = cs.hashes()
    mat = np.zeros((30, 7))
    mat[np.arange(30), h] = s
    x = sp.random(20, 30, density=0.2, random_state=0, format="csr")
    dense = x.toarray()
    np.testing.assert_allclose(cs(dense), dense @ mat, atol=1e-12)
    np.testing.assert_allclose(cs(x), dense @ mat, atol=1e-12)
    assert isinstance(cs(x), np.ndarray)
    np.testing.assert_allclose(cs(x.astype(np.float32)), cs(dense.astype(np.float32)), atol=1e-6)
    assert cs(x.astype(np.float32)).dtype == np.float32
    bad = x.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cs(bad)
    with pytest.raises(ValueError, match="d_in=30"):
        cs(sp.random(3, 31, density=0.5, format="csr"))


def test_sparse_input_for_countsketch_based_sketches():
    x = sp.random(15, 30, density=0.3, random_state=1, format="csr")
    dense = x.toarray()
    tsp = TensorSketchPower(30, 16, 3, 0)
    np.testing.assert_allclose(tsp(x), tsp(dense), atol=1e-12)
    ps = PolySketch(30, 16, 3, 0, leaf="countsketch")
    for a, b in zip(ps(x), ps(dense)):
        np.testing.assert_allclose(a, b, atol=1e-12)
    with pytest.raises(ValueError, match="countsketch"):
        PolySketch(30, 16, 3, 0)(x)
    dps = DotProductSketch(30, 16, (1.0, 0.5, 0.25), 0, leaf="countsketch")
    np.testing.assert_allclose(dps(x), dps(dense), atol=1e-12)
    with pytest.raises(ValueError, match="countsketch"):
        DotProductSketch(30, 16, (1.0, 0.5, 0.25), 0)(x)


def test_polysketch_output_structure():
    x = np.random.default_rng(0).normal(size=(4, D))
    out = PolySketch(D, 16, 5, 0)(x)
    assert len(out) == 6
    np.testing.assert_array_equal(out[0], np.ones((4, 1)))
    assert all(o.shape == (4, 16) for o in out[1:])
    ev = PolySketch(D, 16, 5, 0).evaluate(x, [2, 5])
    np.testing.assert_allclose(ev[2], out[2], atol=1e-12)
    np.testing.assert_allclose(ev[5], out[5], atol=1e-12)
    np.testing.assert_allclose(PolySketch(D, 16, 5, 0).top(x), out[5], atol=1e-12)
    # homogeneity: S_l(c x) = c^l S_l(x)
    out2 = PolySketch(D, 16, 5, 0)(2.0 * x)
    for l in range(1, 6):
        np.testing.assert_allclose(out2[l], 2.0**l * out[l], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", [PolySketch, CtRPolySketch])
def test_iter_degrees_streams_sorted_degrees(cls):
    """The public per-degree iterator yields (l, S_l x) in increasing l, as evaluate does."""
    x = np.random.default_rng(2).normal(size=(3, D))
    sk = cls(D, 15, 6, 4)
    got = list(sk.iter_degrees(x, [1, 4, 6]))
    assert [l for l, _ in got] == [1, 4, 6]
    ev = sk.evaluate(x, [1, 4, 6])
    for l, v in got:
        assert v.shape == (3, 15) and not np.iscomplexobj(v)
        np.testing.assert_array_equal(v, ev[l])
    assert [l for l, _ in cls(D, 8, 1, 0).iter_degrees(x, [1])] == [1]


def test_ctr_real_and_complex_primitives():
    z = np.array([[1 + 2j, 3 - 1j, 0.5 + 0.5j]])
    np.testing.assert_allclose(ctr_real(z, 6), [[1, 3, 0.5, 2, -1, 0.5]])
    np.testing.assert_allclose(ctr_real(z, 5), [[1, 3, 2, -1, 0.5 * math.sqrt(2)]])
    with pytest.raises(ValueError):
        ctr_real(z, 4)
    x = np.random.default_rng(0).normal(size=(3, D))
    u = ComplexSRHT(D, 16, 0)(x)
    assert np.iscomplexobj(u) and u.shape == (3, 16)
    np.testing.assert_allclose(np.real(u @ u.conj().T), x @ x.T, rtol=1e-12)  # full width
    t = ComplexTensorSRHT(D, D, 8, 0)(x, x)
    assert np.iscomplexobj(t) and t.shape == (3, 8)


# -------------------------------------------------------------------------- statistics
def _estimates(make, kind, x, y, seeds, degree=None):
    """⟨S x, S y⟩ over seeds (for "list" kinds: of degree ``degree``)."""
    out = []
    for s in seeds:
        spec = make(s)
        if kind == "pair":
            a = spec(x[0], x[1], check=False)
            b = spec(y[0], y[1], check=False)
        elif kind == "list":
            a, b = spec(x, check=False)[degree], spec(y, check=False)[degree]
        else:
            a, b = spec(x, check=False), spec(y, check=False)
        out.append(float(a @ b))
    return np.array(out)


UNBIASED = [
    ("srht", lambda s: SRHT(D, 8, s), "lin"),
    ("srht-expand", lambda s: SRHT(D, 40, s), "lin"),
    ("gaussian", lambda s: GaussianProjection(D, 8, s), "lin"),
    ("countsketch", lambda s: CountSketch(D, 8, s), "lin"),
    ("tensorsrht", lambda s: TensorSRHT(D, 5, 8, s), "pair"),
    ("ctr-tensorsrht", lambda s: CtRTensorSRHT(D, 5, 9, s), "pair"),
    ("tensorsketch", lambda s: TensorSketch(D, 5, 8, s), "pair"),
    ("tensorsketch-power", lambda s: TensorSketchPower(D, 8, 3, s), "lin"),
    ("dotproduct", lambda s: DotProductSketch(D, 9, (0.5, 1.0, 0.5, 1 / 6), s), "lin"),
    ("dotproduct-ctr", lambda s: DotProductSketch(D, 9, (0.5, 1.0, 0.5, 1 / 6), s,
                                                  method="ctr"), "lin"),
]


@pytest.mark.parametrize("name,make,kind", UNBIASED, ids=[u[0] for u in UNBIASED])
def test_unbiased_within_clt_band(name, make, kind):
    rng = np.random.default_rng(10)
    seeds = range(400)
    if kind == "pair":
        x1, y1 = _pair(rng, D, 0.6)
        x2, y2 = _pair(rng, 5, -0.5)
        x, y = (x1, 2 * x2), (y1, y2)
        truth = (x1 @ y1) * (2 * x2 @ y2)
    else:
        x, y = _pair(rng, D, 0.7)
        g = x @ y
        truth = {"tensorsketch-power": g**3}.get(name, g)
        if name.startswith("dotproduct"):
            truth = 0.5 + g + 0.5 * g**2 + g**3 / 6
    est = _estimates(make, kind, x, y, seeds)
    se = est.std() / math.sqrt(len(est))
    assert abs(est.mean() - truth) <= 4 * se + 1e-12, (est.mean(), truth, se)


@pytest.mark.parametrize("cls", [PolySketch, CtRPolySketch])
def test_polysketch_all_degrees_unbiased(cls):
    rng = np.random.default_rng(11)
    x, y = _pair(rng, D, 0.8)
    specs = [cls(D, 9, 5, s) for s in range(300)]
    outs = [(sk(x, check=False), sk(y, check=False)) for sk in specs]
    for l in range(1, 6):
        est = np.array([a[l] @ b[l] for a, b in outs])
        se = est.std() / math.sqrt(len(est))
        assert abs(est.mean() - (x @ y) ** l) <= 4 * se + 1e-12, (l, est.mean(), (x @ y) ** l)


@pytest.mark.parametrize("name,make", [
    ("gaussian", lambda s, m: GaussianProjection(D, m, s)),
    ("countsketch", lambda s, m: CountSketch(D, m, s)),
    ("tensorsrht", lambda s, m: TensorSRHT(64, 64, m, s)),
    ("ctr-tensorsrht", lambda s, m: CtRTensorSRHT(64, 64, m, s)),
    ("tensorsketch", lambda s, m: TensorSketch(64, 64, m, s)),
    ("polysketch-4", lambda s, m: PolySketch(64, m, 4, s)),
])
def test_variance_falls_like_one_over_m(name, make):
    rng = np.random.default_rng(12)
    d = D if name in ("gaussian", "countsketch") else 64
    x, y = _pair(rng, d, 0.5)
    var = []
    for m in (8, 32):
        est = []
        for s in range(300):
            sk = make(s, m)
            if isinstance(sk, (TensorSRHT, CtRTensorSRHT, TensorSketch)):
                a, b = sk(x, x, check=False), sk(y, y, check=False)
            elif isinstance(sk, PolySketch):
                a, b = sk.top(x, check=False), sk.top(y, check=False)
            else:
                a, b = sk(x, check=False), sk(y, check=False)
            est.append(a @ b)
        var.append(np.var(est))
    ratio = var[0] / var[1]
    assert 2.0 < ratio < 8.0, (var, ratio)


def test_ctr_has_lower_variance_than_real_tree():
    """Wacker et al.: complex-to-real features beat real ones at equal output width.

    The gain is largest for strongly correlated pairs (near the diagonal of the Gram
    matrix, where the variance is largest); for weakly correlated pairs the two tie.
    """
    rng = np.random.default_rng(13)
    x, y = _pair(rng, 256, 0.9)
    var = {}
    for cls in (PolySketch, CtRPolySketch):
        est = [(lambda sk: sk.top(x, check=False) @ sk.top(y, check=False))(cls(256, 64, 4, s))
               for s in range(300)]
        var[cls.__name__] = np.var(est)
    assert var["CtRPolySketch"] < 0.7 * var["PolySketch"], var


# ------------------------------------------------------------------------------ fidelity
def _relerr(f, k):
    f = np.asarray(f, dtype=np.float64)
    return np.linalg.norm(f @ f.T - k) / np.linalg.norm(k)


EXP16 = tuple(1.0 / math.factorial(k) for k in range(17))


@pytest.mark.parametrize("method", ["polysketch", "ctr"])
def test_degree16_exponential_reference_tolerance(method):
    """NT PR #142 reference: degree-16 truncated exp kernel, unit rows, m = 1024: ≤ 0.15."""
    x = _unit(np.random.default_rng(0), 100, 256)
    sk = DotProductSketch(256, 1024, EXP16, 0, width=256, method=method)
    err = _relerr(sk(x), sk.kernel(x))
    assert err <= 0.15, err


@pytest.mark.slow
@pytest.mark.parametrize("n", [10, 100, 1000])
@pytest.mark.parametrize("d", [64, 256, 1024])
def test_degree16_exponential_reference_grid(n, d):
    x = _unit(np.random.default_rng(n + d), n, d)
    for seed in range(3):
        sk = DotProductSketch(d, 1024, EXP16, seed)
        err = _relerr(sk(x.astype(np.float32)), sk.kernel(x))
        assert err <= 0.15, (n, d, seed, err)


@pytest.mark.parametrize("cls", [PolySketch, CtRPolySketch])
def test_polysketch_error_shrinks_with_width(cls):
    x = _unit(np.random.default_rng(1), 60, 128)
    k = (x @ x.T) ** 4
    errs = [np.mean([_relerr(cls(128, m, 4, s).top(x), k) for s in range(2)])
            for m in (128, 512, 2048)]
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 0.5 * errs[0], errs


@pytest.mark.slow
@pytest.mark.parametrize("cls", [PolySketch, CtRPolySketch])
def test_polysketch_error_table_slow(cls):
    x = _unit(np.random.default_rng(2), 500, 512)
    k = (x @ x.T) ** 6
    errs = [_relerr(cls(512, m, 6, 0).top(x.astype(np.float32)), k)
            for m in (512, 2048, 8192)]
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 0.35 * errs[0], errs


# --------------------------------------------------------------------------------- GPU
_cupy = cupy_or_none


@pytest.mark.gpu
@pytest.mark.skipif(_cupy() is None, reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("name,make,kind", ZOO, ids=IDS)
def test_gpu_matches_cpu(name, make, kind):
    cp = _cupy()
    x = np.random.default_rng(0).normal(size=(7, D))
    for dtype, tol in ((np.float64, 1e-10), (np.float32, 1e-4)):
        cpu = _apply(make(1), kind, x.astype(dtype))
        gpu = _apply(make(1), kind, cp.asarray(x.astype(dtype)))
        assert type(gpu).__module__.startswith("cupy") and gpu.dtype == dtype
        np.testing.assert_allclose(cp.asnumpy(gpu), cpu, rtol=tol, atol=tol * np.abs(cpu).max())


@pytest.mark.gpu
@pytest.mark.skipif(_cupy() is None, reason="needs CuPy and a CUDA device")
def test_gpu_fwht_and_sparse_countsketch():
    cp = _cupy()
    import cupyx.scipy.sparse as csp

    x = np.random.default_rng(0).normal(size=(3, 1024))
    np.testing.assert_allclose(cp.asnumpy(fwht(cp.asarray(x))), fwht(x), atol=1e-9)
    xs = sp.random(20, 30, density=0.2, random_state=0, format="csr")
    cs = CountSketch(30, 7, 11)
    np.testing.assert_allclose(cp.asnumpy(cs(csp.csr_matrix(xs))), cs(xs), atol=1e-12)


def test_device_cache_is_used():
    """The random matrices are built once per spec and device, not per call."""
    calls = []

    class Spy(SRHT):
        def _build(self, xp, dtype):
            calls.append(dtype)
            return super()._build(xp, dtype)

    spy = Spy(D, 8, 123, ("spy",))
    x = np.ones((2, D))
    for _ in range(3):
        spy(x)
        spy(x.astype(np.float32))
    assert len(calls) == 2
