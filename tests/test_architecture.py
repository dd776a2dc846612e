"""The import graph of ``kseg.*`` has no cycle: every module imports only modules that do not
import it back, directly or through others. Imports inside functions count too (a lazy import
that dodges a cycle at run time is still one in the design)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PARTS = ("shared", "web", "worker", "migrations")


def modules() -> dict[str, Path]:
    found = {}
    for part in PARTS:
        for path in (ROOT / part).rglob("*.py"):
            names = list(path.relative_to(ROOT).with_suffix("").parts)
            if names[-1] == "__init__":
                names.pop()
            found["kseg." + ".".join(names)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the kseg modules it imports (``from a import b`` names module ``a.b`` when
    that is one, else ``a``); a package's import of its own submodules is not an edge back."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kseg."):
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names if alias.name.startswith("kseg.")]
            for target in targets:
                module = resolve(target)
                if module and module != name:
                    graph[name].add(module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_finder_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_kseg_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 50 and graph["kseg.shared.store.jobs"], "the graph was read"
    assert cycles(graph) == []


def layer(module: str) -> str:
    """``core``, ``store``, ``messaging``, ``cli`` (sub-packages of ``kseg.shared``), ``base``
    (the rest of ``kseg.shared``: settings, errors, client), ``web``, ``worker``,
    ``migrations``."""
    parts = module.split(".")
    if parts[1] != "shared":
        return parts[1]
    if len(parts) > 2 and parts[2] in ("core", "store", "messaging", "cli"):
        return parts[2]
    return "base"


#: What each layer may import besides itself (README, "Architecture").
ALLOWED = {
    "base": set(),
    "core": {"base"},
    "store": {"base", "core"},
    "messaging": {"base"},
    "cli": {"base", "core", "store", "messaging"},
    "web": {"base", "core", "store", "messaging"},
    "worker": {"base", "core", "store", "messaging"},
    "migrations": {"base", "store"},
}


def test_each_layer_imports_only_downwards() -> None:
    upwards = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if layer(target) != layer(module) and layer(target) not in ALLOWED[layer(module)]
    )
    assert upwards == []


def test_api_and_pages_share_only_web_common() -> None:
    """The JSON API and the HTML pages never import each other; what both need lives in
    ``kseg.web.common``, which imports neither."""
    surfaces = ("kseg.web.api", "kseg.web.pages")

    def surface(module: str) -> str | None:
        return next((s for s in (*surfaces, "kseg.web.common") if module.startswith(s)), None)

    crossing = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if surface(module) is not None
        and surface(target) in surfaces
        and surface(target) != surface(module)
    )
    assert crossing == []


#: A module the reader can hold in mind; the K-Means module may be longer while it is one
#: cohesive algorithm (issue 23).
MAX_LINES = 600
LONGER_ALLOWED = {"kseg.shared.core.cluster": 900}


def test_no_application_module_is_over_600_lines() -> None:
    long = sorted(
        f"{name}: {lines} lines"
        for name, path in modules().items()
        if not name.startswith("kseg.migrations")
        and (lines := len(path.read_text().splitlines())) > LONGER_ALLOWED.get(name, MAX_LINES)
    )
    assert long == []
