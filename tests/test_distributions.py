"""Base distributions against torch.distributions; targets against their formulas."""

import math

import pytest
import torch

import flowforge as nf
from flowforge.distributions import TARGETS
from flowforge.metrics import grid_points


def test_diag_gaussian_matches_torch():
    base = nf.distributions.DiagGaussian(3).double()
    with torch.no_grad():
        base.loc.copy_(torch.tensor([[0.5, -1.0, 2.0]]))
        base.log_scale.copy_(torch.tensor([[0.1, -0.3, 0.7]]))
    reference = torch.distributions.Independent(torch.distributions.Normal(base.loc[0], base.log_scale[0].exp()), 1)
    z, log_q = base(1000)
    assert z.shape == (1000, 3)
    torch.testing.assert_close(log_q, reference.log_prob(z))
    torch.testing.assert_close(base.log_prob(z), reference.log_prob(z))
    torch.testing.assert_close(z.mean(0), base.loc[0], atol=0.2, rtol=0)


def test_diag_gaussian_not_trainable_has_no_parameters():
    assert list(nf.distributions.DiagGaussian(2, trainable=False).parameters()) == []


def test_uniform():
    base = nf.distributions.Uniform(2, -2.0, 3.0)
    z, log_q = base(500)
    assert (z >= -2).all() and (z <= 3).all()
    torch.testing.assert_close(log_q, torch.full((500,), -2 * math.log(5.0)))
    assert base.log_prob(torch.tensor([[4.0, 0.0]]))[0] == -torch.inf
    with pytest.raises(ValueError):
        nf.distributions.Uniform(2, 1.0, 1.0)


def test_gaussian_mixture_matches_torch():
    loc = torch.tensor([[0.0, 0.0], [3.0, -1.0], [-2.0, 2.0]])
    scale = torch.tensor([[1.0, 0.5], [0.3, 0.3], [2.0, 1.0]])
    weights = torch.tensor([0.2, 0.5, 0.3])
    base = nf.distributions.GaussianMixture(3, 2, loc, scale, weights).double()
    torch.testing.assert_close(base.log_scale.exp(), scale.double(), rtol=1e-6, atol=0)
    torch.testing.assert_close(base.weight_logits.softmax(0), weights.double(), rtol=1e-6, atol=0)
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=base.weight_logits.detach()),
        torch.distributions.Independent(
            torch.distributions.Normal(base.loc.detach(), base.log_scale.detach().exp()), 1
        ),
    )
    z, log_q = base(2000)
    torch.testing.assert_close(log_q, reference.log_prob(z))
    torch.testing.assert_close(z.mean(0), reference.mean, atol=0.15, rtol=0)
    with pytest.raises(ValueError, match="loc must have shape"):
        nf.distributions.GaussianMixture(3, 2, loc=torch.zeros(2, 2))


def test_num_samples_must_be_positive_int():
    with pytest.raises(ValueError, match="num_samples"):
        nf.distributions.DiagGaussian(2)(0)


def grid_log_prob(target, size=600, margin=2.0):
    (x0, x1), (y0, y1) = target.bounds.tolist()
    wide = ((x0 - margin, x1 + margin), (y0 - margin, y1 + margin))
    points, area = grid_points(wide, size, torch.zeros((), dtype=torch.float64))
    return points, area, target.log_prob(points)


@pytest.fixture(params=sorted(TARGETS))
def target(request):
    return TARGETS[request.param]().double()


def test_target_envelope_bounds_log_prob(target):
    points, _, log_p = grid_log_prob(target)
    assert torch.isfinite(log_p).all()
    assert float(log_p.max()) <= target.max_log_prob + 1e-12


def test_target_box_holds_the_mass(target):
    points, area, log_p = grid_log_prob(target)
    (x0, x1), (y0, y1) = target.bounds.tolist()
    inside = (points[:, 0] >= x0) & (points[:, 0] <= x1) & (points[:, 1] >= y0) & (points[:, 1] <= y1)
    mass = torch.exp(log_p - log_p.max())
    assert float(mass[~inside].sum() / mass.sum()) < 1e-4


def test_target_samples_follow_the_density(target):
    torch.manual_seed(0)
    samples = target.sample(40_000)
    assert samples.shape == (40_000, 2) and samples.dtype == torch.float64
    points, _, log_p = grid_log_prob(target)
    weights = torch.softmax(log_p, 0)
    for feature in (lambda z: z[:, 0], lambda z: z[:, 1], lambda z: z.norm(dim=1), lambda z: z[:, 0].abs()):
        exact = float((weights * feature(points)).sum())
        values = feature(samples)
        assert abs(float(values.mean()) - exact) < 5 * float(values.std()) / math.sqrt(len(values)) + 1e-3


