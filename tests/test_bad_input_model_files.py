"""Bad model files, by class: each is refused with InvalidInputError naming file and field.

Classes: non-finite weights on save; ``.npy`` files whose header, size or format disagree
with ``model.json`` (checked before any data is read: a header claiming 10¹² rows is an
error, not a MemoryError); JSON entries of the wrong type; over-deep JSON; a fitted sketch
whose parameters disagree with ``params.sketch``.  Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from dsketch.backend import InvalidInputError
from dsketch.estimators import RandomFourierFeatures, SketchRidge, SketchRidgeClassifier
from dsketch.model_io import load_model, read_model_info, save_model
from dsketch.spec import FEATURES_VERSION


def _fit(cls=SketchRidge, **kw):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    y = np.sin(X[:, 0])
    if cls is SketchRidgeClassifier:
        y = (y > 0).astype(int)
    sketch = RandomFourierFeatures(n_components=16, gamma=0.3, random_state=0)
    return cls(sketch=sketch, alpha=0.5, **kw).fit(X, y)


@pytest.fixture(scope="module")
def fitted():
    return _fit(posterior_std=True)


@pytest.fixture
def saved(fitted, tmp_path):
    return Path(save_model(fitted, tmp_path / "m"))


def _doc(path):
    return json.loads((path / "model.json").read_text())


def _write_doc(path, doc):
    (path / "model.json").write_text(json.dumps(doc))


def _coef(doc):
    return doc["estimator"]["attributes"]["coef_"]


def _reseal(path, fname="coef_.npy", **entry):
    """Make ``model.json`` agree with a replaced array file's checksum (and ``entry``)."""
    doc = _doc(path)
    digest = hashlib.sha256((path / "arrays" / fname).read_bytes()).hexdigest()
    _coef(doc).update(sha256=digest, **entry)
    _write_doc(path, doc)


def _refused(path, *fragments):
    with pytest.raises(InvalidInputError) as info:
        load_model(path)
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)
    return msg


# ------------------------------------------------------------------------------ saving
@pytest.mark.parametrize("below", ["m", "a/b/m"])
def test_save_below_a_plain_file_names_the_path_and_what_is_in_the_way(fitted, tmp_path, below):
    plain = tmp_path / "notes.txt"
    plain.write_text("keep me")
    target = plain / below
    with pytest.raises(InvalidInputError) as info:
        save_model(fitted, target)
    msg = str(info.value)
    assert str(target) in msg and f"{plain} is a plain file" in msg, msg
    assert plain.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("attr,bad", [("coef_", np.nan), ("coef_", np.inf), ("posterior_factor_", -np.inf)])
def test_save_refuses_non_finite_weights(tmp_path, attr, bad):
    est = _fit(posterior_std=True)
    getattr(est, attr).flat[3] = bad
    with pytest.raises(InvalidInputError, match=f"model.{attr}: 1 of its .* values are NaN or Inf"):
        save_model(est, tmp_path / "m")
    assert not (tmp_path / "m").exists() and not list(tmp_path.iterdir())  # nothing left


# ------------------------------------------------------------------- .npy vs model.json
def _npy_header(shape, descr="<f8") -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode()
    pad = 64 - (10 + len(header) + 1) % 64
    return b"\x93NUMPY\x01\x00" + (len(header) + pad + 1).to_bytes(2, "little") + header + b" " * pad + b"\n"


def _crafted_huge(path):
    """A header claiming 10¹² rows, model.json agreeing (shape and checksum)."""
    (path / "arrays" / "coef_.npy").write_bytes(_npy_header((10**12,)) + b"\0" * 64)
    _reseal(path, shape=[10**12])


def _header_disagrees(path):
    arr = np.load(path / "arrays" / "coef_.npy")
    np.save(path / "arrays" / "coef_.npy", np.concatenate([arr, arr]))
    _reseal(path)


def _truncated(path):
    f = path / "arrays" / "coef_.npy"
    f.write_bytes(f.read_bytes()[:-8])
    _reseal(path)


def _npz(path):
    arr = np.load(path / "arrays" / "coef_.npy")
    with open(path / "arrays" / "coef_.npy", "wb") as f:
        np.savez(f, coef=arr)
    _reseal(path)


