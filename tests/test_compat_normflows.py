"""The normflows compatibility package and the deprecation bridge of the native modules.

``from flowforge.compat import normflows as nf`` gives normflows' names, argument orders, module
paths, mask conventions and numerics (compared with normflows itself in tests/test_compat_*_parity.py
and by normflows' own unit tests in tests/test_normflows_suite.py); reached from the native modules
(``import flowforge as nf``) normflows' own names still work, with a DeprecationWarning.
"""

import ast
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import flowforge as nf
from flowforge.compat import normflows as cnf

COMPAT_IMPORT = re.escape("from flowforge.compat import normflows as nf")
PACKAGE = Path(nf.__file__).parent

# normflows' own names reached through native modules: (native module, name).
BRIDGED = [
    ("flows", "MaskedAffineFlow"),
    ("flows", "CoupledRationalQuadraticSpline"),
    ("flows", "AutoregressiveRationalQuadraticSpline"),
    ("flows", "CircularCoupledRationalQuadraticSpline"),
    ("flows", "CircularAutoregressiveRationalQuadraticSpline"),
    ("flows", "neural_spline"),
    ("distributions", "target"),
    ("distributions", "prior"),
    ("nets", "resnet"),
    ("utils", "optim"),
    ("utils", "update_lipschitz"),
]


@pytest.mark.parametrize("module, name", BRIDGED)
def test_bridge_warns_with_the_compat_import_and_returns_the_compat_object(module, name):
    native = getattr(nf, module)
    assert name not in vars(native)
    with pytest.warns(DeprecationWarning, match=COMPAT_IMPORT) as record:
        value = getattr(native, name)
    assert value is getattr(getattr(cnf, module), name)
    assert record[0].filename == __file__  # the warning points at the caller's line


def test_bridged_module_paths_work_as_normflows_scripts_write_them():
    with pytest.warns(DeprecationWarning, match=COMPAT_IMPORT):
        target = nf.distributions.target.TwoMoons()
    assert isinstance(target, nf.distributions.TwoMoons)
    with pytest.warns(DeprecationWarning, match=COMPAT_IMPORT):
        layer = nf.flows.CoupledRationalQuadraticSpline(4, 2, 16)
    assert isinstance(layer, cnf.flows.CoupledRationalQuadraticSpline)


def test_native_names_carry_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # The seed script's names, then a sample of the native API.
        model = nf.NormalizingFlow(
            q0=nf.distributions.DiagGaussian(2), flows=[nf.flows.Planar((2,))], p=nf.distributions.TwoModes(2, 0.1)
        )
        model.reverse_kld(4, beta=0.5).backward()
        for name in nf.flows.__all__:
            getattr(nf.flows, name)
        for name in nf.distributions.__all__:
            getattr(nf.distributions, name)
        for name in nf.nets.__all__:
            getattr(nf.nets, name)
        nf.flows.RationalQuadraticCoupling(4, 8, mask=nf.flows.alternating_mask(4))
        nf.flows.MaskedAffineAutoregressive(3, 8, random_mask=True, order=None)
        nf.flows.Residual(nf.nets.LipschitzMLP([2, 8, 2]), brute_force=True)
        nf.nets.MADE(3, 8, output_multiplier=2)


def test_compat_classes_take_normflows_arguments_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cnf.flows.MaskedAffineAutoregressive(3, 16, None, 2, True, False, F.relu, 0.0, False)
        cnf.nets.MADE(3, 16, None, 2, 2, True, False, F.relu, 0.0, False)
        cnf.flows.Residual(nf.nets.LipschitzMLP([2, 8, 2]), True, True, 0.5, 2.0, None, False, True)
        cnf.flows.MaskedAffineFlow(nf.flows.alternating_mask(2), nf.nets.MLP([2, 4, 2]), nf.nets.MLP([2, 4, 2]))


