"""Hook mode: an unchanged DCGAN-style loop gains the O-GAN term with one line."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.optim as optim

import ogan_plugin
from ogan_plugin.hook import OGANHook

NZ = 16




# --- the official DCGAN example's loop, at 8x8 on sklearn's digits -------------------------
def weights_init(m: nn.Module) -> None:
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


def dcgan_pair(ngf: int = 8, ndf: int = 8) -> tuple[nn.Module, nn.Module]:
    netG = nn.Sequential(
        nn.ConvTranspose2d(NZ, ngf * 2, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, 1, 4, 2, 1, bias=False), nn.Tanh(),
    )
    netD = nn.Sequential(
        nn.Conv2d(1, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 3, 1, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
    )
    netG.apply(weights_init)
    netD.apply(weights_init)
    return netG, netD


def digits() -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0  # [-1, 1]


def train_dcgan_style(hook: bool, steps: int = 200, batch_size: int = 32) -> tuple[float, list]:
    """The DCGAN example's loop, unchanged except for the one ``wrap`` line."""
    torch.manual_seed(0)
    data = digits()
    netG, netD = dcgan_pair()
    # the one added line (with hook=False: the encoder head without the hook)
    netD = ogan_plugin.wrap(netD, z_dim=NZ, generator=netG if hook else None)
    criterion = nn.BCELoss()
    real_label, fake_label = 1.0, 0.0
    optimizerD = optim.Adam(netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=0.0002, betas=(0.5, 0.999))
    logged = []
    for i in range(steps):
        real_cpu = data[torch.randint(0, len(data), (batch_size,))]
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        b_size = real_cpu.size(0)
        label = torch.full((b_size,), real_label, dtype=torch.float)
        output = netD(real_cpu).view(-1)
        errD_real = criterion(output, label)
        errD_real.backward()
        noise = torch.randn(b_size, NZ, 1, 1)
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach()).view(-1)
        errD_fake = criterion(output, label)
        errD_fake.backward()
        optimizerD.step()
        # (2) Update G network: maximize log(D(G(z)))
        netG.zero_grad()
        label.fill_(real_label)
        output = netD(fake).view(-1)
        errG = criterion(output, label)
        errG.backward()
        optimizerG.step()
        h = OGANHook.of(netD)
        logged.append(None if h is None else float(h.last_rho))
    netG.eval()
    netD.eval()
    with torch.no_grad():
        z = torch.randn(512, NZ)
        rho = ogan_plugin.pearson_correlation(z, netD.decompose(netG(z[:, :, None, None])).raw).mean()
    return float(rho), logged


def test_dcgan_loop_learns_an_encoder_only_with_the_hook() -> None:
    rho_on, logged = train_dcgan_style(hook=True)
    rho_off, logged_off = train_dcgan_style(hook=False)
    assert rho_on > 0.5, rho_on
    assert abs(rho_off) < 0.2, rho_off
    assert all(r is None for r in logged_off)
    assert sum(logged[-20:]) / 20 > 0.5 and abs(logged[0]) < 0.5  # last step's rho, for logging


# --- exactness: hook mode == adding the term explicitly to both losses --------------------
def mlp_pair() -> tuple[nn.Module, nn.Module]:
    """A small float64 generator and a Sigmoid-ended discriminator (not wrapped)."""
    torch.manual_seed(1)
    G = nn.Sequential(nn.Linear(NZ, 24), nn.Tanh(), nn.Linear(24, 12)).double()
    D = nn.Sequential(nn.Linear(12, 20), nn.LeakyReLU(0.2), nn.Linear(20, 1), nn.Sigmoid()).double()
    return G, D


