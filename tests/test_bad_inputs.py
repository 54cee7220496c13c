"""Bad inputs and faults: one test per row of the matrix in issue 7, part 6.

Each row gives a clear error naming the argument, or the documented behaviour, and never
a silent wrong number.  Reference values are computed in float64 from the definition.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

import ogan_plugin
from ogan_plugin import correlation_loss, pearson_correlation, wrap
from ogan_plugin.step import SingleLossStep
from ogan_plugin.training import single_loss

Z = 6


def rho64(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per row from its definition, in float64 (no eps)."""
    zc = z.double() - z.double().mean(1, keepdim=True)
    ec = e.double() - e.double().mean(1, keepdim=True)
    return (zc * ec).sum(1) / (zc.norm(dim=1) * ec.norm(dim=1))


def pair(b: int = 5, n: int = Z, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, generator=g), torch.randn(b, n, generator=g)


def nets(dropout: float = 0.0) -> tuple[nn.Module, ogan_plugin.OGANDiscriminator]:
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(Z, 16), nn.Tanh(), nn.Linear(16, 10))
    D = nn.Sequential(nn.Linear(10, 16), nn.LeakyReLU(0.2), nn.Dropout(dropout), nn.Linear(16, 1))
    return G, wrap(D, z_dim=Z)


def conv_d() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 4, 1, 0))


# --- z of the wrong width or batch size -------------------------------------------------------
def test_z_wrong_width() -> None:
    z, e = pair()
    with pytest.raises(ValueError, match=r"z and e must have the same shape.*\(5, 7\) and \(5, 6\).*z_dim"):
        correlation_loss(torch.randn(5, Z + 1), e)
    G, D = nets()
    with pytest.raises(ValueError, match=r"z must have shape \(batch, 6\).*got z of shape \(5, 7\)"):
        single_loss(G, D, torch.randn(5, 10), torch.randn(5, Z + 1))


def test_z_wrong_batch_size() -> None:
    z, e = pair()
    with pytest.raises(ValueError, match=r"same shape, got \(4, 6\) and \(5, 6\)"):
        pearson_correlation(z[:4], e)
    G, D = nets()
    with pytest.raises(ValueError, match="z has batch size 4 but x_real has 5"):
        single_loss(G, D, torch.randn(5, 10), torch.randn(4, Z))


# --- z on another device or of another dtype than the codes -----------------------------------
def test_z_on_another_device() -> None:
    z, e = pair()
    with pytest.raises(ValueError, match="z is on meta but e is on cpu"):
        correlation_loss(z.to("meta"), e)


def test_z_of_another_dtype_is_allowed_and_exact() -> None:
    z, e = pair()
    # float64 noise with float32 codes: computed in float64
    torch.testing.assert_close(pearson_correlation(z.double(), e), rho64(z, e), rtol=1e-12, atol=1e-12)
    # float32 noise with bfloat16 codes (autocast): computed in float32 from the bf16 values
    rho = pearson_correlation(z, e.bfloat16())
    assert rho.dtype == torch.float32
    torch.testing.assert_close(rho.double(), rho64(z, e.bfloat16()), rtol=1e-5, atol=1e-6)


# --- integer or boolean tensors, 1-D inputs, empty batch, batch of one -------------------------
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_integer_and_boolean_tensors(dtype: torch.dtype) -> None:
    z, e = pair()
    with pytest.raises(TypeError, match=rf"z must be a floating-point tensor, got dtype {dtype}"):
        correlation_loss(z.to(dtype), e)
    with pytest.raises(TypeError, match=rf"e must be a floating-point tensor, got dtype {dtype}"):
        pearson_correlation(z, e.to(dtype))
    G, D = nets()
    with pytest.raises(TypeError, match="x_real must be a floating-point"):
        single_loss(G, D, torch.ones(5, 10, dtype=dtype), torch.randn(5, Z))


def test_one_dimensional_inputs() -> None:
    z, e = pair()
    with pytest.raises(ValueError, match=r"z must have shape \(batch, z_dim\), got shape \(6,\)"):
        pearson_correlation(z[0], e[0])


def test_empty_batch() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        correlation_loss(torch.empty(0, Z), torch.empty(0, Z))
    G, D = nets()
    with pytest.raises(ValueError, match="non-empty batch"):
        single_loss(G, D, torch.empty(0, 10), torch.empty(0, Z))


