"""A task module whose import never ends (as one waiting on the network at import would): only
pool children import it, through SKIPLOCK_TASK_MODULES."""

from __future__ import annotations

import time

time.sleep(3600)
