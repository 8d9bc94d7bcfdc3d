"""The normflows compatibility package and the deprecation bridge of the native modules.

``from flowforge.compat import normflows as nf`` gives normflows' names, argument orders, module
paths and mask conventions on flowforge's native classes; reached from the native modules
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
    assert isinstance(layer, nf.flows.RationalQuadraticCoupling)


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


# ---- the four spline classes: normflows' arguments and masks, flowforge's numerics ----------------

# Outputs of the classes as they were in flowforge.flows (HEAD 73a5fa9), for parameters drawn from a
# fixed generator: [Σx, Σx², forward log-dets (3), Σ inverse(z), inverse log-dets (3)].
SPLINES = {
    "coupled": (
        lambda: cnf.flows.CoupledRationalQuadraticSpline(5, 2, 16, num_bins=6, reverse_mask=True),
        5, None, 3.0,
        [1.7388451718045124, 59.35800027329504, -11.64781566450252, -3.474100821588892, -7.717166280828694,
         12.038994271578284, -7.596653302356553, -7.696496717614156, 1.3972877846625475],
    ),
    "coupled-context": (
        lambda: cnf.flows.CoupledRationalQuadraticSpline(4, 1, 8, 2, num_bins=4, tail_bound=2.0),
        4, 2, 2.0,
        [-12.169905479116045, 20.02240839148212, -3.5167721125416636, -6.424126706297918, -7.764672646715708,
         -6.522925512935822, -3.0175249919051153, -2.6193774213504746, -6.315160393283441],
    ),
    "circular-coupled": (
        lambda: cnf.flows.CircularCoupledRationalQuadraticSpline(4, 2, 16, [0, 3], mask=torch.tensor([0, 1, 1, 0])),
        4, None, 3.0,
        [-1.6960069511059426, 28.981969952967226, 0.38012464520173744, -3.0636264852771156, 0.7554160078881974,
         0.3175255475418681, -0.5646156632012069, 2.515630152398098, -1.3859682269475897],
    ),
    "autoregressive": (
        lambda: cnf.flows.AutoregressiveRationalQuadraticSpline(4, 2, 16, num_bins=5, permute_mask=True),
        4, None, 3.0,
        [-0.6675810601988026, 62.57224477598722, -4.991265952891927, 1.9394509197036913, -5.528954469118524,
         -10.358421774370893, -2.559927316430835, -1.259824300031062, -1.2704848279004697],
    ),
    "circular-autoregressive": (
        lambda: cnf.flows.CircularAutoregressiveRationalQuadraticSpline(3, 1, 16, [1], 2, tail_bound=torch.pi),
        3, 2, torch.pi,
        [3.0419372633669357, 28.945758261134124, -0.6731049623270046, -0.3111043533238105, -1.989855945938791,
         -0.854173185309673, 0.5238925511524953, 0.4178049440907068, -0.3765962074592395],
    ),
}  # fmt: skip


def drawn(layer, generator):
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    return layer


def spline_case(name):
    factory, dim, context_features, bound, expected = SPLINES[name]
    torch.manual_seed(0)  # the random autoregressive orders
    layer = factory().double()
    generator = torch.Generator().manual_seed(1)
    drawn(layer, generator)
    z = (2 * torch.rand(3, dim, generator=generator, dtype=torch.float64) - 1) * 0.95 * bound
    context = ()
    if context_features is not None:
        context = (torch.randn(3, context_features, generator=generator, dtype=torch.float64),)
    return layer, z, context, expected


@pytest.mark.parametrize("name", sorted(SPLINES))
def test_compat_splines_keep_the_previous_numerics(name):
    layer, z, context, expected = spline_case(name)
    with torch.no_grad():
        x, log_det = layer(z, *context)
        z_back, inverse_log_det = layer.inverse(z, *context)
    got = torch.cat([x.sum()[None], x.square().sum()[None], log_det, z_back.sum()[None], inverse_log_det])
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


NATIVE_EQUIVALENTS = {
    "coupled": lambda: nf.flows.RationalQuadraticCoupling(
        5, 16, 2, num_bins=6, mask=nf.flows.alternating_mask(5, even=False)
    ),
    "coupled-context": lambda: nf.flows.RationalQuadraticCoupling(
        4, 8, 1, num_bins=4, tail_bound=2.0, mask=nf.flows.alternating_mask(4), context_features=2
    ),
    "circular-coupled": lambda: nf.flows.RationalQuadraticCoupling(
        4, 16, 2, mask=torch.tensor([1, 0, 0, 1]), circular=[0, 3]
    ),
    "autoregressive": lambda: nf.flows.RationalQuadraticAutoregressive(4, 16, 2, num_bins=5),
    "circular-autoregressive": lambda: nf.flows.RationalQuadraticAutoregressive(
        3, 16, 1, tail_bound=torch.pi, circular=[1], context_features=2
    ),
}


@pytest.mark.parametrize("name", sorted(SPLINES))
def test_compat_splines_are_the_native_layers_with_normflows_masks(name):
    layer, z, context, _ = spline_case(name)
    native = NATIVE_EQUIVALENTS[name]().double()
    native.load_state_dict(layer.state_dict())  # the autoregressive order travels as MADE's buffer
    for got, want in zip(native(z, *context), layer(z, *context), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    for got, want in zip(native.inverse(z, *context), layer.inverse(z, *context), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("reverse_mask", [False, True])
def test_spline_coupling_conditions_on_the_coordinates_normflows_conditions_on(reverse_mask):
    normflows = pytest.importorskip("normflows")
    theirs = normflows.flows.CoupledRationalQuadraticSpline(5, 2, 16, reverse_mask=reverse_mask).prqct
    ours = cnf.flows.CoupledRationalQuadraticSpline(5, 2, 16, reverse_mask=reverse_mask)
    assert ours.kept.tolist() == theirs.identity_features.tolist()
    assert ours.moved.tolist() == theirs.transform_features.tolist()


@pytest.mark.parametrize("reverse_mask, kept", [(False, slice(0, None, 2)), (True, slice(1, None, 2))])
def test_normflows_spline_coupling_keeps_the_coordinates_normflows_keeps(reverse_mask, kept):
    # normflows' alternating mask (even=reverse_mask) marks the transformed coordinates.
    layer = cnf.flows.CoupledRationalQuadraticSpline(5, 2, 16, reverse_mask=reverse_mask)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    z = torch.randn(8, 5)
    x, _ = layer(z)
    torch.testing.assert_close(x[:, kept], z[:, kept])
    assert not torch.allclose(x, z)


def test_normflows_spline_names_take_normflows_arguments():
    layer = cnf.flows.AutoregressiveRationalQuadraticSpline(
        4, 2, 32, num_context_channels=3, permute_mask=True, init_identity=False
    )
    assert layer.made.output.weight.abs().sum() > 0
    cnf.flows.CircularCoupledRationalQuadraticSpline(4, 2, 32, [0, 2], tail_bound=torch.pi)
    cnf.flows.CircularAutoregressiveRationalQuadraticSpline(4, 2, 32, [1])
    with pytest.raises(ValueError, match="tails must be 'linear'"):
        cnf.flows.CoupledRationalQuadraticSpline(4, 2, 32, tails="circular")
    assert cnf.flows.neural_spline.wrapper.CoupledRationalQuadraticSpline is cnf.flows.CoupledRationalQuadraticSpline


# ---- leftover arguments: the compat classes take them, the native ones do not ---------------------


def test_normflows_autoregressive_argument_order():
    layer = cnf.flows.MaskedAffineAutoregressive(3, 16, None, 2, True, True, F.relu, 0.0, False)
    assert isinstance(layer, nf.flows.MaskedAffineAutoregressive) and layer.made.residual
    z = torch.randn(4, 3)
    x, _ = layer(z)
    torch.testing.assert_close(layer.inverse(x)[0], z)
    plain = cnf.flows.MaskedAffineAutoregressive(3, 16, use_residual_blocks=False, activation=torch.nn.Tanh)
    assert not plain.made.residual and isinstance(plain.made.activation, torch.nn.Tanh)
    with pytest.raises(ValueError, match="use_batch_norm is not supported"):
        cnf.flows.MaskedAffineAutoregressive(3, 16, use_batch_norm=True)
    with pytest.raises(ValueError, match="use_batch_norm is not supported"):
        cnf.nets.MADE(3, 16, use_batch_norm=True)


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
