"""The layout's arrows hold: who may import whom, and no import cycle between modules.

Read from the source with `ast` (function-local imports included, `TYPE_CHECKING` ones too), so a
forbidden arrow cannot hide inside a function. The packages' intent, from the bottom up:

- ordo.domain      the pure decider: imports nothing else of Ordo;
- ordo.infra       adapters: imports only domain (and infra);
- ordo.projections read models: domain and infra;
- ordo.workers     the worker runtime: domain and infra;
- ordo.gateway     the HTTP front door: domain, infra and projections (reads);
- ordo (top)       the composition root and the public face: may import everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {
    "ordo.domain": REPO / "domain",
    "ordo.infra": REPO / "infra",
    "ordo.projections": REPO / "projections",
    "ordo.workers": REPO / "workers",
    "ordo.gateway": REPO / "gateway",
    "ordo.ui": REPO / "ui",
    "ordo": REPO / "ordo",
}
MAY_IMPORT = {
    "ordo.domain": set(),
    "ordo.infra": {"ordo.domain"},
    "ordo.projections": {"ordo.domain", "ordo.infra"},
    "ordo.workers": {"ordo.domain", "ordo.infra"},
    "ordo.gateway": {"ordo.domain", "ordo.infra", "ordo.projections"},
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import submodule` imports the submodule; `from mod import name`, the module.
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                for a in node.names
            ]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != "ordo":
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, known) - {name} for name, path in modules.items()}


def _package(module: str) -> str:
    for package in sorted(PACKAGES, key=len, reverse=True):
        if module == package or module.startswith(package + "."):
            return package
    raise AssertionError(module)


def test_no_forbidden_arrow() -> None:
    broken = sorted(
        f"{src} -> {dst}"
        for src, targets in _graph().items()
        for dst in targets
        if _package(src) in MAY_IMPORT
        and _package(dst) != _package(src)
        and _package(dst) not in MAY_IMPORT[_package(src)]
    )
    assert broken == [], "\n".join(broken)


def test_no_import_cycle() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
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
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert cycles == [], cycles


def test_every_package_folder_is_installed() -> None:
    """pyproject.toml lists packages explicitly (the folder mapping): a new subpackage must be added."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join([package, *p.parent.relative_to(folder).parts])
        for package, folder in PACKAGES.items()
        for p in folder.rglob("__init__.py")
    }
    assert on_disk - listed == set(), f"add to pyproject.toml [tool.setuptools] packages: {on_disk - listed}"
