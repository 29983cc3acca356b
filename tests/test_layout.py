"""The package's layout rules (CONTRIBUTING.md), checked on the source with ``ast``.

- no import circle between dsketch modules (module-level and function-local imports);
- dependencies point one way: backend <- sketch <- nets <- engine <- estimators <- cli;
  sketch/ and nets/ never import Dask;
- function-local imports only for optional dependencies (CuPy, dask-cuda, matplotlib);
- no private ``_name`` imported from another dsketch module;
- no module over 600 lines.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "dsketch"
OPTIONAL = {"cupy", "cupyx", "dask_cuda", "matplotlib"}
MAX_LINES = 600
#: Which top-level parts of dsketch each part may import (besides itself).
ALLOWED = {
    "backend": set(),
    "execution": {"backend"},
    "sketch": {"backend", "execution"},
    "nets": {"backend", "execution", "sketch"},
    "spec": {"backend", "sketch", "nets"},
    "engine": {"backend", "execution", "sketch", "nets", "spec"},
    "estimators": {"backend", "execution", "sketch", "nets", "spec", "engine", "dashboard"},
    "dashboard": {"backend"},
    "model_io": {"backend", "spec", "engine", "estimators"},
    "demo": {"backend", "nets", "engine", "estimators", "model_io"},
    "cli_checks": {"backend", "engine", "model_io"},
    "cli": {"backend", "nets", "engine", "estimators", "model_io", "dashboard", "demo", "cli_checks"},
}


def _modules():
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> list[str]:
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    names = [f"{target}.{a.name}" for a in node.names]
    return [n if n in MODULES else target for n in names]


def _imports(mod: str):
    """(target module, lineno, function-local?, imported names) for every import in ``mod``."""
    path, is_pkg = MODULES[mod]
    tree = ast.parse(path.read_text())
    local_nodes = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno, id(node) in local_nodes, []
        elif isinstance(node, ast.ImportFrom):
            for target in sorted(set(_resolve(mod, is_pkg, node))):
                yield target, node.lineno, id(node) in local_nodes, [a.name for a in node.names]


def _part(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "dsketch"


def test_no_import_circles():
    graph = {m: {t for t, *_ in _imports(m) if t in MODULES and t != m} for m in MODULES}
    # the package's lazy top level (importlib on attribute access) is not an import edge
    state: dict = {}
    stack: list = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if t == "dsketch" or (m.startswith(t + ".") and MODULES[t][1]):
                continue  # a module importing its own package's __init__ is not a cycle
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if m != "dsketch"))
def test_dependencies_point_one_way(mod):
    part = _part(mod)
    allowed = ALLOWED[part] | {part, "dsketch"}
    for target, line, _, _ in _imports(mod):
        if target.startswith("dsketch"):
            tpart = _part(target)
            assert tpart in allowed or target == "dsketch", \
                f"{mod}:{line} imports {target}: {part} may import only {sorted(ALLOWED[part])}"
        if part in ("backend", "execution", "sketch", "nets"):
            assert target.split(".")[0] not in ("dask", "distributed", "zarr"), \
                f"{mod}:{line} imports {target}: {part} must not depend on Dask/Zarr"


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_local_imports_only_for_optional_dependencies(mod):
    for target, line, local, _ in _imports(mod):
        if local:
            assert target.split(".")[0] in OPTIONAL, \
                f"{mod}:{line}: function-local import of {target} (only {sorted(OPTIONAL)} may be)"


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_no_private_names_across_modules(mod):
    for target, line, _, names in _imports(mod):
        if target.startswith("dsketch") and target != mod:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{mod}:{line} imports private {private} from {target}"


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_private_modules_stay_inside_their_package(mod):
    """``pkg._private`` is imported only from inside ``pkg`` (others use ``pkg``'s exports)."""
    for target, line, _, _ in _imports(mod):
        parts = target.split(".")
        if parts[0] != "dsketch":
            continue
        for i, part in enumerate(parts[1:], start=1):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(parts[:i])
                assert mod == owner or mod.startswith(owner + "."), \
                    f"{mod}:{line} imports the private module {target} from outside {owner}"


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_modules_stay_small(mod):
    n = len(MODULES[mod][0].read_text().splitlines())
    assert n <= MAX_LINES, f"{mod} has {n} lines (> {MAX_LINES}): split it by topic"
