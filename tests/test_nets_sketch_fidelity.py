"""Activation sketch estimators (``method``) and fidelity against the input scale.

- ``"random"`` / ``"mix"`` (Monte-Carlo features of the Hermite residual) are unbiased for
  the exact dual at every correlation (no truncation), derivative rows have their exact norm;
- ``"auto"`` resolution; ReLU's ``"auto"`` features are its Hermite features bit for bit;
  bad ``method`` values are refused naming the argument;
- seeds and chunk invariance of the Monte-Carlo block; CuPy ≡ NumPy where a GPU is present;
- fidelity on off-sphere rows (norms 1.6–21, d = 32, W_std = 1, b_std = 0.1) scaled
  ×0.1…×100: a fast CI case at m = 1024, and ``-m slow`` every activation at m = 4096.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from _gpu import cupy_or_none
from dsketch.backend import InvalidInputError
from dsketch.nets import (
    Dense, Elementwise, Erf, Exp, Gelu, Monomial, Relu, Sin, SketchOptions, fully_connected, serial,
)
from dsketch.nets.activation_sketch import MIX_DEGREE, resolve_method
from dsketch.nets.readout import FitWidth
from test_nets_fc_sketch import apply_layers, spread_inputs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from fidelity import (  # noqa: E402
    SWEEP_ACTIVATIONS, SWEEP_SCALES, iid_bound, jl_floor, off_sphere_rows, sketch_errors,
)


# ------------------------------------------------------------------------- unbiasedness
@pytest.mark.parametrize("method", ["random", "mix"])
@pytest.mark.parametrize("act", [Erf(), Sin(), Gelu()], ids=repr)
def test_monte_carlo_methods_are_unbiased(act, method):
    """Mean of F Fᵀ over seeds → the exact dual E[φ(u)φ(v)] (no truncation at any degree)."""
    x = spread_inputs(6, 5, lo=0.3, hi=6)
    layers = [Dense(1.2, 0.3), act]
    k = serial(*layers[:1]).kernel(x)
    var = np.diag(k.nngp)
    exact, exact_dot = act.dual(var[:, None], var[None, :], k.nngp)
    opts = SketchOptions(256, degree=6, dtype="float64", method=method)
    runs = 80
    grams = []
    tsum = 0
    for s in range(runs):
        f = apply_layers(layers, x, opts, seed=s)
        grams.append(f.nngp @ f.nngp.T)
        tsum = tsum + f.ntk @ f.ntk.T
    grams = np.array(grams)
    sd = grams.std(axis=0) / np.sqrt(runs)
    scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)))
    assert (np.abs(grams.mean(axis=0) - exact) <= 5 * sd + 1e-3 * scale).all()
    # derivative rows have their exact norm E[φ'(u)²]; the rescaling biases Θ ⊙ E[φ'φ'] by O(1/m)
    h = apply_layers(layers[:1], x, opts)
    step = act.sketch(h.shape, opts, 0, ("act",))
    _, dot = step._series_features(h.nngp, h.var)
    np.testing.assert_allclose(np.sum(dot ** 2, axis=1), np.diag(exact_dot), rtol=1e-8)
    mean_t = tsum / runs
    assert np.linalg.norm(mean_t - k.ntk * exact_dot) < 0.05 * np.linalg.norm(k.ntk * exact_dot)


# ------------------------------------------------------------------------- method choice
def test_auto_resolution_and_relu_unchanged():
    assert resolve_method(Relu(), "auto") == "hermite"
    assert resolve_method(Exp(), "auto") == "hermite"            # grows too fast for MC
    assert resolve_method(Monomial(3), "auto") == "hermite"
    for act in (Erf(), Sin(), Gelu(), Elementwise("tanh")):
        assert resolve_method(act, "auto") == "mix"
    assert resolve_method(Erf(), "random") == "random"
    x = spread_inputs(10, 6)
    net = fully_connected(2, Relu(), 1.4, 0.1)
    a = net.sketch((6,), 128, seed=1)(x)
    b = net.sketch((6,), 128, seed=1, method="hermite")(x)
    assert np.array_equal(a.ntk, b.ntk) and np.array_equal(a.nngp, b.nngp)


def test_bad_method_is_refused():
    net = fully_connected(1, Erf())
    with pytest.raises(InvalidInputError, match="method must be one of .*'mix'.*got 'poly'"):
        net.sketch((3,), 64, method="poly")
    with pytest.raises(ValueError, match="method must be one of .*got 'fast'"):
        resolve_method(Erf(), "fast")


def test_plan_uses_exact_linear_block_for_narrow_inputs():
    fm = fully_connected(2, Erf(), 1.0, 0.1).sketch((32,), 1024, method="mix")
    acts = [step for step in fm.plan if hasattr(step, "linear")]
    assert [a.linear for a in acts] == [True, False]   # 33 columns in, then 1025
    assert acts[0].method == acts[1].method == "mix" and MIX_DEGREE >= 1
    # "auto": Monte-Carlo at the first activation only (no m × m GEMM past it)
    fm = fully_connected(2, Erf(), 1.0, 0.1).sketch((32,), 1024)
    assert [s.method for s in fm.plan if hasattr(s, "linear")] == ["mix", "hermite"]


# ----------------------------------------------------------------- block readout
def test_block_fit_width_is_unbiased_and_keeps_a_dominant_block():
    """Blocks rotated by their own SRHT and summed: E⟨Sx, Sy⟩ = ⟨x, y⟩; a lone block is exact."""
    rng = np.random.default_rng(0)
    m = 64
    x = rng.standard_normal((5, 2 * m + 1))
    x[:, m:] *= 0.3
    grams = np.array([(lambda y: y @ y.T)(FitWidth(2 * m + 1, m, s, ("t",), blocks=True)(x))
                      for s in range(400)])
    sd = grams.std(axis=0) / np.sqrt(len(grams))
    assert (np.abs(grams.mean(axis=0) - x @ x.T) <= 5 * sd + 1e-9).all()
    lone = x.copy()
    lone[:, m:] = 0
    y = FitWidth(2 * m + 1, m, 3, ("t",), blocks=True)(lone)
    np.testing.assert_allclose(y @ y.T, lone @ lone.T, rtol=1e-10, atol=1e-10)
    # one SRHT of the concatenation is not exact on it
    z = FitWidth(2 * m + 1, m, 3, ("t",))(lone)
    assert not np.allclose(z @ z.T, lone @ lone.T, rtol=1e-3)


def test_readout_and_ntk_factor_use_blocks():
    fm = fully_connected(2, Relu(), 1.4, 0.1).sketch((8,), 256)
    readout = fm.plan[-1]
    assert readout.nngp.blocks and readout.ntk.blocks
    second = fm.plan[3]      # the second activation: NTK input [σ_W·ntk, nngp, bias] is 2m + 1 wide
    assert second.w_ntk_in == 2 * 256 + 1 and isinstance(second._expand(), FitWidth)


# -------------------------------------------------------------- seeds, chunks, devices
@pytest.mark.parametrize("method", ["random", "mix"])
def test_monte_carlo_seeds_and_chunk_invariance(method):
    x = spread_inputs(9, 7, lo=0.1, hi=30)
    net = fully_connected(2, Erf(), 1.2, 0.1)
    fm = net.sketch((7,), 256, seed=3, method=method)
    whole = fm(x)
    again = net.sketch((7,), 256, seed=3, method=method)(x)
    other = net.sketch((7,), 256, seed=4, method=method)(x)
    assert np.array_equal(whole.ntk, again.ntk)
    assert not np.allclose(whole.ntk, other.ntk)
    for parts in ([fm(x[i:i + 1]) for i in range(len(x))], [fm(x[:4]), fm(x[4:])]):
        for which in ("nngp", "ntk"):
            got = np.concatenate([getattr(p, which) for p in parts])
            np.testing.assert_allclose(got, getattr(whole, which), rtol=2e-6, atol=2e-6)


@pytest.mark.skipif(cupy_or_none() is None, reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("method", ["random", "mix"])
def test_monte_carlo_cupy_matches_numpy(method):
    cp = cupy_or_none()
    x = spread_inputs(12, 7, lo=0.1, hi=30)
    fm = fully_connected(2, Sin(), 1.2, 0.1).sketch((7,), 256, seed=2, method=method, dtype="float64")
    cpu, gpu = fm(x), fm(cp.asarray(x))
    for which in ("nngp", "ntk"):
        np.testing.assert_allclose(cp.asnumpy(getattr(gpu, which)), getattr(cpu, which),
                                   rtol=1e-9, atol=1e-9)


# -------------------------------------------------------------------------- fidelity
def _limits(exact, m: int) -> list:
    """Per kernel (NNGP, NTK): the issue's target 0.1 at m = 4096 scaled by √(4096/m), or
    ``FLOOR_RATIO`` × the JL floor where that floor alone exceeds the target."""
    target = 0.1 * np.sqrt(4096 / m)
    return [max(target, ratio * jl_floor(getattr(exact, w), m))
            for w, ratio in zip(("nngp", "ntk"), FLOOR_RATIO)]


#: Measured worst error / JL floor (NNGP, NTK) over the sweep (m = 1024 and 4096, depth 2
#: and 3, ×0.1…×100): 1.33 (sin, depth 3) and 1.21 (ReLU, depth 3); room for seed noise.
FLOOR_RATIO = (1.5, 1.4)


@pytest.mark.parametrize("gamma", [0.05, 5.0])
def test_iid_bound_is_not_beaten_by_iid_random_features(gamma):
    """The benchmark's i.i.d. bound holds for random Fourier features (i.i.d., unbiased) of a
    Gaussian kernel, wide (n_eff ≈ 1) and narrow (nearly diagonal, n_eff ≈ n), and is close
    to their error where the kernel is nearly diagonal."""
    rng = np.random.default_rng(0)
    n, d, m = 60, 8, 256
    x = rng.standard_normal((n, d))
    k = np.exp(-gamma * ((x[:, None] - x[None]) ** 2).sum(-1))
    errs = []
    for s in range(40):
        r = np.random.default_rng(100 + s)
        w = r.standard_normal((d, m)) * np.sqrt(2 * gamma)
        f = np.sqrt(2.0 / m) * np.cos(x @ w + r.uniform(0, 2 * np.pi, m))
        errs.append(np.linalg.norm(f @ f.T - k) / np.linalg.norm(k))
    rms, bound = float(np.sqrt(np.mean(np.square(errs)))), iid_bound(k, m)
    assert rms >= 0.95 * bound, (rms, bound)
    if gamma > 1:
        assert bound > 0.4 and rms <= 1.5 * bound, (rms, bound)


def test_fidelity_against_scale_fast():
    """CI case: erf depth 2 at m = 1024 on the off-sphere rows, ×0.1 and ×100."""
    x0 = off_sphere_rows()
    net = fully_connected(2, Erf(), 1.0, 0.1)
    for scale in (0.1, 100.0):
        exact = net.kernel(x0 * scale)
        err = sketch_errors(net, x0 * scale, 1024, seeds=(0,), exact=exact)
        limits = _limits(exact, 1024)
        assert err[0] <= limits[0] and err[1] <= limits[1], (scale, err, limits)
    # the derivative branch no longer degrades with the norm faster than the floor
    hermite = sketch_errors(net, x0 * 100, 1024, seeds=(0,), method="hermite", exact=exact)
    assert err[1] < hermite[1], (err, hermite)


@pytest.mark.slow
@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("name", list(SWEEP_ACTIVATIONS))
def test_fidelity_against_scale_4096(name, depth):
    """m = 4096, n = 200 off-sphere rows, ×0.1…×100, mean of 2 seeds (see the module docs).

    Held to 0.1 where the JL floor of the kernel (a Gaussian projection of its exact
    features to width m) allows it, else to ``FLOOR_RATIO`` × that floor: the nearly
    diagonal kernels of erf/tanh/sin at scales ≥ 1 have floors of 0.09–0.18 on these rows
    (benchmarks/fidelity.py --scales), above the target for any width-m oblivious sketch.
    """
    act = SWEEP_ACTIVATIONS[name]
    net = fully_connected(depth, act, W_std=1.0, b_std=0.1)
    x0 = off_sphere_rows()
    for scale in SWEEP_SCALES:
        x = x0 * scale
        exact = net.kernel(x)
        err = sketch_errors(net, x, 4096, seeds=(0, 1), exact=exact)
        limits = _limits(exact, 4096)
        assert err[0] <= limits[0] and err[1] <= limits[1], (scale, err, limits)
