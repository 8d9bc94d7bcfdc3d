"""VAEs with flow posteriors: the posterior density is the flow's change of variables, the ELBO and
the importance-sampled likelihood bound the exact log p(x), and a short fit on the digits learns."""

import json
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

import flowforge as nf
from benchmarks.vae import digits, independent_pixels
from flowforge import cli
from flowforge.flows.base import pull_back
from flowforge.metrics import mean_elbo, mean_log_likelihood
from flowforge.presets import VAE_POSTERIORS, vae_posterior_flows
from flowforge.training import fit_vae


def perturbed(model, scale=0.3, seed=0):
    """Move every parameter away from its initialisation (flows start at the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return model


def small_vae(posterior, latent=2, data_dim=3, likelihood="bernoulli", layers=3, scale=0.3):
    torch.manual_seed(0)
    model = nf.VAE(data_dim, latent_dim=latent, posterior=posterior, layers=layers, hidden=16, flow_hidden=8,
                   likelihood=likelihood).double()  # fmt: skip
    return perturbed(model, scale)


@pytest.mark.parametrize("posterior", VAE_POSTERIORS)
def test_posterior_log_density_is_the_change_of_variables(posterior):
    model = small_vae(posterior, latent=3)
    x = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    z, log_q = model.sample_posterior(x, num_samples=4)
    assert z.shape == (4, 2, 3) and log_q.shape == (4, 2)
    mean, log_std, features = model.encode(x)
    z0, log_det = pull_back(model.flows, z.reshape(8, 3), features.repeat(4, 1))
    base = torch.distributions.Normal(mean.repeat(4, 1), log_std.exp().repeat(4, 1)).log_prob(z0).sum(1)
    torch.testing.assert_close(log_q.reshape(8), base + log_det, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("posterior", ["planar", "radial", "iaf", "realnvp"])
def test_flow_posterior_density_integrates_to_its_sampling_probability(posterior):
    """∫ q(z | x) dz over a box (density by the flow's inverse, on a grid) equals the fraction of
    samples z ~ q(z | x) (by the forward direction) that land in it; 1 when the box holds them all."""
    model = small_vae(posterior)
    x = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    mean, log_std, features = model.encode(x)
    side = torch.linspace(-9, 9, 721, dtype=torch.float64)
    grid = torch.cartesian_prod(side, side)
    with torch.no_grad():
        z0, log_det = pull_back(model.flows, grid, features.expand(len(grid), -1))
        log_q = torch.distributions.Normal(mean, log_std.exp()).log_prob(z0).sum(1) + log_det
        z, _ = model.sample_posterior(x, 200000)
    mass = float(log_q.exp().sum() * (side[1] - side[0]) ** 2)
    inside = float((z.abs() <= 9 + 0.0125).all(-1).double().mean())
    assert inside > 0.8 and abs(mass - inside) < 4e-3


def exact_log_likelihood(model, x):
    """``log ∫ p(x | z) N(z; 0, I) dz`` on a fine grid of the 2-D latent space."""
    side = torch.linspace(-8, 8, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(side, side)
    with torch.no_grad():
        log_joint = model.decoder_log_likelihood(x, grid.unsqueeze(1).expand(-1, len(x), -1))
        log_joint = log_joint + torch.distributions.Normal(0.0, 1.0).log_prob(grid).sum(1, keepdim=True)
    return torch.logsumexp(log_joint, 0) + 2 * math.log(side[1] - side[0])


@pytest.mark.parametrize("posterior", ["gaussian", "planar", "radial", "iaf", "realnvp"])
def test_elbo_and_importance_sampling_bound_the_exact_likelihood(posterior):
    """ELBO < log p(x) exactly (on a grid of the 2-D latent space); the importance-sampled estimate
    lies above the ELBO and within 4 standard errors (delta method) of log p(x)."""
    model = small_vae(posterior, scale=0.15)
    with torch.no_grad():  # a proposal wider than the posterior, so that the weights have a small variance
        model.posterior_head.weight[2:].zero_()
        model.posterior_head.bias[2:].fill_(0.5)
    x = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    exact = exact_log_likelihood(model, x)
    samples = 20000
    torch.manual_seed(1)
    with torch.no_grad():
        log_weights = model.terms(x, samples).log_weights()
    torch.manual_seed(1)
    estimate = model.log_likelihood(x, samples, samples_per_pass=samples)
    torch.testing.assert_close(estimate, torch.logsumexp(log_weights, 0) - math.log(samples))
    weights = torch.exp(log_weights - log_weights.max(0).values)
    standard_error = weights.std(0) / (weights.mean(0) * math.sqrt(samples))
    assert (standard_error < 0.02).all()
    assert ((estimate - exact).abs() < 4 * standard_error + 2e-3).all()
    elbo = log_weights.mean(0)
    assert (elbo < exact).all() and (estimate > elbo).all()


def test_gaussian_posterior_kl_matches_the_closed_form():
    model = small_vae("gaussian", latent=3)
    x = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    torch.manual_seed(2)
    with torch.no_grad():
        terms = model.terms(x, 200000)
        mean, log_std, _ = model.encode(x)
    closed_form = 0.5 * (mean.square() + (2 * log_std).exp() - 1 - 2 * log_std).sum()
    log_ratio = terms.log_posterior - terms.log_prior
    standard_error = log_ratio.std() / math.sqrt(log_ratio.numel())
    assert abs(float(log_ratio.mean() - closed_form)) < 4 * float(standard_error)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_decoder_log_likelihood_matches_torch_distributions(likelihood):
    model = small_vae("planar", likelihood=likelihood)
    x = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    if likelihood == "gaussian":
        x = x + 0.3 * torch.randn_like(x)
    z = torch.randn(5, 2, 2, dtype=torch.float64)
    out = model.decoder(z.reshape(10, 2)).view(5, 2, -1)
    if likelihood == "bernoulli":
        expected = torch.distributions.Bernoulli(logits=out).log_prob(x.expand(5, -1, -1)).sum(-1)
    else:
        mean, log_std = out.chunk(2, -1)
        log_std = nf.flows.coupling.soft_clamp(log_std, model.log_std_bound)
        expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(x.expand(5, -1, -1)).sum(-1)
    torch.testing.assert_close(model.decoder_log_likelihood(x, z), expected)


def test_loss_is_the_negative_elbo_and_beta_weights_the_kl_term():
    model = small_vae("radial")
    x = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    torch.manual_seed(3)
    loss = model.loss(x)
    torch.manual_seed(3)
    torch.testing.assert_close(loss, -model.elbo(x).mean())
    torch.manual_seed(3)
    terms = model.terms(x)
    torch.manual_seed(3)
    torch.testing.assert_close(model.loss(x, beta=0.0), -terms.log_likelihood.mean())


@pytest.mark.parametrize("posterior", ["planar", "radial"])
def test_amortized_planar_and_radial_start_at_the_identity(posterior):
    (layer,) = vae_posterior_flows(posterior, 3, 1, context_features=4, hidden=8)
    z, context = torch.randn(6, 3), torch.randn(6, 4)
    x, log_det = layer(z, context)
    torch.testing.assert_close(x, z)
    torch.testing.assert_close(log_det, torch.zeros(6))


def test_bad_shapes_and_names_raise_clear_errors():
    model = nf.VAE((1, 8, 8), posterior="planar", layers=2, hidden=16)
    with pytest.raises(ValueError, match=r"data of shape \(batch, 1, 8, 8\)"):
        model.elbo(torch.rand(4, 64))
    with pytest.raises(ValueError, match="posterior must be one of"):
        nf.VAE(4, posterior="maf")
    with pytest.raises(ValueError, match="likelihood must be one of"):
        nf.VAE(4, likelihood="poisson")
    with pytest.raises(ValueError, match=r"decode expects z of shape \(batch, 8\)"):
        model.decode(torch.zeros(3, 4))
    wrong_encoder = nf.vae.FlowVAE(nn.Linear(4, 5), nn.Linear(2, 4), [], 2, 4, encoder_features=6)
    with pytest.raises(ValueError, match=r"encoder must return \(3, 6\) features, got \(3, 5\)"):
        wrong_encoder.elbo(torch.rand(3, 4))
    wrong_decoder = nf.vae.FlowVAE(nn.Linear(4, 6), nn.Linear(2, 4), [], 2, 4, 6, likelihood="gaussian")
    with pytest.raises(ValueError, match="gaussian decoder must return 8 values"):
        wrong_decoder.elbo(torch.rand(3, 4))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        fit_vae(model, 2 * torch.rand(10, 1, 8, 8), epochs=1, progress=False)
    with pytest.raises(ValueError, match="non-finite"):
        fit_vae(model, torch.full((10, 1, 8, 8), float("nan")), epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"intensities in \[0, 1\]"):
        nf.datasets.binarize(torch.tensor([[1.5]]))


def test_state_dict_round_trip_gives_the_same_elbo():
    model = small_vae("iaf")
    copy = small_vae("iaf")
    perturbed(copy, seed=5)
    copy.load_state_dict(model.state_dict())
    x = torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64)
    torch.manual_seed(4)
    expected = model.elbo(x, 10)
    torch.manual_seed(4)
    torch.testing.assert_close(copy.elbo(x, 10), expected)


@pytest.mark.parametrize("posterior", ["gaussian", "planar", "iaf"])
def test_short_digits_fit_beats_independent_pixels(posterior):
    train, validation, test = digits()
    torch.manual_seed(0)
    model = nf.VAE((1, 8, 8), posterior=posterior, layers=4, hidden=128)
    result = fit_vae(model, train, validation, epochs=150, warmup_epochs=10, binarize_train=True, seed=0,
                     progress=False)  # fmt: skip
    elbo = mean_elbo(model, test, 20)
    log_likelihood, standard_error = mean_log_likelihood(model, test, 200)
    baseline = independent_pixels(train, test)  # -27.25 nats
    assert len(result.validation_elbo) == 150 and result.best_validation_elbo > -25
    assert elbo > -24.5 and elbo > baseline + 2.5  # about -23.5 after 150 epochs
    assert elbo < log_likelihood < elbo + 2 and standard_error < 0.5


@pytest.mark.slow
@pytest.mark.parametrize("posterior", ["gaussian", "planar"])
def test_full_digits_fit_reaches_the_reported_likelihood(posterior):
    train, validation, test = digits()
    torch.manual_seed(0)
    model = nf.VAE((1, 8, 8), posterior=posterior, layers=8)
    fit_vae(model, train, validation, binarize_train=True, patience=100, seed=0, progress=False)
    log_likelihood, _ = mean_log_likelihood(model, test, 1000)
    assert mean_elbo(model, test, 100) > -23.0 and log_likelihood > -22.5


def test_vae_command_writes_a_complete_run(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["vae", "--posterior", "radial", "--layers", "2", "--epochs", "3", "--warmup", "1", "--is-samples", "50",
            "--no-progress", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    assert {p.name for p in out.iterdir()} == {
        "config.json", "metrics.json", "model.pt", "checkpoint.pt", "loss.png", "samples.png", "reconstructions.png"
    }  # fmt: skip
    numbers = json.loads((out / "metrics.json").read_text())
    assert numbers["epochs"] == 3 and numbers["test_elbo"] < numbers["test_log_likelihood"] < 0
    assert "radial posterior: test ELBO" in capsys.readouterr().out


def test_vae_command_takes_a_numpy_array_with_a_gaussian_decoder(tmp_path):
    data = tmp_path / "points.npy"
    np.save(data, np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32))
    out = tmp_path / "run"
    argv = ["vae", "--data", str(data), "--likelihood", "gaussian", "--posterior", "realnvp", "--latent", "2",
            "--layers", "2", "--hidden", "16", "--epochs", "2", "--is-samples", "20", "--no-progress",
            "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    assert not (out / "samples.png").exists()  # not images
    assert (out / "metrics.json").exists()


@pytest.mark.parametrize(
    "values, extra, message",
    [
        ([[0.5, 2.0], [0.1, 0.2], [0.3, 0.3]], [], r"values in \[0, 1\]"),
        ([[0.5, float("nan")], [0.1, 0.2], [0.3, 0.3]], ["--likelihood", "gaussian"], "non-finite"),
        ([1.0, 2.0, 3.0], [], "at least 3 rows"),
    ],
)
def test_vae_command_rejects_bad_data(tmp_path, capsys, values, extra, message):
    data = tmp_path / "bad.npy"
    np.save(data, np.array(values))
    assert cli.main(["vae", "--data", str(data), *extra, "--out", str(tmp_path / "run")]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_vae_command_rejects_a_bad_split_and_a_missing_file(tmp_path, capsys):
    assert cli.main(["vae", "--split", "0.5,0.5", "--out", str(tmp_path / "run")]) == 2
    assert "expected TRAIN,VALIDATION,TEST fractions summing to 1, got '0.5,0.5'" in capsys.readouterr().err
    assert cli.main(["vae", "--data", str(tmp_path / "none.npy"), "--out", str(tmp_path / "run")]) == 2
    assert "cannot read" in capsys.readouterr().err
