"""Image layers: split/merge conventions, squeeze, affine coupling on splits, Glow steps."""

import pytest
import torch

import flowforge as nf


@pytest.mark.parametrize("mode", ["channel", "channel_inv", "checkerboard", "checkerboard_inv"])
def test_split_and_squeeze_match_normflows(mode):
    normflows = pytest.importorskip("normflows")
    x = torch.randn(2, 4, 4, 6)
    ours, theirs = nf.flows.Split(mode)(x)[0], normflows.flows.Split(mode)(x)[0]
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    torch.testing.assert_close(nf.flows.Merge(mode)(ours)[0], x)
    torch.testing.assert_close(nf.flows.Squeeze().inverse(x)[0], normflows.flows.Squeeze().inverse(x)[0])


def test_squeeze_moves_each_two_by_two_block_into_channels():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    z, _ = nf.flows.Squeeze().inverse(x)
    assert z.shape == (1, 4, 2, 2)
    torch.testing.assert_close(z[0, :, 0, 0], torch.tensor([0.0, 1.0, 4.0, 5.0]))


def test_coupling_net_of_the_wrong_width_is_an_error():
    block = nf.flows.AffineCouplingBlock(nf.nets.MLP([2, 8, 2]))  # needs 4 outputs: shift and scale
    with pytest.raises(ValueError, match=r"parts have 2 and 1 features .* got parts of shapes \(3, 2\) and \(3, 2\)"):
        block(torch.randn(3, 4))

    class Opaque(torch.nn.Module):  # a net that does not declare its widths is checked by its output
        def forward(self, x):
            return x[:, :1]

    with pytest.raises(ValueError, match=r"param_map returned shape \(3, 1\), expected \(3, 4\)"):
        nf.flows.AffineCouplingBlock(Opaque())(torch.randn(3, 4))


def test_glow_block_starts_with_standardised_channels_and_identity_coupling():
    block = nf.flows.GlowBlock(4, 16)
    x = 3 * torch.randn(64, 4, 4, 4) + 1
    z, _ = block.inverse(x)
    assert torch.isfinite(z).all()
    torch.testing.assert_close(block(z)[0], x, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="at least 2 channels"):
        nf.flows.GlowBlock(1, 8)


def test_glow_preset_on_images_fits_and_normalises():
    torch.manual_seed(0)
    model = nf.presets.GlowSingleScale((1, 8, 8), levels=2, steps=2, hidden=16).double()
    images = (torch.rand(256, 1, 8, 8, dtype=torch.float64) < 0.3).double() + 0.1 * torch.rand(
        256, 1, 8, 8, dtype=torch.float64
    )
    before = float(model.forward_kld(images).detach())
    nf.training.fit(
        model, 60, loss="forward_kl", data=images, samples_per_step=64, lr=3e-3, progress=False, device="cpu"
    )
    after = float(model.forward_kld(images).detach())
    assert after < before
    x, log_q = model.sample(16)
    assert x.shape == (16, 1, 8, 8)
    torch.testing.assert_close(log_q, model.log_prob(x), rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="divisible"):
        nf.presets.GlowSingleScale((1, 6, 6), levels=2)
