"""Rate limits: plain objects with an injected clock, no I/O.

:class:`TokenBucket` bounds how fast one connection may send requests.
:class:`SignInThrottle` slows down password guessing with growing delays
after failures, keyed so that an attacker cannot lock a real user out: the
per-account delay applies only to the address the failures came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

Clock = Callable[[], float]


class TokenBucket:
    """*rate* tokens a second, up to *burst*; each request takes one."""

    def __init__(self, rate: float, burst: int, now: Clock) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._now = now
        self._tokens = float(burst)
        self._stamp = now()

    def take(self) -> float:
        """0 when a token was taken; else the seconds until one is available."""
        now = self._now()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate


@dataclass
class _Failures:
    count: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


class SignInThrottle:
    """Growing delays after failed sign-ins, per address and per (account, address).

    The first *free* failures cost nothing; after that each failure blocks the
    key for ``base * 2**(n - free)`` seconds, at most *cap*. A key forgets its
    failures after *forget* quiet seconds, and a success clears the account's.
    """

    def __init__(
        self, now: Clock, free: int = 5, base: float = 1.0, cap: float = 60.0,
        forget: float = 900.0, per_address_factor: int = 4,
    ) -> None:
        self._now = now
        self._free = free
        self._base = base
        self._cap = cap
        self._forget = forget
        # An address may fail this many times more often than one account
        # from it, so a campus behind one NAT address is not blocked by one
        # user's typos.
        self._address_free = free * per_address_factor
        self._entries: dict[tuple[str, ...], _Failures] = {}

    def _keys(self, address: str, account: str) -> list[tuple[tuple[str, ...], int]]:
        return [(("address", address), self._address_free), (("account", account, address), self._free)]

    def retry_after(self, address: str, account: str) -> float:
        """Seconds to wait before this sign-in may be tried; 0 when it may go now."""
        now = self._now()
        wait = 0.0
        for key, _ in self._keys(address, account):
            entry = self._entries.get(key)
            if entry is None:
                continue
            if now - entry.last > self._forget:
                del self._entries[key]
                continue
            wait = max(wait, entry.blocked_until - now)
        return max(0.0, wait)

    def failed(self, address: str, account: str) -> None:
        now = self._now()
        for key, free in self._keys(address, account):
            entry = self._entries.setdefault(key, _Failures())
            if now - entry.last > self._forget:
                entry.count = 0
            entry.count += 1
            entry.last = now
            if entry.count > free:
                delay = min(self._cap, self._base * 2 ** (entry.count - free - 1))
                entry.blocked_until = now + delay
        self._expire(now)

    def succeeded(self, address: str, account: str) -> None:
        self._entries.pop(("account", account, address), None)

    def _expire(self, now: float) -> None:
        if len(self._entries) > 100_000:
            stale = [k for k, e in self._entries.items() if now - e.last > self._forget]
            for key in stale:
                del self._entries[key]
