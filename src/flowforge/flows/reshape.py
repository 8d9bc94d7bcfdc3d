"""Reshaping layers of multi-scale image flows: Squeeze, Split and Merge (volume preserving).

As in normflows, ``Split.forward`` returns the two parts as a list ``[z1, z2]`` and ``Merge``
takes such a list, so ``[Split, AffineCoupling, Merge]`` chains work; log-dets are zeros of
shape ``(batch,)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Flow

SPLIT_MODES = ("channel", "channel_inv", "checkerboard", "checkerboard_inv")


class Squeeze(Flow):
    r"""Space-to-depth rearrangement of RealNVP / Glow (Dinh et al. 2017, https://arxiv.org/abs/1605.08803).

    Density direction (``inverse``): ``(C, H, W) -> (4C, H/2, W/2)``, each 2x2 block of a channel
    becoming 4 channels; sampling direction (``forward``): the reverse. ``log|det| = 0``.
    """

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if z.dim() != 4 or z.shape[1] % 4:
            raise ValueError(f"Squeeze.forward expects (batch, 4k, height, width), got {tuple(z.shape)}")
        b, c, h, w = z.shape
        x = z.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, 2 * h, 2 * w)
        return x, z.new_zeros(b)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(
                f"Squeeze.inverse expects (batch, channels, even height, even width), got {tuple(x.shape)}"
            )
        b, c, h, w = x.shape
        z = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)
        return z, x.new_zeros(b)


def _checkerboard_indices(event_shape: tuple[int, ...], inverted: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of the two colours: an element's colour is the parity of its index sum."""
    grids = torch.meshgrid(*(torch.arange(n, device=device) for n in event_shape), indexing="ij")
    parity = (torch.stack(grids).sum(0) % 2).reshape(-1)
    first = parity == (0 if inverted else 1)
    return torch.nonzero(first).flatten(), torch.nonzero(~first).flatten()


class Split(Flow):
    r"""Split the features into two parts ``[z1, z2]`` (forward) and join them back (inverse).

    Modes: ``"channel"`` (first and second half of dimension 1), ``"channel_inv"`` (the halves
    swapped), ``"checkerboard"`` / ``"checkerboard_inv"`` (alternating elements; the last
    dimension must be even, and each part has half of it). ``log|det| = 0``.
    """

    def __init__(self, mode: str = "channel"):
        super().__init__()
        if mode not in SPLIT_MODES:
            raise ValueError(f"mode must be one of {SPLIT_MODES}, got {mode!r}")
        self.mode = mode

    def _split(self, z: torch.Tensor) -> list[torch.Tensor]:
        if z.dim() < 2:
            raise ValueError(f"Split expects a batch of features, got shape {tuple(z.shape)}")
        if self.mode.startswith("channel"):
            first, second = torch.tensor_split(z, [(z.shape[1] + 1) // 2], dim=1)
            return [first, second] if self.mode == "channel" else [second, first]
        if z.shape[-1] % 2:
            raise ValueError(
                f"a checkerboard split expects input of shape (batch, ..., even size), got {tuple(z.shape)}"
            )
        first, second = _checkerboard_indices(tuple(z.shape[1:]), self.mode.endswith("inv"), z.device)
        flat = z.reshape(z.shape[0], -1)
        part_shape = (z.shape[0], *z.shape[1:-1], z.shape[-1] // 2)
        return [flat[:, first].view(part_shape), flat[:, second].view(part_shape)]

    def _merge(self, parts) -> torch.Tensor:
        first, second = parts
        if first.shape != second.shape and not self.mode.startswith("channel"):
            raise ValueError(
                f"checkerboard merge needs parts of equal shape, got {tuple(first.shape)} and {tuple(second.shape)}"
            )
        if self.mode == "channel":
            return torch.cat([first, second], 1)
        if self.mode == "channel_inv":
            return torch.cat([second, first], 1)
        shape = (*first.shape[1:-1], 2 * first.shape[-1])
        first_index, second_index = _checkerboard_indices(shape, self.mode.endswith("inv"), first.device)
        flat = first.new_empty(first.shape[0], first[0].numel() * 2)
        flat = flat.index_copy(1, first_index, first.reshape(first.shape[0], -1))
        flat = flat.index_copy(1, second_index, second.reshape(second.shape[0], -1))
        return flat.view(first.shape[0], *shape)

    # Split and Merge keep normflows' interface: their value on one side is the list of parts
    # [z1, z2], not a tensor as Flow declares, so they compose only in chains such as
    # [Split, AffineCoupling, Merge] (whose AffineCoupling takes and returns such lists too).
    def forward(self, z: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:  # type: ignore[override]
        return self._split(z), z.new_zeros(z.shape[0])

    def inverse(self, parts: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        merged = self._merge(parts)
        return merged, merged.new_zeros(merged.shape[0])


class Merge(Split):
    """:class:`Split` with the directions exchanged: ``forward`` joins ``[z1, z2]``, ``inverse`` splits."""

    # The directions of Split exchanged, so the value types are too (see Split.forward).
    def forward(self, parts: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return super().inverse(parts)

    def inverse(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:  # type: ignore[override]
        return super().forward(x)
