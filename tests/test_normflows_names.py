"""Every public name of normflows 1.7.3 at its module path in flowforge.compat.normflows, with
normflows' parameters in normflows' order and normflows' defaults (classes' ``__init__`` and
functions alike). The modules are found by walking the installed normflows package."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import torch

normflows = pytest.importorskip("normflows")

IMPORTED_HELPERS = {"np", "torch", "nn", "F", "init", "flows", "distributions", "nets", "utils", "Split", "Merge"}
"""Names normflows' modules import for their own use (``np``, ``torch``, ``..flows``), not its API."""

DEFAULTS_DIFFER = {
    ("NormalizingFlowVAE", "q0"): "normflows' default is one Dirac() made at import; None builds one per model",
    ("bitsPerDim", "trans_param"): "the tuple (0.05,) where normflows has the list [0.05] (same meaning)",
    ("bitsPerDimDataset", "trans_param"): "the tuple (0.05,) where normflows has the list [0.05] (same meaning)",
}
"""(name, parameter): a default that differs on purpose, and why."""


def normflows_modules() -> list[str]:
    found = [""]
    for info in pkgutil.walk_packages(normflows.__path__, prefix="normflows."):
        if not info.name.split(".")[-1].endswith("_test"):
            found.append(info.name.removeprefix("normflows."))
    return sorted(found)


def normflows_names() -> list[tuple[str, str]]:
    names = []
    for path in normflows_modules():
        module = importlib.import_module("normflows" + (f".{path}" if path else ""))
        public = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
        for name in public:
            value = getattr(module, name)
            if name in IMPORTED_HELPERS or name.endswith("_test"):
                continue
            if inspect.ismodule(value) and not value.__name__.startswith("normflows"):
                continue
            home = getattr(value, "__module__", "") or ""
            if (inspect.isclass(value) or inspect.isfunction(value)) and not home.startswith("normflows"):
                continue  # torch's or numpy's names that a normflows module imports
            names.append((path, name))
    return names


def _parameters(value: object) -> dict[str, inspect.Parameter] | None:
    if inspect.isclass(value):
        if value.__init__ is object.__init__:
            return None
        return dict(list(inspect.signature(value.__init__).parameters.items())[1:])  # without self
    if inspect.isfunction(value):
        return dict(inspect.signature(value).parameters)
    return None


@pytest.mark.parametrize("path, name", normflows_names(), ids=lambda part: part or "normflows")
def test_normflows_name_is_at_its_path_with_its_signature(path, name):
    theirs = getattr(importlib.import_module("normflows" + (f".{path}" if path else "")), name)
    compat = importlib.import_module("flowforge.compat.normflows" + (f".{path}" if path else ""))
    assert hasattr(compat, name), f"flowforge.compat.normflows{'.' + path if path else ''} lacks {name}"
    ours = getattr(compat, name)
    if inspect.ismodule(theirs):
        assert inspect.ismodule(ours), f"{name} is a module in normflows"
        return
    expected, got = _parameters(theirs), _parameters(ours)
    if expected is None:
        return
    assert got is not None, f"{name}: normflows' takes {list(expected)}"
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    positional = [p for p in expected if expected[p].kind not in variadic]  # normflows' *args: anything goes
    assert list(got)[: len(positional)] == positional, f"{name}: parameters {list(got)} vs normflows' {positional}"
    for parameter in expected.values():
        if parameter.default is inspect.Parameter.empty or (name, parameter.name) in DEFAULTS_DIFFER:
            continue
        default = got[parameter.name].default
        if isinstance(parameter.default, torch.Tensor):
            assert torch.equal(default, parameter.default), f"{name}.{parameter.name}"
        else:
            assert default == parameter.default, f"{name}.{parameter.name}: {default!r} vs {parameter.default!r}"
