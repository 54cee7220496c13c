"""Hook mode on a CUDA GPU: row maps that stay on the device, the pearson_backward operator,
and no host synchronisation in a step (GPU only; the same paths run on the CPU in
test_hook_patterns.py with ``READ_ON_CPU`` / ``HOST_GRADIENT`` off)."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

import ogan_plugin
from ogan_plugin.rows import provenance

_spec = importlib.util.spec_from_file_location("hook_parity", Path(__file__).with_name("hook_parity.py"))
hp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hp)
_patterns = importlib.util.spec_from_file_location("hook_patterns", Path(__file__).with_name("test_hook_patterns.py"))
pt = importlib.util.module_from_spec(_patterns)
_patterns.loader.exec_module(pt)
B = pt.B


def data(dtype):
    torch.manual_seed(5)
    return torch.randn(B, hp.NZ, dtype=dtype, device="cuda"), torch.rand(B, 3, 8, 8, dtype=dtype, device="cuda") * 2 - 1


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
@pytest.mark.parametrize("name", ["the fake itself", "cat real first", "translation by meshgrid indexing", "shuffle", "chunk (micro-batches)"])
def test_patterns_on_the_gpu_get_the_by_hand_gradients(name, dtype, atol):
    G, D = hp.pair(dtype=dtype, device="cuda")
    z, real = data(dtype)
    calls = 4 if name.startswith("chunk") else 2
    hp.assert_parity(G, D, z, real, pt.PATTERNS[name], calls=calls, atol=atol)


@pytest.mark.gpu
def test_row_maps_stay_on_the_device_and_mixing_is_read_later():
    G, D = hp.pair(dtype=torch.float32, device="cuda")
    z, real = data(torch.float32)
    perm = torch.tensor([1, 0, 2, 3, 4, 5], device="cuda")
    with ogan_plugin.attach(D, G) as hook:
        fake = G(z).detach()
        x = pt._translate(fake)
        assert isinstance(provenance(x).rows, torch.Tensor) and provenance(x).rows.is_cuda
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            D(0.5 * x + 0.5 * x[perm]).sum().backward()  # rows 0 and 1 mixed: a device flag
        assert hook.calls == 1
        with pytest.warns(RuntimeWarning, match=r"at 'add'"):
            hook.check_provenance()


@pytest.mark.gpu
def test_a_hook_mode_step_does_not_synchronise_the_host():
    """One DCGAN-style step with a DiffAugment-style translation and real/fake concatenation
    under ``torch.cuda.set_sync_debug_mode("error")``: any host synchronisation raises."""
    G, D = hp.pair(dtype=torch.float32, device="cuda")
    z, real = data(torch.float32)
    opt_d, opt_g = torch.optim.Adam(D.parameters()), torch.optim.Adam(G.parameters())
    ones = torch.ones(2 * B, device="cuda")

    def step():
        fake = G(z)
        opt_d.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(D(pt._translate(torch.cat([real, fake.detach()]))).view(-1), ones).backward()
        opt_d.step()
        opt_g.zero_grad()
        D(pt._translate(fake)).mean().backward()
        opt_g.step()

    with ogan_plugin.attach(D, G) as hook:
        step()  # warm-up: kernels compiled, row maps copied to the device once
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert hook.calls == 4