def test_unknown_names_stay_attribute_errors():
    for module in (nf.flows, nf.distributions, nf.nets, nf.utils):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not hasattr(module, "NoSuchName")
    with pytest.raises(AttributeError, match="module 'flowforge.flows' has no attribute 'NoSuchLayer'"):
        nf.flows.NoSuchLayer  # noqa: B018


def _imports(path: Path) -> list[str]:
    """The modules ``path`` imports, relative ones resolved against its package."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return found


def test_no_native_module_imports_compat():
    # The top-level package imports compat last (it is the public face, above every layer), and
    # flowforge/transforms.py is the normflows path kept only until presets.py and __init__.py drop it.
    allowed = {PACKAGE / "__init__.py", PACKAGE / "transforms.py"}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "compat" in path.relative_to(PACKAGE).parts or path in allowed:
            continue
        if any(name.startswith("flowforge.compat") for name in _imports(path)):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []


def drawn(layer, generator):
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return layer


# ---- the spline and MAF classes: normflows' arguments and structure ---------------------------------
# Their numerics and state_dicts are compared with normflows' own layers in tests/test_compat_nets_parity.py.


@pytest.mark.parametrize("reverse_mask", [False, True])
def test_spline_coupling_conditions_on_the_coordinates_normflows_conditions_on(reverse_mask):
    normflows = pytest.importorskip("normflows")
    theirs = normflows.flows.CoupledRationalQuadraticSpline(5, 2, 16, reverse_mask=reverse_mask).prqct
    ours = cnf.flows.CoupledRationalQuadraticSpline(5, 2, 16, reverse_mask=reverse_mask).prqct
    assert ours.identity_features.tolist() == theirs.identity_features.tolist()
    assert ours.transform_features.tolist() == theirs.transform_features.tolist()


def test_normflows_spline_names_take_normflows_arguments():
    layer = cnf.flows.AutoregressiveRationalQuadraticSpline(
        4, 2, 32, num_context_channels=3, permute_mask=True, init_identity=False
    )
    assert layer.mprqat.autoregressive_net.final_layer.weight.abs().sum() > 0  # init_identity=False
    cnf.flows.CircularCoupledRationalQuadraticSpline(4, 2, 32, [0, 2], tail_bound=torch.pi)
    cnf.flows.CircularAutoregressiveRationalQuadraticSpline(4, 2, 32, [1])
    assert cnf.flows.neural_spline.wrapper.CoupledRationalQuadraticSpline is cnf.flows.CoupledRationalQuadraticSpline


def test_normflows_autoregressive_argument_order():
    # normflows' order: features, hidden_features, context_features, num_blocks, use_residual_blocks,
    # random_mask, activation, dropout_probability, use_batch_norm.
    layer = cnf.flows.MaskedAffineAutoregressive(3, 16, None, 2, True, False, F.relu, 0.0, False)
    assert len(layer.autoregressive_net.blocks) == 2
    z = torch.randn(4, 3)
    x, _ = layer(z)
    torch.testing.assert_close(layer.inverse(x)[0], z, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):  # normflows refuses residual blocks with a random mask too
        cnf.flows.MaskedAffineAutoregressive(3, 16, None, 2, True, True)
    with pytest.raises(ValueError, match="use_batch_norm is not supported"):
        nf.nets.MADE(3, 16, use_batch_norm=True)  # the native MADE has no batch norm


def test_normflows_residual_arguments_map_onto_the_native_ones():
    net = nf.nets.LipschitzMLP([2, 8, 2])
    assert cnf.flows.Residual(net, True, True, 0.5, 2.0, None, True).brute_force  # exact_trace
    layer = cnf.flows.Residual(net, False, False, 0.3, 1.5, 7, False, False, 2, 1, "poisson")
    assert (layer.reverse, layer.geom_p, layer.lamb, layer.n_power_series) == (False, 0.3, 1.5, 7)
    assert (layer.brute_force, layer.n_samples, layer.n_exact_terms, layer.n_dist) == (False, 2, 1, "poisson")


# ---- transforms.Logit ------------------------------------------------------------------------------


def test_transforms_logit_is_sigmoid_with_normflows_default_squeeze():
    layer = cnf.transforms.Logit()
    assert isinstance(layer, nf.flows.Sigmoid) and layer.alpha == 0.05
    z = torch.randn(5, 3, dtype=torch.float64)
    for got, want in zip(layer(z), nf.flows.Sigmoid(0.05)(z), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_transforms_logit_matches_normflows():
    normflows = pytest.importorskip("normflows")
    ours, theirs = cnf.transforms.Logit(0.1), normflows.transforms.Logit(0.1)
    z = 3 * torch.randn(6, 2, 3, dtype=torch.float64)
    x = torch.rand(6, 2, 3, dtype=torch.float64)
    for got, want in zip(ours(z) + ours.inverse(x), theirs(z) + theirs.inverse(x), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# ---- the model classes -------------------------------------------------------------------------------


def conditional_model(cls):
    torch.manual_seed(0)
    layers = [nf.flows.MaskedAffineAutoregressive(2, 8, context_features=3), nf.flows.Permute(2)]
    drawn(layers[0], torch.Generator().manual_seed(2))
    return cls(nf.distributions.DiagGaussian(2), layers, nf.distributions.TwoModes(2, 0.1))


def test_conditional_flow_takes_normflows_reverse_kld_order():
    compat, native = conditional_model(cnf.ConditionalNormalizingFlow), conditional_model(nf.NormalizingFlow)
    context = torch.randn(16, 3)
    torch.manual_seed(5)
    ours = compat.reverse_kld(16, context, 0.5, False)
    torch.manual_seed(5)
    expected = native.reverse_kld(16, 0.5, False, context=context)
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    x = torch.randn(4, 2)
    torch.testing.assert_close(compat.log_prob(x, context[:4]), native.log_prob(x, context[:4]))
    with pytest.raises(ValueError, match="needs a conditional base or at least one layer"):
        cnf.ConditionalNormalizingFlow(nf.distributions.DiagGaussian(2), [nf.flows.Planar((2,))])


@pytest.mark.parametrize("declared", ["signature", "attribute"])
def test_conditional_flow_gives_the_context_to_a_normflows_style_target(declared):
    class Shifted(torch.nn.Module):  # normflows' protocol: log_prob(z, context), not a flowforge Target
        def log_prob(self, z, context=None):
            return -0.5 * (z - context[:, :2]).square().sum(1)

    class Declared(torch.nn.Module):  # flowforge 0.1's protocol: takes_context = True
        takes_context = True

        def log_prob(self, z, c):
            return -0.5 * (z - c[:, :2]).square().sum(1)

    target = Shifted() if declared == "signature" else Declared()
    model = conditional_model(cnf.ConditionalNormalizingFlow)
    model.p = target
    context = torch.randn(8, 3)
    torch.manual_seed(3)
    loss = model.reverse_kld(8, context, 0.7)
    torch.manual_seed(3)
    x, log_q = model.sample(8, context)
    torch.testing.assert_close(loss, log_q.mean() - 0.7 * target.log_prob(x, context).mean())
    assert model.p is target


def test_class_conditional_flow_takes_labels_as_y():
    base = nf.distributions.ClassCondDiagGaussian(2, 3)
    layer = nf.flows.MaskedAffineAutoregressive(2, 8, context_features=3)
    model = cnf.ClassCondFlow(base, [layer])
    x, log_q = model.sample(5, y=2)
    torch.testing.assert_close(log_q, model.log_prob(x, y=torch.full((5,), 2)), rtol=1e-5, atol=1e-5)
    assert model.forward_kld(x, torch.full((5,), 2)).shape == ()
    with pytest.raises(ValueError, match="class-conditional base"):
        cnf.ClassCondFlow(nf.distributions.DiagGaussian(2), [layer])
