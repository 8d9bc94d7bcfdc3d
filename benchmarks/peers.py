"""The same models in flowforge and, when installed, normflows, zuko and nflows.

Each builder returns a :class:`Contender`: ``log_prob(x)``, ``sample(n)`` and a plain training
step (``zero_grad``, ``−mean log q(batch)``, ``backward``, Adam step), the loop each library's
documentation shows. flowforge trains through ``flowforge.training.fit`` (its own loop), so it has
no step here. Sizes follow the issue: 2-D couplings with an MLP conditioner of two hidden
layers, 64-D autoregressive flows with MADEs of two hidden layers; spline flows have 8 bins,
linear tails outside ±5.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import flowforge

PEERS = ("normflows", "zuko", "nflows")
BINS, BOUND = 8, 5.0


def available(name: str):
    """The peer's module, or None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Module:
    """Two hidden layers with ReLU, last layer zero (every library's flow starts at the identity)."""
    net = nn.Sequential(
        nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, outputs)
    )
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


class IgnoreContext(nn.Module):
    """An MLP conditioner for layers that call ``net(inputs, context)`` (nflows' couplings)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, inputs: torch.Tensor, context=None) -> torch.Tensor:
        return self.net(inputs)


@dataclass
class Contender:
    library: str
    model: nn.Module
    log_prob: Callable[[torch.Tensor], torch.Tensor]
    sample: Callable[[int], torch.Tensor]

    def trainer(self, lr: float = 1e-3) -> Callable[[torch.Tensor], torch.Tensor]:
        optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)

        def step(batch: torch.Tensor) -> torch.Tensor:
            optimizer.zero_grad()
            loss = -self.log_prob(batch).mean()
            loss.backward()
            optimizer.step()
            return loss

        return step


def _normflows_style(library, flows: list[nn.Module], dim: int) -> Contender:
    model = library.NormalizingFlow(library.distributions.DiagGaussian(dim, trainable=False), flows)
    return Contender(library.__name__, model, model.log_prob, lambda n: model.sample(n)[0])


def _zuko(flow) -> Contender:
    return Contender("zuko", flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)))


def _nflows(transforms: list, dim: int) -> Contender:
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.base import CompositeTransform

    model = Flow(CompositeTransform(transforms), StandardNormal([dim]))
    return Contender("nflows", model, model.log_prob, model.sample)


def affine_coupling(library: str, dim: int = 2, layers: int = 8, hidden: int = 64) -> Contender:
    """RealNVP: affine couplings on alternating halves (a swap between layers)."""
    half = dim // 2
    if library in ("flowforge", "normflows"):
        lib = flowforge if library == "flowforge" else importlib.import_module("normflows")
        flows = []
        for _ in range(layers):
            flows += [
                lib.flows.AffineCouplingBlock(lib.nets.MLP([half, hidden, hidden, 2 * (dim - half)], init_zeros=True))
            ]
            flows += [lib.flows.Permute(dim, mode="swap")]
        return _normflows_style(lib, flows, dim)
    if library == "zuko":
        zuko = importlib.import_module("zuko")
        return _zuko(zuko.flows.RealNVP(dim, transforms=layers, hidden_features=(hidden, hidden)))
    from nflows.transforms.coupling import AffineCouplingTransform

    masks = [torch.arange(dim) % 2 == index % 2 for index in range(layers)]
    return _nflows(
        [AffineCouplingTransform(mask.int(), lambda i, o: IgnoreContext(mlp(i, hidden, o))) for mask in masks], dim
    )


def spline_coupling(library: str, dim: int = 2, layers: int = 8, hidden: int = 64) -> Contender:
    """NSF: rational-quadratic spline couplings on alternating halves."""
    if library == "flowforge":
        flows = []
        for index in range(layers):
            mask = flowforge.flows.alternating_mask(dim, even=index % 2 == 0)
            kept = int(mask.sum())
            net = flowforge.nets.MLP([kept, hidden, hidden, (dim - kept) * 3 * BINS], init_zeros=True)
            flows.append(
                flowforge.flows.RationalQuadraticCoupling(
                    dim, hidden, num_bins=BINS, tail_bound=BOUND, mask=mask, net=net
                )
            )
        return _normflows_style(flowforge, flows, dim)
    if library == "normflows":
        normflows = importlib.import_module("normflows")
        from normflows.flows.neural_spline.coupling import PiecewiseRationalQuadraticCoupling
        from normflows.utils.masks import create_alternating_binary_mask

        flows = []
        for index in range(layers):
            layer = normflows.flows.CoupledRationalQuadraticSpline(dim, 1, hidden, num_bins=BINS, tail_bound=BOUND)
            # The same layer with the MLP conditioner and without normflows' extra unconditional splines.
            layer.prqct = PiecewiseRationalQuadraticCoupling(
                create_alternating_binary_mask(dim, even=index % 2 == 1),
                lambda i, o: IgnoreContext(mlp(i, hidden, o)), num_bins=BINS, tails="linear", tail_bound=BOUND,
            )  # fmt: skip
            flows.append(layer)
        return _normflows_style(normflows, flows, dim)
    if library == "zuko":
        zuko = importlib.import_module("zuko")
        return _zuko(zuko.flows.NSF(dim, bins=BINS, transforms=layers, passes=2, hidden_features=(hidden, hidden)))
    from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform

    transforms = [
        PiecewiseRationalQuadraticCouplingTransform(
            (torch.arange(dim) % 2 == index % 2).int(),
            lambda i, o: IgnoreContext(mlp(i, hidden, o)),
            num_bins=BINS,
            tails="linear",
            tail_bound=BOUND,
        )  # fmt: skip
        for index in range(layers)
    ]
    return _nflows(transforms, dim)


def autoregressive(library: str, kind: str, dim: int = 64, layers: int = 4, hidden: int = 128) -> Contender:
    """MAF (``kind="affine"``) or autoregressive NSF (``kind="spline"``): MADEs with two plain
    hidden layers, the order reversed between layers."""
    if library in ("flowforge", "normflows"):
        lib = flowforge if library == "flowforge" else importlib.import_module("normflows")
        flows = []
        for index in range(layers):
            if kind == "affine":
                flows.append(
                    lib.flows.MaskedAffineAutoregressive(
                        dim, hidden, num_blocks=2 if lib is flowforge else 1, use_residual_blocks=False
                    )
                )
            elif lib is flowforge:
                flows.append(
                    flowforge.flows.RationalQuadraticAutoregressive(
                        dim, hidden, num_bins=BINS, tail_bound=BOUND, use_residual_blocks=False
                    )
                )
            else:
                flows.append(_normflows_spline_autoregressive(lib, dim, hidden))
            if index < layers - 1:
                flows.append(_reverse(lib, dim))
        return _normflows_style(lib, flows, dim)
    if library == "zuko":
        zuko = importlib.import_module("zuko")
        flow_class = zuko.flows.MAF if kind == "affine" else zuko.flows.NSF
        extra = {} if kind == "affine" else {"bins": BINS}
        return _zuko(flow_class(dim, transforms=layers, hidden_features=(hidden, hidden), **extra))
    from nflows.transforms.autoregressive import (
        MaskedAffineAutoregressiveTransform,
        MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
    )
    from nflows.transforms.permutations import ReversePermutation

    transforms = []
    for index in range(layers):
        if kind == "affine":
            transforms.append(MaskedAffineAutoregressiveTransform(dim, hidden, num_blocks=1, use_residual_blocks=False))
        else:
            transforms.append(
                MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                    dim,
                    hidden,
                    num_bins=BINS,
                    tails="linear",
                    tail_bound=BOUND,
                    num_blocks=1,
                    use_residual_blocks=False,
                )
            )
        if index < layers - 1:
            transforms.append(ReversePermutation(dim))
    return _nflows(transforms, dim)


def _reverse(lib, dim: int) -> nn.Module:
    """A fixed order reversal (flowforge's ``Permute(dim, "reverse")``; normflows' equivalent)."""
    if lib is flowforge:
        return flowforge.flows.Permute(dim, "reverse")
    layer = lib.flows.Permute(dim, mode="shuffle")
    layer.perm.copy_(torch.arange(dim - 1, -1, -1))
    layer.inv_perm.copy_(torch.arange(dim - 1, -1, -1))
    return layer


def _normflows_spline_autoregressive(lib, dim: int, hidden: int) -> nn.Module:
    layer = lib.flows.AutoregressiveRationalQuadraticSpline(dim, 1, hidden, num_bins=BINS, tail_bound=BOUND)
    from normflows.flows.neural_spline.autoregressive import MaskedPiecewiseRationalQuadraticAutoregressive

    layer.mprqat = MaskedPiecewiseRationalQuadraticAutoregressive(
        features=dim, hidden_features=hidden, num_bins=BINS, tails="linear", tail_bound=BOUND,
        num_blocks=1, use_residual_blocks=False, activation=nn.ReLU(),
    )  # fmt: skip
    return layer


# ----------------------------------------------------------------------------- the seed workflow as a script

NORMFLOWS_SEED_WORKFLOW = """\
# The seed workflow as a normflows user writes it (examples/seed_demo.py with `import normflows as nf`):
# 16 Planar layers on TwoModes(2, 0.1), reverse KL annealed, Adam, a 2^20-point histogram saved as a
# PNG every 200 steps, and the target, initial and learned pictures. Written by benchmarks/peers.py,
# which fills in the sizes; no tqdm bar (the flowforge command it is timed against runs with
# --no-progress).
import matplotlib
matplotlib.use("Agg")
import numpy as np
import torch
import normflows as nf
from matplotlib import pyplot as plt