def test_batch_of_one_is_defined_per_row() -> None:
    z, e = pair(b=1)
    torch.testing.assert_close(pearson_correlation(z, e).double(), rho64(z, e), rtol=1e-5, atol=1e-6)
    G, D = nets()
    out = single_loss(G, D, torch.randn(1, 10), torch.randn(1, Z), return_terms=True)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.rho.shape == (1,)
    assert all(torch.isfinite(p.grad).all() for p in [*G.parameters(), *D.parameters()])


# --- non-contiguous and channels_last inputs ----------------------------------------------------
def test_non_contiguous_inputs_give_the_same_result() -> None:
    z, e = pair(b=Z, n=Z)
    zt, et = z.t(), e.t()  # transposed views
    assert not zt.is_contiguous()
    torch.testing.assert_close(pearson_correlation(zt, et), pearson_correlation(zt.contiguous(), et.contiguous()))
    torch.testing.assert_close(pearson_correlation(zt, et).double(), rho64(zt, et), rtol=1e-5, atol=1e-6)
    wide = torch.randn(5, 2 * Z)
    torch.testing.assert_close(pearson_correlation(wide[:, ::2], e[:5]), pearson_correlation(wide[:, ::2].contiguous(), e[:5]))


def test_channels_last_inputs_give_the_same_result() -> None:
    D = wrap(conv_d(), z_dim=Z)
    x = torch.randn(5, 3, 8, 8)
    want = D.decompose(x)
    got = D.decompose(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got.raw, want.raw, rtol=1e-5, atol=1e-6)
    G = nn.Sequential(nn.Linear(Z, 3 * 64), nn.Unflatten(1, (3, 8, 8)))
    z = torch.randn(5, Z)
    grads = []
    for xr in (x, x.to(memory_format=torch.channels_last)):
        G.zero_grad()
        D.zero_grad()
        single_loss(G, D, xr, z).backward()
        grads.append([p.grad.clone() for p in [*G.parameters(), *D.parameters()]])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# --- constant rows, huge magnitudes, NaN and inf -------------------------------------------------
@pytest.mark.parametrize("which", ["z", "e"])
@pytest.mark.parametrize("spread", [0.0, 1e-30, 1e-9])
def test_constant_and_nearly_constant_rows_stay_finite(which: str, spread: float) -> None:
    z, e = pair()
    z.requires_grad_(True)
    e.requires_grad_(True)
    flat = torch.full((Z,), 3.0) if spread == 0 else spread * torch.randn(Z)  # spread below EPS
    zz = torch.cat([flat[None], z[1:]]) if which == "z" else z
    ee = torch.cat([flat[None], e[1:]]) if which == "e" else e
    rho = pearson_correlation(zz, ee)
    rho.sum().backward()
    assert torch.isfinite(rho).all() and torch.isfinite(z.grad).all() and torch.isfinite(e.grad).all()
    # a row whose spread is below the norm floor (EPS = 1e-6) is treated as constant: rho ~ 0
    assert abs(float(rho[0].detach())) <= 10 * spread / ogan_plugin.EPS + 1e-7
    torch.testing.assert_close(rho[1:].double(), rho64(zz[1:].detach(), ee[1:].detach()), rtol=1e-5, atol=1e-6)


def test_huge_magnitudes_give_the_scale_free_answer() -> None:
    z, e = pair()
    big_e = (e * 1e30).requires_grad_(True)
    rho = pearson_correlation(z * 1e30, big_e)
    torch.testing.assert_close(rho.double(), rho64(z, e), rtol=1e-5, atol=1e-6)
    correlation_loss(z, big_e).backward()
    assert torch.isfinite(big_e.grad).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_inputs_raise(bad: float) -> None:
    z, e = pair()
    z_bad, e_bad = z.clone(), e.clone()
    z_bad[2, 3] = bad
    e_bad[0, 0] = bad
    with pytest.raises(ValueError, match="z contains NaN or inf"):
        correlation_loss(z_bad, e)
    with pytest.raises(ValueError, match="e contains NaN or inf"):
        pearson_correlation(z, e_bad)
    # the documented opt-out skips the check (and its device sync): the bad row is not finite
    rho = pearson_correlation(z, e_bad, check_finite=False)
    assert not torch.isfinite(rho[0]) and torch.isfinite(rho[1:]).all()


# --- a NaN loss during a training step --------------------------------------------------------------
def test_nan_loss_stops_before_the_optimizer_step() -> None:
    G, D = nets()
    step = SingleLossStep(G, D)
    step.step(torch.randn(5, 10))
    step.step(torch.randn(5, 10))
    before = {k: v.clone() for k, v in [*G.state_dict().items(), *D.state_dict().items()]}
    x = torch.randn(5, 10)
    x[1, 2] = float("nan")
    with pytest.raises(FloatingPointError, match="step 3"):
        step.step(x)
    after = {k: v for k, v in [*G.state_dict().items(), *D.state_dict().items()]}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in [*G.parameters(), *D.parameters()])
    assert step.step_count == 2


