"""The floors of the package point one way: a module imports only from its own floor
or below, and no two modules import each other, directly or around a loop.

From the ground up (README, "Architecture")::

    core            pure rules: no os, no asyncio, no clock
    files providers ledger      one seam each (the file system, the gateways, the store)
    config          the frozen settings (it asks the provider registry for defaults)
    pipeline        the engine and its stages: never service, commands or the top
    service commands            what serves people and what they type; never each other
    daemon demo cli             the top: wiring, the demo, the command line

The test reads every module's imports with ``ast`` (module level and inside
functions alike), so a lazy import cannot hide a wrong direction.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "daemon" / "seedance_watch"

#: Which sub-packages (or top-level modules) each floor may never import.
FORBIDDEN: dict[str, set[str]] = {
    "core": {
        "files",
        "providers",
        "ledger",
        "config",
        "pipeline",
        "service",
        "commands",
        "daemon",
        "demo",
        "cli",
        "logs",
        "simulator",
        "testing",
    },
    "files": {"providers", "ledger", "config", "pipeline", "service", "commands", "daemon", "cli"},
    "providers": {"ledger", "config", "pipeline", "service", "commands", "daemon", "cli"},
    "ledger": {"providers", "config", "pipeline", "service", "commands", "daemon", "cli"},
    "config": {"ledger", "pipeline", "service", "commands", "daemon", "demo", "cli"},
    "pipeline": {"service", "commands", "daemon", "demo", "cli", "simulator", "testing"},
    "service": {"commands", "daemon", "demo", "cli", "simulator", "testing"},
    "commands": {"service", "daemon", "demo", "cli", "pipeline", "simulator", "testing"},
    "simulator": {"files", "ledger", "pipeline", "service", "commands", "daemon", "cli"},
    "testing": {"pipeline", "service", "commands", "daemon", "demo", "cli"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``seedance_watch`` module ``path`` imports (``from x import y``: x and x.y)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("seedance_watch"):
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("seedance_watch"))
    return found


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _floor(module: str) -> str:
    """``seedance_watch.pipeline.engine`` → ``pipeline``; a top-level module is its own."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "seedance_watch"


def _graph() -> dict[str, set[str]]:
    return {
        name: {target for target in _imports(path) if target in MODULES and target != name}
        for name, path in MODULES.items()
    }


@pytest.mark.parametrize("floor", sorted(FORBIDDEN))
def test_no_module_imports_from_a_floor_above_its_own(floor: str) -> None:
    """Each floor imports only from its own floor or below (``FORBIDDEN`` lists above)."""
    wrong = sorted(
        f"{name} imports {target}"
        for name, path in MODULES.items()
        if _floor(name) == floor
        for target in _imports(path)
        if _floor(target) in FORBIDDEN[floor]
    )
    assert wrong == []


def test_nothing_but_the_command_line_imports_the_top() -> None:
    """``daemon`` (the wiring) is imported only by the command line and the demo; the
    demo and the command line by nobody inside the package (``__main__`` runs ``cli``)."""
    users: dict[str, set[str]] = defaultdict(set)
    for name, targets in _graph().items():
        for target in targets:
            users[target].add(name)
    assert users["seedance_watch.daemon"] <= {"seedance_watch.cli", "seedance_watch.demo"}
    assert users["seedance_watch.demo"] <= {"seedance_watch.cli"}
    assert users["seedance_watch.cli"] <= {"seedance_watch.__main__"}


def test_core_is_pure() -> None:
    """``core`` imports nothing of the package outside ``core`` and ``errors``."""
    wrong = sorted(
        f"{name} imports {target}"
        for name, path in MODULES.items()
        if _floor(name) == "core"
        for target in _imports(path)
        if _floor(target) not in ("core", "errors") and target != "seedance_watch"
    )
    assert wrong == []


def test_there_is_no_import_cycle() -> None:
    """No module reaches itself through its imports (a package reaching its own
    modules through its ``__init__`` is not a cycle of the code)."""
    graph = _graph()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt.startswith(node + "."):  # a package importing its own children
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_rules_see_a_wrong_import(tmp_path: Path) -> None:
    """The reader finds imports at any depth, lazy ones included (so the rules can fail)."""
    module = tmp_path / "m.py"
    module.write_text(
        "from seedance_watch.core import jobs\n"
        "def late():\n"
        "    from seedance_watch.service.metrics import Metrics\n"
        "    import seedance_watch.daemon\n"
    )
    assert _imports(module) >= {
        "seedance_watch.core.jobs",
        "seedance_watch.service.metrics",
        "seedance_watch.daemon",
    }
    assert _floor("seedance_watch.service.metrics") in FORBIDDEN["pipeline"]
