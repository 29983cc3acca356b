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
checksums, shapes and dtypes (numeric, bool or unicode only) are checked, each ``.npy``
header is compared with ``model.json`` (and the file size with the header) before any data
is read, the JSON is depth-limited and every entry must have the type its field needs, the
rebuilt feature map must equal the one the parameters give and the fitted ``sketch_`` must
have the parameters of ``params.sketch``.  Anything wrong raises
:class:`~dsketch.backend.InvalidInputError` (a ``ValueError``) naming the file and field.
Saving refuses non-finite weights.  Writing is atomic (a temporary directory renamed into place by
``dsketch.engine.store.staged``, the one implementation dsketch has) and never replaces an
existing path unless ``overwrite=True`` (and then only a dsketch model).

Local paths only; must not run anything on a cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from . import __version__, estimators
from .backend import InvalidInputError
from .engine.store import MODEL_FILE, check_absent, staged
from .spec import FEATURES_VERSION, from_spec, to_spec

__all__ = ["save_model", "load_model", "read_model_info", "model_summary", "FORMAT", "FORMAT_VERSION"]

FORMAT = "dsketch-model"
FORMAT_VERSION = 1
_JSON_NAME = MODEL_FILE  # the file that makes a directory a model (engine.store)
_ARRAYS = "arrays"
_MAX_JSON_BYTES = 64 * 2**20
_ARRAY_KINDS = "biufU"
_PRIVATE_ATTRS = ("_n_features_out",)
_MAX_DEPTH = 100  # model.json nesting; real models stay under 30
_NUMBER = (int, float)
_NONE = type(None)
# the type each known fitted attribute must have once loaded (others: any allowed entry)
_ATTR_TYPES = {
    **{k: (np.ndarray, "an array") for k in ("coef_", "classes_",
                                             "component_indices_", "normalization_",
                                             "X_fit_", "dual_coef_",
                                             "zca_mean_", "zca_matrix_")},
    "components_": ((np.ndarray, scipy.sparse.csr_matrix), "an array or a CSR matrix"),
    "posterior_factor_": ((np.ndarray, _NONE), "an array or null"),
    "sketch_": (BaseEstimator, "an estimator"),
    **{k: (int, "an integer") for k in ("seed_", "n_features_in_", "n_iter_", "_n_features_out")},
    "alpha_": (_NUMBER, "a number"),
    "fit_report_": (dict, "an object"),
    "cv_results_": ((dict, _NONE), "an object or null"),
}


def _classes() -> dict[str, type]:
    """The allowlist: the estimator classes of :mod:`dsketch.estimators`."""
    found = {name: getattr(estimators, name) for name in estimators.__all__}
    return {k: v for k, v in found.items() if isinstance(v, type) and issubclass(v, BaseEstimator)}


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
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise InvalidInputError(f"{name}: {bad} of its {arr.size} values are NaN or Inf; refusing "
                                    "to save a model with non-finite weights")
        fname = f"{name.split('.', 1)[-1]}.npy"  # the attribute path without the root "model."
        path = self.root / _ARRAYS / fname
        np.save(path, arr, allow_pickle=False)
        return {"array": fname, "shape": list(arr.shape), "dtype": arr.dtype.str, "sha256": _sha256(path)}

    def value(self, v: Any, where: str) -> dict:
        if _is_estimator(v):
            return {"estimator": self.estimator(v, where)}
        if isinstance(v, np.ndarray):
            return self.array(v, where)
        if scipy.sparse.issparse(v):  # e.g. Nyström landmarks of sparse data: three arrays
            v = v.tocsr()
            return {"csr": {k: self.array(getattr(v, k), f"{where}.{k}")
                            for k in ("data", "indices", "indptr")}, "shape": list(v.shape)}
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
            "features_version": FEATURES_VERSION,
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
def _depth(doc) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if d > _MAX_DEPTH:
            break
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return deepest


def _expect(value, kind, where: str, what: str):
    """``value`` if it is a ``kind`` (never a bool for numbers), else ``InvalidInputError``."""
    if isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, _NUMBER)):
        return value
    got = "an array" if isinstance(value, np.ndarray) else f"a JSON {_json_type(value)} {str(value)[:60]!r}"
    raise InvalidInputError(f"{where}: expected {what}, got {got}")


