"""The activation registry and ``dsketch.nets`` exports stay complete and consistent.

- every layer class defined in ``dsketch/nets`` is exported by ``dsketch.nets``;
- every activation class is registered, and has a row in the shared test table
  (``tests/_activations.py``), so the generic dual/expansion tests run it;
- every registered name builds an activation that round-trips through ``dsketch.spec``
  and is what ``dsketch fit --activation NAME`` builds; closed forms take precedence
  over ``Elementwise`` for the names both have;
- ``dsketch.nets`` imports no Dask and its modules import each other one way only.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

from _activations import CASES
from dsketch import nets
from dsketch.cli import InputError, build_sketch
from dsketch.nets import (
    Activation, Dense, Elementwise, Layer, Relu, activation_classes, activation_names,
    make_activation, serial,
)
from dsketch.nets.activations import ACTIVATION_FUNCTIONS, register_activation
from dsketch.spec import from_spec, spec_classes, to_spec


def _nets_modules():
    yield nets
    for info in pkgutil.walk_packages(nets.__path__, prefix="dsketch.nets."):
        yield importlib.import_module(info.name)


def _public_classes(base: type):
    for mod in _nets_modules():
        for name, obj in vars(mod).items():
            if (isinstance(obj, type) and issubclass(obj, base) and obj.__module__ == mod.__name__
                    and not name.startswith("_")):
                yield obj


def test_every_layer_class_is_exported():
    missing = {cls.__name__ for cls in _public_classes(Layer)} - set(nets.__all__)
    assert not missing, f"layer classes missing from dsketch.nets.__all__: {sorted(missing)}"
    for name in nets.__all__:
        assert hasattr(nets, name), name


def test_every_activation_class_is_registered_and_saveable():
    bases = {Activation, nets.HomogeneousActivation, nets.AliasActivation}
    found = set(_public_classes(Activation)) - bases
    assert found == set(activation_classes())
    allowed = spec_classes()
    for cls in found:
        assert allowed[f"nets.{cls.__name__}"] is cls


def test_every_activation_class_has_a_test_row():
    covered = {type(c.act) for c in CASES if c.tags & {"closed", "numeric"}}
    missing = {cls.__name__ for cls in activation_classes()} - {cls.__name__ for cls in covered}
    assert not missing, f"add a 'closed' or 'numeric' row to tests/_activations.py for {sorted(missing)}"


@pytest.mark.parametrize("case", CASES, ids=[repr(c.act) for c in CASES])
def test_table_activations_round_trip_through_specs(case):
    net = serial(Dense(1.2, 0.1), case.act, Dense(1.0))
    assert from_spec(json.loads(json.dumps(to_spec(net)))) == net


def _cli_activation(name):
    sketch = build_sketch("ntk", n_features=8, seed=0, depth=1, activation=name, W_std=None,
                          b_std=0.0, degree=None, gamma=1.0, coef0=0.0, order=1, image_shape=None)
    return sketch.net.layers[1]


@pytest.mark.parametrize("name", activation_names())
def test_registry_names_build_save_and_reach_the_cli(name):
    act = make_activation(name)
    assert isinstance(act, Activation)
    assert make_activation(name.upper()) == act
    assert from_spec(json.loads(json.dumps(to_spec(act)))) == act
    assert _cli_activation(name) == act
    assert _cli_activation(name.upper()) == act


def test_registry_names_and_precedence():
    assert set(ACTIVATION_FUNCTIONS) <= set(activation_names())
    closed = {"relu", "erf", "gelu", "abs", "sign", "step", "sin", "cos", "exp", "gaussian", "identity",
              "sigmoid_like", "rbf", "exp_normalized"}
    for name in activation_names():
        act = make_activation(name)
        assert isinstance(act, Elementwise) == (name not in closed), name
        if isinstance(act, Elementwise):
            assert act == Elementwise(name)
    assert make_activation("relu") == Relu()
    assert make_activation("leaky_relu") == Elementwise("leaky_relu")


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown activation 'no-such'.*relu"):
        make_activation("no-such")
    with pytest.raises(InputError, match="--activation: unknown activation 'no-such'"):
        _cli_activation("no-such")


def test_register_activation_refuses_bad_input():
    with pytest.raises(ValueError):
        register_activation("Upper", Relu)
    with pytest.raises(ValueError, match="already registered"):
        register_activation("relu", Elementwise)
    with pytest.raises(ValueError, match="needs a name"):
        register_activation(None, Relu)
    with pytest.raises(TypeError):
        register_activation()(Dense)
    assert make_activation("relu") == Relu()


def test_nets_imports_no_dask():
    code = ("import sys, dsketch.nets, dsketch.spec; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'zarr')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def _imports_within_nets(mod_name: str, path: str) -> set:
    """Modules of dsketch.nets that module ``mod_name`` imports (any nesting level)."""
    package = mod_name if path.endswith("__init__.py") else mod_name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")
            base = base[:len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
            out.update(c for c in candidates if c.startswith("dsketch.nets."))
    return out


def test_nets_modules_import_one_way():
    """No import circle between the (non-package) modules of dsketch.nets."""
    modules = {}
    for info in pkgutil.walk_packages(nets.__path__, prefix="dsketch.nets."):
        if not info.ispkg:
            modules[info.name] = importlib.import_module(info.name).__file__
    graph = {m: _imports_within_nets(m, p) & set(modules) for m, p in modules.items()}
    state = {}

    def visit(m, trail):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", f"import circle: {' -> '.join(trail + [m])}"
        state[m] = "open"
        for dep in sorted(graph[m]):
            visit(dep, trail + [m])
        state[m] = "done"

    for m in sorted(graph):
        visit(m, [])
