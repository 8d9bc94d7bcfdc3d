"""normflows' ``state_dict`` layout on compat classes.

A compat class whose native parameters are named or shaped differently from normflows' registers two
converters with :func:`normflows_state`: ``save`` turns the module's own entries (keys relative to the
module, e.g. ``"parameters_uwb"``) into normflows' (``"u"``, ``"w"``, ``"b"``), and ``load`` does the
reverse. ``state_dict()`` then writes normflows' keys, and ``load_state_dict`` accepts them, so a
checkpoint moves between normflows and ``flowforge.compat.normflows`` both ways; a state dict in the
native layout still loads (``load`` only sees the entries it knows). Only the module's own entries
pass through the converters; its submodules' keys are left to the submodules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

Entries = dict[str, torch.Tensor]
Converter = Callable[[Entries], Entries]


def _own(state: Mapping[str, Any], prefix: str) -> list[str]:
    """The keys of ``state`` under ``prefix`` that belong to the module itself, not to a submodule."""
    return [key for key in state if key.startswith(prefix) and "." not in key[len(prefix) :]]


class _SaveHook:
    """``state_dict`` hook: the module's own entries through ``save`` (a class, so that models pickle)."""

    def __init__(self, save: Converter):
        self.save = save

    def __call__(self, owner: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
        native = {key[len(prefix) :]: state.pop(key) for key in _own(state, prefix)}
        for key, value in self.save(native).items():
            state[prefix + key] = value


class _LoadHook:
    """``load_state_dict`` pre-hook: entries in normflows' layout through ``load``; the native layout as is."""

    def __init__(self, load: Converter):
        self.load = load

    def __call__(self, module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
        keys = _own(state, prefix)
        given = {key[len(prefix) :]: state[key] for key in keys}
        native_names = {name for name, _ in module.named_parameters(recurse=False)}
        native_names |= {name for name, _ in module.named_buffers(recurse=False)}
        if not given or set(given) <= native_names:
            return  # already the native layout (or nothing of this module)
        for key in keys:
            del state[key]
        for key, value in self.load(given).items():
            state[prefix + key] = value


def normflows_state(module: nn.Module, save: Converter, load: Converter) -> None:
    """Make ``module.state_dict()`` use normflows' layout (``save``) and ``load_state_dict`` accept it
    (``load``). Both converters map the module's own entries, keyed relative to the module, to new
    entries; they must not change values in place, and must pickle (module-level functions, bound
    methods or :class:`Renamed`) so that ``torch.save(model)`` works."""
    module._register_state_dict_hook(_SaveHook(save))
    module._register_load_state_dict_pre_hook(_LoadHook(load), with_module=True)


class Renamed:
    """``save``/``load`` converters for a renaming ``{native: normflows}`` of entries, each optionally
    given a leading axis of length 1 in normflows' layout (``unsqueeze``)."""

    def __init__(self, pairs: Mapping[str, str], unsqueeze: bool = False):
        self.pairs, self.back, self.unsqueeze = dict(pairs), {new: old for old, new in pairs.items()}, unsqueeze

    def save(self, entries: Entries) -> Entries:
        return {self.pairs.get(k, k): v.unsqueeze(0) if self.unsqueeze else v for k, v in entries.items()}

    def load(self, entries: Entries) -> Entries:
        return {self.back.get(k, k): v.squeeze(0) if self.unsqueeze else v for k, v in entries.items()}


def renamed(pairs: Mapping[str, str], unsqueeze: bool = False) -> tuple[Converter, Converter]:
    """``(save, load)`` of :class:`Renamed`: a plain renaming ``{native: normflows}``."""
    renaming = Renamed(pairs, unsqueeze)
    return renaming.save, renaming.load
