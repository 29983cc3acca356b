"""Model files: a fitted dsketch estimator as a directory of JSON + ``.npy`` arrays, no pickle.

Layout of ``save_model(est, "model")``::

    model/
      model.json          format, versions, estimator class, parameters (nets and kernels as
                          specs, layer by layer), fitted attributes, training summary, and
                          for each array its file, shape, dtype and SHA-256
      arrays/coef_.npy    one .npy per array attribute (np.save; read with allow_pickle=False)

A model is its spec plus its weights: the feature map is rebuilt from the saved spec and
seed (the random matrices are never stored), so files are kilobytes to megabytes and a
loaded model predicts bitwise identically to the saved one.

Loading trusts nothing: the format version, the estimator class (an allowlist: the classes of
``dsketch.estimators``), every spec type (``dsketch.spec``'s allowlist), array file names,
checksums, shapes and dtypes (numeric, bool or unicode only) are checked, and the rebuilt
feature map must equal the one the parameters give.  Anything wrong raises ``ValueError``
naming what is wrong.  Writing is atomic (a temporary directory renamed into place by
``dsketch.engine.store.staged``, the one implementation dsketch has) and never replaces an
existing path unless ``overwrite=True`` (and then only a dsketch model).

Local paths only; must not run anything on a cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from . import __version__, estimators
from .engine.store import check_absent, staged
from .spec import from_spec, to_spec

__all__ = ["save_model", "load_model", "read_model_info", "FORMAT", "FORMAT_VERSION"]

FORMAT = "dsketch-model"
FORMAT_VERSION = 1
_JSON_NAME = "model.json"
_ARRAYS = "arrays"
_MAX_JSON_BYTES = 64 * 2**20
_ARRAY_KINDS = "biufU"
_PRIVATE_ATTRS = ("_n_features_out",)


def _classes() -> dict[str, type]:
    return {name: getattr(estimators, name) for name in estimators.__all__}


def _is_estimator(v) -> bool:
    return isinstance(v, BaseEstimator)


def _is_spec(v) -> bool:
    return dataclasses.is_dataclass(v) and not isinstance(v, type)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _plain(v, where):
    """JSON-ready copy of a dict/list/scalar attribute (numpy scalars become Python)."""
    if isinstance(v, dict):
        return {str(k): _plain(x, f"{where}.{k}") for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x, f"{where}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, np.ndarray):
        return _plain(v.tolist(), where)
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        if isinstance(v, float) and not np.isfinite(v):
            return repr(v)  # e.g. an infinite CV score: kept readable, not a number
        return v
    raise ValueError(f"{where}: a {type(v).__name__} cannot be saved")


# ================================================================================ write
class _Writer:
    def __init__(self, root: Path):
        self.root = root
        (root / _ARRAYS).mkdir()

    def array(self, value: np.ndarray, name: str) -> dict:
        arr = np.asarray(value)
        if arr.dtype == object:
            try:
                arr = arr.astype(str)
            except Exception:
                raise ValueError(f"{name}: an object array cannot be saved") from None
        if arr.dtype.kind not in _ARRAY_KINDS:
            raise ValueError(f"{name}: arrays of dtype {arr.dtype} cannot be saved")
        fname = f"{name.split('.', 1)[-1]}.npy"  # the attribute path without the root "model."
        path = self.root / _ARRAYS / fname
        np.save(path, arr, allow_pickle=False)
        return {"array": fname, "shape": list(arr.shape), "dtype": arr.dtype.str, "sha256": _sha256(path)}

    def value(self, v: Any, where: str) -> dict:
        if _is_estimator(v):
            return {"estimator": self.estimator(v, where)}
        if isinstance(v, np.ndarray):
            return self.array(v, where)
        if _is_spec(v):
            return {"spec": to_spec(v, where)}
        return {"json": _plain(v, where)}

    def param(self, v: Any, where: str) -> dict:
        if _is_estimator(v):
            return {"estimator": self.estimator(v, where)}
        if _is_spec(v):
            return {"spec": to_spec(v, where)}
        if isinstance(v, np.ndarray):
            return {"json": _plain(v, where)}
        return {"json": to_spec(v, where)}

    def estimator(self, est, where: str) -> dict:
        name = type(est).__name__
        if _classes().get(name) is not type(est):
            raise ValueError(f"{where}: {type(est).__module__}.{name} is not a dsketch estimator")
        params = est.get_params(deep=False)
        if not isinstance(params.get("random_state", 0), (int, type(None))) and hasattr(est, "seed_"):
            params["random_state"] = est.seed_  # an RNG instance is saved as the seed it gave
        out = {"class": name,
               "params": {k: self.param(v, f"{where}.{k}") for k, v in params.items()},
               "attributes": {}}
        for key in sorted(vars(est)):
            public = key.endswith("_") and not key.startswith("_")
            if public or key in _PRIVATE_ATTRS:
                out["attributes"][key] = self.value(getattr(est, key), f"{where}.{key}")
        return out


def _summary(est) -> dict:
    rep = dict(getattr(est, "fit_report_", None) or {})
    out = {k: rep.get(k) for k in ("n_samples", "n_features", "n_targets", "solver", "reason",
                                   "seconds", "iterations", "converged", "residuals") if k in rep}
    if hasattr(est, "alpha_"):
        out["alpha"] = est.alpha_
    if getattr(est, "cv_results_", None):
        out["cv"] = est.cv_results_
    if hasattr(est, "classes_"):
        out["classes"] = np.asarray(est.classes_).tolist()
    return _plain(out, "summary")


def save_model(estimator, path, overwrite: bool = False) -> str:
    """Write a fitted dsketch estimator to the directory ``path`` (atomically).

    Parameters
    ----------
    estimator : a fitted estimator of :mod:`dsketch.estimators`
    path : str or PathLike
        Directory to create.
    overwrite : bool, default=False
        Replace an existing model at ``path``; anything else there is never replaced.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False, or it exists and is not a dsketch model.
    ValueError
        The estimator is not fitted or holds something that cannot be saved (e.g. a net
        with ``Elementwise(<python function>)``).
    """
    check_is_fitted(estimator)
    path = Path(os.fspath(path))
    check_absent(str(path), overwrite)
    if path.exists() and not (path.is_dir() and (path / _JSON_NAME).is_file()):
        raise FileExistsError(f"{path} exists and is not a dsketch model; refusing to replace it")
    with staged(str(path), overwrite=overwrite) as tmp_url:
        tmp = Path(tmp_url)
        tmp.mkdir()
        writer = _Writer(tmp)
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "dsketch_version": __version__,
            "estimator": writer.estimator(estimator, "model"),
            "summary": _summary(estimator),
        }
        text = json.dumps(doc, indent=1, allow_nan=False)
        with open(tmp / _JSON_NAME, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return str(path)


# ================================================================================= read
def read_model_info(path) -> dict:
    """The validated ``model.json`` of a model directory (no arrays read, nothing built)."""
    path = Path(os.fspath(path))
    jpath = path / _JSON_NAME
    if not jpath.is_file():
        raise ValueError(f"{path} is not a dsketch model (no {_JSON_NAME})")
    if jpath.stat().st_size > _MAX_JSON_BYTES:
        raise ValueError(f"{jpath} is larger than {_MAX_JSON_BYTES} bytes; refusing to read it")
    try:
        doc = json.loads(jpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{jpath} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{jpath} is not a dsketch model file (format field is "
                         f"{doc.get('format') if isinstance(doc, dict) else None!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{jpath}: unsupported format_version {doc.get('format_version')!r} "
                         f"(this dsketch {__version__} reads version {FORMAT_VERSION})")
    if not isinstance(doc.get("estimator"), dict):
        raise ValueError(f"{jpath}: the 'estimator' entry is missing or not an object")
    return doc


class _Reader:
    def __init__(self, root: Path):
        self.root = root

    def array(self, entry: dict, where: str) -> np.ndarray:
        fname = entry.get("array")
        if (not isinstance(fname, str) or "/" in fname or "\\" in fname or fname.startswith(".")
                or not fname.endswith(".npy")):
            raise ValueError(f"{where}: bad array file name {fname!r}")
        path = self.root / _ARRAYS / fname
        if not path.is_file():
            raise ValueError(f"{where}: array file {_ARRAYS}/{fname} is missing")
        digest = _sha256(path)
        if digest != entry.get("sha256"):
            raise ValueError(f"{where}: checksum mismatch for {_ARRAYS}/{fname} "
                             f"(file {digest[:12]}…, model.json {str(entry.get('sha256'))[:12]}…): "
                             "the file was modified or corrupted")
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{where}: cannot read {_ARRAYS}/{fname}: {exc}") from None
        if arr.dtype.kind not in _ARRAY_KINDS:
            raise ValueError(f"{where}: {_ARRAYS}/{fname} has dtype {arr.dtype}, not allowed")
        if arr.dtype.str != entry.get("dtype") or list(arr.shape) != entry.get("shape"):
            raise ValueError(f"{where}: {_ARRAYS}/{fname} is {arr.dtype.str} {list(arr.shape)}, "
                             f"model.json says {entry.get('dtype')} {entry.get('shape')}")
        return arr

    def value(self, entry: Any, where: str, *, param: bool = False) -> Any:
        if not isinstance(entry, dict) or len(entry) == 0:
            raise ValueError(f"{where}: malformed entry {entry!r}")
        if "estimator" in entry:
            return self.estimator(entry["estimator"], where, fitted=not param)
        if "spec" in entry:
            return from_spec(entry["spec"], where)
        if "array" in entry and not param:
            return self.array(entry, where)
        if set(entry) == {"json"}:
            return from_spec(entry["json"], where) if param else entry["json"]
        raise ValueError(f"{where}: malformed entry with keys {sorted(entry)}")

    def estimator(self, doc: Any, where: str, *, fitted: bool = True):
        if not isinstance(doc, dict) or not isinstance(doc.get("params"), dict) \
                or not isinstance(doc.get("attributes"), dict):
            raise ValueError(f"{where}: malformed estimator entry")
        name = doc.get("class")
        classes = _classes()
        if name not in classes:
            raise ValueError(f"{where}: estimator class {name!r} is not allowed "
                             f"(allowed: {', '.join(sorted(classes))})")
        cls = classes[name]
        params = {k: self.value(v, f"{where}.{k}", param=True) for k, v in doc["params"].items()}
        try:
            est = cls(**params)
        except TypeError as exc:
            raise ValueError(f"{where}: bad parameters for {name}: {exc}") from None
        if not fitted and doc["attributes"]:
            raise ValueError(f"{where}: a parameter estimator must not carry fitted attributes")
        for key, entry in doc["attributes"].items():
            if not ((key.endswith("_") and not key.startswith("_") and key.isidentifier())
                    or key in _PRIVATE_ATTRS):
                raise ValueError(f"{where}: attribute name {key!r} not allowed")
            setattr(est, key, self.value(entry, f"{where}.{key}"))
        if fitted:
            _check_consistency(est, where)
        return est


def _check_consistency(est, where: str) -> None:
    """Cross-check the loaded attributes against each other and against the parameters."""
    def fail(msg):
        raise ValueError(f"{where}: {msg}")

    fmap = getattr(est, "feature_map_", None)
    if hasattr(est, "_make_map"):  # a transformer
        if fmap is None or not hasattr(est, "seed_"):
            fail("a fitted transformer needs feature_map_ and seed_")
        try:
            expected = est._make_map(tuple(fmap.input_shape), est.seed_)
        except Exception as exc:
            fail(f"cannot rebuild the feature map from the parameters: {exc}")
        if expected != fmap:
            fail("feature_map_ does not match the parameters and seed_")
        if getattr(est, "_n_features_out", fmap.n_features) != fmap.n_features:
            fail("_n_features_out does not match the feature map")
        return
    sketch = getattr(est, "sketch_", None)
    coef = getattr(est, "coef_", None)
    if sketch is None or coef is None:
        fail("a fitted model needs sketch_ and coef_")
    m = sketch.feature_map_.n_features
    if coef.dtype.kind != "f" or coef.ndim not in (1, 2) or coef.shape[0] != m:
        fail(f"coef_ has shape {coef.shape} and dtype {coef.dtype}; expected float with {m} rows")
    if hasattr(est, "classes_"):
        if coef.ndim != 2 or coef.shape[1] != len(est.classes_):
            fail(f"coef_ has shape {coef.shape} but there are {len(est.classes_)} classes")
    post = getattr(est, "posterior_factor_", None)
    if post is not None and post.shape != (m, m):
        fail(f"posterior_factor_ has shape {post.shape}, expected {(m, m)}")
    if getattr(est, "n_features_in_", None) != getattr(sketch, "n_features_in_", None):
        fail("n_features_in_ differs between the model and its sketch")


def load_model(path):
    """Read a model written by :func:`save_model`; never unpickles.

    Raises
    ------
    ValueError
        Naming what is wrong: not a model, unsupported format version, class not allowed,
        unknown spec type, a missing or modified array (checksum), a shape or dtype that
        does not match, or attributes inconsistent with each other.
    """
    path = Path(os.fspath(path))
    doc = read_model_info(path)
    return _Reader(path).estimator(doc["estimator"], "model")
