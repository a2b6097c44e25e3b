"""The layering rules of docs/architecture.md, checked on the source with ``ast`` (nothing imported).

The graph has one node per module of interp/, saes/ and kernels/ (a package is its ``__init__``)
and one edge per import statement, module-level or inside a function, plus
``importlib.import_module("literal")``. ``from . import x`` is resolved, and ``from pkg import x``
points at ``pkg.x`` when that is a module, else at ``pkg`` (importing a package's ``__init__``
counts as importing the package). Imports under ``if __name__ == "__main__":`` are left out: they
run only when that file is the program (``python -m interp.store``), never on import.
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("interp", "saes", "kernels")

# Entry modules: run as ``python -m ...`` (or used only by those), never imported by the library.
ENTRY_MODULES = {
    "interp.demo": "python -m interp.demo",
    "interp.__main__": "python -m interp replay RUN_DIR",
    "interp.bench": "python -m interp.bench {cache,patching}",
    "interp.bench.__main__": "python -m interp.bench {cache,patching}",
    "interp.bench.cache": "python -m interp.bench cache",
    "interp.bench.patching": "python -m interp.bench patching",
    "interp.patching.study": "python -m interp.patching.study",
    "interp.steering.study": "(run by interp.demo)",
    "interp.scrubbing.bench": "python -m interp.scrubbing.bench",
    "interp.store_cli": "python -m interp.store {write,info,verify}",
    "interp._cli": "(shared parser and error handling of the commands)",
    "interp.viz.__main__": "python -m interp.viz browser",
    "interp.viz.bench": "python -m interp.viz.bench",
    "interp.viz.screenshots": "python -m interp.viz.screenshots",
    "interp.viz.chromium": "(headless Chromium for tests, benchmarks and screenshots)",
    "saes.__main__": "python -m saes {train,eval}",
    "saes.bench": "python -m saes.bench",
    "saes.synthetic_bench": "python -m saes.synthetic_bench (python -m saes.bench synthetic)",
    "saes.sweep": "python -m saes.sweep",
    "saes.transcoders": "python -m saes.transcoders",
    "saes.offline_metrics": "python -m saes.offline_metrics",
    "interp.circuits.bench": "python -m interp.circuits.bench",
    "interp.circuits.study": "python -m interp.circuits.study",
    "kernels.bench": "python -m kernels.bench",
    "kernels._bench_ops": "(GPU part of python -m kernels.bench)",
    "kernels.gpu_check": "python -m kernels.gpu_check",
}
# Library modules that are also a command through their ``if __name__ == "__main__":`` block.
LIBRARY_COMMANDS = {"interp.store", "interp.toy"}

# transformers: a TransformerBridge is a Hugging Face model (its cache class, its decoder layers).
CORE_ALLOWED_THIRD_PARTY = {
    "torch", "transformer_lens", "transformers", "jaxtyping", "einops", "numpy",
}  # fmt: skip
# Leaf utilities beside the core: hook installation, input checks, atomic files, run manifests,
# bootstrap intervals. Each imports nothing from mechscope but the others in this set.
CORE_ALLOWED_INTERNAL = {
    "interp.hooks", "interp.validate", "interp._io", "interp.manifest", "interp.stats",
    "interp.multiple_testing",
}  # fmt: skip
# The plot-registry route: a result object may import interp.viz lazily to draw itself.
VIZ_LAZY_FUNCTIONS = {"plot", "show", "save_html", "_repr_html_"}

# (importer, imported) pairs allowed to break the interp.viz / interp.core rules while a
# migration is under way (none today). An entry whose pair is gone fails the test, so these sets
# cannot go stale; the same holds for PENDING_CYCLES.
PENDING_VIZ: set[tuple[str, str]] = set()
PENDING_CORE: set[tuple[str, str]] = set()
PENDING_CYCLES: set[frozenset[str]] = set()


class Import(NamedTuple):
    target: str  # a module of the three packages, or a top-level external name
    function: str | None  # innermost enclosing function, None at module level
    line: int


@cache
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_main_guard(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
        and any(
            isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators
        )
    )


def parse_imports(source: str, module: str, is_package: bool, known: set[str]) -> list[Import]:
    """The imports in ``source`` (module ``module``), resolved against the modules in ``known``."""

    def target(name: str) -> str:
        return name if name in known else name.split(".")[0]

    found: list[Import] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_main_guard(child):
                continue
            inner = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = child.name
            if isinstance(child, ast.Import):
                found.extend(Import(target(a.name), function, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = module.split(".")
                    parts = parts[: len(parts) - child.level + (1 if is_package else 0)]
                    base = ".".join([*parts, *([child.module] if child.module else [])])
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.append(
                        Import(sub if sub in known else target(base), function, child.lineno)
                    )
            elif (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Attribute)
                and child.func.attr == "import_module"
                and child.args
                and isinstance(child.args[0], ast.Constant)
                and isinstance(child.args[0].value, str)
            ):
                found.append(Import(target(child.args[0].value), function, child.lineno))
            visit(child, inner)

    visit(ast.parse(source), None)
    return found


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    path = modules()[module]
    source = path.read_text(encoding="utf-8")
    found = parse_imports(source, module, path.name == "__init__.py", set(modules()))
    return tuple(dict.fromkeys(found))  # ``from m import a, b`` once


def plot_route(imp: Import) -> bool:
    """A lazy import of interp.viz inside ``plot()`` & co: the one sanctioned upward edge."""
    return imp.function in VIZ_LAZY_FUNCTIONS and _inside(imp.target, "interp.viz")


def graph() -> dict[str, set[str]]:
    """Module -> the modules it imports, less the plot route (it runs only when a figure is
    asked for, after both sides are loaded, so viz may import the results it registers views of)."""
    return {
        m: {i.target for i in imports_of(m) if i.target in modules() and not plot_route(i)}
        for m in modules()
    }


def library() -> list[str]:
    return [m for m in modules() if m not in ENTRY_MODULES]


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _edges(sources: Iterable[str]) -> Iterable[tuple[str, Import]]:
    for source in sources:
        for imp in imports_of(source):
            yield source, imp


def _where(module: str, imp: Import) -> str:
    scope = f"in {imp.function}()" if imp.function else "at module level"
    return f"{module} -> {imp.target} ({modules()[module].relative_to(ROOT)}:{imp.line}, {scope})"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component, as ``[a, b, ..., a]``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges[v]:
                components.append(component)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges)))
    for v in sorted(edges):
        if v not in index:
            strongconnect(v)

    found = []
    for component in components:
        start = min(component)
        parent: dict[str, str] = {}
        queue = deque([start])
        while queue:
            v = queue.popleft()
            if start in edges[v]:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                found.append([*reversed(path), start])
                break
            for w in sorted(edges[v] & component):
                if w not in parent:
                    parent[w] = v
                    queue.append(w)
    return sorted(found)


# ------------------------------------------------------------------------------------ the rules


def test_entry_modules_are_listed():
    missing = sorted(m for m in ENTRY_MODULES if m not in modules())
    assert not missing, f"ENTRY_MODULES names modules that do not exist: {missing}"
    commands = set()
    for module, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if module.endswith(".__main__") or any(_is_main_guard(n) for n in tree.body):
            commands.add(module)
    unlisted = sorted(commands - set(ENTRY_MODULES) - LIBRARY_COMMANDS)
    assert not unlisted, (
        f"{unlisted} run as commands but are not in ENTRY_MODULES (or LIBRARY_COMMANDS) "
        "of tests/test_layers.py: classify them"
    )


def test_kernels_import_nothing_from_saes_or_interp():
    bad = [
        _where(m, imp)
        for m, imp in _edges(m for m in library() if _inside(m, "kernels"))
        if _inside(imp.target, "saes") or _inside(imp.target, "interp")
    ]
    assert not bad, "kernels must not import saes or interp:\n" + "\n".join(bad)


def test_no_import_cycles():
    lib = set(library())
    found = cycles({m: targets & lib for m, targets in graph().items() if m in lib})
    bad = [c for c in found if frozenset(c) not in PENDING_CYCLES]
    assert not bad, "import cycles among library modules:\n" + "\n".join(
        " -> ".join(c) for c in bad
    )
    gone = PENDING_CYCLES - {frozenset(c) for c in found}
    stale = [sorted(c) for c in gone if c <= set(modules())]
    assert not stale, f"PENDING_CYCLES entries that are no cycle any more, remove them: {stale}"
    with_entries = [c for c in cycles(graph()) if frozenset(c) not in PENDING_CYCLES]
    assert not with_entries, "import cycles through entry modules:\n" + "\n".join(
        " -> ".join(c) for c in with_entries
    )


def _named_modules(module: str) -> Iterable[Import]:
    """Strings naming a module (``"interp.demo"``, ``"interp.demo:main"``): lazy import tables."""
    tree = ast.parse(modules()[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value.split(":")[0]
            if name in modules():
                yield Import(name, "(a string)", node.lineno)


def test_library_never_imports_an_entry_module():
    bad = [
        _where(m, imp)
        for m in library()
        for imp in (*imports_of(m), *_named_modules(m))
        if imp.target in ENTRY_MODULES
    ]
    assert not bad, "library modules import entry modules:\n" + "\n".join(bad)


def test_core_imports_only_its_layer():
    core = [m for m in library() if _inside(m, "interp.core")]
    bad = []
    for m, imp in _edges(core):
        if plot_route(imp) or (m, imp.target) in PENDING_CORE:
            continue
        if imp.target in modules():
            ok = _inside(imp.target, "interp.core") or imp.target in CORE_ALLOWED_INTERNAL
        else:
            ok = imp.target in sys.stdlib_module_names or imp.target in CORE_ALLOWED_THIRD_PARTY
        if not ok:
            bad.append(_where(m, imp))
    assert not bad, "interp.core imports outside its layer:\n" + "\n".join(bad)
    pairs = {(m, imp.target) for m, imp in _edges(core)}
    stale = sorted(p for p in PENDING_CORE - pairs if p[0] in modules())
    assert not stale, f"PENDING_CORE pairs no longer imported, remove them: {stale}"


def test_hooks_and_validate_import_only_each_other():
    bottom = CORE_ALLOWED_INTERNAL
    bad = [
        _where(m, imp)
        for m, imp in _edges(bottom)
        if imp.target in modules() and imp.target not in bottom
    ]
    assert not bad, "interp.hooks / interp.validate import mechscope modules:\n" + "\n".join(bad)


def _viz_violations() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for m, imp in _edges(m for m in library() if not _inside(m, "interp.viz")):
        if _inside(imp.target, "interp.viz") and not plot_route(imp):
            found.setdefault((m, imp.target), []).append(_where(m, imp))
    return found


def test_only_viz_imports_viz():
    found = _viz_violations()
    bad = [w for pair, where in sorted(found.items()) if pair not in PENDING_VIZ for w in where]
    assert not bad, (
        "interp.viz imported outside interp.viz (allowed only lazily inside "
        f"{sorted(VIZ_LAZY_FUNCTIONS)}):\n" + "\n".join(bad)
    )
    stale = sorted(p for p in PENDING_VIZ - set(found) if p[0] in modules())
    assert not stale, f"PENDING_VIZ pairs no longer imported, remove them: {stale}"


def test_models_loads_toy_models_lazily():
    bad = [
        _where("interp.models", imp)
        for imp in imports_of("interp.models")
        if imp.function is None and imp.target == "interp.toy"
    ]
    assert not bad, "interp.models imports the toy fixture at module level:\n" + "\n".join(bad)


def test_resolver():
    known = {"p", "p.a", "p.sub", "p.sub.b", "p.sub.c"}
    source = """
import os.path
import p.sub.b
from . import c
from .. import a
from ..sub import b as bb
from p import sub
from p.sub import NAME
import importlib
def plot():
    from p.a import thing
    importlib.import_module("p.sub.c")
if __name__ == "__main__":
    import p.a
"""
    found = parse_imports(source, "p.sub.b", is_package=False, known=known)
    assert [(i.target, i.function) for i in found] == [
        ("os", None), ("p.sub.b", None), ("p.sub.c", None), ("p.a", None), ("p.sub.b", None),
        ("p.sub", None), ("p.sub", None), ("importlib", None), ("p.a", "plot"), ("p.sub.c", "plot"),
    ]  # fmt: skip
    in_package = parse_imports("from . import c\nfrom .c import x", "p.sub", True, known)
    assert [i.target for i in in_package] == ["p.sub.c", "p.sub.c"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}) == [
        ["a", "b", "c", "a"], ["d", "d"],
    ]  # fmt: skip
