"""normflows' signatures on flowforge's constructors.

A compat class names its normflows parameters once, in normflows' order and with normflows'
defaults (:func:`signature`), and maps the bound arguments onto its native class in one function
(:func:`normflows_init`), instead of spelling out a signature per class. :func:`made_init` does this
for the classes built on flowforge's MADE, whose positional parameters already are nflows'.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from ...nets.made import refuse_batch_norm

_POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
REQUIRED = inspect.Parameter.empty


def signature(parameters: Iterable[tuple[str, Any]]) -> inspect.Signature:
    """``(self, name=default, ...)`` for the ``(name, default)`` pairs in their order (``REQUIRED``: no default)."""
    return inspect.Signature(
        [inspect.Parameter("self", _POSITIONAL)]
        + [inspect.Parameter(name, _POSITIONAL, default=default) for name, default in parameters]
    )


def normflows_init(parameters: inspect.Signature, build: Callable[[Any, dict[str, Any]], None]) -> Callable[..., None]:
    """An ``__init__`` that takes the arguments of ``parameters`` (after ``self``), by position or by
    name (a TypeError for a missing, extra or unknown one, as Python gives), fills in the defaults,
    and calls ``build(self, arguments)`` with them by name. ``inspect.signature`` and ``help`` show
    ``parameters``."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            bound = parameters.bind(self, *args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{type(self).__name__}.__init__() {error}") from None
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        del arguments["self"]
        build(self, arguments)

    __init__.__signature__ = parameters  # type: ignore[attr-defined]
    return __init__


def made_init(native: type[nn.Module]) -> Callable[..., None]:
    """normflows' ``__init__`` for ``native``, flowforge's MADE or a flow built on it: ``native``'s
    positional parameters (nflows' order and defaults, which flowforge keeps), then normflows'
    ``use_batch_norm=False``. ``True`` is refused (flowforge's MADE has no batch norm), and
    ``native``'s keyword-only parameters are not taken, as normflows has none."""
    native_init = native.__init__
    kept = [p for p in inspect.signature(native_init).parameters.values() if p.kind is _POSITIONAL]
    parameters = inspect.Signature(
        [*kept, inspect.Parameter("use_batch_norm", _POSITIONAL, default=False, annotation="bool")]
    )

    def build(self: Any, arguments: dict[str, Any]) -> None:
        refuse_batch_norm(arguments.pop("use_batch_norm"))
        native_init(self, **arguments)

    return normflows_init(parameters, build)