def alternating_grads(
    G: nn.Module, D: nn.Module, z: torch.Tensor, x: torch.Tensor, explicit_weight: float, explicit_weight_g=None
):
    """One DCGAN-style step's gradients; adds the term explicitly when ``explicit_weight`` > 0
    (with ``explicit_weight_g`` in the generator's loss when given)."""
    weight_g = explicit_weight if explicit_weight_g is None else explicit_weight_g
    bce = nn.BCELoss()
    ones, zeros = torch.ones(len(x), dtype=x.dtype, device=x.device), torch.zeros(len(x), dtype=x.dtype, device=x.device)
    D.zero_grad()
    G.zero_grad()
    bce(D(x).view(-1), ones).backward()
    fake = G(z)
    out = D.decompose(fake.detach())
    loss_d = bce(out.output.view(-1), zeros)
    if explicit_weight:
        loss_d = loss_d + ogan_plugin.correlation_loss(z, out.raw, explicit_weight)
    loss_d.backward()
    d_grads = [p.grad.clone() for p in D.parameters()]
    D.zero_grad()
    out = D.decompose(fake)
    loss_g = bce(out.output.view(-1), ones)
    if weight_g:
        loss_g = loss_g + ogan_plugin.correlation_loss(z, out.raw, weight_g)
    loss_g.backward()
    return d_grads, [p.grad.clone() for p in G.parameters()]


def test_hook_gradients_equal_the_explicit_correlation_term(device) -> None:
    G, D = mlp_pair()
    G, D = G.to(device), ogan_plugin.wrap(D, z_dim=NZ).to(device)
    torch.manual_seed(2)
    z, x = (torch.randn(10, n, dtype=torch.float64).to(device) for n in (NZ, 12))
    want_d, want_g = alternating_grads(G, D, z, x, explicit_weight=0.3)
    plain_d, plain_g = alternating_grads(G, D, z, x, explicit_weight=0.0)
    with ogan_plugin.attach(D, G, corr_weight=0.3) as hook:
        got_d, got_g = alternating_grads(G, D, z, x, explicit_weight=0.0)
        assert hook.calls == 2  # fake.detach() in D's step, fake in G's step; not the real call
        want_rho = ogan_plugin.pearson_correlation(z, D.decompose(G(z)).raw).mean()
        torch.testing.assert_close(hook.last_rho, want_rho)
    for a, b in zip(got_d + got_g, want_d + want_g):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(got_d + got_g, plain_d + plain_g))
    # detached on leaving the block: back to the plain gradients
    assert OGANHook.of(D) is None and not hook.active
    again_d, again_g = alternating_grads(G, D, z, x, explicit_weight=0.0)
    for a, b in zip(again_d + again_g, plain_d + plain_g):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class ConditionalG(nn.Module):
    def __init__(self, n_classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_classes, NZ)
        self.net = nn.Sequential(nn.Linear(NZ, 24), nn.Tanh(), nn.Linear(24, 12))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(z + self.embed(y))


class ProjectionD(nn.Module):
    """D(x, y) = head(h) + <embed(y), h>: the loop's losses use this whole output."""

    def __init__(self, n_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(12, 20), nn.LeakyReLU(0.2))
        self.head = nn.Linear(20, 1)
        self.embed = nn.Embedding(n_classes, 20)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.head(h).squeeze(1) + (self.embed(y) * h).sum(1)


def conditional_hinge_grads(G, D, z, x, y, explicit_weight: float):
    """A conditional hinge loop (netD(fake, y)); the term added explicitly when asked."""
    D.zero_grad(), G.zero_grad()
    fake = G(z, y)
    out = D.decompose(fake.detach(), y)
    loss_d = torch.relu(1 - D(x, y)).mean() + torch.relu(1 + out.output).mean()
    if explicit_weight:
        loss_d = loss_d + ogan_plugin.correlation_loss(z, out.raw, explicit_weight)
    loss_d.backward()
    d_grads = [p.grad.clone() for p in D.parameters()]
    D.zero_grad()
    out = D.decompose(fake, y)
    loss_g = -out.output.mean()
    if explicit_weight:
        loss_g = loss_g + ogan_plugin.correlation_loss(z, out.raw, explicit_weight)
    loss_g.backward()
    return d_grads, [p.grad.clone() for p in G.parameters()]


