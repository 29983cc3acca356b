"""The ``dsketch`` command on bad input, by class: exit 2 and one ``Error:`` line naming it.

Classes: ``--data`` that is no data store (plain file, empty directory, model directory,
damaged store); ``--model`` that is no model (missing, plain file, data store, damaged
files); outputs of the wrong kind (``fit --model <data store> --overwrite``, ``predict
--out <plain file | data store>``) refused before any compute; labels (``--task
classify`` or evaluating a classifier on a continuous target); NaN found on a worker
(printed once, no worker tracebacks); scheduler files and addresses (bounded waits);
``info --clean``; progress lines in a non-terminal log.  Real stores, a real cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from dsketch import engine
from dsketch.cli import main
from dsketch.estimators import RandomFourierFeatures, SketchRidgeClassifier
from dsketch.model_io import save_model

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def address():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Stores and models: regression (continuous y), labels, a NaN row, a classifier, junk."""
    tmp = tmp_path_factory.mktemp("bad-cli")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 4)).astype(np.float32)
    y = np.sin(X[:, 0]) + 0.1 * X[:, 1]
    engine.ingest(X, str(tmp / "reg.zarr"), y=y, chunk_rows=100)
    engine.ingest(X, str(tmp / "labels.zarr"), y=(y > 0).astype(np.int64), chunk_rows=100)
    engine.ingest(X, str(tmp / "nan.zarr"), y=y, chunk_rows=100)
    zarr.open_group(str(tmp / "nan.zarr"), mode="r+")["X"][321, 2] = np.nan  # past ingest's checks
    clf = SketchRidgeClassifier(sketch=RandomFourierFeatures(n_components=16, random_state=0), alpha=1.0)
    save_model(clf.fit(X, (y > 0).astype(np.int64)), tmp / "clf")
    save_model(RandomFourierFeatures(n_components=8, random_state=0).fit(X), tmp / "transformer")
    (tmp / "plain.txt").write_text("1,2,3\n")
    (tmp / "empty").mkdir()
    (tmp / "garbage.json").write_text("not json")
    return tmp


