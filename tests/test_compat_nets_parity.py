"""normflows <-> flowforge.compat.normflows parity for the nets, utils, transforms, neural-spline
layers and MaskedAffineAutoregressive: each case builds the real normflows object and the compat
one with the same calls, moves normflows' weights into the compat object with ``load_state_dict``
(strict), compares the outputs (and log-dets, both directions) in float64, then loads the compat
weights back into a fresh normflows object and compares again."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowforge.compat import normflows as cnf

normflows = pytest.importorskip("normflows")

ATOL = 1e-10  # float64; the computations are the same op for op, so this is rounding at most


def _randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Perturb every floating parameter (away from identity initialisations) reproducibly."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.add_(0.3 * noise.to(parameter.dtype))
    return module


def _close(got, want) -> None:
    if isinstance(want, tuple | list):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            _close(g, w)
    else:
        torch.testing.assert_close(got, want, rtol=0, atol=ATOL)


def check_parity(build_theirs, build_ours, run, seed: int = 0, randomise: bool = True) -> None:
    """``run(module)`` gives the outputs to compare; weights go normflows -> compat -> normflows."""
    torch.manual_seed(seed)
    theirs = build_theirs().double()
    if randomise:
        _randomised(theirs, seed + 1)
    torch.manual_seed(seed + 2)
    ours = build_ours().double()
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    theirs.eval(), ours.eval()
    saved = copy.deepcopy(ours.state_dict())  # run may advance buffers (power iterations)
    want = run(theirs)
    _close(run(ours), want)
    torch.manual_seed(seed + 3)
    back = build_theirs().double().eval()
    back.load_state_dict(saved)
    _close(run(back), want)
    if randomise:  # weights the compat module holds (not normflows' own) go back to normflows too
        _randomised(ours, seed + 4)
        moved = copy.deepcopy(ours.state_dict())
        mine = run(ours)
        back.load_state_dict(moved)
        _close(run(back), mine)


def _x(*shape: int, seed: int = 5, low: float = -2.5, high: float = 2.5) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(*shape, generator=generator, dtype=torch.float64)


def _context(rows: int, features: int) -> torch.Tensor:
    return torch.randn(rows, features, generator=torch.Generator().manual_seed(9), dtype=torch.float64)


def _flow_run(x: torch.Tensor, context: torch.Tensor | None = None):
    def run(flow):
        extra = () if context is None else (context,)
        return (*flow(x, *extra), *flow.inverse(x, *extra))

    return run


# ---- nets ------------------------------------------------------------------------------------------

MLP_CASES = [
    ([3, 8, 8, 2], {}),
    ([3, 8, 2], {"leaky": 0.1, "output_fn": "tanh", "score_scale": 0.5, "output_scale": 3.0, "dropout": 0.0}),
    ([3, 8, 2], {"output_fn": "clampexp", "init_zeros": True}),
    ([3, 16, 4], {"output_fn": "sigmoid", "score_scale": 2.0}),
]


@pytest.mark.parametrize("layers, kwargs", MLP_CASES)
def test_mlp(layers, kwargs):
    x = _x(5, layers[0])
    check_parity(lambda: normflows.nets.MLP(layers, **kwargs), lambda: cnf.nets.MLP(layers, **kwargs), lambda m: m(x))


@pytest.mark.parametrize("kwargs", [{}, {"leaky": 0.2, "init_zeros": False}, {"actnorm": True, "weight_std": 0.1}])
def test_convnet2d(kwargs):
    x = _x(3, 2, 5, 5)
    args = ([2, 8, 8, 4], [3, 1, 3])
    check_parity(
        lambda: normflows.nets.ConvNet2d(*args, **kwargs), lambda: cnf.nets.ConvNet2d(*args, **kwargs), lambda m: m(x)
    )


MADE_CASES = [
    # features, hidden, context, blocks, multiplier, residual, random_mask, permute_mask
    (4, 16, None, 2, 3, True, False, False),
    (5, 12, None, 3, 2, False, False, False),
    (5, 12, None, 2, 2, False, True, False),
    (4, 16, 3, 2, 2, True, False, True),
    (1, 8, None, 2, 2, True, False, False),
]


@pytest.mark.parametrize("case", MADE_CASES)
def test_made(case):
    features, hidden, context_features, blocks, multiplier, residual, random_mask, permute_mask = case
    args = (features, hidden, context_features, blocks, multiplier, residual, random_mask, permute_mask, F.relu, 0.0)
    x = _x(6, features)
    context = None if context_features is None else _context(6, context_features)
    check_parity(
        lambda: normflows.nets.MADE(*args), lambda: cnf.nets.MADE(*args), lambda m: m(x, context), seed=len(case)
    )
    assert cnf.nets.MADE(*args)(x.float(), None if context is None else context.float()).shape == (
        6,
        features * multiplier,
    )


def test_made_with_batch_norm_and_preprocessing():
    # use_batch_norm and preprocessing (normflows' last two positional parameters); eval mode uses
    # the running statistics, which travel in the state dict.
    def build(module):
        return lambda: module.MADE(4, 12, None, 2, 2, True, False, False, torch.tanh, 0.0, True, torch.nn.Softplus())

    x = _x(6, 4)
    check_parity(build(normflows.nets.made), build(cnf.nets.made), lambda m: m(x))


@pytest.mark.parametrize("context_features", [None, 3])
def test_residual_net(context_features):
    x = _x(5, 4)
    context = None if context_features is None else _context(5, context_features)
    args = (4, 6, 16, context_features, 3, torch.tanh, 0.0)
    check_parity(
        lambda: normflows.nets.ResidualNet(*args),
        lambda: cnf.nets.ResidualNet(*args),
        lambda m: m(x, context),
    )


def test_residual_net_batch_norm():
    x = _x(5, 4)
    args = (4, 6, 16, None, 2, F.relu, 0.0, True)
    check_parity(lambda: normflows.nets.ResidualNet(*args), lambda: cnf.nets.ResidualNet(*args), lambda m: m(x))


@pytest.mark.parametrize("context_channels", [None, 2])
def test_conv_residual_net(context_channels):
    x = _x(2, 3, 4, 4)
    context = None if context_channels is None else _x(2, context_channels, 4, 4, seed=8)
    args = (3, 5, 8, context_channels, 2)
    check_parity(
        lambda: normflows.nets.ConvResidualNet(*args),
        lambda: cnf.nets.ConvResidualNet(*args),
        lambda m: m(x, context),
    )


@pytest.mark.parametrize("init_zeros", [True, False])
def test_lipschitz_mlp(init_zeros):
    x = _x(5, 3)

    def run(net):
        out = net(x)
        normflows.utils.update_lipschitz(net, 2) if isinstance(net, normflows.nets.LipschitzMLP) else (
            cnf.utils.update_lipschitz(net, 2)
        )
        return out, net(x), net.net[1].compute_one_iter()

    check_parity(
        lambda: normflows.nets.LipschitzMLP([3, 16, 16, 3], 0.9, 5, None, init_zeros),
        lambda: cnf.nets.LipschitzMLP([3, 16, 16, 3], 0.9, 5, None, init_zeros),
        run,
        randomise=False,
    )


@pytest.mark.parametrize("kernel", [1, 3])
def test_lipschitz_cnn(kernel):
    x = _x(2, 2, 4, 4)

    def build(module):
        def make():
            net = module.LipschitzCNN([2, 8, 2], [kernel, kernel], 0.9, 3, None, False)
            net.double()(x)  # the induced-norm vectors are sized at the first call
            return net

        return make

    def run(net):
        out = net(x)
        update = normflows.utils.update_lipschitz if isinstance(net, normflows.nets.LipschitzCNN) else None
        (update or cnf.utils.update_lipschitz)(net, 2)
        return out, net(x), net.net[1].compute_one_iter()

    check_parity(build(normflows.nets), build(cnf.nets), run, randomise=False)


def test_induced_norm_layers_other_norms():
    # domain/codomain other than 2 take the best of ten restarts; the vectors are buffers.
    x = _x(4, 5)
    check_parity(
        lambda: normflows.nets.InducedNormLinear(5, 3, True, 0.9, 1.5, 3.0, 4),
        lambda: cnf.nets.InducedNormLinear(5, 3, True, 0.9, 1.5, 3.0, 4),
        lambda m: (m(x), m.compute_weight(True, 3), m.compute_one_iter()),
        randomise=False,
    )


# ---- utils -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("inverse", [False, True])
def test_spline_functions(inverse):
    generator = torch.Generator().manual_seed(3)
    shape, bins = (4, 3), 6

    def draw(*s):
        return torch.randn(*s, generator=generator, dtype=torch.float64)

    widths, heights, derivatives = draw(*shape, bins), draw(*shape, bins), draw(*shape, bins + 1)
    inputs = torch.rand(*shape, generator=generator, dtype=torch.float64)
    got = cnf.utils.splines.rational_quadratic_spline(inputs, widths, heights, derivatives, inverse)
    want = normflows.utils.splines.rational_quadratic_spline(inputs, widths, heights, derivatives, inverse)
    _close(got, want)
    wide = 4 * inputs - 2  # some outside the bound 1.5
    for tails, count in (("linear", bins - 1), ("circular", bins), (["linear", "circular", "linear"], bins + 1)):
        d = derivatives[..., :count]
        bound = torch.tensor([1.5, 2.0, 1.0], dtype=torch.float64)
        for tail_bound in (1.5, bound):
            args = (wide, widths, heights, d, inverse, tails, tail_bound)
            got = cnf.utils.splines.unconstrained_rational_quadratic_spline(*args)
            want = normflows.utils.splines.unconstrained_rational_quadratic_spline(*args)
            if isinstance(tails, list):  # normflows leaves the outside inputs at 0 there (see the module)
                inside = (wide.abs() <= tail_bound).expand_as(wide)
                _close((got[0][inside], got[1][inside]), (want[0][inside], want[1][inside]))
            else:
                _close(got, want)


def test_nn_helpers_and_masks():
    x = _x(3, 5, 4)
    for n in (1, 3):
        _close(cnf.utils.tile(torch.arange(4.0), n), normflows.utils.tile(torch.arange(4.0), n))
    _close(cnf.utils.sum_except_batch(x, 2), normflows.utils.sum_except_batch(x, 2))
    _close(cnf.utils.ClampExp()(x), normflows.utils.ClampExp()(x))
    _close(cnf.utils.ConstScaleLayer(2.5)(x), normflows.utils.ConstScaleLayer(2.5)(x))
    for even in (True, False):
        for features in (4, 5):
            assert torch.equal(
                cnf.utils.masks.create_alternating_binary_mask(features, even),
                normflows.utils.masks.create_alternating_binary_mask(features, even),
            )
    assert torch.equal(
        cnf.utils.masks.create_mid_split_binary_mask(5), normflows.utils.masks.create_mid_split_binary_mask(5)
    )
    assert torch.equal(
        cnf.utils.masks.create_random_binary_mask(7, seed=3), normflows.utils.masks.create_random_binary_mask(7, seed=3)
    )
    y = _x(6, 4)
    check_parity(
        lambda: normflows.utils.nn.PeriodicFeaturesElementwise(4, [0, 2], 1.3, True, torch.tanh),
        lambda: cnf.utils.nn.PeriodicFeaturesElementwise(4, [0, 2], 1.3, True, torch.tanh),
        lambda m: m(y),
    )
    scale = torch.tensor([1.0, 2.0], dtype=torch.float64)
    check_parity(
        lambda: normflows.utils.nn.PeriodicFeaturesCat(4, [3, 1], scale),
        lambda: cnf.utils.nn.PeriodicFeaturesCat(4, [3, 1], scale),
        lambda m: m(y),
    )


def test_preprocessing_and_bits_per_dim():
    x = _x(4, 3, low=0.0, high=1.0)
    for alpha in (0.0, 0.05):
        _close(cnf.utils.Logit(alpha)(x), normflows.utils.Logit(alpha)(x))
        _close(cnf.utils.Logit(alpha).inverse(x), normflows.utils.Logit(alpha).inverse(x))
    _close(cnf.utils.Scale()(x), normflows.utils.Scale()(x))
    torch.manual_seed(0)
    jittered = cnf.utils.Jitter()(x)
    assert torch.all((jittered - x >= 0) & (jittered - x < 1 / 256))

    class Model(torch.nn.Module):
        def log_prob(self, x, y=None):
            return -x.square().flatten(1).sum(1) - (0 if y is None else y.double())

    images = _x(6, 2, 3, 3)
    labels = torch.arange(6)
    _close(cnf.utils.bitsPerDim(Model(), images), normflows.utils.bitsPerDim(Model(), images))
    _close(cnf.utils.bitsPerDim(Model(), images, labels), normflows.utils.bitsPerDim(Model(), images, labels))
    loader = [(images[:3], labels[:3]), (images[3:], labels[3:])]
    for class_cond in (True, False):
        got = cnf.utils.bitsPerDimDataset(Model(), loader, class_cond)
        assert got == pytest.approx(float(normflows.utils.bitsPerDimDataset(Model(), loader, class_cond)), rel=1e-6)


def test_transforms():
    z = _x(5, 2, 3)
    x = _x(5, 2, 3, low=0.0, high=1.0)
    for ours, theirs in (
        (cnf.transforms.Logit(), normflows.transforms.Logit()),
        (cnf.transforms.Shift(0.3), normflows.transforms.Shift(0.3)),
    ):
        _close(ours(z.clone()), theirs(z.clone()))
        _close(ours.inverse(x.clone()), theirs.inverse(x.clone()))


# ---- flows -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("context_features", [None, 2])
@pytest.mark.parametrize("residual", [True, False])
def test_masked_affine_autoregressive(context_features, residual):
    if context_features and not residual:
        pytest.skip("normflows' feedforward MADE blocks take no context")
    x = _x(5, 4)
    context = None if context_features is None else _context(5, context_features)
    args = (4, 12, context_features, 2, residual, False, F.relu, 0.0)
    check_parity(
        lambda: normflows.flows.MaskedAffineAutoregressive(*args),
        lambda: cnf.flows.MaskedAffineAutoregressive(*args),
        _flow_run(x, context),
    )


SPLINE_CASES = {
    "coupled": (lambda m: m.CoupledRationalQuadraticSpline(5, 2, 16, None, 6, "linear", 2.0, torch.nn.Tanh), 5, None),
    "coupled-reverse-context": (
        lambda m: m.CoupledRationalQuadraticSpline(4, 1, 8, 3, reverse_mask=True), 4, 3,
    ),
    "circular-coupled": (
        lambda m: m.CircularCoupledRationalQuadraticSpline(4, 2, 16, [0, 3], mask=torch.tensor([0, 1, 1, 0])), 4, None,
    ),
    "circular-coupled-tensor-bound": (
        lambda m: m.CircularCoupledRationalQuadraticSpline(
            5, 2, 16, [0, 3], 2, tail_bound=torch.tensor([np.pi, 5.0, 4.0, 6.0, 3.0])
        ), 5, 2,
    ),
    "autoregressive": (lambda m: m.AutoregressiveRationalQuadraticSpline(4, 2, 16, None, 5, 2.5), 4, None),
    "autoregressive-permuted-context": (
        lambda m: m.AutoregressiveRationalQuadraticSpline(4, 2, 16, 3, permute_mask=True, init_identity=False), 4, 3,
    ),
    "circular-autoregressive": (
        lambda m: m.CircularAutoregressiveRationalQuadraticSpline(3, 1, 16, [1], 2, tail_bound=torch.pi), 3, 2,
    ),
    "circular-autoregressive-tensor-bound": (
        lambda m: m.CircularAutoregressiveRationalQuadraticSpline(
            2, 2, 16, [1], tail_bound=torch.tensor([5.0, np.pi])
        ), 2, None,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SPLINE_CASES))
def test_spline_layers(name):
    build, dim, context_features = SPLINE_CASES[name]
    x = _x(6, dim, low=-2.9, high=2.9)
    context = None if context_features is None else _context(6, context_features)
    check_parity(lambda: build(normflows.flows), lambda: build(cnf.flows), _flow_run(x, context))


def test_spline_layers_are_at_the_same_module_paths():
    for name in ("coupling", "autoregressive", "wrapper"):
        ours, theirs = getattr(cnf.flows.neural_spline, name), getattr(normflows.flows.neural_spline, name)
        public = {n for n in vars(theirs) if not n.startswith("_") and isinstance(getattr(theirs, n), type)}
        public = {n for n in public if getattr(theirs, n).__module__ == theirs.__name__}
        assert public <= set(vars(ours)), public - set(vars(ours))


@pytest.mark.parametrize("tails", [None, "linear"])
@pytest.mark.parametrize("image", [False, True])
def test_piecewise_rational_quadratic_coupling(tails, image):
    shape = [2, 4, 4] if image else [6]

    def build(module):
        def net(in_features, out_features):
            if image:
                return module.nets.ConvResidualNet(in_features, out_features, hidden_channels=8)
            return module.nets.ResidualNet(in_features, out_features, hidden_features=12, num_blocks=2)

        mask = module.utils.masks.create_mid_split_binary_mask(shape[0])
        return lambda: module.flows.neural_spline.coupling.PiecewiseRationalQuadraticCoupling(
            mask, net, num_bins=5, tails=tails, tail_bound=1.5, apply_unconditional_transform=True,
            img_shape=shape[1:] if image else None,
        )  # fmt: skip

    x = _x(3, *shape, low=0.0, high=1.0) if tails is None else _x(3, *shape, low=-2.0, high=2.0)
    check_parity(build(normflows), build(cnf), _flow_run(x))


def test_masked_piecewise_rational_quadratic_autoregressive():
    def build(module):
        return lambda: module.flows.neural_spline.autoregressive.MaskedPiecewiseRationalQuadraticAutoregressive(
            3, 12, None, 4, "linear", 2.0, 2, True, False, True
        )

    check_parity(build(normflows), build(cnf), _flow_run(_x(4, 3)))


# ---- the same seed gives normflows' initial state ----------------------------------------------------

SEEDED = {
    "MLP": lambda m: m.nets.MLP([3, 8, 2], output_fn="tanh", output_scale=2.0),
    "ConvNet2d": lambda m: m.nets.ConvNet2d([2, 8, 2], [3, 3], actnorm=True, weight_std=0.1),
    "MADE": lambda m: m.nets.MADE(4, 16, 2, 2, 3, True, False, True),
    "MADE-random-mask": lambda m: m.nets.MADE(4, 16, None, 2, 3, False, True),
    "ResidualNet": lambda m: m.nets.ResidualNet(3, 4, 8, 2),
    "ConvResidualNet": lambda m: m.nets.ConvResidualNet(3, 4, 8, 2),
    "LipschitzMLP": lambda m: m.nets.LipschitzMLP([2, 8, 2]),
    "InducedNormLinear-p": lambda m: m.nets.InducedNormLinear(4, 3, True, 0.9, 1.5, 3.0, 4),
    "MaskedAffineAutoregressive": lambda m: m.flows.MaskedAffineAutoregressive(4, 16, 2),
    "CoupledRationalQuadraticSpline": lambda m: m.flows.CoupledRationalQuadraticSpline(4, 2, 16, 2),
    "CircularCoupledRationalQuadraticSpline": lambda m: m.flows.CircularCoupledRationalQuadraticSpline(
        4, 2, 16, [1], tail_bound=torch.tensor([3.0, 3.14, 2.0, 3.0])
    ),
    "AutoregressiveRationalQuadraticSpline": lambda m: m.flows.AutoregressiveRationalQuadraticSpline(
        4, 2, 16, permute_mask=True, init_identity=False
    ),
    "CircularAutoregressiveRationalQuadraticSpline": lambda m: m.flows.CircularAutoregressiveRationalQuadraticSpline(
        4, 2, 16, [0, 2]
    ),
}


def _assert_same_state(build) -> None:
    torch.manual_seed(0)
    want = build(normflows).state_dict()
    torch.manual_seed(0)
    got = build(cnf).state_dict()
    assert sorted(got) == sorted(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_a_seed_gives_normflows_initial_state(name):
    _assert_same_state(SEEDED[name])


@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("domain", [2, 1.5])
def test_a_seed_gives_normflows_induced_norm_convolution(kernel, domain):
    # The power-method vectors are drawn at the first call (their size depends on the input's).
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(1))

    def build(module):
        layer = module.nets.InducedNormConv2d(
            2, 3, kernel, 1, kernel // 2, True, 0.9, domain, 3.0 if domain != 2 else 2, 4
        )
        layer(x)
        return layer

    _assert_same_state(build)
