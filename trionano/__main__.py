"""``python -m trionano``: the ``trionano`` command line (:mod:`trionano.cli`)."""

from .cli import main

raise SystemExit(main())
