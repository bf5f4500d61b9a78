"""The cyclic garbage collector, set up for a long-running server process."""

from __future__ import annotations

import gc

# Net allocations of container objects between two young collections
# (CPython's default is 700).
YOUNG_THRESHOLD = 10_000


def tune_collector(young_threshold: int = YOUNG_THRESHOLD) -> int:
    """Freeze what start-up built and run young collections less often.

    Reference counting frees nearly everything Chateau makes; the collector
    is there for cycles. With CPython's defaults it still costs a busy
    server a good part of its CPU: every message that waits for its commit
    keeps its request, coroutine and Deferreds alive meanwhile, so a young
    collection (every 700 allocations) finds the messages in flight alive
    and promotes them, and enough promotions start a full collection, which
    walks every object in the process, start-up's included (Twisted,
    SQLAlchemy, Autobahn, the modules), for tens of milliseconds each time
    on the reactor thread or the writer's (figures in docs/performance.md). Freezing moves the start-up objects to
    a generation no collection walks, and a larger young threshold lets
    most in-flight objects die before they are looked at. Process-wide: the
    ``twistd`` entry point calls it once the server listens, never a test
    that merely builds a server. Returns the number of objects frozen.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
    return gc.get_freeze_count()