# --- random discriminators where the two passes of the single loss differ ---------------------------
def test_dropout_in_training_mode_warns_for_three_forward() -> None:
    G, D = nets(dropout=0.3)
    x, z = torch.randn(5, 10), torch.randn(5, Z)
    with pytest.warns(RuntimeWarning, match="routing='split'"):
        single_loss(G, D, x, z, routing="three_forward")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        single_loss(G, D, x, z, routing="split")  # exact with Dropout: no warning
        D.eval()
        single_loss(G, D, x, z, routing="three_forward")  # eval mode: the passes agree


# --- wrapping twice, multi-output heads, z_dim < 2, optimizers missing parameters --------------------
def test_wrapping_twice() -> None:
    D = wrap(conv_d(), z_dim=Z)
    assert wrap(D, z_dim=Z) is D
    with pytest.raises(ValueError, match="already wrapped with z_dim=6"):
        wrap(D, z_dim=Z + 1)
    with pytest.raises(ValueError, match="already contains an OGANHead"):
        wrap(D.discriminator, z_dim=Z)


def test_head_with_more_than_one_output() -> None:
    two = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="no adapter recognised"):
        wrap(two, z_dim=Z)
    with pytest.raises(ValueError, match="with 2 outputs"):
        wrap(two, z_dim=Z, head="2")


@pytest.mark.parametrize("z_dim, error", [(1, ValueError), (0, ValueError), (2.0, TypeError), (True, TypeError)])
def test_bad_z_dim(z_dim, error) -> None:
    with pytest.raises(error, match="z_dim"):
        wrap(conv_d(), z_dim=z_dim)


