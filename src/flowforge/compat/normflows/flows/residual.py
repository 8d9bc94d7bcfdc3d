"""normflows' ``nf.flows.residual`` path: ``Residual`` with normflows' argument order."""

from __future__ import annotations

from torch import nn

from ....flows.residual import Residual as NativeResidual


class Residual(NativeResidual):
    r"""normflows' ``Residual(net, reverse=True, reduce_memory=True, geom_p=0.5, lamb=2.0,
    n_power_series=None, exact_trace=False, brute_force=False, n_samples=1, n_exact_terms=2,
    n_dist="geometric")`` on flowforge's :class:`~flowforge.flows.Residual`: ``exact_trace`` is
    ``brute_force`` (exact log-det from the full Jacobian); ``reduce_memory`` has no effect (flowforge
    builds the log-det's graph only when gradients are needed)."""

    def __init__(
        self,
        net: nn.Module,
        reverse: bool = True,
        reduce_memory: bool = True,
        geom_p: float = 0.5,
        lamb: float = 2.0,
        n_power_series: int | None = None,
        exact_trace: bool = False,
        brute_force: bool = False,
        n_samples: int = 1,
        n_exact_terms: int = 2,
        n_dist: str = "geometric",
    ):
        super().__init__(
            net, reverse, geom_p=geom_p, lamb=lamb, n_power_series=n_power_series,
            brute_force=brute_force or exact_trace, n_samples=n_samples, n_exact_terms=n_exact_terms, n_dist=n_dist,
        )  # fmt: skip


__all__ = ["Residual"]
