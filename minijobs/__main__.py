"""``python -m minijobs``: the same command line as the ``minijobs`` console script."""

from .cli import main

raise SystemExit(main())
