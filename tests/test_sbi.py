"""flowforge's flows as sbi's density estimators (flowforge.sbi), held to sbi's shape contract and trained
by the real sbi on a task whose posterior is known in closed form."""

import math
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("sbi")

from sbi.inference import NLE, NPE  # noqa: E402
from sbi.utils import BoxUniform  # noqa: E402

from flowforge.flows import Standardization  # noqa: E402
from flowforge.sbi import FlowEstimator, Unconstrain, likelihood_nn, posterior_nn  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # sbi's trainers write TensorBoard logs to ./sbi-logs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sbi warns about its own defaults
        yield


def built(flow="maf", dim=3, condition=(4,), **options) -> FlowEstimator:
    torch.manual_seed(0)
    theta, x = torch.randn(50, dim), torch.randn(50, *condition) * 3 + 1
    return posterior_nn(flow, hidden_features=16, num_transforms=2, **options)(theta, x)


@pytest.mark.parametrize("flow", ["maf", "nsf", "nsf-ar"])
def test_shapes_follow_sbis_contract(flow):
    estimator = built(flow)
    theta, x = torch.randn(5, 3), torch.randn(5, 4)
    assert estimator.log_prob(theta, x).shape == (1, 5)
    assert estimator.log_prob(torch.randn(7, 5, 3), x).shape == (7, 5)
    assert estimator.log_prob(torch.randn(7, 5, 3), torch.randn(7, 5, 4)).shape == (7, 5)
    assert estimator.log_prob(torch.randn(7, 1, 3), x).shape == (7, 5)  # batch of 1 broadcast
    assert estimator.log_prob(torch.randn(7, 5, 3), x[:1]).shape == (7, 5)
    assert estimator.loss(theta, x).shape == (5,)
    assert estimator.sample((6, 2), x).shape == (6, 2, 5, 3)
    samples, log_q = estimator.sample_and_log_prob((6,), x)
    assert samples.shape == (6, 5, 3) and log_q.shape == (6, 5)
    assert torch.allclose(log_q, estimator.log_prob(samples, x), atol=1e-4)
    with pytest.raises(ValueError, match="batch size"):
        estimator.log_prob(torch.randn(7, 5, 3), torch.randn(3, 4))
    with pytest.raises(ValueError):
        estimator.log_prob(torch.randn(5, 2), x)


def test_rows_are_paired_with_their_own_condition():
    """Row (s, b) of a sample or a density is the flow at condition b, as one call of the model gives."""
    estimator = built("maf", z_score_x="none")
    x = torch.randn(4, 4)
    theta = torch.randn(3, 4, 3)
    log_q = estimator.log_prob(theta, x)
    for s in range(3):
        for b in range(4):
            alone = estimator.model.log_prob(theta[s, b : b + 1], x[b : b + 1])
            assert torch.allclose(log_q[s, b], alone[0], atol=1e-5)
    per_sample = torch.randn(3, 4, 4)  # a condition of its own for every (sample, batch) row
    log_q = estimator.log_prob(theta, per_sample)
    for s in range(3):
        assert torch.allclose(log_q[s], estimator.model.log_prob(theta[s], per_sample[s]), atol=1e-5)
    torch.manual_seed(3)
    samples, log_q = estimator.sample_and_log_prob((2,), x)
    for s in range(2):
        assert torch.allclose(log_q[s], estimator.model.log_prob(samples[s], x), atol=1e-4)


def test_z_scoring_matches_sbis_statistics_and_keeps_the_inputs_units():
    torch.manual_seed(1)
    theta = torch.randn(400, 2) * torch.tensor([5.0, 0.1]) + torch.tensor([10.0, -3.0])
    x = torch.randn(400, 3) * 4
    estimator = posterior_nn("nsf", hidden_features=8, num_transforms=1)(theta, x)
    last = estimator.model.flows[-1]
    assert torch.allclose(last.t[0], theta.mean(0)) and torch.allclose(last.s[0].exp(), theta.std(0))
    standardize = estimator.embedding_net[0]
    assert torch.allclose(standardize.mean, x.mean(0)) and torch.allclose(standardize.std, x.std(0))
    # untrained, the flow is the standard normal in standardised units: N(mean, std²) in the input's units
    y = estimator.sample((2000,), x[:1])[:, 0]
    assert (y.mean(0) - theta.mean(0)).abs().div(theta.std(0)).max() < 0.15
    structured = posterior_nn("maf", z_score_theta="structured", z_score_x="structured", num_transforms=1)(theta, x)
    assert torch.allclose(structured.model.flows[-1].t, theta.mean().expand(1, 2))
    assert torch.allclose(structured.embedding_net[0].std, x.std(1).mean().expand(3))
    plain = posterior_nn("maf", z_score_theta="none", z_score_x="none", num_transforms=1)(theta, x)
    assert isinstance(plain.embedding_net, nn.Identity)
    assert not any(isinstance(layer, Standardization) for layer in plain.model.flows)