def run(*args, code=2):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def error_line(result) -> str:
    """The one ``Error:`` line of a failed command; no traceback."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


def _tree(path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in sorted(path.rglob("*"))} if path.is_dir() else {
        str(path): path.read_bytes()}


def _damaged_model(tmp):
    import shutil

    shutil.copytree(tmp / "clf", tmp / "clf-bad", dirs_exist_ok=True)
    doc = json.loads((tmp / "clf-bad" / "model.json").read_text())
    doc["estimator"]["attributes"]["coef_"] = [1, 2]
    (tmp / "clf-bad" / "model.json").write_text(json.dumps(doc))
    return tmp / "clf-bad"


# ------------------------------------------------------------------- inputs that are wrong
INPUT_CASES = {
    "data is a plain file": (lambda t: ("fit", "--data", t / "plain.txt", "--model", t / "m"),
                             ["plain file", "dsketch ingest"]),
    "data is an empty directory": (lambda t: ("fit", "--data", t / "empty", "--model", t / "m"),
                                   ["empty directory", "dsketch ingest"]),
    "data is a model": (lambda t: ("predict", "--model", t / "clf", "--data", t / "clf", "--out", t / "p.zarr"),
                        ["model directory, not a data store"]),
    "data does not exist": (lambda t: ("evaluate", "--model", t / "clf", "--data", t / "nope.zarr"),
                            ["does not exist"]),
    "model is a plain file": (lambda t: ("evaluate", "--model", t / "plain.txt", "--data", t / "labels.zarr"),
                              ["plain file"]),
    "model is a data store": (lambda t: ("evaluate", "--model", t / "reg.zarr", "--data", t / "labels.zarr"),
                              ["not a dsketch model"]),
    "model is a transformer": (lambda t: ("predict", "--model", t / "transformer", "--data", t / "reg.zarr",
                                          "--out", t / "p.zarr"), ["RandomFourierFeatures transformer"]),
    "model file damaged": (lambda t: ("evaluate", "--model", _damaged_model(t), "--data", t / "labels.zarr"),
                           ["model.coef_", "model.json"]),
    "scheduler file missing": (lambda t: ("fit", "--data", t / "reg.zarr", "--model", t / "m",
                                          "--scheduler-file", t / "missing.json"), ["does not exist"]),
    "scheduler file garbage": (lambda t: ("fit", "--data", t / "reg.zarr", "--model", t / "m",
                                          "--scheduler-file", t / "garbage.json"), ["garbage.json", "not the JSON"]),
    "bad timeout": (lambda t: ("evaluate", "--model", t / "clf", "--data", t / "labels.zarr", "--timeout", "-1"),
                    ["timeout must be a positive number"]),
}


@pytest.mark.parametrize("case", sorted(INPUT_CASES))
def test_bad_inputs_exit_2_with_one_line(files, case):
    make, fragments = INPUT_CASES[case]
    start = time.monotonic()
    line = error_line(run(*make(files)))
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert time.monotonic() - start < 60  # nothing waited for or computed


# ----------------------------------------------------------- outputs of the wrong kind
OUTPUT_CASES = {
    "fit over a data store": (lambda t: ("fit", "--data", t / "reg.zarr", "--model", t / "labels.zarr",
                                         "--overwrite"), "labels.zarr", "not a dsketch model directory"),
    "fit over a plain file": (lambda t: ("fit", "--data", t / "reg.zarr", "--model", t / "plain.txt",
                                         "--overwrite"), "plain.txt", "plain file"),
    "fit over an empty directory": (lambda t: ("fit", "--data", t / "reg.zarr", "--model", t / "empty",
                                               "--overwrite"), "empty", "empty directory, not a dsketch model"),
    "predict into a plain file": (lambda t: ("predict", "--model", t / "clf", "--data", t / "reg.zarr",
                                             "--out", t / "plain.txt", "--overwrite"), "plain.txt", "plain file"),
    "predict into a data store": (lambda t: ("predict", "--model", t / "clf", "--data", t / "reg.zarr",
                                             "--out", t / "labels.zarr", "--name", "X", "--overwrite"),
                                  "labels.zarr", "dsketch dataset"),
    # below a plain file (issue 21): the path and what is in the way, before any work
    "fit below a plain file": (lambda t: ("fit", "--data", t / "reg.zarr", "--model", t / "plain.txt" / "m"),
                               "plain.txt", "plain.txt is a plain file"),
    "predict below a plain file": (lambda t: ("predict", "--model", t / "clf", "--data", t / "reg.zarr",
                                              "--out", t / "plain.txt" / "a" / "p.zarr"),
                                   "plain.txt", "plain.txt is a plain file"),
    "ingest below a plain file": (lambda t: ("ingest", t / "plain.txt", t / "plain.txt" / "d.zarr"),
                                  "plain.txt", "plain.txt is a plain file"),
}


@pytest.mark.parametrize("case", sorted(OUTPUT_CASES))
def test_wrong_output_refused_before_any_work(files, case):
    """No cluster is needed to refuse: the command fails before connecting (bogus scheduler)."""
    make, target, fragment = OUTPUT_CASES[case]
    before = _tree(files / target)
    line = error_line(run(*make(files), "--scheduler", "tcp://127.0.0.1:1", "--timeout", 1))
    assert fragment in line and target in line, line
    assert _tree(files / target) == before


# ------------------------------------------------------------------------- the labels
def test_classify_on_a_continuous_target(files, address):
    line = error_line(run("fit", "--data", files / "reg.zarr", "--model", files / "m-cont", "--task", "classify",
                          "--kernel", "rff", "--n-features", 16, "--scheduler", address))
    assert "reg.zarr" in line and "continuous" in line and "--task regress" in line
    assert not (files / "m-cont").exists()


def test_evaluate_classifier_on_a_continuous_target(files, address):
    line = error_line(run("evaluate", "--model", files / "clf", "--data", files / "reg.zarr", "--scheduler", address))
    assert "reg.zarr" in line and "continuous" in line
    ok = run("evaluate", "--model", files / "clf", "--data", files / "labels.zarr", "--scheduler", address,
             "--json", code=0)
    assert json.loads(ok.stdout)["accuracy"] > 0.6


# ---------------------------------------------------------------- data found on workers
def test_nan_found_on_a_worker_is_one_line(files, address):
    line = error_line(run("fit", "--data", files / "nan.zarr", "--model", files / "m-nan", "--kernel", "rff",
                          "--n-features", 16, "--scheduler", address))
    assert "nan.zarr" in line and "X" in line and "row 321" in line
    assert not (files / "m-nan").exists()


def _cli(*args, timeout=240):
    env = dict(os.environ)
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "dsketch.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_nan_on_embedded_workers_prints_no_worker_traceback(files):
    """The embedded cluster's workers share our stderr: no "Compute Failed" tracebacks there."""
    proc = _cli("fit", "--data", files / "nan.zarr", "--model", files / "m-nan2", "--kernel", "rff",
                "--n-features", 16)
    assert proc.returncode == 2, proc.stderr
    assert "Compute Failed" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "row 321" in errors[0], proc.stderr


