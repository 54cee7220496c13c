"""Hook mode follows fakes through what real GAN code does before D (row provenance):
gradients equal adding ``correlation_loss(z_rows, D.decompose(x).raw[fake_rows])`` by hand.

The augmentation packages' patterns (DiffAugment, kornia, AugWrapper) are in
tests/thirdparty/test_hook_augment.py; these need torch only.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ogan_plugin
import ogan_plugin.provenance as provenance_module
import ogan_plugin.rows as rows_module
from ogan_plugin.provenance import Tracked
from ogan_plugin.rows import provenance

_spec = importlib.util.spec_from_file_location("hook_parity", Path(__file__).with_name("hook_parity.py"))
hp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hp)
NZ, B = hp.NZ, 6


def data(dtype=torch.float64, channels=3, size=8, n=B):
    torch.manual_seed(5)
    return torch.randn(n, NZ, dtype=dtype), torch.rand(n, channels, size, size, dtype=dtype) * 2 - 1


def one(x, fake_rows, z_rows):
    return [(x, list(fake_rows), list(z_rows))]


# --- each pattern: parity with the by-hand term ----------------------------------------------
PATTERNS = {
    "the fake itself": lambda f, r: one(f, range(B), range(B)),
    "cat real first": lambda f, r: one(torch.cat([r, f]), range(B, 2 * B), range(B)),
    "cat fake first": lambda f, r: one(torch.cat([f, r[:2]]), range(B), range(B)),
    "slice": lambda f, r: one(f[:4], range(4), range(4)),
    "slice from 2, step 2": lambda f, r: one(f[2::2], range(2), [2, 4]),
    "narrow": lambda f, r: one(f.narrow(0, 1, 3), range(3), [1, 2, 3]),
    "chunk (micro-batches)": lambda f, r: [(c, range(3), range(k * 3, k * 3 + 3)) for k, c in enumerate(f.chunk(2))],
    "split then cat with reals": lambda f, r: one(torch.cat([f.split(4)[1], r[:3], f.split(4)[0]]), [0, 1, 5, 6, 7, 8], [4, 5, 0, 1, 2, 3]),
    "contiguous": lambda f, r: one(f.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2).contiguous(), range(B), range(B)),
    "channels_last": lambda f, r: one(f.contiguous(memory_format=torch.channels_last), range(B), range(B)),
    "to(memory_format)": lambda f, r: one(f.to(memory_format=torch.channels_last) * 2 - 0.1, range(B), range(B)),
    "clone, in-place ops": lambda f, r: one(f.clone().mul_(0.5).clamp_(-0.4, 0.4), range(B), range(B)),
    "flip width": lambda f, r: one(torch.flip(f, dims=(3,)), range(B), range(B)),
    "flip batch": lambda f, r: one(f.flip(0), range(B), reversed(range(B))),
    "roll batch": lambda f, r: one(torch.roll(f, 2, 0), range(B), [4, 5, 0, 1, 2, 3]),
    "pad, interpolate, grid_sample": lambda f, r: one(_warp(F.interpolate(F.pad(f, [1, 1, 1, 1], mode="reflect"), size=(8, 8), mode="bilinear")), range(B), range(B)),
    "shuffle": lambda f, r: one(f[torch.tensor([3, 0, 5, 1, 4, 2])], range(B), [3, 0, 5, 1, 4, 2]),
    "boolean mask, then cat": lambda f, r: one(torch.cat([f[torch.tensor([1, 0, 1, 1, 0, 0], dtype=torch.bool)], r[:1]]), range(3), [0, 2, 3]),
    "per-sample brightness and cutout mask": lambda f, r: one(_bright_cutout(f), range(B), range(B)),
    "translation by meshgrid indexing": lambda f, r: one(_translate(f), range(B), range(B)),
    "unbind, roll each, stack": lambda f, r: one(torch.stack([torch.roll(s, k, 2) for k, s in enumerate(f)]), range(B), range(B)),
    "instance noise (randn_like)": lambda f, r: one(f + 0.1 * torch.randn_like(f), range(B), range(B)),
    "reshape into rows and back": lambda f, r: one((f.reshape(B * 3, 1, 8, 8) * 0.9).reshape(B, 3, 8, 8), range(B), range(B)),
}


def _warp(x):
    theta = torch.eye(2, 3, dtype=x.dtype, device=x.device).repeat(x.shape[0], 1, 1)
    theta = theta + 0.05 * torch.randn(x.shape[0], 2, 3, dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="reflection")


def _bright_cutout(x):
    x = x + (torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)
    mask = torch.ones(x.shape[0], x.shape[2], x.shape[3], dtype=x.dtype, device=x.device)
    mask[:, 2:5, 3:6] = 0
    return x * mask.unsqueeze(1)


def _translate(x, shift=1):
    """DiffAugment's rand_translation, written out: index with meshgrid(arange(B), ...)."""
    n, _, h, w = x.shape
    tx = torch.randint(-shift, shift + 1, size=[n, 1, 1], device=x.device)
    ty = torch.randint(-shift, shift + 1, size=[n, 1, 1], device=x.device)
    gb, gx, gy = torch.meshgrid(*(torch.arange(k, device=x.device) for k in (n, h, w)), indexing="ij")
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return pad.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


