"""Latency windows in the test process, kept clear of its garbage collector.

The tests that prove the reactor is never blocked time round trips between
a server and clients that share this process (or clients of a server in
another process). By the time they run, the test process holds several
hundred thousand objects made by earlier tests and their imports, and a
full collection of them stops every thread for 200–350 ms on these
machines: longer than any bound those tests set, and nothing to do with
the server under test (``twistd`` freezes its start-up heap; see
``chateau.collector``). A timed window therefore collects first and keeps
the collector off until it ends.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def collector_paused() -> Iterator[None]:
    """Collect now, then run the block with the cyclic collector off."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
