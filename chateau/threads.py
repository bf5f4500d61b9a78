"""Worker-thread helpers."""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")

_state = threading.local()

# Niceness for CPU-bound workers (bcrypt, LDAP parsing). On a small machine
# these threads would otherwise take every core, and the reactor thread, which
# must answer everyone else within milliseconds, would wait its turn.
BACKGROUND_NICENESS = 10


def run_in_background_priority(idle: bool = False) -> None:
    """Lower the calling worker thread's CPU priority, once per thread (Linux).

    With *idle*, the thread is also put under ``SCHED_IDLE``: it then runs
    only on CPU time no ordinary thread wants, and a waking reactor thread
    preempts it at once. Niceness alone still leaves it about a tenth of the
    reactor's weight, which shows as tens of milliseconds of chat latency
    during a bcrypt sign-in storm on a shared core. Only for threads that
    release the GIL for their long work (bcrypt does): an idle thread that
    held the GIL for long could keep the reactor waiting while other
    processes take the core.
    """
    if getattr(_state, "lowered", False):
        return
    _state.lowered = True
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: the work still gets done, just unprioritised
    if idle:
        try:
            # On Linux, pid 0 is the calling thread.
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (AttributeError, OSError):
            pass  # not Linux: niceness is all there is


class GivenUp(Exception):
    """Work reached a thread after its caller had been answered: it never started."""


def in_thread_with_deadline(
    reactor: Any, pool: ThreadPool, deadline: float,
    work: Callable[[threading.Event], T], expired: Callable[[float], BaseException],
) -> Deferred[T]:
    """Run ``work(given_up)`` on *pool*; after *deadline* seconds, fail with ``expired(deadline)``.

    A thread cannot be interrupted, so *given_up* is set instead: work still
    queued then never starts, and work under way may stop between its steps.
    """
    given_up = threading.Event()

    def job() -> T:
        if given_up.is_set():
            raise GivenUp()
        return work(given_up)

    result = deferToThreadPool(reactor, pool, job)

    def timed_out(_failure: Any, timeout: float) -> None:
        given_up.set()
        raise expired(timeout)

    result.addTimeout(deadline, reactor, onTimeoutCancel=timed_out)
    return result
