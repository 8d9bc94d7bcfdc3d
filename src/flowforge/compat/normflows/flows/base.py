"""normflows' ``nf.flows.base`` path: ``Flow``, ``Reverse``, ``Composite`` and ``zero_log_det_like_z``.

``Flow`` and ``Reverse`` are flowforge's (same arguments, same ``state_dict``: ``Reverse`` holds its
layer as ``flow``). ``Composite`` keeps its layers under normflows' name ``_flows``, so its
``state_dict`` keys are normflows' (``_flows.0.s``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import torch

from ....flows.base import Composite as NativeComposite
from ....flows.base import Flow, Reverse


class Composite(NativeComposite):
    r"""normflows' ``Composite(flows)``: ``forward`` applies the layers in order and sums their
    log-determinants, ``inverse`` applies their inverses in reverse order. The layers are the
    ``_flows`` :class:`~torch.nn.ModuleList`, as in normflows. Unlike normflows, the summed
    log-determinant has the input's dtype and device (normflows starts from a float32 CPU zero)."""

    def __init__(self, flows: Iterable[Flow]):
        super().__init__(flows)
        layers = self.flows
        del self.flows
        self._flows = layers

    def _layers(self) -> Sequence[Flow]:
        return cast("Sequence[Flow]", self._flows)


def zero_log_det_like_z(z: torch.Tensor) -> torch.Tensor:
    """A log-determinant of zeros for the batch of ``z``: shape ``(batch,)``, ``z``'s dtype and device."""
    return torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)


__all__ = ["Composite", "Flow", "Reverse", "zero_log_det_like_z"]
