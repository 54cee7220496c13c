"""pearson_correlation / correlation_loss: the torch reference and the public checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ogan_plugin
from ogan_plugin.correlation import CorrelationLoss
from ogan_plugin.kernels.pearson import EPS, pearson_reference


def test_matches_numpy_corrcoef_per_row():
    g = torch.Generator().manual_seed(0)
    z, e = torch.randn(7, 17, generator=g, dtype=torch.float64), torch.randn(7, 17, generator=g, dtype=torch.float64)
    e = e + 0.7 * z
    rho = ogan_plugin.pearson_correlation(z, e)
    expected = [np.corrcoef(z[i].numpy(), e[i].numpy())[0, 1] for i in range(7)]
    np.testing.assert_allclose(rho.numpy(), expected, rtol=1e-12)


def test_float32_inputs_give_float32_close_to_float64():
    g = torch.Generator().manual_seed(1)
    z, e = torch.randn(64, 128, generator=g), torch.randn(64, 128, generator=g)
    rho = ogan_plugin.pearson_correlation(z, e)
    assert rho.dtype == torch.float32
    torch.testing.assert_close(rho.double(), pearson_reference(z.double(), e.double()), rtol=1e-5, atol=1e-6)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    e = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ogan_plugin.pearson_correlation(a, b), (z, e))
    assert torch.autograd.gradcheck(lambda a, b: ogan_plugin.correlation_loss(a, b, weight=0.3), (z, e))


def test_gradient_matches_the_closed_form_of_method_md():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 9, generator=g, dtype=torch.float64)
    e = torch.randn(5, 9, generator=g, dtype=torch.float64, requires_grad=True)
    rho = ogan_plugin.pearson_correlation(z, e)
    rho.sum().backward()
    zc, ec = z - z.mean(1, keepdim=True), e.detach() - e.detach().mean(1, keepdim=True)
    zh, eh = zc / zc.norm(dim=1, keepdim=True), ec / ec.norm(dim=1, keepdim=True)
    expected = (zh - rho.detach()[:, None] * eh) / ec.norm(dim=1, keepdim=True)
    torch.testing.assert_close(e.grad, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(e.grad.sum(dim=1), torch.zeros(5, dtype=torch.float64), atol=1e-12, rtol=0)


def test_invariances_and_exact_values():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(3, 8, generator=g, dtype=torch.float64)
    e = torch.randn(3, 8, generator=g, dtype=torch.float64)
    rho = ogan_plugin.pearson_correlation(z, e)
    torch.testing.assert_close(ogan_plugin.pearson_correlation(z, 3.5 * e - 2.0), rho)  # affine in e
    torch.testing.assert_close(ogan_plugin.pearson_correlation(z, z), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(ogan_plugin.pearson_correlation(z, -z), -torch.ones(3, dtype=torch.float64))
    loss = ogan_plugin.correlation_loss(z, e, weight=0.5)
    torch.testing.assert_close(loss, -0.5 * rho.mean())


def test_constant_rows_give_zero_and_finite_gradients():
    z = torch.randn(3, 5, dtype=torch.float64)
    e = torch.tensor([[2.0] * 5, [0.0] * 5, [1.0, 1.0, 1.0, 1.0, 1.0 + 1e-9]], dtype=torch.float64, requires_grad=True)
    rho = ogan_plugin.pearson_correlation(z, e)
    assert torch.isfinite(rho).all() and rho[:2].abs().max() == 0
    rho.sum().backward()
    assert torch.isfinite(e.grad).all()
    assert e.grad.abs().max() <= 1.0 / EPS + 1e-6  # bounded by the norm floor


def test_large_magnitudes_do_not_overflow_float32():
    g = torch.Generator().manual_seed(5)
    z = torch.randn(4, 33, generator=g)
    e = (torch.randn(4, 33, generator=g) + z) * 1e30
    e.requires_grad_(True)
    rho = ogan_plugin.pearson_correlation(z, e)
    torch.testing.assert_close(rho.double(), pearson_reference(z.double(), (e.detach() / 1e30).double()), rtol=1e-5, atol=1e-6)
    rho.sum().backward()
    assert torch.isfinite(e.grad).all()


def test_batch_of_one_is_defined_per_row():
    z, e = torch.randn(1, 4), torch.randn(1, 4)
    assert ogan_plugin.pearson_correlation(z, e).shape == (1,)


def test_mixed_float_dtypes_are_computed_in_float32():
    z, e = torch.randn(3, 8), torch.randn(3, 8).bfloat16()
    rho = ogan_plugin.pearson_correlation(z, e)
    assert rho.dtype == torch.float32
    torch.testing.assert_close(rho, pearson_reference(z.double(), e.double()).float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "z, e, err, match",
    [
        (torch.randn(3, 4), torch.randn(3, 5), ValueError, "same shape.*z_dim"),
        (torch.randn(3, 4), torch.randn(2, 4), ValueError, "same shape"),
        (torch.randn(3, 1), torch.randn(3, 1), ValueError, "z_dim >= 2"),
        (torch.randn(0, 4), torch.randn(0, 4), ValueError, "empty batch"),
        (torch.randn(4), torch.randn(4), ValueError, r"z must have shape \(batch, z_dim\)"),
        (torch.ones(3, 4, dtype=torch.long), torch.randn(3, 4), TypeError, "z must be a floating-point"),
        (torch.randn(3, 4), torch.ones(3, 4, dtype=torch.bool), TypeError, "e must be a floating-point"),
        (torch.randn(3, 4), [[0.0] * 4] * 3, TypeError, "e must be a torch.Tensor"),
        (torch.randn(3, 4), torch.tensor([[float("nan")] * 4] * 3), ValueError, "e contains NaN"),
        (torch.full((3, 4), float("inf")), torch.randn(3, 4), ValueError, "z contains NaN or inf"),
    ],
)
def test_bad_inputs_name_the_argument(z, e, err, match):
    with pytest.raises(err, match=match):
        ogan_plugin.pearson_correlation(z, e)
    with pytest.raises(err, match=match):
        ogan_plugin.correlation_loss(z, e)


def test_bad_weight():
    with pytest.raises(TypeError, match="weight"):
        ogan_plugin.correlation_loss(torch.randn(2, 3), torch.randn(2, 3), weight="0.5")


def test_module_form_matches_functional():
    z, e = torch.randn(4, 6), torch.randn(4, 6)
    torch.testing.assert_close(CorrelationLoss(0.25)(z, e), ogan_plugin.correlation_loss(z, e, 0.25))
