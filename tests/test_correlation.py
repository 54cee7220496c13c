"""pearson_correlation / correlation_loss: the torch reference and the public checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ogan_plugin
from ogan_plugin.correlation import CorrelationLoss
from ogan_plugin.kernels.pearson import EPS, pearson_reference


def test_matches_numpy_corrcoef_per_row(device):
    g = torch.Generator().manual_seed(0)
    z, e = torch.randn(7, 17, generator=g, dtype=torch.float64), torch.randn(7, 17, generator=g, dtype=torch.float64)
    e = e + 0.7 * z
    rho = ogan_plugin.pearson_correlation(z.to(device), e.to(device))
    assert rho.device.type == device and rho.dtype == torch.float64
    expected = [np.corrcoef(z[i].numpy(), e[i].numpy())[0, 1] for i in range(7)]
    np.testing.assert_allclose(rho.cpu().numpy(), expected, rtol=1e-12)


def test_float32_inputs_give_float32_close_to_float64(device):
    g = torch.Generator().manual_seed(1)
    z, e = torch.randn(64, 128, generator=g), torch.randn(64, 128, generator=g)
    rho = ogan_plugin.pearson_correlation(z.to(device), e.to(device))
    assert rho.dtype == torch.float32 and rho.device.type == device
    torch.testing.assert_close(rho.double().cpu(), pearson_reference(z.double(), e.double()), rtol=1e-5, atol=1e-6)


def test_gradcheck_float64(device):
    g = torch.Generator().manual_seed(2)
    z = torch.randn(4, 6, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    e = torch.randn(4, 6, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: ogan_plugin.pearson_correlation(a, b), (z, e))
    assert torch.autograd.gradcheck(lambda a, b: ogan_plugin.correlation_loss(a, b, weight=0.3), (z, e))


def test_gradient_matches_the_closed_form_of_method_md(device):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 9, generator=g, dtype=torch.float64).to(device)
    e = torch.randn(5, 9, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    rho = ogan_plugin.pearson_correlation(z, e)
    rho.sum().backward()
    zc, ec = z - z.mean(1, keepdim=True), e.detach() - e.detach().mean(1, keepdim=True)
    zh, eh = zc / zc.norm(dim=1, keepdim=True), ec / ec.norm(dim=1, keepdim=True)
    expected = (zh - rho.detach()[:, None] * eh) / ec.norm(dim=1, keepdim=True)
    torch.testing.assert_close(e.grad, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(e.grad.sum(dim=1), torch.zeros(5, dtype=torch.float64, device=device), atol=1e-12, rtol=0)


def test_invariances_and_exact_values(device):
    g = torch.Generator().manual_seed(4)
    z = torch.randn(3, 8, generator=g, dtype=torch.float64).to(device)
    e = torch.randn(3, 8, generator=g, dtype=torch.float64).to(device)
    rho = ogan_plugin.pearson_correlation(z, e)
    ones = torch.ones(3, dtype=torch.float64, device=device)
    torch.testing.assert_close(ogan_plugin.pearson_correlation(z, 3.5 * e - 2.0), rho)  # affine in e
    torch.testing.assert_close(ogan_plugin.pearson_correlation(z, z), ones)
    torch.testing.assert_close(ogan_plugin.pearson_correlation(z, -z), -ones)
    loss = ogan_plugin.correlation_loss(z, e, weight=0.5)
    torch.testing.assert_close(loss, -0.5 * rho.mean())


def test_constant_rows_give_zero_and_finite_gradients(device):
    z = torch.randn(3, 5, dtype=torch.float64, device=device)
    e = torch.tensor([[2.0] * 5, [0.0] * 5, [1.0, 1.0, 1.0, 1.0, 1.0 + 1e-9]], dtype=torch.float64, device=device,
                     requires_grad=True)
    rho = ogan_plugin.pearson_correlation(z, e)
    assert torch.isfinite(rho).all() and rho[:2].abs().max() == 0
    rho.sum().backward()
    assert torch.isfinite(e.grad).all()
    assert e.grad.abs().max() <= 1.0 / EPS + 1e-6  # bounded by the norm floor


def test_large_magnitudes_do_not_overflow_float32(device):
    g = torch.Generator().manual_seed(5)
    z = torch.randn(4, 33, generator=g).to(device)
    e = ((torch.randn(4, 33, generator=g).to(device) + z) * 1e30).requires_grad_(True)
    rho = ogan_plugin.pearson_correlation(z, e)
    torch.testing.assert_close(rho.double(), pearson_reference(z.double(), (e.detach() / 1e30).double()), rtol=1e-5, atol=1e-6)
    rho.sum().backward()
    assert torch.isfinite(e.grad).all()


def test_batch_of_one_is_defined_per_row(device):
    """A batch of one row: rho is that row's correlation (numpy's), the same as the row's value
    inside a larger batch, and its gradient is the float64 reference's."""
    g = torch.Generator().manual_seed(7)
    z8, e8 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    z, e = z8[3:4].to(device), e8[3:4].to(device).requires_grad_(True)
    rho = ogan_plugin.pearson_correlation(z, e)
    assert rho.shape == (1,) and rho.dtype == torch.float32
    want = np.corrcoef(z8[3].double().numpy(), e8[3].double().numpy())[0, 1]
    assert abs(rho.item() - want) <= 1e-6 and abs(want) > 0.05  # a real, non-trivial correlation
    in_batch = ogan_plugin.pearson_correlation(z8.to(device), e8.to(device))[3]
    torch.testing.assert_close(rho[0], in_batch, rtol=1e-6, atol=1e-7)
    (grad,) = torch.autograd.grad(ogan_plugin.correlation_loss(z, e, weight=0.5), (e,))
    e64 = e8[3:4].double().requires_grad_(True)
    (want_grad,) = torch.autograd.grad(-0.5 * pearson_reference(z8[3:4].double(), e64).mean(), (e64,))
    torch.testing.assert_close(grad.double().cpu(), want_grad, rtol=1e-5, atol=1e-6)


