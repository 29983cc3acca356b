"""JSON form of the small specs dsketch is built from: nets, layers, feature maps, kernels.

Owns turning a frozen-dataclass spec (a ``serial(...)`` network layer by layer, a
``FeatureMap``/``SelectedFeatures``, a kernel map of ``dsketch.sketch.kernels``) into plain
JSON values and back.  A spec is written as ``{"type": "<family>.<Class>", "fields": {...}}``
with one entry per dataclass field (private, non-compared fields such as caches are
skipped); tuples are written as JSON lists and read back as tuples.

Reading is allowlisted: only classes exported by ``dsketch.nets`` (its layers, and every
activation of its registry) and ``dsketch.sketch.kernels`` are built, only with their declared fields, and only from JSON
scalars, lists and nested specs — nothing is imported by name from the file and nothing is
unpickled.  An ``Elementwise`` layer serializes only when its function is a registry name
(``Elementwise("tanh")``); a Python callable raises ``ValueError``.

Must not import Dask or touch files (``model_io`` does the files).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from . import nets
from .sketch import kernels

__all__ = ["to_spec", "from_spec", "spec_classes", "FEATURES_VERSION"]

#: Version of the seeded feature definitions: the same spec and seed give the same features
#: exactly when this number is the same.  Bump it with any change that moves the features a
#: spec computes (a new tree layout, a new estimator under ``method="auto"``, ...); saved
#: models record it and :func:`dsketch.load_model` refuses a model fitted on other features.
#: 1: dsketch 0.1.  2: dsketch 0.2 (block-summed readouts and NTK factors, ``method="auto"``
#: for bounded activations, sparse-ready first layers).  3: dsketch 0.3 (image activations
#: of ReLU-like nets sketch their high Hermite degrees at m/4 width).  4: ``CNTKSketch``
#: sketches the larger feature maps at width ≤ 2048 and degree 2 by default.
FEATURES_VERSION = 4

#: Spec type prefix -> the module whose exported dataclasses may be saved and loaded.
_FAMILIES = {"nets": nets, "kernels": kernels}
#: Classes whose ``__init__`` names an argument differently from the field it sets.
_INIT_ALIASES = {"nets.Elementwise": {"function": "fn", "derivative": "deriv"}}


def spec_classes() -> dict[str, type]:
    """The allowlist: ``{"nets.Dense": Dense, ..., "kernels.RandomFourierFeatures": ...}``.

    Every dataclass exported (``__all__``) by ``dsketch.nets`` (which exports every
    registered activation) and ``dsketch.sketch.kernels``.
    """
    out: dict[str, type] = {}
    for family, mod in _FAMILIES.items():
        for name in mod.__all__:
            obj = getattr(mod, name)
            if isinstance(obj, type) and dataclasses.is_dataclass(obj):
                out[f"{family}.{obj.__name__}"] = obj
    return out


def _type_name(cls: type) -> str | None:
    for key, value in spec_classes().items():
        if value is cls:
            return key
    return None


def _spec_fields(cls: type):
    return [f for f in dataclasses.fields(cls) if f.init and f.compare and not f.name.startswith("_")]


def to_spec(obj: Any, where: str = "spec") -> Any:
    """JSON-ready form of ``obj`` (a spec dataclass, or a scalar/tuple/list of them).

    Raises ``ValueError`` naming the offending field (``where`` is the path so far) when a
    value cannot be written: a callable (e.g. ``Elementwise(fn=<function>)``), a non-finite
    float, or an object of a class outside the allowlist.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}: only finite numbers can be saved")
        return value
    if isinstance(obj, (tuple, list)):
        return [to_spec(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.dtype):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        name = _type_name(type(obj))
        if name is None:
            raise ValueError(f"{where}: {type(obj).__name__} is not a dsketch spec class and cannot be saved")
        fields = {}
        for f in _spec_fields(type(obj)):
            value = getattr(obj, f.name)
            if callable(value) and not dataclasses.is_dataclass(value):
                raise ValueError(
                    f"{where}.{f.name}: {type(obj).__name__} holds the Python callable {value!r}, "
                    "which cannot be saved; use a registry name (e.g. Elementwise('tanh'))")
            fields[f.name] = to_spec(value, f"{where}.{f.name}")
        return {"type": name, "fields": fields}
    if callable(obj):
        raise ValueError(f"{where} is the Python callable {obj!r}, which cannot be saved")
    raise ValueError(f"{where}: a {type(obj).__name__} cannot be saved in a spec")


def from_spec(data: Any, where: str = "spec") -> Any:
    """Inverse of :func:`to_spec`; lists become tuples; only allowlisted classes are built.

    Raises ``ValueError`` naming what is wrong (unknown type, unknown or missing field,
    a value of the wrong kind, or the class's own validation error).
    """
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return tuple(from_spec(v, f"{where}[{i}]") for i, v in enumerate(data))
    if isinstance(data, dict):
        if set(data) != {"type", "fields"} or not isinstance(data["fields"], dict):
            raise ValueError(f"{where}: expected {{'type': ..., 'fields': {{...}}}}, got keys {sorted(data)}")
        name = data["type"]
        classes = spec_classes()
        if not isinstance(name, str) or name not in classes:
            raise ValueError(f"{where}: unknown spec type {name!r} (allowed: {', '.join(sorted(classes))})")
        cls = classes[name]
        allowed = {f.name for f in _spec_fields(cls)}
        unknown = set(data["fields"]) - allowed
        if unknown:
            raise ValueError(f"{where}: {name} has no field(s) {sorted(unknown)}")
        aliases = _INIT_ALIASES.get(name, {})
        kwargs = {aliases.get(k, k): from_spec(v, f"{where}.{k}") for k, v in data["fields"].items()}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: cannot build {name}: {exc}") from None
    raise ValueError(f"{where}: unexpected JSON value of type {type(data).__name__}")
