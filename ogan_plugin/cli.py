"""The ``ogan-plugin`` command (also ``python -m ogan_plugin``).

Each subcommand lives in a module with ``configure(parser)`` and ``run(args) -> int``;
:data:`COMMANDS` maps subcommand names to those modules (imported on use, so optional
dependencies load only for the command that needs them).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "plugins": ("ogan_plugin.cli", "list loaded plugins, backends per operation and adapters"),
    "bench": ("ogan_plugin.bench", "time forward+backward of the fused operations per backend (table, --csv, --plot; --step: training step)"),
    "demo": ("ogan_plugin.demo", "train an O-GAN on handwritten digits (or --data), draw samples/reconstructions, report encoder metrics"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ogan-plugin plugins``."""
    parser.add_argument("--device", default=None, help="device type to resolve backends for (default: cpu, and cuda if present)")


def run(args: argparse.Namespace) -> int:
    """``ogan-plugin plugins``: what the registry loaded and what it would pick."""
    import torch

    from ogan_plugin.registry import ENV_BACKEND, OPS, get_registry

    reg = get_registry()
    print("plugins:")
    for name, plugin in reg.pm.list_name_plugin():
        where = getattr(plugin, "__name__", type(plugin).__name__)
        print(f"  {name:40s} {where}")
    for name, reason in sorted(reg.failed.items()):
        print(f"  {name:40s} FAILED TO LOAD: {reason}")
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    actives = {d: reg.active(d) for d in devices}
    print(f"\nbackends (active per device; override with backend= or ${ENV_BACKEND}):")
    for op in OPS:
        print(f"  {op}:")
        for b in reg.backends(op):
            reason = b.check()
            state = "available" if reason is None else f"unavailable: {reason}"
            marks = [d for d in devices if actives[d][op] == b.name]
            active = f"  <- active on {', '.join(marks)}" if marks else ""
            print(f"    {b.name:12s} priority {b.priority:3d}  [{b.plugin}] {state}{active}")
            if b.description:
                print(f"    {'':12s} {b.description}")
    print("\nadapters (tried in this order):")
    for impl in reversed(reg.pm.hook.ogan_adapt_discriminator.get_hookimpls()):
        print(f"  {impl.plugin_name}")
    print("\nlosses:", ", ".join(sorted(reg.losses())))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ogan-plugin",
        description="O-GAN encoders for existing PyTorch GANs: list plugins, run the demo, benchmark.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(modname).configure(p)
        p.set_defaults(_module=modname)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
