"""normflows' ``nf.flows.planar`` path: ``Planar`` with normflows' ``state_dict`` (``u``, ``w``, ``b``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ....flows.base import Flow
from ....flows.planar import Planar as NativePlanar
from .._state import Entries, normflows_state

__all__ = ["Flow", "Planar"]


class Planar(NativePlanar):
    r"""normflows' ``Planar(shape, act="tanh", u=None, w=None, b=None)`` (Rezende & Mohamed 2015,
    https://arxiv.org/abs/1505.05770): ``x = z + û h(wᵀz + b)``, ``log|det| = log(1 + wᵀû h'(wᵀz + b))``
    with ``û = u + (softplus(wᵀu) − 1 − wᵀu) w / ‖w‖²`` (flowforge's layer, same formulas and
    ``leaky_relu`` slope 0.2). Its ``state_dict`` is normflows' ``u`` and ``w`` of shape
    ``(1, *shape)`` and ``b`` of shape ``(1,)`` (flowforge packs them into one parameter). Unlike
    normflows, ``inverse`` also works for ``tanh`` (by bisection and a Newton step)."""

    def __init__(
        self,
        shape: int | Iterable[int],
        act: str = "tanh",
        u: torch.Tensor | None = None,
        w: torch.Tensor | None = None,
        b: torch.Tensor | float | None = None,
    ):
        super().__init__(shape, act, u, w, b)
        normflows_state(self, self._save_uwb, self._load_uwb)

    def _save_uwb(self, entries: Entries) -> Entries:
        out = {key: value for key, value in entries.items() if key != "parameters_uwb"}
        if "parameters_uwb" in entries:
            u, w, b = torch.split(entries["parameters_uwb"], [self.dim, self.dim, 1])
            out.update(u=u.reshape(1, *self.shape), w=w.reshape(1, *self.shape), b=b.reshape(1))
        return out

    def _load_uwb(self, entries: Entries) -> Entries:
        out = {key: value for key, value in entries.items() if key not in ("u", "w", "b")}
        if {"u", "w", "b"} <= set(entries):
            parts = [entries[name].reshape(-1) for name in ("u", "w", "b")]
            if [p.numel() for p in parts] != [self.dim, self.dim, 1]:
                raise ValueError(
                    f"Planar of shape {self.shape} expects u and w of {self.dim} elements and one b, got "
                    f"{[tuple(entries[name].shape) for name in ('u', 'w', 'b')]}"
                )
            out["parameters_uwb"] = torch.cat(parts)
        return out
