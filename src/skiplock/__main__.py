"""``python -m skiplock`` is the ``skiplock`` command."""

from __future__ import annotations

import sys

from skiplock.cli import main

sys.exit(main())
