"""``python -m kseg.shared.cli``: the ``kseg`` command."""

from kseg.shared.cli.service import main

raise SystemExit(main())
