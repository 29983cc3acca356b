"""The ``dsketch`` command on a real local cluster: round trips, exit codes, error lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_digits

from dsketch.cli import main
from dsketch.model_io import load_model


@pytest.fixture(scope="module")
def address():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def run(*args, code=0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def runj(*args):
    return json.loads(run(*args, "--json").stdout)


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("digits")
    d = load_digits()
    X, y = d.data / 16, d.target
    train = np.column_stack([X[:1400], y[:1400]])
    np.savetxt(tmp / "train.csv", train, delimiter=",", header=",".join([f"p{i}" for i in range(64)] + ["label"]),
               comments="")
    np.save(tmp / "test_X.npy", X[1400:])
    np.save(tmp / "test_y.npy", y[1400:])
    return tmp, X[1400:], y[1400:]


def test_classification_round_trip(address, digits_files):
    tmp, Xte, yte = digits_files
    sched = ["--scheduler", address]
    info = runj("ingest", tmp / "train.csv", tmp / "train.zarr")
    assert info["n_rows"] == 1400 and info["row_shape"] == [64] and info["y_shape"] == [1400]
    runj("ingest", tmp / "test_X.npy", tmp / "test.zarr", "--y", tmp / "test_y.npy")
    # CSV labels are stored as floats: --task classify makes it a classifier anyway
    fit = runj("fit", "--data", tmp / "train.zarr", "--model", tmp / "model", "--kernel", "ntk",
               "--n-components", 256, "--alpha", "0.01,0.1", "--alpha", "1", "--cv", 3,
               "--task", "classify", *sched)
    assert fit["estimator"] == "SketchRidgeClassifier" and fit["alpha"] in (0.01, 0.1, 1.0)
    assert len(fit["classes"]) == 10 and fit["n_samples"] == 1400
    assert len(fit["cv"]["mean_test_mse"]) == 3
    out = run("predict", "--model", tmp / "model", "--data", tmp / "test.zarr", "--out",
              tmp / "preds.zarr", *sched)
    assert "wrote predictions" in out.stdout
    import zarr

    preds = zarr.open_group(str(tmp / "preds.zarr"), mode="r")["predictions"][:]
    model = load_model(tmp / "model")
    # rows may differ only where two classes tie to float32 rounding of the features
    dec = np.sort(model.decision_function(Xte), axis=1)
    tie = dec[:, -1] - dec[:, -2] < 1e-4
    assert np.all((preds == model.predict(Xte)) | tie)
    ev = runj("evaluate", "--model", tmp / "model", "--data", tmp / "test.zarr", *sched)
    assert ev["accuracy"] > 0.9 and ev["n_rows"] == len(yte)
    assert abs(ev["accuracy"] - float(np.mean(preds == yte))) < 1e-12
    minfo = runj("info", tmp / "model")
    assert minfo["kind"] == "model" and minfo["sketch"] == "NTKSketch"
    dinfo = run("info", tmp / "test.zarr").stdout
    assert "397 rows" in dinfo
    # the CNTK sketch with a narrow width on the larger maps (8×8 and 4×4 here)
    runj("fit", "--data", tmp / "train.zarr", "--model", tmp / "cntk", "--kernel", "cntk",
         "--image-shape", "8,8,1", "--n-components", 128, "--hidden-components", 32,
         "--hidden-degree", 2, "--zca", "1.0", "--alpha", "0.01", "--task", "classify", *sched)
    cntk = load_model(tmp / "cntk")
    assert (cntk.sketch_.hidden_components, cntk.sketch_.hidden_degree) == (32, 2)
    # --zca: the whitening learned from the store's training rows (one pass) and saved
    assert cntk.sketch_.zca_regularization == 1.0 and cntk.sketch_.zca_matrix_.shape == (64, 64)
    assert runj("evaluate", "--model", tmp / "cntk", "--data", tmp / "test.zarr", *sched)["accuracy"] > 0.8


def test_regression_round_trip_and_human_output(address, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 6)).astype(np.float32)
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] * X[:, 2]
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    run("ingest", tmp_path / "X.npy", tmp_path / "d.zarr", "--y", tmp_path / "y.npy", "--chunk-rows", 1000)
    out = run("fit", "--data", tmp_path / "d.zarr", "--model", tmp_path / "m", "--kernel", "rff",
              "--gamma", "0.2", "--n-components", 128, "--alpha", "0.1", "--solver", "cg",
              "--scheduler", address)
    assert "fitted SketchRidge" in out.stdout and "CG:" in out.stdout and "model saved to" in out.stdout
    ev = runj("evaluate", "--model", tmp_path / "m", "--data", tmp_path / "d.zarr", "--scheduler", address)
    assert ev["r2"] > 0.8 and ev["rmse"] > 0


def test_fit_json_keeps_progress_on_stderr(address, tmp_path):
    """``--json``: the JSON object alone on stdout, the progress lines still on stderr (a
    batch log of a long job shows both)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, 4))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", np.sin(X[:, 0]))
    run("ingest", tmp_path / "X.npy", tmp_path / "d.zarr", "--y", tmp_path / "y.npy", "--chunk-rows", 500)
    out = run("fit", "--data", tmp_path / "d.zarr", "--model", tmp_path / "m", "--kernel", "rff",
              "--n-components", 64, "--alpha", "0.1", "--solver", "cg", "--scheduler", address, "--json")
    fit = json.loads(out.stdout)  # nothing else on stdout
    assert fit["estimator"] == "SketchRidge" and fit["n_samples"] == 2000
    progress = [line for line in out.stderr.splitlines() if " rows" in line and line.startswith("[")]
    assert progress and progress[-1].startswith("[ done]") and "2,000/2,000 rows" in progress[-1], out.stderr


