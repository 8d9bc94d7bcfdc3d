"""normflows' ``nf.flows.affine.glow`` path: ``GlowBlock`` built from normflows' layers."""

from __future__ import annotations

from torch import nn

from .....flows.base import Flow
from .....flows.glow import GlowBlock as NativeGlowBlock
from ...nets.cnn import ConvNet2d
from ..mixing import Invertible1x1Conv
from ..normalization import ActNorm
from .coupling import AffineCouplingBlock

__all__ = ["Flow", "GlowBlock"]


class GlowBlock(NativeGlowBlock):
    r"""normflows' ``GlowBlock(channels, hidden_channels, scale=True, scale_map="sigmoid",
    split_mode="channel", leaky=0.0, init_zeros=True, use_lu=True, net_actnorm=False)`` (Kingma &
    Dhariwal 2018, https://arxiv.org/abs/1807.03039): in the sampling direction an affine coupling
    (normflows' :class:`AffineCouplingBlock` with a 3-1-3 ``ConvNet2d`` of ``hidden_channels``), an
    invertible 1x1 convolution (dropped for one channel) and an :class:`ActNorm` per channel, in
    normflows' order, directions and ``state_dict`` layout (``flows.0``, ``flows.1``, ``flows.2``).
    The split modes ``"channel"``, ``"channel_inv"`` and ``"checkerboard"``/``"checkerboard_inv"``
    size the conditioner as normflows does; one channel with a channel split is an error.
    """

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        scale: bool = True,
        scale_map: str = "sigmoid",
        split_mode: str = "channel",
        leaky: float = 0.0,
        init_zeros: bool = True,
        use_lu: bool = True,
        net_actnorm: bool = False,
    ):
        Flow.__init__(self)
        per_feature = 2 if scale else 1
        if split_mode == "channel":
            kept, moved = (channels + 1) // 2, channels // 2
        elif split_mode == "channel_inv":
            kept, moved = channels // 2, (channels + 1) // 2
        elif "checkerboard" in split_mode:
            kept = moved = channels
        else:
            raise ValueError(
                f"split_mode must be 'channel', 'channel_inv', 'checkerboard' or 'checkerboard_inv', got {split_mode!r}"
            )
        if kept < 1 or moved < 1:
            raise ValueError(f"GlowBlock with split_mode={split_mode!r} needs at least 2 channels, got {channels}")
        net = ConvNet2d(
            (kept, hidden_channels, hidden_channels, per_feature * moved), (3, 1, 3), leaky, init_zeros, net_actnorm
        )
        flows: list[Flow] = [AffineCouplingBlock(net, scale, scale_map, split_mode)]
        if channels > 1:
            flows.append(Invertible1x1Conv(channels, use_lu))
        flows.append(ActNorm((channels, 1, 1)))
        self.flows = nn.ModuleList(flows)
        self.channels = channels