def test_target_rejects_wrong_shape(target):
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 2\)"):
        target.log_prob(torch.zeros(3, 3))


def test_circular_mixture_is_normalised():
    target = nf.distributions.CircularGaussianMixture(8).double()
    points, area, log_p = grid_log_prob(target, size=800)
    assert abs(float(torch.exp(log_p).sum() * area) - 1) < 1e-4


def test_two_modes_formula():
    z = torch.tensor([[2.0, 0.0], [0.3, -1.1]], dtype=torch.float64)
    loc, scale = 2.0, 0.1
    a = z[:, 0].abs()
    expected = (
        -0.5 * ((z.norm(dim=1) - loc) / (2 * scale)) ** 2
        - 0.5 * ((a - loc) / (3 * scale)) ** 2
        + torch.log(1 + torch.exp(-2 * a * loc / (3 * scale) ** 2))
    )
    torch.testing.assert_close(nf.distributions.TwoModes(loc, scale).double().log_prob(z), expected)


def test_energy_functions_match_rezende_mohamed_inside_the_window():
    z = torch.tensor([[0.5, -0.2], [-1.5, 1.0], [3.0, -2.5]], dtype=torch.float64)
    z1, z2 = z[:, 0], z[:, 1]
    w1 = torch.sin(2 * math.pi * z1 / 4)
    w2 = 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 * torch.sigmoid((z1 - 1) / 0.3)
    u1 = 0.5 * ((z.norm(dim=1) - 2) / 0.4) ** 2 - torch.log(
        torch.exp(-0.5 * ((z1 - 2) / 0.6) ** 2) + torch.exp(-0.5 * ((z1 + 2) / 0.6) ** 2)
    )
    u2 = 0.5 * ((z2 - w1) / 0.4) ** 2
    u3 = -torch.log(torch.exp(-0.5 * ((z2 - w1) / 0.35) ** 2) + torch.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2))
    u4 = -torch.log(torch.exp(-0.5 * ((z2 - w1) / 0.4) ** 2) + torch.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2))
    for cls, energy in (
        (nf.distributions.EnergyU1, u1),
        (nf.distributions.EnergyU2, u2),
        (nf.distributions.EnergyU3, u3),
        (nf.distributions.EnergyU4, u4),
    ):
        torch.testing.assert_close(cls().double().log_prob(z), -energy)


def test_targets_move_with_the_model():
    model = nf.NormalizingFlow(
        nf.distributions.DiagGaussian(2), [nf.flows.Planar((2,))], nf.distributions.RingMixture(3)
    ).double()
    assert model.p.radii.dtype == torch.float64
    assert model.p.sample(10).dtype == torch.float64


def test_tempered_gaussian_matches_torch_and_learns_its_temperature():
    base = nf.distributions.TemperedGaussian((3,), temperature=1.7).double()
    z = torch.randn(10, 3, dtype=torch.float64)
    expected = torch.distributions.Normal(0.0, 1.7).log_prob(z).sum(1)
    torch.testing.assert_close(base.log_prob(z), expected)
    samples, log_q = base(2000)
    torch.testing.assert_close(log_q, base.log_prob(samples))
    assert abs(float(samples.detach().std()) - 1.7) < 0.05
    base.log_prob(z).sum().backward()
    assert base.log_temperature.grad is not None and base.log_temperature.grad != 0
    assert not list(nf.distributions.TemperedGaussian(2, trainable=False).parameters())
    with pytest.raises(ValueError, match="temperature must be positive"):
        nf.distributions.TemperedGaussian(2, temperature=0.0)


@pytest.mark.parametrize("kind", ["diag", "tempered"])
def test_sampling_at_a_temperature(kind):
    base = nf.distributions.DiagGaussian(2) if kind == "diag" else nf.distributions.TemperedGaussian(2)
    model = nf.NormalizingFlow(base, [nf.flows.Planar((2,))]).double()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    torch.manual_seed(0)
    x, log_q = model.sample(20_000, temperature=0.5)
    assert not log_q.requires_grad
    z, _ = model.inverse_and_log_det(x)
    assert abs(float(z.std()) - 0.5) < 0.02
    with nf.model._tempered([model.q0], 0.5):
        torch.testing.assert_close(log_q, model.log_prob(x))
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name])  # the base is restored


class Halfplane(torch.nn.Module):
    """Acceptance logits ``4 z₀``: proposals with positive first coordinate are mostly kept."""

    def forward(self, z):
        return 4 * z[:, :1]


def resampled(truncation=100):
    base = nf.distributions.ResampledGaussian(2, Halfplane(), truncation=truncation, trainable=False).double()
    points, area = grid_points(((-7.0, 7.0), (-7.0, 7.0)), 700, torch.zeros((), dtype=torch.float64))
    exact_z = float((torch.exp(base.proposal.log_prob(points)) * base.acceptance(points)).sum() * area)
    return base.eval(), points, area, exact_z


