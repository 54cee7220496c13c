"""The ``ogan-plugin`` command (also ``python -m ogan_plugin``): a thin dispatcher.

Each subcommand lives in a module with ``configure(parser)`` and ``run(args) -> int``;
:data:`COMMANDS` maps subcommand names to those modules (imported on use, so optional
dependencies load only for the command that needs them).

Errors: a command raises :class:`CommandError` for every expected failure (a bad option,
bad data, a missing checkpoint).  :func:`main` prints it as one line,
``ogan-plugin COMMAND: error: MESSAGE``, and returns 2, as argparse does for a bad option.
``--debug`` (before or after the command) or ``OGAN_PLUGIN_DEBUG=1`` shows the traceback
instead.  Unexpected exceptions (bugs) always keep their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

#: environment variable that turns on tracebacks for expected errors (like --debug)
ENV_DEBUG = "OGAN_PLUGIN_DEBUG"


class CommandError(Exception):
    """An expected failure of a command, told to the user in one line (exit status 2).

    Raise it with a message that names the bad option or input and says what to do.
    """


#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "plugins": ("ogan_plugin.cli", "list loaded plugins, backends per operation and adapters"),
    "bench": ("ogan_plugin.bench.command", "time forward+backward of the fused operations per backend (table, --csv, --plot; --step: training step; --compile: GPU build report; --check: GPU check)"),
    "demo": ("ogan_plugin.demo.command", "train an O-GAN on handwritten digits (or --data), draw samples/reconstructions, report encoder metrics"),
    "invert": ("ogan_plugin.demo.invert", "find the codes of real images with a demo checkpoint: encoder start, refined by optimisation"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ogan-plugin plugins``."""
    parser.add_argument("--device", default=None, help="device type to resolve backends for (default: cpu, and cuda if present)")


def run(args: argparse.Namespace) -> int:
    """``ogan-plugin plugins``: what the registry loaded and what it would pick."""
    import torch

    from ogan_plugin.registry import ENV_BACKEND, OPS, get_registry

    if args.device is not None and args.device not in ("cpu", "cuda"):
        raise CommandError(f"--device must be cpu or cuda, got {args.device!r}")
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
            if reason is None:  # also the one-time run-time probe (Triton on CUDA), per device
                probed = {d: reg.problem(b, d) for d in devices}
                state = "available" + "".join(f"; unavailable on {d}: {why}" for d, why in probed.items() if why)
            else:
                state = f"unavailable: {reason}"
            marks = [d for d in devices if actives[d][op] == b.name]
            active = f"  <- active on {', '.join(marks)}" if marks else ""
            print(f"    {b.name:12s} priority {b.priority:3d}  [{b.plugin}] {state}{active}")
            if b.description:
                print(f"    {'':12s} {b.description}")
    print("\nadapters (tried in this order):")
    for impl in reversed(reg.pm.hook.ogan_adapt_discriminator.get_hookimpls()):
        wraps = "  (wrapper: adjusts the answer of the adapters below)" if impl.wrapper or impl.hookwrapper else ""
        print(f"  {impl.plugin_name}{wraps}")
    print("\nlosses:", ", ".join(sorted(reg.losses())))
    return 0


_DEBUG_HELP = f"show the full traceback of an error (also ${ENV_DEBUG}=1)"


def build_parser() -> argparse.ArgumentParser:
    """The ``ogan-plugin`` parser with one sub-parser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="ogan-plugin",
        description="O-GAN encoders for existing PyTorch GANs: list plugins, run the demo, benchmark.",
    )
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    # the same flag after the command; SUPPRESS keeps a top-level --debug from being reset
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        importlib.import_module(modname).configure(p)
        p.set_defaults(_module=modname)
    return parser


def _version() -> str:
    from ogan_plugin import __version__

    return __version__


def _debugging(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(ENV_DEBUG, "").strip() not in ("", "0")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``ogan-plugin`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except CommandError as exc:
        if _debugging(args):
            raise
        print(f"ogan-plugin {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