@pytest.mark.parametrize("name", list(PATTERNS))
def test_pattern_gets_the_by_hand_gradients(name: str) -> None:
    G, D = hp.pair()
    z, real = data()
    calls = 2 * (2 if name.startswith("chunk") else 1)
    hp.assert_parity(G, D, z, real, PATTERNS[name], calls=calls)


@pytest.mark.parametrize("name", ["translation by meshgrid indexing", "shuffle", "boolean mask, then cat", "cat real first"])
def test_device_row_maps_give_the_same_gradients(name: str, monkeypatch) -> None:
    """On a GPU row maps stay on the device after index-tensor ops (no host sync); the same
    path, run on the CPU, gives the same gradients."""
    monkeypatch.setattr(rows_module, "READ_ON_CPU", False)
    G, D = hp.pair()
    z, real = data()
    with ogan_plugin.attach(D, G, 0.5):
        x = PATTERNS[name](G(z), real)[0][0]
        assert name == "cat real first" or isinstance(provenance(x).rows, torch.Tensor)
    hp.assert_parity(G, D, z, real, PATTERNS[name], calls=2)


@pytest.mark.parametrize("name", ["the fake itself", "cat real first", "translation by meshgrid indexing"])
def test_the_operator_path_gives_the_same_gradients(name: str, monkeypatch) -> None:
    """On a GPU the term's gradient is the pearson_backward operator; its CPU implementation
    gives the same gradients as the closed form the CPU uses."""
    import ogan_plugin.hook_term as hook_module

    monkeypatch.setattr(hook_module, "HOST_GRADIENT", False)
    G, D = hp.pair()
    z, real = data()
    hp.assert_parity(G, D, z, real, PATTERNS[name], calls=2)


@pytest.mark.parametrize("name", ["the fake itself", "cat real first", "shuffle", "chunk (micro-batches)"])
def test_float32_on_the_cpu_gives_the_by_hand_gradients(name: str) -> None:
    """float32 networks on the CPU: the term's gradient in float64 NumPy (hook_term's host
    path for non-float64 inputs) equals the by-hand term's, to float32 rounding."""
    G, D = hp.pair(dtype=torch.float32)
    z, real = data(dtype=torch.float32)
    calls = 2 * (2 if name.startswith("chunk") else 1)
    hp.assert_parity(G, D, z, real, PATTERNS[name], calls=calls, atol=2e-6)


def test_a_generator_returning_a_tuple_tracks_its_images() -> None:
    G, D = hp.pair(tuple_output=True)
    z, real = data()
    hp.assert_parity(G, D, z, real, lambda f, r: one(torch.cat([r[:2], f]), range(2, 2 + B), range(B)), calls=2)
    with ogan_plugin.attach(D, G, 0.5):
        images, aux = G(z)
        assert type(images) is Tracked and type(aux) is torch.Tensor


def test_to_dtype_between_a_float32_generator_and_a_float64_discriminator() -> None:
    G, D = hp.pair()
    G = G.float()
    z, real = data()
    z = z.float()
    hp.assert_parity(G, D, z, real, lambda f, r: one(f.to(torch.float64), range(B), range(B)), calls=2, atol=1e-6)


