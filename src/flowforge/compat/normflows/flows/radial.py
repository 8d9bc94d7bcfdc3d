"""normflows' ``nf.flows.radial`` path: ``Radial`` with normflows' parameterisation and ``state_dict``."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from ....flows.base import Flow
from ....flows.radial import Radial as NativeRadial
from .._state import Entries, normflows_state

__all__ = ["Flow", "Radial"]


class Radial(NativeRadial):
    r"""normflows' ``Radial(shape, z_0=None)`` (Rezende & Mohamed 2015, https://arxiv.org/abs/1505.05770):
    ``x = z + β (z − z₀) / (α + r)``, ``r = ‖z − z₀‖``,
    ``log|det| = (d − 1) log(1 + β/(α + r)) + log(1 + βα/(α + r)²)``, with normflows'
    parameterisation ``α = |alpha|`` and ``β = softplus(beta) − |alpha|`` (flowforge's own layer uses
    ``α = softplus(·)``) and its initialisation (``beta ~ U(−1 − 1/d, −1 + 1/d)``,
    ``alpha ~ U(−1/d, 1/d)``, ``z₀ ~ N(0, I)``, drawn in normflows' order, so a seed gives normflows'
    initial values). ``state_dict``: ``z_0`` of shape ``(1, *shape)``,
    ``alpha``, ``beta`` and the buffer ``d``. ``inverse`` is flowforge's closed form (normflows has none).
    """

    def __init__(self, shape: int | Iterable[int], z_0: torch.Tensor | None = None):
        state = torch.get_rng_state()
        super().__init__(shape, z_0)
        torch.set_rng_state(state)  # draw again, as normflows does: the same seed gives normflows' values
        bound = 1.0 / self.dim
        with torch.no_grad():
            self.beta_raw.uniform_(-bound - 1.0, bound - 1.0)
            self.alpha_raw.uniform_(-bound, bound)
            if z_0 is None:
                self.z_0.copy_(torch.randn(self.dim))
        normflows_state(self, self._save, self._load)

    def _alpha_beta(self) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = torch.abs(self.alpha_raw)
        return alpha, F.softplus(self.beta_raw) - alpha

    def _save(self, entries: Entries) -> Entries:
        out = {key: value for key, value in entries.items() if key not in ("z_0", "alpha_raw", "beta_raw")}
        if "z_0" in entries:
            out["z_0"] = entries["z_0"].reshape(1, *self.shape)
        if "alpha_raw" in entries:
            out["alpha"] = entries["alpha_raw"]
        if "beta_raw" in entries:
            out["beta"] = entries["beta_raw"]
        out["d"] = torch.tensor(self.dim)
        return out

    def _load(self, entries: Entries) -> Entries:
        out = {key: value for key, value in entries.items() if key not in ("z_0", "alpha", "beta", "d")}
        if "z_0" in entries:
            out["z_0"] = entries["z_0"].reshape(self.dim)
        if "alpha" in entries:
            out["alpha_raw"] = entries["alpha"]
        if "beta" in entries:
            out["beta_raw"] = entries["beta"]
        return out
