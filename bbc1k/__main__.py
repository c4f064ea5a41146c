"""``python -m bbc1k``: see :mod:`bbc1k.cli`."""
from bbc1k.cli import main

raise SystemExit(main())
