"""Invertible linear maps: LU factors against dense linear algebra."""

import pytest
import torch

import flowforge as nf


@pytest.mark.parametrize("use_lu", [True, False])
def test_matrix_log_det_and_inverse_match_dense_algebra(use_lu):
    matrix = nf.flows.InvertibleMatrix(5, use_lu=use_lu).double()
    with torch.no_grad():
        for parameter in matrix.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    dense = matrix.matrix()
    torch.testing.assert_close(matrix.log_abs_det(), torch.linalg.slogdet(dense)[1])
    torch.testing.assert_close(matrix.inverse_matrix() @ dense, torch.eye(5, dtype=torch.float64))


def test_random_start_is_a_rotation_and_identity_start_is_the_identity():
    rotation = nf.flows.InvertibleMatrix(4).matrix().detach()
    torch.testing.assert_close(rotation @ rotation.T, torch.eye(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(nf.flows.InvertibleMatrix(4, identity_init=True).matrix().detach(), torch.eye(4))


def test_lu_linear_permute_inverts_without_trtrs():
    # normflows' LU layer calls torch.trtrs, which PyTorch removed; flowforge's inverse works.
    layer = nf.flows.LULinearPermute(3)
    x = torch.randn(5, 3)
    z, log_det = layer.inverse(x)
    torch.testing.assert_close(layer(z)[0], x)
    torch.testing.assert_close(log_det, torch.zeros(5))


def test_one_by_one_convolution_rejects_vectors():
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\)"):
        nf.flows.Invertible1x1Conv(3)(torch.randn(2, 3))
