"""The real-data benchmark runs end to end (``--quick``) on Fashion-MNIST.

CI installs Debian's ``dataset-fashion-mnist`` (``.ci/run``); elsewhere the test skips,
saying so.  Speed is not asserted here (machines are noisy): the benchmark reports it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import _fashion  # noqa: E402


def run_quick(script: str, out, timeout: int, *more: str) -> dict:
    """Run ``benchmarks/<script>.py --quick [more]`` writing into ``out``; its JSON results."""
    env = dict(os.environ, DSKETCH_BENCH_RESULTS=str(out), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--quick", *more], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / f"{script}-quick.json").read_text())


@pytest.mark.skipif(not _fashion.available(), reason="Fashion-MNIST not installed "
                    "(apt-get install dataset-fashion-mnist)")
@pytest.mark.timeout(900)
def test_realdata_quick(tmp_path):
    result = run_quick("realdata", tmp_path, 900)
    methods = {r["method"] for r in result["rows"]}
    assert {"exact NTK kernel ridge", "NeuralNystroem (uniform)", "NTKSketch",
            "sklearn RBFSampler + RidgeCV", "linear RidgeCV on pixels",
            "KernelRidge PCG (exact λ)", "KernelRidge PCG, λ chosen in fit",
            "KernelRidge Falkon, λ chosen in fit"} <= methods
    for r in result["rows"]:
        assert 0.5 < r["accuracy"] <= 1.0 and r["seconds"] > 0, r
    assert (tmp_path / "realdata-quick.png").stat().st_size > 1000
    assert "| method |" in (tmp_path / "realdata-quick.md").read_text()


def test_fashion_protocol_scaling():
    """The protocol's normalization: mean ‖x‖²/d = 1 on the training rows."""
    if not _fashion.available():
        pytest.skip("Fashion-MNIST not installed")
    Xtr, ytr, Xte, yte = _fashion.load()
    assert Xtr.shape == (60000, 784) and Xte.shape == (10000, 784)
    assert abs(float((Xtr ** 2).sum(1).mean() / 784) - 1.0) < 1e-9
    assert sorted(set(ytr.tolist())) == list(range(10))


@pytest.mark.timeout(600)
def test_sparse_quick(tmp_path):
    """``benchmarks/sparse.py --quick``: every sweep point written, sparse runs never ∝ n·d."""
    result = run_quick("sparse", tmp_path, 600)
    methods = {r["method"] for r in result["rows"]}
    assert {"dsketch NTKSketch", "dsketch RandomFourierFeatures", "sklearn PolynomialCountSketch",
            "sklearn RBFSampler", "densify + dsketch NTKSketch"} <= methods
    for r in result["rows"]:
        assert r["seconds"] > 0 and r["nnz"] > 0, r
        if r["method"].startswith("dsketch") and r["d"] >= 1 << 16:
            assert r["peak_extra_mb"] < 0.25 * r["dense_input_mb"], r  # memory never ∝ n·d
    assert set(result["slope_time_vs_d"]) >= {"dsketch NTKSketch"}
    assert (tmp_path / "sparse-quick.png").stat().st_size > 1000


@pytest.mark.skipif(not _fashion.available(), reason="Fashion-MNIST not installed "
                    "(apt-get install dataset-fashion-mnist)")
@pytest.mark.timeout(600)
def test_cntk_scale_quick(tmp_path):
    """``benchmarks/cntk_scale.py --quick``: the sketch at every width beside the exact CNTK."""
    result = run_quick("cntk_scale", tmp_path, 600)
    sketch = [r for r in result["rows"] if r["m"]]
    assert [r["m"] for r in sketch] == [128, 128, 256] and any(r["m"] is None for r in result["rows"])
    for r in result["rows"]:
        assert 0.1 < r["accuracy"] <= 1.0 and r["seconds"] > 0, r
    assert all(r["solver"] in ("direct", "cg") and r["peak_rss_gib"] > 0 for r in sketch)
    assert sketch[2]["sketch"] == {"n_components": 256, "hidden_components": 64, "zca_regularization": 1.0}
    assert sketch[0]["uniform"] and not sketch[2]["uniform"] and sketch[2]["zca"] == 1.0
    assert [r["side"] for r in sketch] == [14, 28, 14] and "28×28" in sketch[1]["label"]
    exact = [r for r in result["rows"] if r["m"] is None]
    # the kernel of the last run's images: whitened, pooled to 14×14
    assert exact[0]["method"].endswith("ZCA ε=1") and exact[0]["side"] == 14
    assert (tmp_path / "cntk_scale-quick.png").stat().st_size > 1000
    # --merge keeps the rows the config still lists (here all: nothing runs again)
    again = run_quick("cntk_scale", tmp_path, 600, "--merge")
    assert again["merged"] and again["rows"] == result["rows"]


@pytest.mark.timeout(600)
def test_throughput_quick(tmp_path):
    """``benchmarks/throughput.py --quick``: every map and exact kernel timed beside the GEMM probe."""
    result = run_quick("throughput", tmp_path, 600)
    names = {r["map"] for r in result["maps"]}
    assert {"RandomFourierFeatures", "NTKSketch relu poly", "NTKSketch erf poly", "NTKSketch gelu poly",
            "NTKSketch relu random", "PolynomialSketch", "ArcCosineFeatures",
            "NTKRandomFeatures"} <= names
    assert result["gemm_gflops"] > 0 and result["gemm64_gflops"] > 0
    for r in result["maps"]:
        assert r["rows_per_s"] > 0 and r["ratio_to_rff"] > 0 and 0 <= r["kernel_error"] < 1, r
    assert {e["kernel"] for e in result["exact"]} >= {"FC relu ntk", "FC relu nngp", "FC erf ntk",
                                                      "FC gelu ntk", "CNTK myrtle5 14x14 ntk"}
    assert result["cntk_sketch"]["ms_per_image"] > 0
    assert (tmp_path / "throughput-quick.png").stat().st_size > 1000


@pytest.mark.timeout(600)
def test_allocator_quick(tmp_path):
    """``benchmarks/allocator.py --quick``: every workload in both environments, with and without
    the allocator setting (which the child processes report as made or not)."""
    result = run_quick("allocator", tmp_path, 600)
    seen = {(r["workload"], r["environment"], r["tuned_requested"]) for r in result["rows"]}
    assert len(seen) == 12
    for r in result["rows"]:
        assert r["rate"] > 0 and r["faults"] >= 0, r
        assert r["tuned"] == r["tuned_requested"], r  # glibc: the setting follows the variable
    assert (tmp_path / "allocator-quick.png").stat().st_size > 1000


@pytest.mark.timeout(600)
def test_krr_scaling_quick(tmp_path):
    """``benchmarks/krr_scaling.py --quick``: every n and configuration measured and converged."""
    result = run_quick("krr_scaling", tmp_path, 600)
    configs = {(r["n"], r["config"]) for r in result["rows"]}
    assert {(n, "rpcholesky") for n in result["config"]["n"]} <= configs
    for r in result["rows"]:
        assert r["converged"] and r["final_residual"] <= 1e-3 and r["iterations"] > 0, r
        assert r["peak_rss_gib"] > 0 and r["seconds"] > 0, r
    pre = {r["n"]: r["iterations"] for r in result["rows"] if r["config"] == "rpcholesky"}
    plain = {r["n"]: r["iterations"] for r in result["rows"] if r["config"] == "none"}
    assert all(pre[n] < plain[n] for n in plain)  # the preconditioner saves iterations
    assert (tmp_path / "krr_scaling-quick.png").stat().st_size > 1000
