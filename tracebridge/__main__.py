"""``python -m tracebridge``: the same as the ``tracebridge`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
