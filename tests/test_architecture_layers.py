"""Dependencies run one way (DESIGN.md "Layers"): no import cycle in the package, no module importing a layer
above its own (also not lazily inside a function), and Dask imported by one module only.

The checks read the source (every ``import`` statement, wherever it stands), so they need no import of torch
or Dask; they run on the real package and, to show that they can fail, on small synthetic packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "geoseg"

# Top to bottom: a module may import the layers below its own only (modules of one layer are independent).
# A name stands for the module and, for a package, every module under it.
LAYERS = (
    ("geoseg.cli",),
    ("geoseg.api",),
    ("geoseg.inference.batch",),  # many scenes: outputs checked, scenes planned, then run
    ("geoseg.inference.scene",),  # one scene: plan -> regions (executors) -> assemble
    ("geoseg.inference.executors",),  # who runs the regions: this process, or (below) Dask
    ("geoseg.inference.dask",),
    ("geoseg.inference.assemble", "geoseg.inference.work"),  # parts -> COG; the work folder
    ("geoseg.inference.stream",),  # one region: blending, frontier, writer, TTA
    ("geoseg.inference.reader",),  # chunks -> batches
    ("geoseg.inference.tasks",),  # RegionTask, RegionResult, PredictResult: data only
    ("geoseg.inference.plan", "geoseg.inference.outputs", "geoseg.inference.options"),  # plan; names; options
    (
        "geoseg.inference.grid",
        "geoseg.inference.blending",
        "geoseg.inference.acceleration",
        "geoseg.inference.channel",  # the threads' hand-offs
    ),
)
# Third-party packages only one module of geoseg may import.
ONLY_IN = {"dask": "geoseg.inference.dask", "distributed": "geoseg.inference.dask"}


def module_imports(root: Path) -> dict[str, set[str]]:
    """Each module of the package at ``root`` -> the modules it imports (of the package, or third-party top
    level names), from every import statement: module level, inside functions, under TYPE_CHECKING."""
    files = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    imports: dict[str, set[str]] = {}
    for name, path in files.items():
        found = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # ``from pkg import module`` imports the module; ``from module import name``, the module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for target in targets:
                while target not in files and "." in target:
                    target = target.rpartition(".")[0]
                if target != name:
                    found.add(target)
        imports[name] = found
    return imports


def cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in imports.get(node, ()):
            if nxt not in imports:
                continue  # third-party
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(imports):
        if node not in index:
            visit(node)
    return found


def _place(module: str, layers) -> tuple[int, str] | None:
    """(layer depth, the layer's name that holds ``module``), None when no layer does."""
    for depth, names in enumerate(layers):
        for name in names:
            if module == name or module.startswith(f"{name}."):
                return depth, name
    return None


def upward_imports(imports: dict[str, set[str]], layers) -> list[str]:
    """'a imports b' for every import of a layer above the importer's own, or of another module of its own
    layer (the modules of one layer are independent)."""
    wrong = []
    for module, targets in sorted(imports.items()):
        place = _place(module, layers)
        if place is None:
            continue
        for target in sorted(targets):
            other = _place(target, layers)
            if other is None:
                continue
            if other[0] < place[0]:
                wrong.append(f"{module} imports {target} (a layer above)")
            elif other[0] == place[0] and other[1] != place[1]:
                wrong.append(f"{module} imports {target} (same layer: they are independent)")
    return wrong


def misplaced_imports(imports: dict[str, set[str]], only_in: dict[str, str]) -> list[str]:
    return [
        f"{module} imports {target} (only {only_in[target]} may)"
        for module, targets in sorted(imports.items())
        for target in sorted(targets)
        if target in only_in and module != only_in[target]
    ]


def test_the_package_has_no_import_cycle():
    assert cycles(module_imports(PACKAGE)) == []


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports(module_imports(PACKAGE), LAYERS) == []


def test_every_inference_module_has_a_layer():
    """A new module of the inference package gets a place in the layers (and so, checks)."""
    modules = [m for m in module_imports(PACKAGE) if m.startswith("geoseg.inference.")]
    assert [m for m in modules if _place(m, LAYERS) is None] == []


def test_only_the_dask_module_imports_dask():
    assert misplaced_imports(module_imports(PACKAGE), ONLY_IN) == []


# --- the checks can fail ---------------------------------------------------------------------------------

SYNTHETIC_LAYERS = (("pkg.top",), ("pkg.middle",), ("pkg.low_a", "pkg.low_b"))
CLEAN = {
    "__init__.py": "",
    "top.py": "from pkg.middle import run\n",
    "middle.py": "import pkg.low_a\nfrom pkg import low_b\n\ndef run():\n    from pkg.low_a import x\n",
    "low_a.py": "x = 1\n",
    "low_b.py": "import dask\n",
}


def _package(tmp_path: Path, changes: dict[str, str]) -> dict[str, set[str]]:
    root = tmp_path / "pkg"
    root.mkdir()
    for name, text in {**CLEAN, **changes}.items():
        (root / name).write_text(text, encoding="utf-8")
    return module_imports(root)


def test_a_clean_synthetic_package_passes(tmp_path):
    imports = _package(tmp_path, {})
    assert imports["pkg.middle"] == {"pkg.low_a", "pkg.low_b"}
    assert cycles(imports) == []
    assert upward_imports(imports, SYNTHETIC_LAYERS) == []
    assert misplaced_imports(imports, {"dask": "pkg.low_b"}) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"low_a.py": "from pkg.middle import run\n"}, ["pkg.low_a imports pkg.middle (a layer above)"]),
        (  # lazily, inside a function
            {"low_a.py": "def f():\n    from pkg.top import main\n"},
            ["pkg.low_a imports pkg.top (a layer above)"],
        ),
        (  # relative, under TYPE_CHECKING
            {"low_a.py": "import typing\nif typing.TYPE_CHECKING:\n    from .middle import run\n"},
            ["pkg.low_a imports pkg.middle (a layer above)"],
        ),
        (
            {"low_a.py": "import pkg.low_b\n"},
            ["pkg.low_a imports pkg.low_b (same layer: they are independent)"],
        ),
    ],
)
def test_an_upward_import_is_found(tmp_path, changes, expected):
    assert upward_imports(_package(tmp_path, changes), SYNTHETIC_LAYERS) == expected


@pytest.mark.parametrize(
    "changes",
    [
        {"low_a.py": "from pkg.middle import run\n"},
        {"low_a.py": "def f():\n    import pkg.top\n"},
        {"low_a.py": "from . import low_b\n", "low_b.py": "def f():\n    from .low_a import x\n"},
    ],
)
def test_a_cycle_is_found(tmp_path, changes):
    assert cycles(_package(tmp_path, changes)) != []


def test_dask_imported_elsewhere_is_found(tmp_path):
    imports = _package(tmp_path, {"middle.py": "def f():\n    from distributed import Client\n"})
    assert misplaced_imports(imports, {"distributed": "pkg.low_b"}) == [
        "pkg.middle imports distributed (only pkg.low_b may)"
    ]