def _json_type(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number" if isinstance(v, _NUMBER) else type(v).__name__)


def read_model_info(path) -> dict:
    """The validated ``model.json`` of a model directory (no arrays read, nothing built)."""
    path = Path(os.fspath(path))
    jpath = path / _JSON_NAME
    if not jpath.is_file():
        raise InvalidInputError(f"{path} is not a dsketch model (no {_JSON_NAME})")
    if jpath.stat().st_size > _MAX_JSON_BYTES:
        raise InvalidInputError(f"{jpath} is larger than {_MAX_JSON_BYTES} bytes; refusing to read it")
    try:
        doc = json.loads(jpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{jpath} is not valid JSON: {exc}") from None
    except RecursionError:
        doc = None
    if doc is None or _depth(doc) > _MAX_DEPTH:
        raise InvalidInputError(f"{jpath} is nested deeper than {_MAX_DEPTH} levels; not a dsketch model")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InvalidInputError(f"{jpath} is not a dsketch model file (format field is "
                                f"{doc.get('format') if isinstance(doc, dict) else None!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise InvalidInputError(f"{jpath}: unsupported format_version {doc.get('format_version')!r} "
                                f"(this dsketch {__version__} reads version {FORMAT_VERSION})")
    features = doc.get("features_version", 1)  # models written before the field: 1
    if features != FEATURES_VERSION:
        raise InvalidInputError(
            f"{jpath}: fitted on the seeded features of dsketch {doc.get('dsketch_version')!r} "
            f"(features version {features!r}); this dsketch {__version__} computes features "
            f"version {FEATURES_VERSION}, so the saved weights would meet different features. "
            f"Refit the model with this version (or load it with the dsketch that saved it)")
    est = _expect(doc.get("estimator"), dict, f"{jpath}: estimator", "an object")
    _expect(est.get("params"), dict, f"{jpath}: estimator.params", "an object")
    _expect(est.get("attributes"), dict, f"{jpath}: estimator.attributes", "an object")
    _expect(doc.get("summary", {}), dict, f"{jpath}: summary", "an object")
    return doc


def model_summary(doc: dict) -> dict:
    """Estimator class, sketch class and parameters, versions and training summary of a
    validated ``model.json`` (from :func:`read_model_info`); odd entries are left out."""
    est = doc["estimator"]
    sketch = est["params"].get("sketch")
    sketch = sketch.get("estimator") if isinstance(sketch, dict) else None
    if not isinstance(sketch, dict):  # the default sketch: the fitted one says which
        fitted = est["attributes"].get("sketch_")
        sketch = fitted.get("estimator") if isinstance(fitted, dict) else None
    sketch = sketch if isinstance(sketch, dict) else {}
    params = sketch.get("params") if isinstance(sketch.get("params"), dict) else {}
    return {"estimator": est.get("class"), "sketch": sketch.get("class"),
            "dsketch_version": doc.get("dsketch_version"), "format_version": doc.get("format_version"),
            "sketch_params": {k: v.get("json", v.get("spec")) for k, v in params.items()
                              if isinstance(v, dict)},
            "summary": doc.get("summary", {})}


class _Reader:
    def __init__(self, root: Path):
        self.root = root
        self.json_path = root / _JSON_NAME

    def fail(self, where: str, msg: str) -> InvalidInputError:
        return InvalidInputError(f"{self.json_path}: {where}: {msg}")

    def header(self, path: Path, entry: dict, where: str) -> None:
        """Compare the ``.npy`` header (dtype, shape) and the file size with ``entry``."""
        rel = f"{_ARRAYS}/{path.name}"
        fmt = np.lib.format
        try:
            with open(path, "rb") as f:
                version = fmt.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = fmt.read_array_header_1_0(f)
                elif version in ((2, 0), (3, 0)):
                    shape, _, dtype = fmt.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy version {version}")
                offset = f.tell()
        except (ValueError, OSError, SyntaxError) as exc:
            raise self.fail(where, f"{rel} is not a .npy array file ({exc})") from None
        if dtype.hasobject or dtype.kind not in _ARRAY_KINDS:
            raise self.fail(where, f"{rel} has dtype {dtype}, not allowed (numeric, bool or unicode only)")
        if dtype.str != entry["dtype"] or list(shape) != entry["shape"]:
            raise self.fail(where, f"{rel} header says {dtype.str} {list(shape)}, model.json says "
                                   f"{entry['dtype']} {entry['shape']}")
        expected = offset + math.prod(shape) * dtype.itemsize
        size = path.stat().st_size
        if size != expected:
            raise self.fail(where, f"{rel} is {size} bytes but its header {dtype.str} {list(shape)} "
                                   f"needs {expected}: truncated or padded")

    def array(self, entry: dict, where: str) -> np.ndarray:
        fname = entry.get("array")
        if (not isinstance(fname, str) or "/" in fname or "\\" in fname or fname.startswith(".")
                or not fname.endswith(".npy")):
            raise self.fail(where, f"bad array file name {fname!r}")
        shape, dtype = entry.get("shape"), entry.get("dtype")
        if not (isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                for n in shape)):
            raise self.fail(where, f"shape must be a list of counts, got {str(shape)[:60]!r}")
        _expect(dtype, str, f"{self.json_path}: {where}.dtype", "a dtype string")
        _expect(entry.get("sha256"), str, f"{self.json_path}: {where}.sha256", "a hex digest")
        path = self.root / _ARRAYS / fname
        if not path.is_file():
            raise self.fail(where, f"array file {_ARRAYS}/{fname} is missing")
        self.header(path, entry, where)
        digest = _sha256(path)
        if digest != entry["sha256"]:
            raise self.fail(where, f"checksum mismatch for {_ARRAYS}/{fname} (file {digest[:12]}…, "
                                   f"model.json {entry['sha256'][:12]}…): the file was modified or corrupted")
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise self.fail(where, f"cannot read {_ARRAYS}/{fname}: {exc}") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.str != dtype or list(arr.shape) != shape:
            raise self.fail(where, f"{_ARRAYS}/{fname} does not hold the {dtype} {shape} array "
                                   "model.json says")
        return arr

    def value(self, entry: Any, where: str, *, param: bool = False) -> Any:
        if not isinstance(entry, dict) or len(entry) == 0:
            raise self.fail(where, f"malformed entry {str(entry)[:60]!r} (expected an object with "
                                   "'json', 'spec', 'array' or 'estimator')")
        try:
            if "estimator" in entry:
                return self.estimator(entry["estimator"], where, fitted=not param)
            if "spec" in entry:
                return from_spec(entry["spec"], where)
            if "array" in entry and not param:
                return self.array(entry, where)
            if set(entry) == {"csr", "shape"} and not param and isinstance(entry["csr"], dict):
                parts = {k: self.array(entry["csr"].get(k) or {}, f"{where}.{k}")
                         for k in ("data", "indices", "indptr")}
                return scipy.sparse.csr_matrix((parts["data"], parts["indices"], parts["indptr"]),
                                               shape=tuple(entry["shape"]))
            if set(entry) == {"json"}:
                return from_spec(entry["json"], where) if param else entry["json"]
        except InvalidInputError:
            raise
        except (ValueError, TypeError) as exc:  # from_spec and the classes' own checks
            text = str(exc)
            raise (InvalidInputError(f"{self.json_path}: {text}") if text.startswith(where)
                   else self.fail(where, text)) from None
        raise self.fail(where, f"malformed entry with keys {sorted(entry)}")

    def estimator(self, doc: Any, where: str, *, fitted: bool = True):
        if not isinstance(doc, dict) or not isinstance(doc.get("params"), dict) \
                or not isinstance(doc.get("attributes"), dict):
            raise self.fail(where, "malformed estimator entry (expected an object with 'class', "
                                   "'params' and 'attributes' objects)")
        name = doc.get("class")
        classes = _classes()
        if not isinstance(name, str) or name not in classes:
            raise self.fail(where, f"estimator class {name!r} is not allowed "
                                   f"(allowed: {', '.join(sorted(classes))})")
        cls = classes[name]
        params = {k: self.value(v, f"{where}.{k}", param=True) for k, v in doc["params"].items()}
        try:
            est = cls(**params)
        except TypeError as exc:
            raise self.fail(where, f"bad parameters for {name}: {exc}") from None
        if not fitted and doc["attributes"]:
            raise self.fail(where, "a parameter estimator must not carry fitted attributes")
        for key, entry in doc["attributes"].items():
            if not ((key.endswith("_") and not key.startswith("_") and key.isidentifier())
                    or key in _PRIVATE_ATTRS):
                raise self.fail(where, f"attribute name {key!r} not allowed")
            value = self.value(entry, f"{where}.{key}")
            if key in _ATTR_TYPES:
                _expect(value, *_ATTR_TYPES[key][:1], f"{self.json_path}: {where}.{key}", _ATTR_TYPES[key][1])
            setattr(est, key, value)
        if fitted:  # the model knows its own invariants; the file format only asks
            try:
                est.check_fitted_state()
            except ValueError as exc:
                raise InvalidInputError(f"{self.json_path}: {where}: {exc}") from None
        return est


def load_model(path):
    """Read a model written by :func:`save_model`; never unpickles.

    Raises
    ------
    InvalidInputError
        (a ``ValueError``) naming the file and field and what is wrong: not a model,
        unsupported format version, class not allowed, unknown spec type, an entry of the
        wrong type, a missing or modified array (checksum), a ``.npy`` header, shape or
        dtype that does not match ``model.json``, or attributes inconsistent with each
        other or with the parameters.
    """
    path = Path(os.fspath(path))
    doc = read_model_info(path)
    reader = _Reader(path)
    try:
        return reader.estimator(doc["estimator"], "model")
    except InvalidInputError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, RecursionError) as exc:
        raise reader.fail("model", f"malformed model ({type(exc).__name__}: {exc})") from None
