"""A data fit that tests/test_distributed.py runs in one process and under ``torchrun`` with several: a
float64 flow with ActNorm and BatchNorm layers (``plain``), the same with a context and integer levels
dequantised in every batch (``conditional``), or one whose process 1 is given no data (``fail``).

    python tests/distributed/fit_worker.py OUT {plain,conditional,fail}

Process 0 (or the only process) saves the trained state dict and the fit's numbers to OUT.
"""

from __future__ import annotations

import argparse
import os

import torch

import flowforge as nf
from flowforge import flows
from flowforge.training import fit_data


def model(kind: str) -> nf.NormalizingFlow:
    torch.manual_seed(int(os.environ.get("RANK", "0")))  # different in each process: DDP must align them
    context = 3 if kind == "conditional" else None
    layers: list[flows.Flow] = [flows.ActNorm(2)]
    for index in range(4):
        mask = flows.alternating_mask(2, even=index % 2 == 0)
        layers.append(flows.RealNVPCoupling(2, 16, mask, context_features=context, init_identity=False))
        layers.append(flows.BatchNorm(2) if index == 1 else flows.ActNorm(2))
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(2), layers).double()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("kind", choices=["plain", "conditional", "fail"])
    args = parser.parse_args()
    data = nf.datasets.two_moons(150, seed=0).double()
    validation = nf.datasets.two_moons(40, seed=1).double()
    kwargs: dict = {}
    if args.kind == "conditional":
        data, validation = (data * 4 + 16).round().clamp(0, 31), (validation * 4 + 16).round().clamp(0, 31)
        kwargs = {
            "levels": 32,
            "train_context": torch.randn(150, 3, generator=torch.Generator().manual_seed(2)).double(),
            "validation_context": torch.randn(40, 3, generator=torch.Generator().manual_seed(3)).double(),
        }
    if args.kind == "fail" and os.environ.get("RANK") == "1":
        data = data[:0]  # rank 1 has no data: its fit refuses it
    flow = model(args.kind)
    # 150 rows in batches of 32: the last global batch (22 rows) is shorter
    result = fit_data(flow, data, validation, epochs=3, batch_size=32, lr=3e-3, seed=5, progress=False, **kwargs)
    if os.environ.get("RANK", "0") == "0":
        numbers = {"train": torch.tensor(result.train_nll), "validation": torch.tensor(result.validation_nll)}
        torch.save({"state": flow.state_dict(), **numbers}, args.out)


if __name__ == "__main__":
    main()
