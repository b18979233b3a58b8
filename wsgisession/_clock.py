"""The one clock sessions and stores read, so tests can move time forward."""

from __future__ import annotations

import time


def now() -> float:
    """Seconds since the epoch."""
    return time.time()