def _object_array(path):
    np.save(path / "arrays" / "coef_.npy", np.array([{"x": 1}] * 16, dtype=object), allow_pickle=True)
    _reseal(path, dtype="|O")


def _not_npy(path):
    (path / "arrays" / "coef_.npy").write_text("just text")
    _reseal(path)


NPY_CASES = {
    "header claims 1e12 rows": (_crafted_huge, "truncated or padded"),
    "header disagrees with model.json": (_header_disagrees, "header says <f8 [32]"),
    "truncated file": (_truncated, "truncated or padded"),
    ".npz in place of .npy": (_npz, "not a .npy array file"),
    "pickled object array": (_object_array, "not allowed"),
    "not an array file": (_not_npy, "not a .npy array file"),
}


@pytest.mark.parametrize("case", sorted(NPY_CASES))
def test_npy_header_checked_before_reading(saved, case, monkeypatch):
    make, fragment = NPY_CASES[case]
    make(saved)

    def no_unpickling(*a, **k):
        raise AssertionError("the loader unpickled")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(np, "fromfile", no_unpickling)  # no data read before the header check passes
    msg = _refused(saved, fragment, "coef_.npy", "model.coef_")
    assert "model.json" in msg


# --------------------------------------------------------------- JSON of the wrong type
def _attrs(d):
    return d["estimator"]["attributes"]


JSON_CASES = {
    "array entry is a JSON list": (lambda d: _attrs(d).update(coef_=[1.0, 2.0]), "model.coef_: malformed entry"),
    "array given as json": (lambda d: _attrs(d).update(coef_={"json": [1.0, 2.0]}), "model.coef_: expected an array"),
    "array given as number": (lambda d: _attrs(d).update(coef_={"json": 3}), "model.coef_: expected an array"),
    "sketch_ a number": (lambda d: _attrs(d).update(sketch_={"json": 5}), "model.sketch_: expected an estimator"),
    "int attribute a string": (lambda d: _attrs(d).update(n_features_in_={"json": "4"}),
                               "model.n_features_in_: expected an integer"),
    "int attribute a bool": (lambda d: _attrs(d).update(n_iter_={"json": True}), "model.n_iter_: expected an integer"),
    "report a list": (lambda d: _attrs(d).update(fit_report_={"json": []}), "model.fit_report_: expected an object"),
    "params a list": (lambda d: d["estimator"].update(params=[]), "estimator.params: expected an object"),
    "attributes a number": (lambda d: d["estimator"].update(attributes=7), "estimator.attributes: expected an object"),
    "estimator a list": (lambda d: d.update(estimator=[1]), "estimator: expected an object"),
    "summary a number": (lambda d: d.update(summary=3), "summary: expected an object"),
    "shape a number": (lambda d: _coef(d).update(shape=16), "shape must be a list"),
    "shape negative": (lambda d: _coef(d).update(shape=[-16]), "shape must be a list"),
    "dtype a number": (lambda d: _coef(d).update(dtype=8), "model.coef_.dtype: expected a dtype string"),
    "sha256 missing": (lambda d: _coef(d).pop("sha256"), "model.coef_.sha256: expected a hex digest"),
    "class a list": (lambda d: d["estimator"].update({"class": ["SketchRidge"]}), "is not allowed"),
    "spec a list": (lambda d: _attrs(d)["sketch_"]["estimator"]["attributes"].update(feature_map_={"spec": [1]}),
                    "feature_map_"),
}


@pytest.mark.parametrize("case", sorted(JSON_CASES))
def test_json_entries_of_the_wrong_type(saved, case):
    edit, fragment = JSON_CASES[case]
    doc = _doc(saved)
    edit(doc)
    _write_doc(saved, doc)
    _refused(saved, fragment, "model.json")


@pytest.mark.parametrize("depth", [150, 100_000])
def test_deeply_nested_json(saved, depth):
    text = (saved / "model.json").read_text()
    nested = "[" * depth + "]" * depth
    (saved / "model.json").write_text(text[:-1] + f', "extra": {nested}}}')
    _refused(saved, "nested deeper than", "model.json")
    with pytest.raises(InvalidInputError, match="nested deeper"):
        read_model_info(saved)


