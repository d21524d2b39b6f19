"""The import structure: no cycles between modules or between packages, and the library
(``classifier``) never imports the OpenFlow app (``controller_app``).

Imports are read from the source with ``ast`` — every ``import`` and ``from ... import``
statement, including those inside functions (imported late, still a dependency) — so the
check sees what a test run might never execute."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("classifier", "controller_app", "testing", "benchmarks", "topologies")
INSTALLED = ("classifier", "controller_app")       #: what a wheel holds (setup.cfg)
#: classifier's rooms in data-flow order: each may import only those before it
#: (``classifier`` itself holds the version; errors and shared are used everywhere)
FLOW = ("classifier", "classifier.errors", "classifier.shared", "classifier.parallel", "classifier.capture", "classifier.features",
        "classifier.pools", "classifier.models", "classifier.knowledge", "classifier.identity", "classifier.engine", "classifier.evaluation", "classifier.cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[module_name(path)] = path
    return out


def imported_names(path: Path, name: str) -> set[str]:
    """Every name an import statement of ``path`` imports, as a dotted path (relative imports
    resolved): ``import a.b`` gives ``a.b``; ``from a import b`` gives ``a.b`` (a module, or a
    name defined in ``a``)."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out |= {mod if a.name == "*" else f"{mod}.{a.name}" for a in node.names}
    return out


def import_graph() -> nx.DiGraph:
    """Module -> module it imports, over the project's packages. A dotted name that is not a
    module (a class, a function) stands for the module that defines it."""
    mods = project_modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, path in mods.items():
        for target in imported_names(path, name):
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != name:
                g.add_edge(name, target)
    return g


def package_of(module: str) -> str:
    """A module's room: ``classifier.pools.cache`` -> ``classifier.pools``; a top-level module
    (``classifier.cli``, ``classifier.errors``) is a room of its own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def package_graph(g: nx.DiGraph) -> nx.DiGraph:
    p = nx.DiGraph()
    p.add_nodes_from(package_of(m) for m in g)
    for a, b in g.edges:
        pa, pb = package_of(a), package_of(b)
        if pa != pb:
            p.add_edge(pa, pb, via=f"{a} -> {b}")
    return p


def describe_cycles(g: nx.DiGraph, label=lambda a, b: "") -> list[str]:
    """One line per group of nodes that import each other: the group, and one cycle in it."""
    out = []
    for comp in nx.strongly_connected_components(g):
        if len(comp) < 2:
            continue
        cycle = nx.find_cycle(g.subgraph(comp))
        out.append(f"{{{', '.join(sorted(comp))}}}: " + " -> ".join(a for a, _ in cycle) + f" -> {cycle[0][0]}"
                   + "".join(label(a, b) for a, b in cycle))
    return out


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    return import_graph()


def test_the_graph_sees_the_project(graph):
    """The checks below are only as good as the graph: it must hold the known modules and
    their imports, function-local ones included."""
    assert {"classifier.cli", "classifier.engine.engine", "controller_app.core", "controller_app.cli"} <= set(graph)
    assert graph.has_edge("classifier.engine.engine", "classifier.features.sessions")
    assert graph.has_edge("controller_app.cli", "classifier.cli")
    # inside a function body: the engine imports the pool resolver only when it needs one
    assert graph.has_edge("classifier.engine.engine", "classifier.pools.resolver")


def test_no_import_cycle_between_modules(graph):
    cycles = describe_cycles(graph)
    assert not cycles, "import cycles between modules:\n" + "\n".join(cycles)


def test_no_import_cycle_between_packages(graph):
    pg = package_graph(graph)
    via = lambda a, b: f"\n    {pg.edges[a, b]['via']}"  # noqa: E731
    cycles = describe_cycles(pg, via)
    assert not cycles, "import cycles between packages:\n" + "\n".join(cycles)


def test_classifier_rooms_import_only_earlier_rooms_of_the_data_flow(graph):
    pg = package_graph(graph)
    rooms = {p for p in pg if p.split(".")[0] == "classifier"}
    assert rooms <= set(FLOW), f"rooms missing from FLOW: {sorted(rooms - set(FLOW))}"
    back = sorted(pg.edges[a, b]["via"] for a, b in pg.edges
                  if a in rooms and b in rooms and FLOW.index(b) >= FLOW.index(a))
    assert not back, "imports against the data flow " + " -> ".join(FLOW[3:]) + ":\n" + "\n".join(back)


def test_the_library_does_not_import_the_app(graph):
    bad = sorted(f"{a} -> {b}" for a, b in graph.edges
                 if a.startswith("classifier") and b.split(".")[0] == "controller_app")
    assert not bad, "classifier imports controller_app:\n" + "\n".join(bad)


def test_installed_packages_import_nothing_left_out_of_the_wheel(graph):
    bad = sorted(f"{a} -> {b}" for a, b in graph.edges
                 if a.split(".")[0] in INSTALLED and b.split(".")[0] not in INSTALLED)
    assert not bad, "installed code imports test doubles, benchmarks or the lab:\n" + "\n".join(bad)


def test_checks_catch_a_cycle_and_a_library_to_app_import(tmp_path):
    """The helpers above on a made-up project: a module cycle, a package cycle and an import
    in a function body are all found."""
    g = nx.DiGraph([("classifier.a.x", "classifier.b.y"), ("classifier.b.y", "classifier.a.z")])
    assert not describe_cycles(g) and describe_cycles(package_graph(g))
    g.add_edge("classifier.a.z", "classifier.a.x")
    g.add_edge("classifier.b.y", "classifier.a.x")
    assert describe_cycles(g)
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from controller_app.policy import load_policy\n    from . import sibling\n")
    assert imported_names(src, "classifier.pkg.m") == {"controller_app.policy.load_policy", "classifier.pkg.sibling"}