def test_bad_input_is_one_line_exit_2(address, digits_files, tmp_path):
    tmp, _, _ = digits_files
    r = run("fit", "--data", tmp_path / "nope.zarr", "--model", tmp_path / "m", code=2)
    assert r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr
    r = run("fit", "--data", tmp / "train.zarr", "--model", tmp_path / "m", "--alpha", "-1", code=2)
    assert "--alpha must be finite and > 0" in r.stderr
    run("fit", "--bogus", code=2)
    r = run("fit", "--data", tmp / "train.zarr", "--model", tmp_path / "m", "--hidden-components",
            "64", code=2)
    assert "--hidden-components/--hidden-degree/--zca are options of --kernel cntk" in r.stderr
    r = run("fit", "--data", tmp / "train.zarr", "--model", tmp_path / "m", "--zca", "1", code=2)
    assert "--hidden-components/--hidden-degree/--zca are options of --kernel cntk" in r.stderr
    r = run("evaluate", "--model", tmp_path / "missing", "--data", tmp / "test.zarr", code=2)
    assert "model" in r.stderr and "does not exist" in r.stderr


def test_outputs_never_overwritten_without_flag(address, digits_files):
    tmp, _, _ = digits_files
    if not (tmp / "model").exists():
        pytest.skip("needs the classification round trip")
    before = (tmp / "model" / "model.json").read_bytes()
    r = run("fit", "--data", tmp / "train.zarr", "--model", tmp / "model", "--task", "classify", code=2)
    assert "already exists" in r.stderr and "--overwrite" in r.stderr
    assert (tmp / "model" / "model.json").read_bytes() == before
    r = run("predict", "--model", tmp / "model", "--data", tmp / "test.zarr", "--out", tmp / "preds.zarr",
            "--scheduler", address, code=2)
    assert "already holds an array 'predictions'" in r.stderr
    r = run("ingest", tmp / "train.csv", tmp / "train.zarr", code=2)
    assert "already exists" in r.stderr


def test_debug_shows_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run("info", tmp_path / "empty", code=2)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run("info", tmp_path / "empty", "--debug", code=2)
    assert "Traceback" in r.stderr


def test_console_script_process_exit_codes(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dsketch.cli", "info", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"Error: '{tmp_path / 'x'}' does not exist"]
    proc = subprocess.run([sys.executable, "-m", "dsketch.cli", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "dsketch" in proc.stdout


def test_demo_small(address, tmp_path):
    out = runj("demo", "--workdir", tmp_path / "demo", "--n-rows", 4000, "--n-components", 256,
               "--n-landmarks", 200, "--scheduler", address)
    assert out["digits"]["accuracy"] > 0.9 and out["digits"]["exact_ntk_accuracy"] > 0.9
    assert out["regression"]["r2"] > 0.3
    assert os.path.isdir(out["digits"]["model"]) and os.path.isdir(out["regression"]["model"])
    back = load_model(out["regression"]["model"])
    assert back.sketch_.n_components == 200


@pytest.mark.slow
def test_demo_full_size(tmp_path):
    """`dsketch demo` exactly as the README runs it (embedded cluster, 200k rows)."""
    proc = subprocess.run([sys.executable, "-m", "dsketch.cli", "demo", "--workdir", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "total time" in proc.stdout and "models:" in proc.stdout
    # the point of the demo: the Nyström fit on all 200k rows beats exact NTK on a subsample
    row = next(line for line in proc.stdout.splitlines() if line.startswith("regression, RMSE"))
    ours, exact = (float(v) for v in row.split()[-3:-1])
    assert ours < exact, row


def test_old_width_flags_still_work(tmp_path):
    """``--n-features`` was the name of two different widths; both keep working as aliases."""
    from click.testing import CliRunner

    from dsketch.cli import main

    for cmd, new in (("fit", "--n-components"), ("ingest", "--n-columns"), ("demo", "--n-components")):
        help_text = CliRunner().invoke(main, [cmd, "--help"]).output
        assert new in help_text and "--n-features" in help_text, cmd
