"""The package's layering (docs/design.md, "Layers of the house"): every module imports only from its own
layer or the layers below it, at the top of the file. A cycle or an upward import fails here."""

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "flowforge"

# Bottom first; the same table as docs/design.md. A module is matched by its longest listed prefix.
LAYERS = [
    ["utils", "importance", "progress", "version"],
    ["nets", "datasets", "streaming"],
    ["flows.base", "mcmc"],
    ["flows", "distributions"],
    ["losses", "fab"],
    ["model", "vae"],
    ["presets", "metrics"],
    ["training", "export", "sbi"],
    ["plot"],
    ["compat"],
    ["cli", "__main__"],
    ["__init__"],
]
RANK = {prefix: rank for rank, prefixes in enumerate(LAYERS) for prefix in prefixes}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def rank_of(module: str) -> int:
    parts = module.split(".")
    for length in range(len(parts), 0, -1):
        prefix = ".".join(parts[:length])
        if prefix in RANK:
            return RANK[prefix]
    raise AssertionError(f"flowforge.{module} is in no layer of docs/design.md; add it to the table there and here")


def imported_modules(path: Path) -> list[tuple[str, int, bool]]:
    """``(flowforge module, line, at top level)`` for each import of a flowforge module in ``path``."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                module = ".".join([*base, node.module] if node.module else base)
                names = [module] if node.module else [".".join([*base, alias.name]).strip(".") for alias in node.names]
            elif node.module and node.module.split(".")[0] == "flowforge":
                names = [node.module.removeprefix("flowforge").strip(".") or "__init__"]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [a.name.removeprefix("flowforge.") for a in node.names if a.name.startswith("flowforge.")]
        else:
            continue
        found += [(as_module(name.strip(".")), node.lineno, id(node) in top_level) for name in names]
    return found


def as_module(name: str) -> str:
    """``name`` if it is a flowforge module, else the package it is an attribute of (``from . import __version__``)."""
    parts = name.split(".") if name else []
    while parts and not (SOURCE.joinpath(*parts).with_suffix(".py").exists() or SOURCE.joinpath(*parts).is_dir()):
        parts.pop()
    return ".".join(parts) or "__init__"


MODULES = sorted(p for p in SOURCE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SOURCE)))
def test_imports_point_down_and_sit_at_the_top(path):
    importer = module_name(path)
    own = rank_of(importer) if importer else RANK["__init__"]
    for module, line, top_level in imported_modules(path):
        if module == importer or module.startswith(importer + ".") and path.name == "__init__.py":
            continue
        assert top_level, f"{path.name}:{line} imports flowforge.{module} inside a function (hides a cycle)"
        assert rank_of(module) <= own, (
            f"{path.relative_to(SOURCE)}:{line} imports flowforge.{module} from a higher layer "
            f"({rank_of(module)} > {own}); see docs/design.md"
        )


def test_the_table_names_every_module():
    for path in MODULES:
        rank_of(module_name(path) or "__init__")
