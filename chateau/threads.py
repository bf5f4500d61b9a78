"""Worker-thread helpers."""

from __future__ import annotations

import os
import threading

_state = threading.local()

# Niceness for CPU-bound workers (bcrypt). On a small machine the hashing
# threads would otherwise take every core, and the reactor thread, which must
# answer everyone else within milliseconds, would wait its turn.
BACKGROUND_NICENESS = 10


def run_in_background_priority() -> None:
    """Lower the calling worker thread's CPU priority, once per thread (Linux)."""
    if getattr(_state, "lowered", False):
        return
    _state.lowered = True
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: hashing still works, just unprioritised
