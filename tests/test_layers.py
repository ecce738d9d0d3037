"""The import arrows point one way (docs/architecture.md): read from the source files, imports
inside functions included, so that a circle held open by a late import is caught too."""

import ast
from pathlib import Path

import pytest

import multirobust

ROOT = Path(multirobust.__file__).parent


def _module_name(path: Path) -> str:
    parts = ["multirobust", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """The multirobust modules ``path`` imports, anywhere in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("multirobust"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("multirobust"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if _is_module(sub) else target)
    found.discard(name)
    return found


GRAPH = {_module_name(p): _imports(p) for p in ROOT.rglob("*.py")}


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        ("multirobust.cli", ("multirobust.cli", "multirobust.__main__")),
        ("multirobust.reports", ("multirobust.reports", "multirobust.cli")),
    ],
)
def test_top_layers_are_imported_only_from_above(package, allowed):
    wrong = sorted(
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        if not any(_in(m, a) for a in allowed)
        for t in targets
        if _in(t, package)
    )
    assert wrong == []


@pytest.mark.parametrize(
    "bottom", ["multirobust.atomic", "multirobust.pages", "multirobust.parallel"]
)
def test_the_bottom_layer_imports_no_other_multirobust_module(bottom):
    assert GRAPH[bottom] == set()


@pytest.mark.parametrize("lower", ["multirobust.data", "multirobust.models"])
def test_data_and_models_import_nothing_above_them(lower):
    above = ("attacks", "training", "evaluation", "reports", "robustness", "cli")
    wrong = sorted(
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        if _in(m, lower)
        for t in targets
        if any(_in(t, f"multirobust.{a}") for a in above)
    )
    assert wrong == []


def test_no_import_circle_inside_training():
    nodes = {m for m in GRAPH if _in(m, "multirobust.training") and m != "multirobust.training"}
    edges = {m: {t for t in GRAPH[m] if t in nodes} for m in nodes}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                return [*path, m, t]
            if t not in state and (cycle := visit(t, [*path, m])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(nodes):
        if m not in state:
            assert visit(m, []) is None
    assert "multirobust.training.config" not in GRAPH["multirobust.training.methods"]
