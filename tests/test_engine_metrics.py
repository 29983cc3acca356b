"""The library's metrics and its one labels test (``dsketch.engine.metrics``), and the store
introspection the CLI prints (``dsketch.engine.dataset``): real Zarr stores on disk, a real
multi-process ``LocalCluster``; every figure is checked against NumPy / scikit-learn."""

from __future__ import annotations

import os
import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, mean_squared_error, r2_score

from dsketch.backend import InvalidInputError
from dsketch.engine import ingest, open_dataset, write_array
from dsketch.engine.dataset import dataset_info, has_array, open_with_targets, store_arrays
from dsketch.engine.metrics import (check_class_labels, check_label_target, evaluate,
                                    fractional_count, is_label_dtype)
from dsketch.engine.store import MODEL_FILE, is_model_dir, target_kind
from dsketch.estimators import RandomFourierFeatures, SketchRidge, SketchRidgeClassifier
from dsketch.estimators._data import check_class_labels as estimators_check
from dsketch.model_io import save_model


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    return X, np.sin(X[:, 0]) + 0.1 * X[:, 1], (X[:, 0] > 0).astype(int) + (X[:, 1] > 1)


def _sketch():
    return RandomFourierFeatures(n_components=64, gamma=0.3, random_state=0)


# ===================================================================== metrics
def test_regression_metrics_match_sklearn(tmp_path, client):
    X, y, _ = _data()
    url = ingest(X, str(tmp_path / "r.zarr"), y=y, chunk_rows=128)
    ds = open_dataset(url)
    est = SketchRidge(sketch=_sketch(), alpha=0.1).fit(X, y)
    got = evaluate(est, ds.X, ds.y)
    pred = est.predict(X)
    assert got["n_rows"] == len(y)
    assert got["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, pred)), rel=1e-6)
    assert got["r2"] == pytest.approx(r2_score(y, pred), rel=1e-6)


def test_classification_metrics_match_sklearn(tmp_path, client):
    X, _, labels = _data()
    url = ingest(X, str(tmp_path / "c.zarr"), y=labels, chunk_rows=128)
    ds = open_dataset(url)
    est = SketchRidgeClassifier(sketch=_sketch(), alpha=0.1).fit(X, labels)
    got = evaluate(est, ds.X, ds.y)
    assert got == {"n_rows": len(labels),
                   "accuracy": pytest.approx(accuracy_score(labels, est.predict(X)), abs=1e-12)}


def test_classifier_on_a_continuous_target_is_refused(tmp_path, client):
    X, y, labels = _data()
    url = ingest(X, str(tmp_path / "r.zarr"), y=y, chunk_rows=128)
    est = SketchRidgeClassifier(sketch=_sketch(), alpha=0.1).fit(X, labels)
    with pytest.raises(InvalidInputError) as exc:
        evaluate(est, open_dataset(url).X, open_dataset(url).y, where="'r.zarr'")
    msg = str(exc.value)
    assert "continuous" in msg and "'r.zarr'" in msg and f"{len(y):,} of {len(y):,}" in msg, msg


# ======================================================== the one labels test
def test_one_labels_test_from_classes_or_from_a_count():
    """The estimators (distinct labels) and the CLI (count of non-whole values) ask the
    same function and get the same kind of error."""
    assert estimators_check is check_class_labels
    y = np.linspace(0, 1, 50)
    with pytest.raises(InvalidInputError, match="Unknown label type: continuous") as a:
        check_class_labels(np.unique(y), len(y), where="y")
    with pytest.raises(InvalidInputError, match="Unknown label type: continuous") as b:
        check_label_target(da.from_array(y, chunks=10), "of 'r.zarr'", hint="use --task regress")
    assert "50 distinct values in 50 rows" in str(a.value)
    assert "48 of 50 values are not whole numbers" in str(b.value) and "--task regress" in str(b.value)
    # labels pass both ways; integral floats are labels
    for lab in (np.arange(40) % 3, (np.arange(40) % 3).astype(float)):
        check_class_labels(np.unique(lab), len(lab))
        check_label_target(da.from_array(lab, chunks=7), "y")
    assert int(fractional_count(da.from_array(np.array([1.0, 1.5, 2.0]), chunks=2)).compute()) == 1
    with pytest.warns(UserWarning, match="greater than 50%"):
        check_class_labels(np.arange(30), 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_class_labels(np.arange(3), 40)
    assert is_label_dtype(np.int32) and is_label_dtype("U3") and not is_label_dtype(np.float64)


# ================================================================ introspection
def test_store_introspection_in_the_library(tmp_path):
    X, y, _ = _data(100)
    url = ingest(X, str(tmp_path / "d.zarr"), y=y, chunk_rows=40)
    info = dataset_info(open_with_targets(url))
    assert info == {"kind": "dataset", "url": url, "n_rows": 100, "row_shape": [5],
                    "dtype": "float64", "row_chunks": 3, "sparse": False, "y_shape": [100],
                    "y_dtype": "float64"}
    only_x = ingest(X, str(tmp_path / "x.zarr"), chunk_rows=40)
    assert dataset_info(open_with_targets(only_x))["y_shape"] is None
    assert not has_array(url, "predictions") and has_array(url, "X")
    assert not has_array(str(tmp_path / "absent.zarr"), "X")
    out = write_array(da.ones((10, 2), chunks=5), str(tmp_path / "p.zarr"))
    assert has_array(str(tmp_path / "p.zarr"), "predictions") and out.endswith("predictions")
    assert store_arrays(str(tmp_path / "p.zarr")) == [
        {"name": "predictions", "shape": [10, 2], "dtype": "float64"}]
    assert store_arrays(str(tmp_path / "absent.zarr")) is None


def test_model_file_is_known_in_one_place(tmp_path):
    X, y, _ = _data(80)
    path = save_model(SketchRidge(sketch=_sketch(), alpha=0.1).fit(X, y), tmp_path / "m")
    assert is_model_dir(path) and target_kind(path) == "model"
    assert sorted(os.listdir(path))[0] == "arrays" and MODEL_FILE in os.listdir(path)
    assert not is_model_dir(str(tmp_path)) and not is_model_dir(str(tmp_path / "none"))
    import dsketch

    root = os.path.dirname(dsketch.__file__)
    literal = [os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root)
               for f in fs if f.endswith(".py")
               and '"model.json"' in open(os.path.join(d, f), encoding="utf-8").read()]
    assert literal == [os.path.join("engine", "store.py")], literal