@pytest.mark.parametrize("truncation", [2, 100])
def test_resampled_gaussian_is_normalised_and_sampled_from_its_density(truncation):
    base, points, area, exact_z = resampled(truncation)
    base.z_running.fill_(exact_z)
    density = torch.exp(base.log_prob(points))
    assert abs(float(density.sum() * area) - 1) < 1e-3
    torch.manual_seed(1)
    samples, log_q = base(40_000)
    torch.testing.assert_close(log_q, base.log_prob(samples))
    weights = density / density.sum()
    for feature in (lambda z: z[:, 0], lambda z: z[:, 0] ** 2, lambda z: z[:, 1] ** 2):
        exact = float((weights * feature(points)).sum())
        values = feature(samples)
        assert abs(float(values.mean()) - exact) < 4 * float(values.std()) / math.sqrt(len(values))
    assert float(samples[:, 0].mean()) > (0.3 if truncation == 100 else 0.1)  # the half-plane is favoured


def test_resampled_gaussian_estimates_z_and_trains():
    torch.manual_seed(2)
    base, _, _, exact_z = resampled()
    assert abs(float(base.normaliser()) - exact_z) < 0.02  # first evaluation: 2^14 proposals
    learned = nf.distributions.ResampledGaussian(2, nf.nets.MLP([2, 16, 1]), num_z_samples=256).double()
    loss = -learned.log_prob(torch.randn(64, 2, dtype=torch.float64)).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in learned.parameters())
    assert float(learned.z_running) > 0
    with pytest.raises(ValueError, match=r"logits of shape \(512, 1\), got \(512, 2\)"):
        nf.distributions.ResampledGaussian(2, nf.nets.MLP([2, 8, 2]))(5)


class TwoBumps(torch.nn.Module):
    """Normalised mixture of N((±2, 0), 0.5² I): a target a wide Gaussian proposal covers."""

    def log_prob(self, z):
        centres = torch.tensor([[2.0, 0.0], [-2.0, 0.0]], dtype=z.dtype)
        squared = ((z[:, None, :] - centres) ** 2).sum(-1)
        return torch.logsumexp(-squared / 0.5, 1) - math.log(2 * 2 * math.pi * 0.25)


def test_reverse_kl_teaches_the_resampled_base_its_acceptance():
    # The samples do not carry the acceptance's parameters; without reverse_kld's score term its
    # gradient would average to zero and the base would stay the plain proposal.
    torch.manual_seed(3)
    acceptance = nf.nets.MLP([2, 32, 32, 1], init_zeros=True)
    base = nf.distributions.ResampledGaussian(2, acceptance, truncation=50, trainable=False)
    base.proposal.log_scale.data.fill_(math.log(2.0))
    model = nf.NormalizingFlow(base, [], TwoBumps()).double()
    points, area = grid_points(((-7.0, 7.0), (-7.0, 7.0)), 300, torch.zeros((), dtype=torch.float64))

    def kl():
        base.eval()
        base.z_running.fill_(float((torch.exp(base.proposal.log_prob(points)) * base.acceptance(points)).sum() * area))
        q = torch.exp(model.log_prob(points))
        base.train()
        return float((q * (torch.log(q) - model.p.log_prob(points))).sum() * area)

    with torch.no_grad():
        before = kl()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        model.reverse_kld(256).backward()
        optimizer.step()
    with torch.no_grad():
        after = kl()
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: nf.distributions.CircularGaussianMixture(2.5), "n_modes must be a positive int, got 2.5"),
        (lambda: nf.distributions.CircularGaussianMixture(True), "n_modes must be a positive int"),
        (lambda: nf.distributions.RingMixture(0), "n_rings must be a positive int"),
        (lambda: nf.distributions.TwoModes(loc=math.nan), "loc must be a finite number"),
        (lambda: nf.distributions.TwoModes(scale=math.inf), "scale must be a finite positive number"),
        (lambda: nf.distributions.Sinusoidal(period=math.nan), "period must be a finite positive number"),
        (lambda: nf.distributions.Smiley(scale=-1.0), "scale must be a finite positive number"),
        (lambda: nf.distributions.GaussianMixture40(n_modes=4.0), "n_modes must be a positive int"),
        (lambda: nf.distributions.GaussianMixture40(scale=math.nan), "scale must be a finite positive number"),
        (lambda: nf.distributions.GaussianMixture40(seed=-1), "seed must be an int"),
        (lambda: nf.distributions.ManyWell(4.0), "even dim"),
    ],
)
def test_targets_refuse_parameters_that_would_give_a_wrong_density(make, message):
    # n_modes=2.5 used to build a "normalised" mixture whose density integrated to 1.5
    with pytest.raises(ValueError, match=message):
        make()