def test_several_generator_calls_in_one_batch() -> None:
    """Fakes of two generator calls (a replay of an older batch) each pair with their own z."""
    G, D = hp.pair()
    z, real = data()
    torch.manual_seed(9)
    z_old = torch.randn(3, NZ, dtype=torch.float64)
    with ogan_plugin.attach(D, G, 0.5) as hook:
        old = G(z_old).detach()
        new = G(z)
        x = torch.cat([old, real[:2], new])
        D.zero_grad()
        D(x).sum().backward()
        got = [p.grad.clone() for p in D.parameters()]
        assert hook.calls == 1
    D.zero_grad()
    dec = D.decompose(torch.cat([G(z_old).detach(), real[:2], G(z)]))
    rows = list(range(3)) + list(range(5, 5 + B))
    (dec.output.sum() + ogan_plugin.correlation_loss(torch.cat([z_old, z]), dec.raw[rows], 0.5)).backward()
    for a, b in zip(got, [p.grad for p in D.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_a_gradient_penalty_pass_gets_no_term() -> None:
    """``autograd.grad(..., create_graph=True)`` on D's fakes (a gradient penalty) computes
    input gradients, not a loss: the term is added once, in the loss's backward."""

    def grads(hooked: bool) -> list[torch.Tensor]:
        D.zero_grad()
        x = G(z).detach().requires_grad_(True)
        if hooked:
            out = D(x)
        else:
            dec = D.decompose(x)
            out = dec.output
        (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        loss = out.mean() + 10 * g.pow(2).sum(dim=(1, 2, 3)).mean()
        if not hooked:
            loss = loss + ogan_plugin.correlation_loss(z, dec.raw, 0.5)
        loss.backward()
        return [p.grad.clone() for p in D.parameters()]

    G, D = hp.pair()
    z, _ = data()
    want = grads(False)
    with ogan_plugin.attach(D, G, 0.5) as hook:
        got = grads(True)
        assert hook.calls == 1
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


# --- lost provenance: named, and no term --------------------------------------------------
def mixup(f, r):
    perm = torch.tensor([1, 2, 0, 4, 5, 3])
    return one(0.7 * f + 0.3 * f[perm], [], [])


def test_mixup_loses_the_rows_warns_naming_the_op_and_adds_nothing() -> None:
    G, D = hp.pair()
    z, real = data()
    plain = hp.step_grads(G, D, z, real, mixup, reference_weight=0.0)
    with ogan_plugin.attach(D, G, 0.5) as hook, pytest.warns(RuntimeWarning, match=r"lost their provenance at 'add'"):
        got = hp.step_grads(G, D, z, real, mixup)
    assert hook.calls == 0 and hook.last_rho is None
    for a, b in zip(got, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_real_fake_interpolation_is_not_taken_for_a_fake() -> None:
    G, D = hp.pair()
    z, real = data()
    with ogan_plugin.attach(D, G, 0.5) as hook, pytest.warns(RuntimeWarning, match=r"at 'add'"):
        alpha = torch.rand(B, 1, 1, 1, dtype=torch.float64)
        D(alpha * real + (1 - alpha) * G(z).detach()).sum().backward()
    assert hook.calls == 0


def test_partly_lost_rows_keep_the_term_on_the_others(monkeypatch) -> None:
    """Mixing half of a batch: the untouched rows get the term (by-hand parity), the others not."""
    G, D = hp.pair()
    z, real = data()
    perm = torch.tensor([1, 0, 2, 3, 4, 5])  # rows 0 and 1 swap: mixing them loses both

    def half(f, r):
        return one(0.5 * f + 0.5 * f[perm], [2, 3, 4, 5], [2, 3, 4, 5])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        hp.assert_parity(G, D, z, real, half, calls=2)
    monkeypatch.setattr(rows_module, "READ_ON_CPU", False)  # the device path: a flag, read later
    with ogan_plugin.attach(D, G, 0.5) as hook:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            x = half(G(z).detach(), real)[0][0]
            assert isinstance(provenance(x).rows, torch.Tensor)
            D(x).sum().backward()  # no warning yet: the flag stays on the device
        with pytest.warns(RuntimeWarning, match=r"at 'add'"):
            hook.check_provenance()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        hp.assert_parity(G, D, z, real, half, calls=2)


def test_an_unknown_op_is_named() -> None:
    G, D = hp.pair()
    z, _ = data()
    with ogan_plugin.attach(D, G, 0.5) as hook, pytest.warns(RuntimeWarning, match=r"at 'cummax'"):
        x = G(z).detach()
        D(x - torch.cummax(x, dim=0).values * 0.1).sum().backward()
    assert hook.calls == 0


def test_fakes_written_into_a_buffer_are_followed() -> None:
    """A plain tensor the fakes are written into (``out[i] = crop``, ``buffer.copy_(fake)``)
    follows them: kornia's crops write into one when the input has no graph."""

    def buffered(f, r):
        out = torch.empty(B + 2, *f.shape[1:], dtype=f.dtype)
        out[:2] = r[:2]
        for i in range(B):
            out[2 + i] = f[B - 1 - i]
        return one(out, range(2, 2 + B), reversed(range(B)))

    G, D = hp.pair()
    z, real = data()
    with ogan_plugin.attach(D, G, 0.5) as hook:  # D's step only: writing into a plain buffer cuts G's graph
        x = buffered(G(z).detach(), real)[0][0]
        D.zero_grad()
        D(x).sum().backward()
        got = [p.grad.clone() for p in D.parameters()]
        assert hook.calls == 1
    D.zero_grad()
    dec = D.decompose(x.detach())
    (dec.output.sum() + ogan_plugin.correlation_loss(z.flip(0), dec.raw[2:], 0.5)).backward()
    for a, b in zip(got, [p.grad for p in D.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_fakes_that_leave_torch_are_not_followed_and_warn() -> None:
    G, D = hp.pair()
    z, _ = data()
    for transform in (lambda f: torch.from_numpy(f.detach().numpy().copy()), lambda f: torch.tensor(f.tolist(), dtype=f.dtype)):
        with ogan_plugin.attach(D, G, 0.5) as hook:
            D(transform(G(z))).sum().backward()
            assert hook.calls == 0 and hook.last_rho is None
            with pytest.warns(RuntimeWarning, match="never on a tensor made from it"):
                G(z)  # the next generator call notices its previous output was never seen


# --- cost: real-only calls do no provenance work ------------------------------------------
def test_real_only_calls_add_nothing_and_do_no_provenance_work(monkeypatch) -> None:
    G, D = hp.pair()
    z, real = data()

    def d_grads():
        D.zero_grad()
        F.binary_cross_entropy_with_logits(D(real).view(-1), torch.ones(B, dtype=real.dtype)).backward()
        return [p.grad.clone() for p in D.parameters()]

    plain = d_grads()
    seen = []
    original = provenance_module.propagate
    monkeypatch.setattr(provenance_module, "propagate", lambda *a: seen.append(a[0]) or original(*a))
    with ogan_plugin.attach(D, G, 0.5) as hook:
        G(z)  # a generator output exists
        got = d_grads()
        assert seen == [] and hook.calls == 0
    for a, b in zip(got, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_last_rho_is_the_mean_over_the_fake_rows() -> None:
    G, D = hp.pair()
    z, real = data()
    with ogan_plugin.attach(D, G, 0.5) as hook:
        fake = G(z)
        D(torch.cat([real[:2], fake[1:5]])).sum().backward()
        want = ogan_plugin.pearson_correlation(z[1:5], D.decompose(fake[1:5].detach()).raw).mean()
        torch.testing.assert_close(hook.last_rho, want)
        assert math.isfinite(float(hook.last_rho))


def test_torch_compile_of_the_loop_gives_the_eager_gradients() -> None:
    """Under torch.compile of a whole step, hook mode's hooks and the ops on tracked tensors
    run eagerly (graph breaks, docs/hook-mode.md): the gradients are the eager ones."""

    def grads(compiled: bool):
        G, D = hp.pair(dtype=torch.float32)
        z, real = data(dtype=torch.float32)
        hook = ogan_plugin.attach(D, G, 0.5)

        def losses(noise):
            fake = G(noise)
            loss_d = D(real).mean() - D(torch.flip(fake.detach(), dims=(3,))).mean()
            return loss_d, D(fake).mean()

        loss_d, loss_g = (torch.compile(losses) if compiled else losses)(z)
        loss_d.backward()
        g_d = [p.grad.clone() for p in D.parameters()]
        D.zero_grad()
        loss_g.backward()
        assert hook.calls == 2
        hook.detach()
        return g_d + [p.grad.clone() for p in G.parameters()]

    torch._dynamo.reset()
    for a, b in zip(grads(True), grads(False)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