torch.manual_seed(@SEED@)
K = 16
device = torch.device("@DEVICE@")
flows = []
for i in range(K):
    flows += [nf.flows.Planar((2,))]
target = nf.distributions.TwoModes(2, 0.1)
q0 = nf.distributions.DiagGaussian(2)
nfm = nf.NormalizingFlow(q0=q0, flows=flows, p=target)
nfm.to(device)

grid_size = 200
picture_samples = @SAMPLES@
xx, yy = torch.meshgrid(torch.linspace(-3, 3, grid_size), torch.linspace(-3, 3, grid_size), indexing="ij")
z = torch.cat([xx.unsqueeze(2), yy.unsqueeze(2)], 2).view(-1, 2)
prob = torch.exp(target.log_prob(z.to(device)).to("cpu").view(*xx.shape))
plt.figure(figsize=(10, 10))
plt.pcolormesh(xx, yy, prob)
plt.savefig("target.png")


def picture(path, figure=None):
    z, _ = nfm.sample(num_samples=picture_samples)
    z_np = z.to("cpu").data.numpy()
    if figure is None:
        plt.figure(figsize=(10, 10))
    else:
        plt.figure(figure, figsize=(10, 10))
        plt.clf()
    plt.hist2d(z_np[:, 0].flatten(), z_np[:, 1].flatten(), (grid_size, grid_size), range=[[-3, 3], [-3, 3]])
    plt.savefig(path)


