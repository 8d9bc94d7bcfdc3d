"""Whole compat models pickle (``torch.save(model)``), as normflows users save them: the state_dict
hooks that give normflows' layout (compat/normflows/_state.py) must not hold local functions."""

import io

import pytest
import torch

from flowforge.compat import normflows as nf

LAYERS = {
    "planar": lambda: nf.flows.Planar((2,)),
    "radial": lambda: nf.flows.Radial((2,)),
    "permute": lambda: nf.flows.Permute(2),
    "permute-swap": lambda: nf.flows.Permute(2, mode="swap"),
    "actnorm": lambda: nf.flows.ActNorm((2,)),
    "masked-affine": lambda: nf.flows.MaskedAffineFlow(torch.tensor([1.0, 0.0]), nf.nets.MLP([2, 8, 2])),
    "lu-linear": lambda: nf.flows.LULinearPermute(2),
    "spline": lambda: nf.flows.AutoregressiveRationalQuadraticSpline(2, 1, 8),
    "maf": lambda: nf.flows.MaskedAffineAutoregressive(2, 8),
    "residual": lambda: nf.flows.Residual(nf.nets.LipschitzMLP([2, 8, 2])),
}
BASES = {
    "diag": lambda: nf.distributions.DiagGaussian(2),
    "mixture": lambda: nf.distributions.GaussianMixture(2, 2),
    "class-cond": lambda: nf.distributions.ClassCondDiagGaussian(2, 3),
}


def round_trip(model):
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("base", sorted(BASES))
def test_a_whole_compat_model_pickles_with_its_normflows_state_layout(base):
    torch.manual_seed(0)
    model = nf.NormalizingFlow(BASES[base](), [LAYERS[name]() for name in sorted(LAYERS)]).eval()
    x = torch.randn(6, 2)
    context = {"y": torch.tensor([0, 1, 2, 0, 1, 2])} if base == "class-cond" else {}
    with torch.no_grad():
        model.q0.log_prob(x, **context)  # initialise ActNorm-like lazies the same way on both
        before = model.state_dict()
        copy = round_trip(model)
    assert list(copy.state_dict()) == list(before)
    for key, value in copy.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    if not context:
        with torch.no_grad():
            torch.testing.assert_close(copy.log_prob(x), model.log_prob(x), rtol=0, atol=0)
    copy.load_state_dict(before)  # normflows' layout loads back into the unpickled model