# ------------------------------------------------------------------- bounded waiting
def test_unreachable_scheduler_fails_after_timeout_saying_what_it_waited_for(files):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    r = run("evaluate", "--model", files / "clf", "--data", files / "labels.zarr",
            "--scheduler", f"tcp://127.0.0.1:{port}", "--timeout", 2, code=1)
    assert time.monotonic() - start < 60
    assert f"connecting to the scheduler tcp://127.0.0.1:{port}; waiting up to 2 s" in r.stderr
    assert "no dask scheduler answered" in error_line(r) and "--timeout" in error_line(r)


# ---------------------------------------------------------------------- info --clean
def test_info_clean_removes_stale_siblings(files, tmp_path):
    import shutil

    store = tmp_path / "d.zarr"
    shutil.copytree(files / "reg.zarr", store)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = [tmp_path / ".d.zarr.tmp-0123456789ab", tmp_path / f".d.zarr.old-abcdefabcdef.00000000.{dead}",
             store / ".X.old-0123456789ab"]
    for p in stale:
        (p / "X").mkdir(parents=True)
    keep = tmp_path / ".other.zarr.tmp-0123456789ab"
    keep.mkdir()
    r = run("info", "--clean", store, code=0)
    assert not any(p.exists() for p in stale) and keep.exists() and store.exists()
    assert sorted(line for line in r.stderr.splitlines() if line.startswith("removed")) == sorted(
        f"removed {p}" for p in stale)
    assert "600 rows" in r.stdout
    # a killed first ingest leaves only the sibling: --clean works without the store
    (tmp_path / ".new.zarr.tmp-0123456789ab").mkdir()
    r = run("info", "--clean", tmp_path / "new.zarr", "--json", code=0)
    assert json.loads(r.stdout)["removed"] == [str(tmp_path / ".new.zarr.tmp-0123456789ab")]
    r = run("info", "--clean", store, code=0)
    assert "nothing to clean" in r.stdout + r.stderr


# -------------------------------------------------------------- progress in a log file
def test_progress_in_a_log_advances(files, address, tmp_path):
    """stderr to a file (not a terminal): the progress lines end at all rows done."""
    proc = _cli("fit", "--data", files / "reg.zarr", "--model", tmp_path / "m", "--kernel", "rff",
                "--n-features", 16, "--solver", "cg", "--scheduler", address)
    assert proc.returncode == 0, proc.stderr
    progress = [line for line in proc.stderr.splitlines() if line.startswith("[")]
    assert progress and progress[-1].startswith("[ done]") and "600/600 rows" in progress[-1], proc.stderr