picture("initial.png")
max_iter = @ITERATIONS@
num_samples = 2 * 20
anneal_iter = @ANNEAL@
show_iter = @FRAME_EVERY@
loss_hist = np.array([])
optimizer = torch.optim.Adam(nfm.parameters(), lr=1e-3, weight_decay=1e-4)
for it in range(max_iter):
    optimizer.zero_grad()
    loss = nfm.reverse_kld(num_samples, beta=np.min([1.0, 0.01 + it / anneal_iter]))
    loss.backward()
    optimizer.step()
    loss_hist = np.append(loss_hist, loss.to("cpu").data.numpy())
    if (it + 1) % show_iter == 0:
        picture(f"frame-{it + 1}.png", figure=1)
picture("learned.png")
"""


def normflows_seed_workflow(iterations: int, anneal: int, frame_every: int, samples: int, seed: int = 0,
                            device: str = "cpu") -> str:  # fmt: skip
    """The text of :data:`NORMFLOWS_SEED_WORKFLOW` with its sizes filled in: a script to run with
    ``python script.py`` in an empty folder (it writes its pictures there)."""
    text = NORMFLOWS_SEED_WORKFLOW
    values = {"SEED": seed, "DEVICE": device, "SAMPLES": samples, "ITERATIONS": iterations,
              "ANNEAL": anneal, "FRAME_EVERY": frame_every}  # fmt: skip
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    return text
