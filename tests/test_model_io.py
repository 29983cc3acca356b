"""Model files: round trips predict bitwise identically; tampered or foreign files are refused."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from dsketch.estimators import (
    ArcCosineFeatures, NNGPSketch, NTKSketch, PolynomialSketch, RandomFourierFeatures, SketchRidge,
    SketchRidgeClassifier,
)
from dsketch.model_io import load_model, read_model_info, save_model
from dsketch.nets import Dense, Elementwise, Erf, Gelu, fully_connected, serial


def _data(n=90, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, np.cos(X @ rng.normal(size=d))


NET = serial(Dense(1.3, 0.1), Erf(a=1.2, b=0.7, c=0.1), Dense(1.0, 0.2), Gelu(), Dense(1.4),
             Elementwise("tanh"), Dense(1.0))

MODELS = {
    "ntk-ridge-grid": lambda: SketchRidge(sketch=NTKSketch(net=NET, n_components=64, random_state=3),
                                          alpha=[1e-2, 1.0], cv=3),
    "nngp-posterior": lambda: SketchRidge(sketch=NNGPSketch(n_components=48, random_state=1),
                                          alpha=0.5, posterior_std=True),
    "rff-cg": lambda: SketchRidge(sketch=RandomFourierFeatures(n_components=32, gamma=0.2, random_state=0),
                                  alpha=0.1, solver="cg"),
    "poly": lambda: SketchRidge(sketch=PolynomialSketch(n_components=32, degree=3, coef0=1.0,
                                                        random_state=0), alpha=1.0),
    "arccos-classifier": lambda: SketchRidgeClassifier(sketch=ArcCosineFeatures(n_components=32, random_state=0),
                                                       alpha=0.1),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_round_trip_predicts_bitwise_identically(name, tmp_path):
    X, y = _data()
    Xt, _ = _data(30, seed=1)
    est = MODELS[name]()
    if "classifier" in name:
        y = np.array(["a", "b", "c"])[(y > 0).astype(int) + (y > 0.5)]
    est.fit(X, y)
    path = save_model(est, tmp_path / "m")
    back = load_model(path)
    assert type(back) is type(est)
    assert back.get_params()["alpha"] == est.get_params()["alpha"] or isinstance(est.alpha, list)
    np.testing.assert_array_equal(back.predict(Xt), est.predict(Xt))
    np.testing.assert_array_equal(back.coef_, est.coef_)
    assert back.sketch_.feature_map_ == est.sketch_.feature_map_
    if est.posterior_std:
        np.testing.assert_array_equal(back.predict(Xt, return_std=True)[1], est.predict(Xt, return_std=True)[1])
    if hasattr(est, "classes_"):
        np.testing.assert_array_equal(back.classes_, est.classes_)
    info = read_model_info(path)
    assert info["summary"]["n_samples"] == len(X)
    assert info["estimator"]["class"] == type(est).__name__


def test_transformer_round_trip(tmp_path):
    X, _ = _data()
    t = NTKSketch(net=NET, n_components=40, random_state=None).fit(X)
    back = load_model(save_model(t, tmp_path / "t"))
    assert back.seed_ == t.seed_
    np.testing.assert_array_equal(back.transform(X), t.transform(X))


def test_net_spec_is_written_layer_by_layer(tmp_path):
    X, y = _data()
    path = save_model(MODELS["ntk-ridge-grid"]().fit(X, y), tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    net = doc["estimator"]["params"]["sketch"]["estimator"]["params"]["net"]["spec"]
    types = [layer["type"] for layer in net["fields"]["layers"]]
    assert types == ["nets.Dense", "nets.Erf", "nets.Dense", "nets.Gelu", "nets.Dense",
                     "nets.Elementwise", "nets.Dense"]
    assert net["fields"]["layers"][5]["fields"]["function"] == "tanh"
    assert doc["summary"]["cv"]["alphas"] == [0.01, 1.0]
    assert path == str(tmp_path / "m")


def test_callable_activation_cannot_be_saved(tmp_path):
    X, y = _data()
    net = fully_connected(1, Elementwise(lambda x: x * x * 0.5))
    est = SketchRidge(sketch=NTKSketch(net=net, n_components=16, random_state=0)).fit(X, y)
    with pytest.raises(ValueError, match="callable"):
        save_model(est, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp dir left


def test_never_overwrites_and_failed_save_keeps_old(tmp_path):
    X, y = _data()
    est = MODELS["poly"]().fit(X, y)
    path = save_model(est, tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite"):
        save_model(est, path)
    bad = SketchRidge(sketch=NTKSketch(net=fully_connected(1, Elementwise(np.sinh)), n_components=8,
                                       random_state=0)).fit(X, y)
    with pytest.raises(ValueError):
        save_model(bad, path, overwrite=True)
    np.testing.assert_array_equal(load_model(path).predict(X), est.predict(X))
    other = MODELS["rff-cg"]().fit(X, y)
    save_model(other, path, overwrite=True)
    np.testing.assert_array_equal(load_model(path).predict(X), other.predict(X))
    (tmp_path / "notes").mkdir()
    with pytest.raises(FileExistsError, match="not a dsketch model"):
        save_model(est, tmp_path / "notes", overwrite=True)


def test_unfitted_refused(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        save_model(SketchRidge(), tmp_path / "m")


@pytest.fixture
def saved(tmp_path):
    X, y = _data()
    save_model(MODELS["nngp-posterior"]().fit(X, y), tmp_path / "m")
    return tmp_path / "m"


def _edit_json(path, fn):
    doc = json.loads((path / "model.json").read_text())
    fn(doc)
    (path / "model.json").write_text(json.dumps(doc))


def test_tampered_array_refused(saved):
    arr = saved / "arrays" / "coef_.npy"
    coef = np.load(arr)
    coef[0] += 1.0
    np.save(arr, coef)
    with pytest.raises(ValueError, match="checksum mismatch.*coef_"):
        load_model(saved)


def test_missing_array_refused(saved):
    os.remove(saved / "arrays" / "posterior_factor_.npy")
    with pytest.raises(ValueError, match="posterior_factor_.*missing"):
        load_model(saved)


def test_pickled_array_refused_even_with_matching_checksum(saved):
    arr = saved / "arrays" / "coef_.npy"
    np.save(arr, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    import hashlib

    digest = hashlib.sha256(arr.read_bytes()).hexdigest()
    _edit_json(saved, lambda d: d["estimator"]["attributes"]["coef_"].update(sha256=digest))
    with pytest.raises(ValueError, match="coef_"):
        load_model(saved)


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.update(format_version=99), "format_version 99"),
    (lambda d: d.update(format="something-else"), "not a dsketch model"),
    (lambda d: d["estimator"].update({"class": "Pipeline"}), "class 'Pipeline' is not allowed"),
    (lambda d: d["estimator"]["params"]["sketch"]["estimator"]["params"]["net"].update(
        spec={"type": "os.system", "fields": {}}), "unknown spec type 'os.system'"),
    (lambda d: d["estimator"]["attributes"]["coef_"].update(shape=[3]), "model.json says"),
    (lambda d: d["estimator"]["attributes"]["coef_"].update(array="../../etc/passwd"), "bad array file name"),
    (lambda d: d["estimator"]["attributes"]["sketch_"]["estimator"]["attributes"]["seed_"].update(json=12345),
     "feature_map_ does not match"),
    (lambda d: d["estimator"]["attributes"]["sketch_"]["estimator"]["attributes"]["feature_map_"]["spec"]
     ["fields"]["fmap"]["fields"].update(n_features=47), "feature_map_ does not match|coef_ has shape"),
])
def test_tampered_json_refused(saved, edit, message):
    _edit_json(saved, edit)
    with pytest.raises(ValueError, match=message):
        load_model(saved)


def test_not_json_refused(saved):
    (saved / "model.json").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(saved)


def test_not_a_model_dir(tmp_path):
    with pytest.raises(ValueError, match="not a dsketch model"):
        load_model(tmp_path)


# ------------------------------------------------------ a model's invariants are its own
def test_models_check_their_own_fitted_state_and_the_file_format_only_asks():
    import inspect

    from dsketch import KernelRidge, model_io

    X, y = _data()
    reg = SketchRidge(sketch=NTKSketch(n_components=32, random_state=0), alpha=0.1).fit(X, y)
    reg.check_fitted_state()
    reg.sketch_.check_fitted_state()
    reg.coef_ = reg.coef_[:-1]
    with pytest.raises(ValueError, match="coef_ has shape"):
        reg.check_fitted_state()
    sk = NTKSketch(n_components=32, random_state=0).fit(X)
    sk.seed_ += 1
    with pytest.raises(ValueError, match="feature_map_ does not match"):
        sk.check_fitted_state()
    kr = KernelRidge(alpha=0.1).fit(X, y)
    kr.check_fitted_state()
    kr.dual_coef_ = kr.dual_coef_[:-1]
    with pytest.raises(ValueError, match="dual_coef_ has shape"):
        kr.check_fitted_state()
    # the file format asks the model; it knows no estimator internals
    src = inspect.getsource(model_io)
    for internal in ("_make_map", "_sketch_template", "coef_.shape", "dual_coef_.shape",
                     "posterior_factor_.shape"):
        assert internal not in src, internal