def test_conditional_loop_calling_netD_with_labels_works_unchanged(device) -> None:
    torch.manual_seed(3)
    G, D = ConditionalG().double().to(device), ogan_plugin.wrap(ProjectionD().double(), z_dim=NZ).to(device)
    z, x = (torch.randn(10, n, dtype=torch.float64).to(device) for n in (NZ, 12))
    y = torch.randint(0, 3, (10,)).to(device)
    want_d, want_g = conditional_hinge_grads(G, D, z, x, y, explicit_weight=0.5)
    plain_d, _ = conditional_hinge_grads(G, D, z, x, y, explicit_weight=0.0)
    with ogan_plugin.attach(D, G, corr_weight=0.5) as hook:
        got_d, got_g = conditional_hinge_grads(G, D, z, x, y, explicit_weight=0.0)
        assert hook.calls == 2  # netD(fake.detach(), y) and netD(fake, y); not netD(x, y)
        torch.testing.assert_close(hook.last_rho, ogan_plugin.pearson_correlation(z, D.decompose(G(z, y), y).raw).mean())
    for a, b in zip(got_d + got_g, want_d + want_g):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(got_d, plain_d))


def test_corr_weight_g_weights_the_generator_step_only(device) -> None:
    G, D = mlp_pair()
    G, D = G.to(device), ogan_plugin.wrap(D, z_dim=NZ).to(device)
    torch.manual_seed(2)
    z, x = (torch.randn(10, n, dtype=torch.float64).to(device) for n in (NZ, 12))
    want_d, want_g = alternating_grads(G, D, z, x, explicit_weight=2.0, explicit_weight_g=0.25)
    same_d, same_g = alternating_grads(G, D, z, x, explicit_weight=2.0)
    with ogan_plugin.attach(D, G, corr_weight=2.0, corr_weight_g=0.25) as hook:
        assert hook.corr_weight_g == 0.25 and "corr_weight_g=0.25" in repr(hook)
        assert ogan_plugin.attach(D, G, corr_weight=2.0, corr_weight_g=0.25) is hook
        with pytest.raises(ValueError, match="already attached"):
            ogan_plugin.attach(D, G, corr_weight=2.0)
        got_d, got_g = alternating_grads(G, D, z, x, explicit_weight=0.0)
    for a, b in zip(got_d + got_g, want_d + want_g):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    # D's step is the one-weight step's, G's is not
    for a, b in zip(got_d, same_d):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(got_g, same_g))
    with pytest.raises(ValueError, match="corr_weight_g"):
        ogan_plugin.attach(D, G, corr_weight_g=-1.0)