def test_unconstrain_is_exact_in_float64():
    layer = Unconstrain(
        torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 5.0, math.inf], dtype=torch.float64)
    )
    z = torch.randn(6, 3, dtype=torch.float64) * 3
    x, log_det = layer(z)
    assert ((x > layer.lower) & (x < layer.upper)).all()
    back, inverse_log_det = layer.inverse(x)
    assert torch.allclose(back, z, atol=1e-10) and torch.allclose(inverse_log_det, -log_det, atol=1e-12)
    for row in range(6):
        jacobian = torch.autograd.functional.jacobian(lambda v: layer(v.unsqueeze(0))[0][0], z[row])
        assert torch.allclose(torch.linalg.slogdet(jacobian)[1], log_det[row], atol=1e-10)
    # a value on a bound (torch.rand can return 0) keeps a finite density, and saturated samples stay inside
    edges = torch.tensor([[-1.0, 0.0, 2.0], [1.0, 5.0, 2.0]], dtype=torch.float64)
    z, inverse_log_det = layer.inverse(edges)
    assert torch.isfinite(z).all() and torch.isfinite(inverse_log_det).all()
    x, log_det = layer(torch.tensor([[40.0, -800.0, 3.0]], dtype=torch.float64))
    assert ((x > layer.lower) & (x < layer.upper)).all() and torch.isfinite(log_det).all()
    z = torch.tensor([[0.0, 0.0, 100.0]], requires_grad=True)
    Unconstrain(torch.zeros(3), torch.tensor([1.0, 1.0, 2.0]))(z)[0].sum().backward()
    assert torch.isfinite(z.grad).all()  # no inf from the half-line branch in a bounded coordinate
    with pytest.raises(ValueError, match="lower bounds below"):
        Unconstrain(torch.zeros(2), torch.zeros(2))


def test_transform_to_unconstrained_keeps_samples_inside_the_prior():
    prior = BoxUniform(torch.tensor([0.0, -2.0]), torch.tensor([1.0, 2.0]))
    theta, x = prior.sample((100,)), torch.randn(100, 3)
    estimator = posterior_nn("maf", z_score_theta="transform_to_unconstrained", prior=prior, num_transforms=1)(theta, x)
    samples, log_q = estimator.sample_and_log_prob((500,), x[:2])
    assert torch.allclose(log_q, estimator.log_prob(samples, x[:2]), atol=1e-4)
    assert torch.isfinite(estimator.log_prob(prior.support.base_constraint.lower_bound.expand(1, 2), x[:1])).all()
    assert (
        (samples > prior.support.base_constraint.lower_bound) & (samples < prior.support.base_constraint.upper_bound)
    ).all()
    gaussian = torch.distributions.MultivariateNormal(torch.ones(2), 4 * torch.eye(2))
    estimator = posterior_nn("maf", z_score_theta="transform_to_unconstrained", prior=gaussian, num_transforms=1)(
        theta, x
    )
    assert torch.allclose(estimator.model.flows[-1].t[0], torch.ones(2))
    assert torch.allclose(estimator.model.flows[-1].s[0], torch.full((2,), math.log(2.0)))
    with pytest.raises(ValueError, match="needs the prior"):
        posterior_nn("maf", z_score_theta="transform_to_unconstrained")(theta, x)


def test_bad_options_are_refused_with_what_was_expected():
    with pytest.raises(ValueError, match="flow must be one of maf, nsf, nsf-ar"):
        posterior_nn("glow")
    with pytest.raises(ValueError, match="z_score_x must be one of"):
        posterior_nn("maf", z_score_x="transform_to_unconstrained")
    with pytest.raises(ValueError, match="z_score_theta must be one of"):
        posterior_nn("maf", z_score_theta="yes")
    with pytest.raises(ValueError, match="num_transforms"):
        posterior_nn("maf", num_transforms=0)
    with pytest.raises(ValueError, match="at least 2 features"):
        posterior_nn("maf")(torch.randn(10, 1), torch.randn(10, 2))
    with pytest.raises(ValueError, match="z_score_x must be one of"):
        likelihood_nn("maf", z_score_x="transform_to_unconstrained")
    with pytest.raises(ValueError, match="non-finite"):  # one feature has no spread across it
        posterior_nn("maf", z_score_x="structured")(torch.randn(10, 2), torch.randn(10, 1))
    with pytest.raises(ValueError, match="without NaN"):
        posterior_nn("maf")(torch.randn(10, 2), torch.full((10, 2), math.nan))


