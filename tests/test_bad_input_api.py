"""Bad input to the nets and sketch API, by class (issue 9): every case fails clearly.

Classes: integer and seed arguments (one validator, ``backend.check_int``: no silent
truncation), row shapes (``input_shape``), networks (``net`` must be a ``Serial``), and the
numeric edges (zero-width rows, finite inputs whose kernels or features overflow).  Every
case asserts the error type AND that the message names the argument / the problem.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsketch import nets, sketch
from dsketch.backend import InvalidInputError, check_int, check_seed, row_norms, seed_sequence
from dsketch.nets import Dense, Erf, Relu, fully_connected, myrtle, serial
from dsketch.nets.serial import FeatureMap

NET = fully_connected(2, Relu(), W_std=math.sqrt(2.0), b_std=0.1)
RNG = np.random.default_rng(0)
X = RNG.standard_normal((6, 5))
IMAGES = RNG.standard_normal((2, 8, 8, 3))

#: Values an integer argument must refuse (never truncate, never treat as a flag).
NOT_INTEGERS = [64.7, 64.0, np.float64(8.0), True, "8", None, [8]]


def raises_naming(*words):
    """``pytest.raises(InvalidInputError)`` whose message contains every one of ``words``."""
    class _Ctx:
        def __enter__(self):
            self.ctx = pytest.raises(InvalidInputError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            out = self.ctx.__exit__(*exc)
            msg = str(self.info.value)
            for w in words:
                assert w in msg, f"{w!r} not in error message {msg!r}"
            return out
    return _Ctx()


# ================================================================ integer arguments
#: (label, callable taking the bad value, argument name the message must carry)
INT_ARGS = [
    ("sketch n_features", lambda v: NET.sketch((5,), v), "n_features"),
    ("sketch degree", lambda v: NET.sketch((5,), 8, degree=v), "degree"),
    ("FeatureMap n_features", lambda v: FeatureMap(NET, (5,), v), "n_features"),
    ("kernel block_size", lambda v: NET.kernel(X, block_size=v), "block_size"),
    ("kernel n_jobs", lambda v: NET.kernel(X, n_jobs=v), "n_jobs"),
    ("SRHT d_out", lambda v: sketch.SRHT(8, v, 0), "d_out"),
    ("PolySketch degree", lambda v: sketch.PolySketch(8, 16, v, 0), "degree"),
    ("RFF n_features", lambda v: sketch.RandomFourierFeatures(5, v), "n_features"),
    ("Monomial degree", lambda v: nets.Monomial(degree=v), "degree"),
    ("Dense out_dim", lambda v: Dense(out_dim=v), "out_dim"),
    ("fully_connected depth", lambda v: fully_connected(v, Relu()), "depth"),
    ("myrtle depth", lambda v: myrtle(v), "depth"),
]


@pytest.mark.parametrize("bad", NOT_INTEGERS, ids=repr)
@pytest.mark.parametrize("label,call,name", INT_ARGS, ids=[a[0] for a in INT_ARGS])
def test_integer_arguments_refuse_non_integers(label, call, name, bad):
    if bad is None and name in ("block_size", "n_jobs", "out_dim"):
        pytest.skip("None means 'default' for this argument")
    with raises_naming(name, "integer"):
        call(bad)


@pytest.mark.parametrize("label,call,name", INT_ARGS, ids=[a[0] for a in INT_ARGS])
def test_integer_arguments_refuse_out_of_range(label, call, name):
    with raises_naming(name):
        call(-1)


def test_numpy_integers_are_accepted_and_equal_python_ints():
    a = NET.sketch((np.int64(5),), np.int32(16), seed=np.uint32(3), degree=np.int16(4))
    b = NET.sketch((5,), 16, seed=3, degree=4)
    assert a == b and type(a.n_features) is int and type(a.seed) is int
    np.testing.assert_array_equal(a(X).ntk, b(X).ntk)
    np.testing.assert_array_equal(NET.kernel(X, block_size=np.int64(2)).ntk,
                                  NET.kernel(X, block_size=3).ntk)


def test_check_int_is_the_one_rule():
    assert check_int(np.int64(7), "k") == 7 and type(check_int(np.int64(7), "k")) is int
    for bad in (7.0, 7.5, True, np.bool_(True), "7", None):
        with raises_naming("k", "integer"):
            check_int(bad, "k")
    with raises_naming("k", "in [2, 4]"):
        check_int(5, "k", minimum=2, maximum=4)


# ===================================================================== seeds
@pytest.mark.parametrize("bad", [1.5, 1.0, "abc", True, -1, None], ids=repr)
@pytest.mark.parametrize("label,call", [
    ("net.sketch", lambda s: NET.sketch((5,), 8, seed=s)),
    ("FeatureMap", lambda s: FeatureMap(NET, (5,), 8, seed=s)),
    ("SRHT", lambda s: sketch.SRHT(8, 16, s)),
    ("RFF", lambda s: sketch.RandomFourierFeatures(5, 8, seed=s)),
    ("seed_sequence", lambda s: seed_sequence(s, "x")),
], ids=lambda v: v if isinstance(v, str) else "")
def test_seeds_must_be_explicit_non_negative_integers(label, call, bad):
    with raises_naming("seed"):
        call(bad)


def test_seed_none_message_says_an_explicit_seed_is_needed():
    with raises_naming("seed", "None", "explicit"):
        check_seed(None)


def test_fractional_seed_is_not_the_integer_seed():
    """seed=1.5 used to equal seed=1 (``int()``): now refused, so no silent collision."""
    with pytest.raises(InvalidInputError):
        NET.sketch((5,), 8, seed=1.5)
    assert NET.sketch((5,), 8, seed=1) != NET.sketch((5,), 8, seed=2)


# ============================================================== input shapes
@pytest.mark.parametrize("shape,words", [
    ((-3,), ["input_shape[0]", "≥ 1"]),
    ((0,), ["input_shape[0]", "≥ 1"]),
    ((2.5,), ["input_shape[0]", "integer"]),
    (8, ["input_shape", "(8,)"]),
    ((8, 8), ["input_shape", "(H, W, C)"]),
    ("abc", ["input_shape"]),
    (None, ["input_shape"]),
], ids=repr)
def test_input_shape_is_a_tuple_of_positive_ints(shape, words):
    with raises_naming(*words):
        NET.sketch(shape, 8)
    with raises_naming(*words):
        FeatureMap(NET, shape, 8)


# ================================================================== networks
@pytest.mark.parametrize("bad", [Relu(), Dense(), "relu", None], ids=repr)
def test_feature_map_net_must_be_a_network(bad):
    with raises_naming("net"):
        FeatureMap(bad, (5,), 8)


def test_single_layer_net_is_refused_with_a_suggestion():
    from dsketch.estimators import NTKSketch

    with raises_naming("net", "single layer", "fully_connected"):
        NTKSketch(net=Relu(), n_components=8, random_state=0).fit(X)
    with raises_naming("net", "serial"):
        NTKSketch(net=Relu(), n_components=8, random_state=0).fit(X).exact_kernel(X)
    # the wrapped form works: a one-layer network is a network
    out = NTKSketch(net=serial(Dense(), Relu()), n_components=8, random_state=0).fit_transform(X)
    assert out.shape == (6, 8) and np.all(np.isfinite(out))


# ========================================================= zero-width rows
@pytest.mark.parametrize("call,name", [
    (lambda z: NET.kernel(z), "x1"),
    (lambda z: NET.kernel(X, np.zeros((3, 0))), "x2"),
    (lambda z: NET.kernel(z, diagonal=True), "x1"),
    (lambda z: NET.sketch((5,), 8)(z), "X"),
    (lambda z: sketch.RandomFourierFeatures(5, 8)(z), "X"),
    (lambda z: sketch.SRHT(4, 8, 0)(z), "x"),
], ids=["kernel", "kernel x2", "diagonal", "FeatureMap", "RFF", "SRHT"])
def test_zero_width_rows_are_refused_not_nan(call, name):
    with raises_naming(name):
        call(np.zeros((4, 0)))


# ================================================================= float arguments
#: (label, callable taking the bad value, argument name the message must carry)
FLOAT_ARGS = [
    ("Dense W_std", lambda v: Dense(W_std=v), "W_std"),
    ("Dense b_std", lambda v: Dense(b_std=v), "b_std"),
    ("Conv W_std", lambda v: nets.Conv((3, 3), W_std=v), "W_std"),
    ("Erf a", lambda v: Erf(a=v), "a"),
    ("Rbf gamma", lambda v: nets.Rbf(v), "gamma"),
    ("fully_connected W_std", lambda v: fully_connected(2, Relu(), W_std=v), "W_std"),
    ("RFF gamma", lambda v: sketch.RandomFourierFeatures(5, 32, gamma=v), "gamma"),
]


@pytest.mark.parametrize("bad", [["a"], "a", [1.0, "b"]], ids=repr)
@pytest.mark.parametrize("label,call,name", FLOAT_ARGS, ids=[a[0] for a in FLOAT_ARGS])
def test_float_arguments_name_the_argument(label, call, name, bad):
    """A string or a list where a number belongs: InvalidInputError naming the argument."""
    with raises_naming(name):
        call(bad)


# ================================================================= overflow
SCALES = [1e5, 1e20, 1e40, 1e100, 1e200]
#: Every surface that computes from finite rows: a NaN/Inf result is an overflow.
OVERFLOW_CASES = {
    "fc relu exact": lambda x: NET.kernel(x).ntk,
    "fc erf exact": lambda x: fully_connected(2, Erf()).kernel(x).ntk,
    "fc relu diag": lambda x: NET.kernel(x, diagonal=True).ntk,
    "fc relu sketch f32": lambda x: NET.sketch((5,), 32)(x).ntk,
    "fc relu sketch f64": lambda x: NET.sketch((5,), 32, dtype="float64")(x).nngp,
    "fc relu random": lambda x: NET.sketch((5,), 32, relu_method="random")(x).ntk,
    "RFF": lambda x: sketch.RandomFourierFeatures(5, 32)(x),
    "PolynomialSketch": lambda x: sketch.PolynomialSketch(5, 32, 3)(x),
    "NTKRandomFeatures": lambda x: sketch.NTKRandomFeatures(5, 32)(x),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("scale", SCALES, ids=lambda s: f"{s:.0e}")
@pytest.mark.parametrize("case", list(OVERFLOW_CASES))
def test_huge_finite_inputs_give_finite_results_or_an_overflow_error(case, scale):
    """Never a silent NaN, and never "contains NaN or Inf" for finite input."""
    try:
        out = OVERFLOW_CASES[case](X * scale)
    except InvalidInputError as exc:
        msg = str(exc)
        assert "overflow" in msg and "scale" in msg, msg
        assert "contains NaN" not in msg, msg
        return
    assert np.all(np.isfinite(out))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_overflow_error_names_the_argument_and_the_row_norms():
    x = X.copy()
    x[3] *= 1e200
    with raises_naming("overflow", "x1", "(row 3)", "e+200"):
        NET.kernel(x)
    with raises_naming("overflow", "X", "e+200 (row 3)"):
        NET.sketch((5,), 32)(x)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_overflow_in_image_kernels_is_reported():
    with raises_naming("overflow", "x1"):
        myrtle(5).kernel(IMAGES * 1e200)
    assert np.all(np.isfinite(myrtle(5).kernel(IMAGES * 1e5).ntk))


# ======================================================= huge but representable scales
ERF_NET = serial(Dense(), Erf(), Dense())
HUGE = [1e4, 1e6, 1e10, 1e30]


def _ntk_error(method, x, m=1024):
    """(relative Frobenius error of the NTK sketch, the JL floor of any width-m sketch)."""
    K = np.asarray(ERF_NET.kernel(x).ntk)
    F = np.asarray(ERF_NET.sketch((x.shape[1],), m, seed=0, method=method).output("ntk")(x),
                   dtype=np.float64)
    d = np.diag(K)
    floor = np.sqrt((np.sum(np.outer(d, d)) + np.sum(K * K)) / m) / np.linalg.norm(K)
    return np.linalg.norm(F @ F.T - K) / np.linalg.norm(K), floor


@pytest.mark.parametrize("method", ["auto", "mix", "random", "hermite"])
@pytest.mark.parametrize("scale", HUGE, ids=lambda s: f"{s:.0e}")
def test_erf_sketch_at_huge_scales_is_right_or_names_the_scale(method, scale):
    """The erf NTK at input norms near 1e30 (its NNGP tends to the sign activation's
    arcsine kernel, its derivative dual to a near-diagonal): the features follow it or the
    map refuses, naming the variance and the remedy — never a kernel off by 170%."""
    x = np.random.default_rng(5).standard_normal((40, 8)) * scale
    try:
        err, floor = _ntk_error(method, x)
    except InvalidInputError as exc:
        assert method != "hermite"
        msg = str(exc)
        assert "Erf" in msg and "variance" in msg and "method='hermite'" in msg, msg
        return
    assert err < 2 * floor, (method, scale, err, floor)  # was 1.67 (~8× the floor) for "auto"


def test_erf_hermite_sketch_follows_the_arcsine_limit():
    """method='hermite' keeps its accuracy from 1e4 to 1e30 (the kernel's limit)."""
    x = np.random.default_rng(5).standard_normal((40, 8))
    errs = [_ntk_error("hermite", x * s) for s in HUGE]
    assert all(e < 2 * f for e, f in errs) and np.ptp([e for e, _ in errs]) < 0.02, errs
    F = ERF_NET.sketch((8,), 1024, seed=0, method="hermite").output("nngp")(x * 1e30)
    G = np.asarray(F, dtype=np.float64) @ np.asarray(F, dtype=np.float64).T
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    arcsine = (2 / np.pi) * np.arcsin(np.clip(u @ u.T, -1, 1))  # sign's dual, then Dense(1, 0)
    assert np.linalg.norm(G - arcsine) / np.linalg.norm(arcsine) < 0.1


def test_row_norms_do_not_overflow():
    x = np.full((2, 3), 1e200)
    np.testing.assert_allclose(row_norms(x), np.sqrt(3) * 1e200)
    np.testing.assert_allclose(row_norms(X), np.linalg.norm(X, axis=1))