def test_gradscaler_scales_the_term_like_the_loss(device) -> None:
    G, D = mlp_pair()
    G, D = G.float().to(device), ogan_plugin.wrap(D.float(), z_dim=NZ).to(device)
    z, x = torch.randn(8, NZ, device=device), torch.randn(8, 12, device=device)

    def d_grads(scaler) -> list[torch.Tensor]:
        D.zero_grad()
        loss = D(G(z).detach()).mean()
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if scaler is not None:
            return [p.grad / scaler.get_scale() for p in D.parameters()]
        return [p.grad.clone() for p in D.parameters()]

    with ogan_plugin.attach(D, G):
        want = d_grads(None)
    scaler = torch.amp.GradScaler(device, init_scale=2.0**10)
    with ogan_plugin.attach(D, G, scaler=scaler):
        got = d_grads(scaler)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# --- what it recognises ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "transform",
    [lambda f: f.clone(), lambda f: f * 1.0, lambda f: f.detach().contiguous()[:-1], lambda f: f.detach().add_(0.0)],
    ids=["clone", "augmented", "sliced", "in_place"],
)
def test_copied_augmented_sliced_or_modified_fakes_are_recognised(transform) -> None:
    """Before row provenance these got no term and a warning; now they are followed (the
    gradients are checked against the by-hand term in test_hook_patterns.py)."""
    import warnings

    G, D = mlp_pair()
    D = ogan_plugin.wrap(D, z_dim=NZ)
    hook = ogan_plugin.attach(D, G, 0.5)
    z = torch.randn(6, NZ, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = transform(G(z))
        D(x).sum().backward()
        G(z)
    assert hook.calls == 1
    torch.testing.assert_close(hook.last_rho, ogan_plugin.pearson_correlation(z[: len(x)], D.decompose(x.detach()).raw).mean())
    ogan_plugin.detach(D)


def test_no_warning_for_sampling_under_no_grad_and_deepcopies_are_inert() -> None:
    G, D = mlp_pair()
    D = ogan_plugin.wrap(D, z_dim=NZ)
    hook = ogan_plugin.attach(D, G, 0.5)
    G_ema, D_copy = copy.deepcopy(G), copy.deepcopy(D)
    z = torch.randn(6, NZ, dtype=torch.float64)
    fake = G(z)
    G_ema(torch.randn(6, NZ, dtype=torch.float64))  # must not replace the record
    D_copy(fake).sum().backward(retain_graph=True)  # a copy of D is not watched
    assert hook.calls == 0
    D(fake).sum().backward()
    assert hook.calls == 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            G(z)  # sampling with fixed noise: replaces the record
        D(torch.randn(6, 12, dtype=torch.float64)).sum().backward()
        G(z)  # the no-grad sample was never meant for D: no warning


def test_attach_api_errors_and_idempotence() -> None:
    G, D = mlp_pair()
    with pytest.raises(TypeError, match="wrapped first"):
        ogan_plugin.attach(D, G)
    W = ogan_plugin.wrap(D, z_dim=NZ, generator=G)
    hook = OGANHook.of(W)
    assert ogan_plugin.wrap(W, z_dim=NZ, generator=G) is W and OGANHook.of(W) is hook
    assert ogan_plugin.attach(W, G) is hook
    with pytest.raises(ValueError, match="already attached"):
        ogan_plugin.attach(W, G, corr_weight=1.0)
    with pytest.raises(TypeError, match="generator"):
        ogan_plugin.attach(W, "G")  # type: ignore[arg-type]
    assert ogan_plugin.detach(W) is hook and ogan_plugin.detach(W) is None
    with pytest.raises(ValueError, match="corr_weight"):
        ogan_plugin.attach(W, G, corr_weight=-1.0)
    assert "detached" in repr(hook)


def test_generator_input_of_the_wrong_width_is_named() -> None:
    G = nn.Sequential(nn.Flatten(), nn.Linear(NZ + 1, 12)).double()
    D = ogan_plugin.wrap(nn.Sequential(nn.Linear(12, 1)).double(), z_dim=NZ, generator=G)
    with pytest.raises(ValueError, match=r"z \(the generator's input\) has shape \(4, 17\).*z_dim=16"):
        G(torch.randn(4, NZ + 1, dtype=torch.float64))
    ogan_plugin.detach(D)


# --- DataParallel: the hooks fire through it when it runs the module itself -----------------
#: where DataParallel runs: the first GPU where torch sees one (it then moves the module
#: there), else the CPU (no devices: it calls the module itself)
DP_DEVICE = "cuda:0" if torch.cuda.is_available() else "cpu"


def netd_only_grads(netD: nn.Module, G: nn.Module, z: torch.Tensor, x: torch.Tensor):
    """The DCGAN loop's three calls, all through ``netD`` itself (no decompose)."""
    bce, fake, n = nn.BCELoss(), G(z), len(x)
    ones, zeros = torch.ones(n, dtype=x.dtype, device=x.device), torch.zeros(n, dtype=x.dtype, device=x.device)
    netD.zero_grad()
    G.zero_grad()
    loss_d = bce(netD(x).view(-1), ones) + bce(netD(fake.detach()).view(-1), zeros)
    loss_d.backward()
    d_grads = [p.grad.clone() for p in netD.parameters()]
    netD.zero_grad()
    bce(netD(fake).view(-1), ones).backward()
    return d_grads, [p.grad.clone() for p in G.parameters()]


def test_hook_mode_works_through_dataparallel_on_one_device() -> None:
    G, D = mlp_pair()
    G, W = G.to(DP_DEVICE), ogan_plugin.wrap(D, z_dim=NZ).to(DP_DEVICE)
    torch.manual_seed(2)
    z, x = (torch.randn(10, n, dtype=torch.float64).to(DP_DEVICE) for n in (NZ, 12))
    want_d, want_g = alternating_grads(G, W, z, x, explicit_weight=0.3)
    # on a CPU-only machine: no devices, it calls W itself; on a GPU machine one device (the
    # first), which it also runs W on directly
    netD = nn.DataParallel(W, device_ids=[0] if DP_DEVICE != "cpu" else None)
    assert len(netD.device_ids) <= 1
    with ogan_plugin.attach(netD, G, corr_weight=0.3) as hook:
        assert OGANHook.of(netD) is hook is OGANHook.of(W)  # the hook lives on the wrapped D inside
        got_d, got_g = netd_only_grads(netD, G, z, x)
        assert hook.calls == 2
    for a, b in zip(got_d + got_g, want_d + want_g):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_hook_mode_refuses_dataparallel_over_several_gpus_and_warns_on_replicas() -> None:
    import warnings

    G, D = mlp_pair()
    G, W = G.to(DP_DEVICE), ogan_plugin.wrap(D, z_dim=NZ).to(DP_DEVICE)
    several = nn.DataParallel(W)
    several.device_ids = [0, 1]  # what DataParallel holds on a 2-GPU machine
    with pytest.raises(ValueError, match="discriminator: DataParallel over 2 GPUs runs replicas"):
        ogan_plugin.attach(several, G)
    # wrapped with generator= first, put in DataParallel later: its replicas call the shared
    # hooks, which ignore them (another device, a slice of the batch) and say so once
    hook = ogan_plugin.attach(W, G)
    replica = W.discriminator._replicate_for_data_parallel()  # what DataParallel runs per GPU
    x = torch.randn(4, 12, dtype=torch.float64, device=DP_DEVICE)
    with pytest.warns(RuntimeWarning, match="a DataParallel replica of a hooked network ran"):
        replica(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        replica(x)  # once per hook
    assert hook.calls == 0
    ogan_plugin.detach(W)


def test_hook_mode_errors_name_the_discriminator() -> None:
    G, D = mlp_pair()
    for bad in (D, nn.DataParallel(D), "D"):
        with pytest.raises(TypeError, match=r"^discriminator must be an OGANDiscriminator .*wrapped first"):
            ogan_plugin.attach(bad, G)
        with pytest.raises(TypeError, match=r"^discriminator must be an OGANDiscriminator"):
            OGANHook.of(bad)


def test_the_former_module_path_still_imports_hook_mode() -> None:
    """Hook mode moved into the core (ogan_plugin.hook); the old path re-exports it."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: a plain re-export
        from ogan_plugin.integrations import hook as old

    import ogan_plugin.hook as core

    assert old.attach is core.attach is ogan_plugin.attach
    assert old.detach is core.detach and old.OGANHook is core.OGANHook


def test_scaler_g_scales_the_generator_steps_term_and_z_from_picks_the_code() -> None:
    """Two GradScalers (lightweight-gan has one per step): each step's term is scaled like its
    loss.  ``z_from`` reads the code from another argument of the generator."""

    class SecondArgG(nn.Module):  # G(labels, z)
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(NZ, 24), nn.Tanh(), nn.Linear(24, 12))

        def forward(self, labels: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return self.net(z) + labels[:, None]

    torch.manual_seed(4)
    G = SecondArgG()
    D = ogan_plugin.wrap(nn.Sequential(nn.Linear(12, 20), nn.LeakyReLU(0.2), nn.Linear(20, 1)), z_dim=NZ)
    z, labels = torch.randn(8, NZ), torch.randn(8)

    def grads(scaler, scaler_g):
        D.zero_grad()
        G.zero_grad()
        fake = G(labels, z)
        loss_d = D(fake.detach()).mean()
        (scaler.scale(loss_d) if scaler else loss_d).backward()
        d = [p.grad / (scaler.get_scale() if scaler else 1.0) for p in D.parameters()]
        loss_g = D(fake).mean()
        G.zero_grad()
        (scaler_g.scale(loss_g) if scaler_g else loss_g).backward()
        return d + [p.grad / (scaler_g.get_scale() if scaler_g else 1.0) for p in G.parameters()]

    with ogan_plugin.attach(D, G, 0.5, z_from=lambda args, kwargs: args[1]) as hook:
        want = grads(None, None)
        assert hook.calls == 2
    s_d, s_g = torch.amp.GradScaler("cpu", init_scale=2.0**4), torch.amp.GradScaler("cpu", init_scale=2.0**9)
    with ogan_plugin.attach(D, G, 0.5, scaler=s_d, scaler_g=s_g, z_from=lambda args, kwargs: args[1]):
        got = grads(s_d, s_g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(TypeError, match="scaler_g must be a torch.amp.GradScaler"):
        ogan_plugin.attach(D, G, scaler_g=1.0)
    with pytest.raises(TypeError, match="z_from must be a function"):
        ogan_plugin.attach(D, G, z_from=3)
