"""``python -m ogan_plugin`` runs the ``ogan-plugin`` command."""

from ogan_plugin.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
