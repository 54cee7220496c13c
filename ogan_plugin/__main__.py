"""``python -m ogan_plugin`` runs the ``ogan-plugin`` command."""

from ogan_plugin.cli import main

raise SystemExit(main())
