"""The import rule (docs/architecture.md, "Layers"), checked by reading every import of the code.

Layers, bottom to top; a module may import its own layer and the layers below, never above:

0. foundation  ``ebmops.core`` (settings, errors, phases, aliases, state store and audit log, data,
   validation, console, small runtime helpers) and the ``ebmops`` package root
1. domain      ``drift`` < ``training`` < ``registry`` < ``gates`` < ``canary`` < ``serving``
   (a domain package imports only the foundation and the domain packages before it)
2. adapters    ``ebmops.adapters`` (the real ports: node client, bundles, rollout ports, approvals)
3. services    ``ebmops.services`` (the steps of each flow; no Prefect)
4. flows       ``flows`` (Prefect flows that only wire)
5. tooling     ``ebmops.tools`` (local stack, local nodes, replay, demo, views)
6. CLI         ``ebmops.cli``

Function-level (lazy) imports count: a lazy import still ties the layers together. And no two
modules may import each other, directly or through others (no import circles).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = ["drift", "training", "registry", "gates", "canary", "serving"]
PACKAGES = ["ebmops", "flows", *DOMAIN]


def layer(module: str) -> tuple[int, int]:
    """(layer, rank within it) of a module name."""
    parts = module.split(".")
    top = parts[0]
    if top in DOMAIN:
        return 1, DOMAIN.index(top)
    if top == "flows":
        return 4, 0
    sub = parts[1] if len(parts) > 1 else ""
    return {"": (0, 0), "core": (0, 0), "adapters": (2, 0), "services": (3, 0), "tools": (5, 0),
            "cli": (6, 0)}[sub]


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            name = ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out[name] = p
    return out


def imports_of(path: Path) -> set[str]:
    """First-party modules a file imports, anywhere in it (a ``from pkg import name`` counts as
    ``pkg.name`` when that is a module, else as ``pkg``)."""
    known = modules()
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        out |= {n for n in names if n.split(".")[0] in PACKAGES}
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    g = {}
    for name, path in known.items():
        deps = set()
        for imp in imports_of(path):
            # the deepest known module the import names (``ebmops.core.state`` for ``ebmops.core.state.x``
            # when x is not a module)
            while imp and imp not in known:
                imp = imp.rpartition(".")[0]
            if imp and imp != name:
                deps.add(imp)
        g[name] = deps
    return g


def upward(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in g.items():
        for dep in deps:
            if layer(dep) > layer(mod) and not (layer(dep)[0] == layer(mod)[0] == 1 and dep.split(".")[0] ==
                                                mod.split(".")[0]):
                bad.append(f"{mod} imports {dep}")
    return sorted(bad)


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    for mod in modules():
        layer(mod)  # raises KeyError for a folder that says no layer


def test_no_import_runs_up_a_layer():
    bad = upward(graph())
    assert not bad, "imports that run up a layer (see docs/architecture.md, Layers):\n" + "\n".join(bad)


def test_no_import_circles():
    found = circles(graph())
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_services_and_domain_never_import_prefect():
    offenders = []
    for mod, path in modules().items():
        if layer(mod)[0] in (0, 1, 3) or mod.startswith("ebmops.adapters") and mod != "ebmops.adapters.prefect_approvals":
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                if any(n.split(".")[0] == "prefect" for n in names):
                    offenders.append(mod)
    assert not offenders, f"only flows, the Prefect approval adapter, tooling and the CLI import Prefect: {offenders}"


@pytest.mark.parametrize("g, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_circle_finder(g, expected):
    assert circles(g) == expected


def test_the_layer_check_sees_an_upward_import():
    assert upward({"ebmops.core.state.store": {"canary.phases"}, "canary.judge": {"drift.delta"},
                   "drift.delta": {"gates.checks"}}) == ["drift.delta imports gates.checks",
                                                         "ebmops.core.state.store imports canary.phases"]
