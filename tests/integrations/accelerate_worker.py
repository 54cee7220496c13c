"""One rank of the HF Accelerate check run by test_accelerate.py (a script, not a test module).

Usage: torchrun --nproc_per_node 2 accelerate_worker.py OUT_DIR [cpu|cuda]

``cpu`` (the default): CPU processes, gloo (the test hides any GPU from them, so Accelerate
cannot pick NCCL); ``cuda``: one process per GPU, NCCL, the networks and batches on each
rank's GPU.

Each rank builds the networks, wraps D, hands them to ``accelerator.prepare`` (which puts
both under DistributedDataParallel in a multi-process run), takes its slice of a fixed
global batch and runs every configuration of :data:`CONFIGS` as a user would: the
prepared modules go straight into ``single_loss`` / ``SingleLossStep``, the backward is
``accelerator.backward``.  It saves the gradients (or the parameters after the step) to
``OUT_DIR/rank{RANK}.pt``.  The test compares them with one process on the whole batch,
computed by :func:`run` without Accelerate.
"""

from __future__ import annotations

import sys
from typing import Optional

import torch
import torch.nn as nn

import ogan_plugin

Z, FEATURES, CLASSES, GLOBAL_BATCH = 6, 10, 3, 8
#: (name, loss, routing, conditional, step): step=True runs SingleLossStep with the
#: prepared optimizer and reports the parameters after it
CONFIGS = [
    ("split_qp", "qp", "split", False, False),
    ("three_forward_hinge", "hinge", "three_forward", False, False),
    ("conditional_split_bce", "bce", "split", True, False),
    ("conditional_step_hinge", "hinge", "split", True, True),
]


class Generator(nn.Module):
    """G(z) or, conditional, G(z, y).  (DDP without find_unused_parameters needs every
    parameter used, so the unconditional nets have no label embedding.)"""

    def __init__(self, conditional: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(CLASSES, Z) if conditional else None
        self.net = nn.Sequential(nn.Linear(Z, 16), nn.Tanh(), nn.Linear(16, FEATURES))

    def forward(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.net(z if y is None else z + self.embed(y))


class Discriminator(nn.Module):
    """A projection discriminator D(x, y) when conditional, a plain one otherwise."""

    def __init__(self, conditional: bool) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(FEATURES, 16), nn.LeakyReLU(0.2))
        self.head = nn.Linear(16, 1)
        self.embed = nn.Embedding(CLASSES, 16) if conditional else None

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.features(x)
        out = self.head(h).squeeze(1)
        return out if y is None else out + (self.embed(y) * h).sum(1)


def nets(conditional: bool = True) -> tuple[nn.Module, ogan_plugin.OGANDiscriminator]:
    torch.manual_seed(0)
    return Generator(conditional).double(), ogan_plugin.wrap(Discriminator(conditional).double(), Z)


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(GLOBAL_BATCH, FEATURES, generator=g, dtype=torch.float64)
    z = torch.randn(GLOBAL_BATCH, Z, generator=g, dtype=torch.float64)
    return x, z, torch.randint(0, CLASSES, (GLOBAL_BATCH,), generator=g)


def run(config: tuple, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor, accelerator=None) -> dict[str, torch.Tensor]:
    """Gradients of one ``single_loss`` backward, or the parameters after one
    ``SingleLossStep``, with the modules prepared by ``accelerator`` (None: plain), on the
    batch's device; returned on the CPU."""
    _, loss, routing, conditional, step = config
    G, D = (m.to(x.device) for m in nets(conditional))
    opt = torch.optim.SGD([*G.parameters(), *D.parameters()], lr=0.1)
    G_run, D_run = G, D
    if accelerator is not None:
        G_run, D_run, opt = accelerator.prepare(G, D, opt)
    labels = {"y": y} if conditional else {}
    if step:
        ogan_plugin.SingleLossStep(G_run, D_run, loss=loss, routing=routing, optimizer=opt).step(x, z, **labels)
        return {f"{k}.{n}": p.detach().cpu().clone() for k, m in (("G", G), ("D", D)) for n, p in m.named_parameters()}
    out = ogan_plugin.single_loss(G_run, D_run, x, z, loss, routing=routing, **labels)
    if accelerator is not None:
        accelerator.backward(out)
    else:
        out.backward()
    return {f"{k}.{n}": p.grad.cpu().clone() for k, m in (("G", G), ("D", D)) for n, p in m.named_parameters()}


def main() -> None:
    from accelerate import Accelerator

    torch.set_num_threads(1)
    out = sys.argv[1]
    device = sys.argv[2] if len(sys.argv) > 2 else "cpu"
    accelerator = Accelerator(cpu=device == "cpu")
    assert accelerator.device.type == device, (accelerator.device, device)
    rank, world = accelerator.process_index, accelerator.num_processes
    x, z, y = (t.to(accelerator.device) for t in batch())
    per = GLOBAL_BATCH // world
    mine = slice(rank * per, (rank + 1) * per)
    result = {c[0]: run(c, x[mine], z[mine], y[mine], accelerator) for c in CONFIGS}
    result["backend"] = str(torch.distributed.get_backend())
    G, D = nets()
    prepared = accelerator.prepare(D)
    result["prepared_type"] = type(prepared).__name__
    try:  # the wrong order: prepare, then wrap
        ogan_plugin.wrap(accelerator.prepare(Discriminator(False).double()), Z)
    except TypeError as exc:
        result["wrap_after_prepare"] = str(exc)
    torch.save(result, f"{out}/rank{rank}.pt")
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