def test_npe_recovers_a_gaussian_linear_posterior():
    """sbi's NPE with flowforge's MAF and an embedding net, on θ ~ N(0, 0.1 I), x ~ N(θ, 0.1 I) in 3-D
    (posterior N(x/2, 0.05 I)): the posterior's moments at two observations are close to the exact ones."""
    torch.manual_seed(0)
    dim = 3
    prior = torch.distributions.MultivariateNormal(torch.zeros(dim), 0.1 * torch.eye(dim))
    theta = prior.sample((3000,))
    x = theta + math.sqrt(0.1) * torch.randn_like(theta)
    embedding = nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Linear(16, 8))
    before = [p.detach().clone() for p in embedding.parameters()]
    inference = NPE(prior, density_estimator=posterior_nn("maf", embedding_net=embedding), show_progress_bars=False)
    estimator = inference.append_simulations(theta, x).train(max_num_epochs=60)
    assert isinstance(estimator, FlowEstimator)
    assert any(not torch.equal(a, b) for a, b in zip(before, estimator.embedding_net.parameters(), strict=True))
    posterior = inference.build_posterior(estimator)
    for x_o in (torch.tensor([0.3, -0.2, 0.1]), torch.tensor([-0.5, 0.4, 0.0])):
        samples = posterior.sample((4000,), x=x_o, show_progress_bars=False)
        assert (samples.mean(0) - x_o / 2).abs().max() < 0.05  # the posterior's sd is 0.22
        assert (samples.var(0) / 0.05 - 1).abs().max() < 0.25
        exact = torch.distributions.MultivariateNormal(x_o / 2, 0.05 * torch.eye(dim))
        kl = (exact.log_prob(samples) - posterior.log_prob(samples, x=x_o)).mean()
        assert kl.abs() < 0.1  # an estimate of −KL(q‖p) and the log-normaliser; both small when q ≈ p


def test_nle_takes_a_likelihood_builder():
    torch.manual_seed(0)
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta = prior.sample((500,))
    x = torch.cat([theta, theta.sum(1, keepdim=True)], 1) + 0.1 * torch.randn(500, 3)
    inference = NLE(prior, density_estimator=likelihood_nn("nsf", num_transforms=2), show_progress_bars=False)
    estimator = inference.append_simulations(theta, x).train(max_num_epochs=5)
    assert isinstance(estimator, FlowEstimator)
    assert estimator.input_shape == (3,) and estimator.condition_shape == (2,)
    assert estimator.log_prob(x[:4], theta[:4]).shape == (1, 4)


def test_sequential_npe_with_the_atomic_loss():
    """Two rounds of NPE-C (the second trained on samples of the first round's posterior, sbi's atomic
    loss, which evaluates the estimator on each θ with the other rows' x as atoms) on θ ~ U(−2, 2)²,
    x ~ N(θ, 0.1² I)."""
    torch.manual_seed(0)
    prior = BoxUniform(-2 * torch.ones(2), 2 * torch.ones(2))
    x_o = torch.tensor([[0.5, -0.5]])
    inference = NPE(prior, density_estimator=posterior_nn("maf", num_transforms=2), show_progress_bars=False)
    proposal = prior
    for _ in range(2):
        theta = proposal.sample((500,))
        x = theta + 0.1 * torch.randn_like(theta)
        estimator = inference.append_simulations(theta, x, proposal=proposal).train(max_num_epochs=20)
        proposal = inference.build_posterior(estimator).set_default_x(x_o)
    samples = proposal.sample((1000,), show_progress_bars=False)
    assert (samples.mean(0) - x_o[0]).abs().max() < 0.1 and (samples.std(0) < 0.2).all()


def test_the_docs_example_runs(monkeypatch, tmp_path):
    """docs/sbi.md's example, with 500 simulations and 3 epochs instead of 10,000 and sbi's early stop."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "sbi.md").read_text(encoding="utf-8")
    (source,) = re.findall(r"^```python\n(.*?)^```$", text, re.S | re.M)
    for long, short in [("prior.sample((10_000,))", "prior.sample((500,))"), (".train()", ".train(max_num_epochs=3)")]:
        assert long in source
        source = source.replace(long, short)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(source, "docs/sbi.md", "exec"), scope)
    assert scope["samples"].shape == (2000, 2)
    assert torch.isfinite(scope["posterior"].log_prob(scope["samples"][:10], x=torch.zeros(1, 2))).all()
