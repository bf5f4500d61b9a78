"""Tests that run on the Twisted reactor: async tests as Deferreds, and waiting.

pytest-twisted runs every test on the reactor; an ``async def`` test must be
wrapped so that pytest gets a Deferred it can wait for (``@inline``). A test
that wants time to pass must let the reactor run meanwhile, which
``time.sleep`` would not (``await sleep(...)``).
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

# ``@inline`` over an ``async def`` test (under ``@given`` for hypothesis).
inline = pytest_twisted.ensureDeferred


def sleep(seconds: float) -> Deferred[None]:
    """A Deferred that fires after *seconds*, the reactor running meanwhile."""
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