def test_mixed_float_dtypes_are_computed_in_float32(device):
    z, e = torch.randn(3, 8, device=device), torch.randn(3, 8, device=device).bfloat16()
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


def test_module_form_matches_functional(device):
    z, e = torch.randn(4, 6, device=device), torch.randn(4, 6, device=device)
    torch.testing.assert_close(CorrelationLoss(0.25)(z, e), ogan_plugin.correlation_loss(z, e, 0.25))


def test_finite_checks_read_the_host_on_the_cpu_only_by_default(monkeypatch):
    """The documented default (check_finite=None): CPU inputs are checked with one host read for
    both; inputs on another device are not read at all (on a GPU the check would synchronise,
    and cannot run during CUDA-graph capture); True checks everywhere, False nowhere."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from ogan_plugin.correlation import check_pair

    class Reads(TorchDispatchMode):
        """Counts the ops that copy a value to the host (a device synchronisation on a GPU)."""

        def __init__(self):
            super().__init__()
            self.reads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in ("_local_scalar_dense", "is_nonzero", "item"):
                self.reads += 1
            return func(*args, **(kwargs or {}))

    z, e = torch.randn(3, 4), torch.randn(3, 4)
    with Reads() as mode:
        check_pair(z, e)
    assert mode.reads == 1  # one read for both inputs
    with Reads() as mode:
        check_pair(z, e, check_finite=False)
    assert mode.reads == 0
    bad = torch.tensor([[1.0, float("nan"), 2.0, 3.0]] * 3)
    with pytest.raises(ValueError, match="^e contains NaN or inf values$"):
        check_pair(z, bad)
    # a non-CPU device ("meta": no data, so any read would raise): not read by default
    zm, em = torch.empty(3, 4, device="meta"), torch.empty(3, 4, device="meta")
    check_pair(zm, em)
    check_pair(zm, em, check_finite=False)
    with pytest.raises((RuntimeError, NotImplementedError)):
        check_pair(zm, em, check_finite=True)  # asked for: it tries to read the values
    # check_finite=True on a CUDA tensor during graph capture: skipped instead of breaking the
    # capture (stand-ins: only the device is looked at before the decision)
    from types import SimpleNamespace

    from ogan_plugin.correlation import _check_finite

    cuda_like = SimpleNamespace(device=torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    _check_finite(("z", "e"), (cuda_like, cuda_like), True)
    _check_finite(("z", "e"), (cuda_like, cuda_like), None)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    with pytest.raises(TypeError):  # not capturing and asked for: it does read the values
        _check_finite(("z", "e"), (cuda_like, cuda_like), True)
