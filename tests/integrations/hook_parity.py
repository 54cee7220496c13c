"""The gradient-parity harness for hook mode's patterns (used by test_hook_patterns.py and
tests/thirdparty/test_hook_augment.py).

One DCGAN-style alternating step (D on the detached fakes, then G on the fakes), BCE with
logits, where the user's code builds D's inputs with ``pattern(fake, real)``: a list of
``(x, fake_rows, z_rows)``, one per discriminator call, ``x`` what D sees, ``fake_rows``
the rows of ``x`` that are fakes and ``z_rows`` the rows of z that made them (what the
reference needs; hook mode finds them itself).  The reference adds
``correlation_loss(z[z_rows], D.decompose(x).raw[fake_rows], weight)`` to each call's loss
by hand; hook mode runs the same code with the hook attached and no term.  Random draws
(torch and Python's ``random``) are reseeded before each step, so both runs augment alike.
"""

from __future__ import annotations

import random
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

import ogan_plugin

NZ = 8
Calls = Sequence[tuple[Tensor, Sequence[int], Sequence[int]]]


class ImageG(nn.Module):
    """z (B, NZ) -> images (B, C, S, S) in [-1, 1]; optionally returns (images, aux)."""

    def __init__(self, channels: int = 3, size: int = 8, tuple_output: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(NZ, 32), nn.Tanh(), nn.Linear(32, channels * size * size), nn.Tanh())
        self.shape, self.tuple_output = (channels, size, size), tuple_output

    def forward(self, z: Tensor) -> object:
        x = self.net(z).view(-1, *self.shape)
        return (x, z.pow(2).sum(1)) if self.tuple_output else x


def pair(channels: int = 3, size: int = 8, dtype: torch.dtype = torch.float64, tuple_output: bool = False, device: str = "cpu"):
    """A generator and a wrapped conv discriminator (its head a Linear), in ``dtype``."""
    torch.manual_seed(0)
    G = ImageG(channels, size, tuple_output).to(dtype=dtype, device=device)
    D = nn.Sequential(
        nn.Conv2d(channels, 6, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(6 * (size // 2) ** 2, 1)
    ).to(dtype=dtype, device=device)
    return G, ogan_plugin.wrap(D, z_dim=NZ)


def reseed(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)


def step_grads(
    G: nn.Module,
    D: nn.Module,
    z: Tensor,
    real: Tensor,
    pattern: Callable[[Tensor, Tensor], Calls],
    reference_weight: Optional[float] = None,
    call: Optional[Callable[[nn.Module, Tensor], Tensor]] = None,
    seed: int = 0,
) -> list[Tensor]:
    """D's gradients after its step and G's after its step (hook mode when
    ``reference_weight`` is None, else the by-hand reference with that weight)."""
    call = call or (lambda D, x: D(x))
    grads: list[Tensor] = []
    for step, target in (("d", 0.0), ("g", 1.0)):
        D.zero_grad(set_to_none=True)
        G.zero_grad(set_to_none=True)
        out = G(z)
        fake = out[0] if isinstance(out, (tuple, list)) else out
        reseed(seed + (step == "g"))
        loss = torch.zeros((), dtype=z.dtype, device=z.device)
        for x, fake_rows, z_rows in pattern(fake.detach() if step == "d" else fake, real):
            if reference_weight is None:
                output = call(D, x)
            else:
                dec = D.decompose(x)
                output = dec.output
                if len(fake_rows):
                    loss = loss + ogan_plugin.correlation_loss(z[list(z_rows)], dec.raw[list(fake_rows)], reference_weight)
            output = output[0] if isinstance(output, (tuple, list)) else output  # a tuple output's logits
            target_t = torch.full((x.shape[0],), target, dtype=output.dtype, device=output.device)
            loss = loss + F.binary_cross_entropy_with_logits(output.reshape(-1), target_t)
        loss.backward()
        net = D if step == "d" else G
        grads += [p.grad.clone() for p in net.parameters() if p.grad is not None]
    return grads


def assert_parity(
    G: nn.Module,
    D: nn.Module,
    z: Tensor,
    real: Tensor,
    pattern: Callable[[Tensor, Tensor], Calls],
    *,
    weight: float = 0.5,
    calls: Optional[int] = None,
    atol: float = 1e-9,
) -> None:
    """Hook mode's gradients equal the by-hand reference's, and differ from no term at all."""
    want = step_grads(G, D, z, real, pattern, reference_weight=weight)
    plain = step_grads(G, D, z, real, pattern, reference_weight=0.0)
    with ogan_plugin.attach(D, G, corr_weight=weight) as hook:
        got = step_grads(G, D, z, real, pattern)
        if calls is not None:
            assert hook.calls == calls, (hook.calls, calls)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=atol, atol=atol)
    assert max((a - b).abs().max() for a, b in zip(got, plain)) > 1e-6  # the term is really there
