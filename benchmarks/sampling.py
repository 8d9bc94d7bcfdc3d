"""Sampling quality on targets with a known normaliser: ESS and log Z error of a plain flow, a flow
on a resampled base, and the plain flow followed by annealed HMC (stochastic layers, and AIS).

For each target a RealNVP is fitted by annealed reverse KL (the same steps and seed for both
bases); then 20000 importance weights give the normalised ESS and ``log Ẑ`` with its standard
error, and ``|log Ẑ − log Z|`` against the exact value (TwoModes: a fine grid; GMM-40: 0; many-well:
the quadrature in :class:`~flowforge.distributions.ManyWell`). The stochastic-layer model appends
``K`` HMC layers whose targets run from the fitted flow to ``p̃`` (``AnnealedTarget(flow, p̃, β_k)``)
and weighs with their ``ΔS``; AIS (:func:`flowforge.mcmc.annealed_importance_sampling`) does the
same with an adaptive step size.

    python -m benchmarks.sampling            # about 10 min on 2 cores
    python -m benchmarks.sampling --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import flowforge as nf
from flowforge import mcmc, metrics, training


def targets() -> dict[str, dict]:
    """Each target with its dimension, exact log Z, flow size, base spread and HMC step size."""
    two_modes = nf.distributions.TwoModes(2.0, 0.1)
    return {
        "TwoModes(2, 0.1)": {"target": two_modes, "log_z": metrics.grid_kl(
            nf.PlanarFlow(2, 1, p=two_modes), grid_size=1000)["log_z_grid"], "base_scale": 1.0, "step": 0.05},
        "GMM-40 (2-D)": {"target": nf.distributions.GaussianMixture40(), "log_z": 0.0, "base_scale": 20.0,
                         "step": 0.5},
        "many-well (32-D)": {"target": nf.distributions.ManyWell(32), "log_z": nf.distributions.ManyWell(32).log_z,
                             "base_scale": 1.5, "step": 0.1},
    }  # fmt: skip


def flow(spec: dict, resampled: bool) -> nf.NormalizingFlow:
    target = spec["target"]
    dim = target.n_dims
    if resampled:
        acceptance = nf.nets.MLP([dim, 64, 64, 1], init_zeros=True)
        q0 = nf.distributions.ResampledGaussian(dim, acceptance, truncation=100, num_z_samples=512)
        q0.proposal.log_scale.data.fill_(math.log(spec["base_scale"]))
    else:
        q0 = nf.distributions.DiagGaussian(dim)
        q0.log_scale.data.fill_(math.log(spec["base_scale"]))
    return nf.RealNVP(dim, 8, hidden=64, p=target, q0=q0)


def evaluate(model, log_z: float, samples: int) -> dict:
    model.eval()
    log_weights = metrics.importance_log_weights(model, samples, chunk=5000)
    estimate, error = metrics.log_normalizer(log_weights)
    return {"ess": float(metrics.effective_sample_size(log_weights)), "log_z": float(estimate),
            "se": float(error), "error": abs(float(estimate) - log_z)}  # fmt: skip


def with_hmc_layers(model, spec: dict, layers: int) -> nf.NormalizingFlow:
    """The fitted flow followed by ``layers`` HMC layers towards ``AnnealedTarget(flow, p̃, β)``."""
    fitted = nf.NormalizingFlow(model.q0, model.flows)  # q of the fitted flow, as a log_prob
    stochastic = [
        nf.flows.HamiltonianMonteCarlo(
            nf.distributions.AnnealedTarget(fitted, spec["target"], (index + 1) / layers),
            steps=1,
            leapfrog_steps=5,
            step_size=spec["step"],
        )  # fmt: skip
        for index in range(layers)
    ]
    return nf.NormalizingFlow(model.q0, list(model.flows) + stochastic, spec["target"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--samples", type=int, default=20000, help="importance samples per estimate")
    parser.add_argument("--hmc-layers", type=int, default=16)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.iterations, args.samples, args.hmc_layers = 20, 500, 2
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, flowforge {nf.__version__}")
    print(f"\nRealNVP x8 (MLP 2x64), reverse KL annealed over half of {args.iterations} steps, 256 samples a step;")
    print(f"{args.samples} importance samples; HMC: {args.hmc_layers} layers (or temperatures) of 5 leapfrog steps\n")
    print("| target | model | ESS | log Ẑ ± SE | abs(log Ẑ − log Z) | seconds |")
    print("|---|---|---:|---:|---:|---:|")
    for name, spec in targets().items():
        fitted = {}
        for label, resampled in (("flow", False), ("flow + resampled base", True)):
            torch.manual_seed(args.seed)
            model = flow(spec, resampled)
            start = time.perf_counter()
            training.fit(model, args.iterations, samples_per_step=256, anneal_iters=args.iterations // 2,
                      seed=args.seed, progress=False, device="cpu")  # fmt: skip
            result = evaluate(model, spec["log_z"], args.samples)
            fitted[label] = model
            _row(name, label, result, time.perf_counter() - start)
        plain = fitted["flow"]
        start = time.perf_counter()
        with torch.no_grad():
            result = evaluate(with_hmc_layers(plain, spec, args.hmc_layers), spec["log_z"], args.samples)
        _row(name, f"flow + {args.hmc_layers} HMC layers (SNF)", result, time.perf_counter() - start)
        start = time.perf_counter()
        ais = mcmc.annealed_importance_sampling(
            plain, num_samples=args.samples, num_temperatures=args.hmc_layers, step_size=spec["step"], leapfrog_steps=5
        )
        result = {"ess": ais.ess, "log_z": ais.log_z, "se": ais.log_z_se, "error": abs(ais.log_z - spec["log_z"])}
        _row(name, f"flow + AIS ({args.hmc_layers} temperatures, adaptive HMC)", result, time.perf_counter() - start)
        print(f"| {name} | exact log Z | | {spec['log_z']:.4f} | | |")


def _row(target: str, label: str, result: dict, seconds: float) -> None:
    print(f"| {target} | {label} | {result['ess']:.3f} | {result['log_z']:.3f} ± {result['se']:.3f} | "
          f"{result['error']:.3f} | {seconds:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
