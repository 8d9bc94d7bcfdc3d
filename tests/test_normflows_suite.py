"""normflows' own unit tests, run on flowforge's compatibility package.

The ``*_test.py`` files shipped in the installed normflows wheel are copied into a temporary
folder at test time (never into this repository) with only their import lines changed:
``normflows`` becomes ``flowforge.compat.normflows``, and the two helper modules the tests share
(``flows/flow_test.py``, ``distributions/distribution_test.py``) are imported from the copy. Each
test method is one pytest case, so a failure names normflows' own test.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import shutil
import sys
import tempfile
import unittest
from pathlib import Path

import pytest

SPEC = importlib.util.find_spec("normflows")
SOURCE = Path(SPEC.origin).parent if SPEC is not None and SPEC.origin else None
PACKAGE = "_normflows_suite"  # the copy's package name
HELPERS = ("flows.flow_test", "distributions.distribution_test")


def wheel_test_files() -> list[Path]:
    return sorted(SOURCE.rglob("*_test.py")) if SOURCE is not None else []


def wheel_test_methods() -> list[tuple[str, str, str]]:
    """(module, class, method) for every ``test*`` method of every TestCase in the wheel's test files,
    found without importing them."""
    found = []
    for path in wheel_test_files():
        module = ".".join(path.relative_to(SOURCE).with_suffix("").parts)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                        found.append((module, node.name, item.name))
    return found


def rewrite_imports(source: str) -> str:
    """Change only the import statements: helpers to the copy, everything else to the compat package."""

    def module(name: str) -> str:
        inner = name[len("normflows") :].lstrip(".")
        if inner in HELPERS:
            return f"{PACKAGE}.{inner}"
        return "flowforge.compat.normflows" + (f".{inner}" if inner else "")

    source = re.sub(r"^(\s*from\s+)(normflows(?:\.\w+)*)(\s+import\b)", lambda m: m[1] + module(m[2]) + m[3],
                    source, flags=re.M)  # fmt: skip
    return re.sub(r"^(\s*import\s+)normflows\b", r"\1flowforge.compat.normflows", source, flags=re.M)


@pytest.fixture(scope="module")
def suite_root():
    root = Path(tempfile.mkdtemp(prefix="normflows-suite-"))
    for path in wheel_test_files():
        target = root / PACKAGE / path.relative_to(SOURCE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rewrite_imports(path.read_text()))
    for folder in [root / PACKAGE, *(p for p in (root / PACKAGE).rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    shutil.rmtree(root)


def test_the_wheel_ships_its_tests():
    if SOURCE is None:
        pytest.skip("normflows is not installed (it comes with the test extra)")
    assert len(wheel_test_methods()) == 52, "normflows 1.7.3 ships 52 test methods; a different version is installed?"


@pytest.mark.parametrize("module, cls, method", wheel_test_methods(), ids=lambda part: part)
def test_normflows_unit_test(suite_root, module, cls, method):
    imported = importlib.import_module(f"{PACKAGE}.{module}")
    case = getattr(imported, cls)(method)
    result = unittest.TestResult()
    case.run(result)
    problems = result.errors + result.failures
    assert not problems, problems[0][1]
    assert not result.skipped, result.skipped