# ------------------------------------------------------- parameters vs fitted attributes
def test_fitted_sketch_must_match_params_sketch(saved):
    doc = _doc(saved)
    doc["estimator"]["params"]["sketch"]["estimator"]["params"]["gamma"] = {"json": 2.0}
    _write_doc(saved, doc)
    _refused(saved, "sketch_", "params.sketch", "model.json")


def test_default_sketch_param_is_checked_against_sketch_(tmp_path):
    """``sketch=None`` means the default NTKSketch; an RFF sketch_ then disagrees."""
    path = save_model(_fit(), tmp_path / "m")
    doc = _doc(Path(path))
    doc["estimator"]["params"]["sketch"] = {"json": None}
    _write_doc(Path(path), doc)
    _refused(path, "does not have the parameters of params.sketch (NTKSketch)")


def test_non_finite_weights_on_disk_refused(saved):
    arr = np.load(saved / "arrays" / "coef_.npy")
    arr[0] = np.nan
    np.save(saved / "arrays" / "coef_.npy", arr)
    _reseal(saved)
    _refused(saved, "coef_ holds NaN or Inf")


def test_good_models_still_load(saved, fitted, tmp_path):
    back = load_model(saved)
    X = np.random.default_rng(1).normal(size=(10, 4))
    np.testing.assert_array_equal(back.predict(X), fitted.predict(X))
    clf = _fit(SketchRidgeClassifier)
    np.testing.assert_array_equal(load_model(save_model(clf, tmp_path / "c")).predict(X), clf.predict(X))


# ---------------------------------------------------------- features the weights were fitted on
@pytest.mark.parametrize("edit", ["drop", 1, 99, "two"])
def test_model_fitted_on_other_features_is_refused(saved, edit):
    """A model saved before a change of the seeded features (no field: version 1) or by
    another feature version would apply its weights to different features: refused."""
    doc = _doc(saved)
    assert doc["features_version"] == FEATURES_VERSION
    if edit == "drop":
        del doc["features_version"]
    else:
        doc["features_version"] = edit
    _write_doc(saved, doc)
    _refused(saved, "features version", "Refit", "model.json")


# ------------------------------------------------- exact-kernel ridge models (issue 19)
def _kernel_model(tmp_path, **kw):
    from dsketch.estimators import KernelRidge  # noqa: PLC0415 - this section only

    X = np.random.default_rng(2).normal(size=(30, 4))
    est = KernelRidge(alpha=0.5, random_state=0, **kw).fit(X, X[:, 0])
    return Path(save_model(est, tmp_path / "krr"))


def _reseal_attr(path, attr, arr):
    """Replace attribute ``attr``'s array file with ``arr`` and make model.json agree."""
    doc = _doc(path)
    entry = doc["estimator"]["attributes"][attr]
    np.save(path / "arrays" / entry["array"], arr)
    digest = hashlib.sha256((path / "arrays" / entry["array"]).read_bytes()).hexdigest()
    entry.update(sha256=digest, shape=list(arr.shape), dtype=arr.dtype.str)
    _write_doc(path, doc)


@pytest.mark.parametrize("solver", ["pcg", "falkon"])
def test_kernel_model_weights_must_match_its_rows(tmp_path, solver):
    path = _kernel_model(tmp_path, solver=solver, n_components=10)
    _reseal_attr(path, "dual_coef_", np.zeros(7))
    _refused(path, "dual_coef_ has shape (7,)", "one per row of X_fit_")


def test_kernel_model_rows_must_be_finite_and_of_the_input_shape(tmp_path):
    path = _kernel_model(tmp_path)
    bad = np.zeros((30, 4))
    bad[3, 1] = np.nan
    _reseal_attr(path, "X_fit_", bad)
    _refused(path, "X_fit_ must hold finite floats")
    _reseal_attr(path, "X_fit_", np.zeros((30, 5)))
    _refused(path, "X_fit_ has rows of shape (5,)")


def test_kernel_model_modified_rows_fail_the_checksum(tmp_path):
    path = _kernel_model(tmp_path)
    entry = _doc(path)["estimator"]["attributes"]["X_fit_"]
    arr = np.load(path / "arrays" / entry["array"])
    arr[0, 0] += 1
    np.save(path / "arrays" / entry["array"], arr)
    _refused(path, "X_fit_")