def test_optimizer_missing_one_networks_parameters() -> None:
    G, D = nets()
    with pytest.raises(ValueError, match=r"lacks: generator\.0\.weight"):
        SingleLossStep(G, D, optimizer=torch.optim.Adam(D.parameters()))
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(10, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    early = torch.optim.Adam([*G.parameters(), *plain.parameters()])  # built before wrap()
    with pytest.raises(ValueError, match=r"lacks: discriminator\.discriminator\.2\.layer\.weight.*before wrap"):
        SingleLossStep(G, wrap(plain, z_dim=Z), optimizer=early)


# --- the same clear errors on every device (CUDA where present) ------------------------------------
def _elsewhere(device: str) -> str:
    """A device other than ``device``: the CPU for CUDA; "meta" (shape-only tensors) for the CPU."""
    return "meta" if device == "cpu" else "cpu"


def _conditional_nets(device: str) -> tuple[nn.Module, ogan_plugin.OGANDiscriminator]:
    class G(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.net = nn.Embedding(3, Z), nn.Linear(Z, 10)

        def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.net(z + self.embed(y))

    class D(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features, self.head, self.embed = nn.Linear(10, 16), nn.Linear(16, 1), nn.Embedding(3, 16)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.features(x))
            return self.head(h).squeeze(1) + (self.embed(y) * h).sum(1)

    torch.manual_seed(0)
    return G().to(device), wrap(D(), z_dim=Z).to(device)


def test_tensors_on_two_devices_are_named(device: str) -> None:
    """z, e, x_real and the networks on different devices: each public function names the
    argument that is elsewhere (on a GPU: a CPU tensor with CUDA ones, which would otherwise
    fail inside a kernel or a layer with an error naming no argument)."""
    other = _elsewhere(device)
    z, e = (t.to(device) for t in pair())
    for fn in (correlation_loss, pearson_correlation):
        with pytest.raises(ValueError, match=f"z is on {other}.* but e is on {device}"):
            fn(z.to(other), e)
        with pytest.raises(ValueError, match=f"z is on {device}.* but e is on {other}"):
            fn(z, e.to(other))
    G, D = (m.to(device) for m in nets())
    x, z = torch.randn(5, 10, device=device), torch.randn(5, Z, device=device)
    with pytest.raises(ValueError, match=f"^z is on {other}.*, x_real on {device}.*: put them on one device"):
        single_loss(G, D, x, z.to(other))
    with pytest.raises(ValueError, match=f"^x_real is on {other}.*, the discriminator's parameters on {device}"):
        single_loss(G, D, x.to(other), z.to(other))
    step = SingleLossStep(G, D)
    with pytest.raises(ValueError, match=f"^x_real is on {other}.*, the discriminator's parameters on {device}"):
        step.step(x.to(other))  # z is sampled on x_real's device: the batch is named
    with pytest.raises(ValueError, match=f"^z is on {other}.*, x_real on {device}"):
        step.step(x, z.to(other))
    assert step.step_count == 0 and all(p.grad is None for p in [*G.parameters(), *D.parameters()])
    single_loss(G, D, x, z).backward()  # all on one device: fine


def test_labels_on_another_device_than_the_batch_are_named(device: str) -> None:
    """A conditional pair on ``device`` with labels left elsewhere (CPU labels with a CUDA batch)."""
    other = _elsewhere(device)
    G, D = _conditional_nets(device)
    x, z = torch.randn(5, 10, device=device), torch.randn(5, Z, device=device)
    y = torch.tensor([0, 1, 2, 0, 1], device=device)
    with pytest.raises(ValueError, match=f"^y is on {other}.* but the batch is on {device}"):
        single_loss(G, D, x, z, y=y.to(other))
    with pytest.raises(ValueError, match=f"^y_fake is on {other}.* but the batch is on {device}"):
        single_loss(G, D, x, z, y=y, y_fake=y.to(other))
    with pytest.raises(ValueError, match=f"^y is on {other}.* but the batch is on {device}"):
        SingleLossStep(G, D).step(x, z, y=y.to(other))
    out = single_loss(G, D, x, z, y=y, return_terms=True)  # labels with the batch: fine
    assert torch.isfinite(out.loss) and out.rho.device == x.device


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_z_is_read_exactly_and_computed_in_float32(device: str, dtype: torch.dtype) -> None:
    """z in half precision with float32 codes: the correlation of the half values, in float32
    (on CUDA by the Triton kernels), like the CPU's; both gradients in their input's dtype."""
    z, e = (t.to(device) for t in pair(b=9, n=33, seed=3))
    zh = z.to(dtype).requires_grad_(True)
    e.requires_grad_(True)
    rho = pearson_correlation(zh, e)
    assert rho.dtype == torch.float32 and rho.device == e.device
    torch.testing.assert_close(rho.double(), rho64(zh.detach(), e.detach()), rtol=1e-5, atol=1e-6)
    loss = correlation_loss(zh, e, 0.5)
    torch.testing.assert_close(loss.double(), -0.5 * rho64(zh.detach(), e.detach()).mean(), rtol=1e-5, atol=1e-6)
    gz, ge = torch.autograd.grad(loss, (zh, e))
    assert gz.dtype == dtype and ge.dtype == torch.float32
    z64, e64 = zh.detach().double().requires_grad_(True), e.detach().double().requires_grad_(True)
    want_z, want_e = torch.autograd.grad(-0.5 * rho64(z64, e64).mean(), (z64, e64))
    torch.testing.assert_close(ge.double(), want_e, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gz.double(), want_z, rtol=1e-2, atol=1e-2 * want_z.abs().max().item())


def test_non_finite_values_are_named_with_check_finite_true(device: str) -> None:
    """check_finite=True reads the values on every device (one synchronisation on a GPU) and
    names the input; the default checks the CPU only; SingleLossStep's check names the step."""
    z, e = (t.to(device) for t in pair())
    z_bad, e_bad = z.clone(), e.clone()
    z_bad[2, 3], e_bad[0, 0] = float("nan"), float("inf")
    for fn in (correlation_loss, pearson_correlation):
        with pytest.raises(ValueError, match="^z contains NaN or inf values$"):
            fn(z_bad, e, check_finite=True)
        with pytest.raises(ValueError, match="^e contains NaN or inf values$"):
            fn(z, e_bad, check_finite=True)
    if device == "cpu":
        with pytest.raises(ValueError, match="e contains NaN or inf"):
            pearson_correlation(z, e_bad)
    else:  # the documented default on an accelerator: no read, the bad row is NaN
        rho = pearson_correlation(z, e_bad)
        assert not torch.isfinite(rho[0]) and torch.isfinite(rho[1:]).all()
    G, D = (m.to(device) for m in nets())
    step = SingleLossStep(G, D)
    step.step(torch.randn(5, 10, device=device))
    x = torch.randn(5, 10, device=device)
    x[1, 2] = float("nan")
    before = [p.detach().clone() for p in [*G.parameters(), *D.parameters()]]
    with pytest.raises(FloatingPointError, match="non-finite O-GAN loss at step 2"):
        step.step(x)
    assert all(torch.equal(a, p) for a, p in zip(before, [*G.parameters(), *D.parameters()]))
    assert step.step_count == 1
