"""The package's structure: no mutable state at module level, no import cycle.

State lives in a `Runtime` (or in the one worker process of an SDK binding), never in a module,
so two runtimes in one process share nothing and a test needs no reset of globals.
"""

from __future__ import annotations

import ast
import datetime as dt
import decimal
import enum
import functools
import importlib
import importlib.util
import inspect
import logging
import pkgutil
import re
import types
import typing
from pathlib import Path

import pytest

import sqladapter

PACKAGE = Path(sqladapter.__file__).parent

# The few names that hold process-wide state on purpose, each with its reason.
PROCESS_STATE = {
    # run_query's default Runtime: made on first use, replaced only by close_default().
    "sqladapter.runtime._default": "the default Runtime of run_query",
    "sqladapter.runtime._default_lock": "guards the default Runtime",
    # prometheus_client keeps multiprocess values per process: one set of metrics per process.
    "sqladapter.metrics._worker_metrics": "prometheus_client's per-process metrics",
    # What the SDK's worker process was told to turn on, found by its signal handler and hooks,
    # which the SDK calls with no handle of ours.
    "sqladapter.engines.conductor._process": "the Conductor SDK worker process's own state",
    # OpenTelemetry's tracer provider is process-wide in that library itself.
    "sqladapter.tracing._tracing": "the process's tracer, as OpenTelemetry's provider is process-wide",
}

_IMMUTABLE = (str, bytes, int, float, complex, bool, type(None), range, re.Pattern, frozenset, enum.Enum, dt.date, dt.time, dt.timedelta, decimal.Decimal)


def _modules() -> list[str]:
    names = ["sqladapter"]
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="sqladapter."):
        if info.name.startswith("sqladapter.testing"):
            continue  # the conformance kit runs in test suites, not in a worker
        names.append(info.name)
    return names


def _immutable(value: object) -> bool:
    if isinstance(value, tuple):
        return all(_immutable(item) for item in value)
    if isinstance(value, types.MappingProxyType):
        return all(_immutable(v) for v in value.values())
    if isinstance(value, functools._lru_cache_wrapper):
        # A cache is state, unless it is a constant computed on first use (no arguments).
        return not inspect.signature(value.__wrapped__).parameters
    return isinstance(value, _IMMUTABLE) or callable(value) or isinstance(
        value, (types.ModuleType, logging.Logger, typing.TypeVar)
    ) or type(value).__module__ in ("typing", "pluggy._hooks") or _frozen_dataclass(value)


def _frozen_dataclass(value: object) -> bool:
    params = getattr(type(value), "__dataclass_params__", None)
    return params is not None and params.frozen


@pytest.mark.parametrize("module_name", _modules())
def test_no_module_holds_mutable_state(module_name):
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # an engine binding whose SDK is an optional extra
        pytest.skip(f"{module_name}: {exc}")
    found = []
    for name, value in vars(module).items():
        qualified = f"{module_name}.{name}"
        if name.startswith("__") or qualified in PROCESS_STATE:
            continue
        if getattr(value, "__module__", module_name) != module_name and not isinstance(value, (dict, list, set)):
            continue  # imported from elsewhere: checked where it is defined
        if not _immutable(value):
            found.append(f"{name} ({type(value).__name__})")
    tree = ast.parse(Path(module.__file__).read_text())
    rebound = sorted({
        f"{name} (rebound with `global`)"
        for node in ast.walk(tree)
        if isinstance(node, ast.Global)
        for name in node.names
        if f"{module_name}.{name}" not in PROCESS_STATE
    })
    assert not found + rebound, f"{module_name} holds state at module level: {', '.join(found + rebound)}"


def _imports_of(module_name: str) -> set[str]:
    """The sqladapter modules `module_name` imports, at the top or inside functions."""
    path = Path(importlib.util.find_spec(module_name).origin)
    package = module_name if path.name == "__init__.py" else module_name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t.startswith("sqladapter") and _is_module(t))
    found.discard(module_name)
    return found


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a name inside a module, not a module
        return False


def _is_type_checking_only(module_name: str, imported: str) -> bool:
    path = Path(importlib.util.find_spec(module_name).origin)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module and imported.endswith(inner.module.lstrip(".")):
                    return True
    return False


def test_the_import_graph_has_no_cycle():
    modules = [m for m in _modules() if importlib.util.find_spec(m) is not None]
    graph = {}
    for module in modules:
        # The package's own __init__ is imported by every submodule first and imports only
        # errors, settings and hookspecs at the top (the rest lazily): it is not an edge.
        graph[module] = {
            m for m in _imports_of(module)
            if m != "sqladapter" and m in modules and not _is_type_checking_only(module, m)
        }
    if "sqladapter" in graph:
        graph["sqladapter"] = {m for m in graph["sqladapter"] if m in ("sqladapter.errors", "sqladapter.settings", "sqladapter.hookspecs")}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert len(graph) > 20  # the walk saw the whole package


def test_test_modules_share_helpers_through_modules_not_conftest():
    """conftest.py holds fixtures; what test modules import lives in modules of its own
    (servers.py for the database servers), so pytest's conftest loading never decides it."""
    tests = Path(__file__).parent
    importing = [
        path.name for path in sorted(tests.rglob("*.py"))
        if re.search(r"^\s*(from conftest import|import conftest)", path.read_text(), re.M)
    ]
    assert not importing, f"import from conftest in: {', '.join(importing)}"
