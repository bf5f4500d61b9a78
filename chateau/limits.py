"""Rate limits: plain objects with an injected clock, no I/O.

:class:`TokenBucket` bounds how fast one connection may send requests;
:class:`AddressRates` how fast one client address may send HTTP requests, open
WebSockets, sign up or sign in.
:class:`SignInThrottle` slows down password guessing with growing delays
after failures, keyed so that an attacker cannot lock a real user out: the
per-account delay applies only to the address the failures came from.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

Clock = Callable[[], float]


class TokenBucket:
    """*rate* tokens a second, up to *burst*; each request takes one."""

    def __init__(self, rate: float, burst: int, now: Clock) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._now = now
        self._tokens = float(burst)
        self._stamp = now()

    def _refill(self) -> None:
        now = self._now()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def take(self) -> float:
        """0 when a token was taken; else the seconds until one is available."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate


class AddressRates:
    """A token bucket per client address: *rate* a second, bursts of *burst*.

    At most *entries* addresses are kept, the least recently seen going
    first, so a flood from many addresses cannot grow memory without bound;
    an evicted address merely starts again with a full bucket. Each entry is
    a two-item list (tokens, when they were counted), some 250 bytes with
    its key.
    """

    def __init__(self, rate: float, burst: int, now: Clock, entries: int = 30_000) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._now = now
        self._max_entries = entries
        self._table: OrderedDict[str, list[float]] = OrderedDict()

    def take(self, address: str) -> float:
        """0 when *address* may go now; else the seconds until it may."""
        now = self._now()
        entry = self._table.get(address)
        if entry is None:
            entry = self._table[address] = [self._burst, now]
            while len(self._table) > self._max_entries:
                self._table.popitem(last=False)
        else:
            self._table.move_to_end(address)
        tokens = min(self._burst, entry[0] + (now - entry[1]) * self._rate)
        entry[1] = now
        if tokens >= 1:
            entry[0] = tokens - 1
            return 0.0
        entry[0] = tokens
        return (1 - tokens) / self._rate

    def wait(self, address: str) -> float:
        """Like :meth:`take`, without taking: 0 when *address* may go now."""
        entry = self._table.get(address)
        if entry is None:
            return 0.0
        self._table.move_to_end(address)
        tokens = min(self._burst, entry[0] + (self._now() - entry[1]) * self._rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self._rate

    def __len__(self) -> int:
        return len(self._table)


@dataclass(slots=True)
class _Failures:
    count: int = 0
    last: float = 0.0


class SignInThrottle:
    """Growing delays after failed sign-ins, per address and per (account, address).

    The first *free* failures cost nothing; after that each failure blocks the
    key for ``base * 2**(n - free)`` seconds, at most *cap*. A key forgets its
    failures after *forget* quiet seconds, and a success clears the account's.
    *account* is the canonical, valid username: invalid names are refused
    before they get here, so the names kept are at most 32 characters.

    Each table (addresses; accounts per address) keeps at most *entries*
    keys, the least recently used going first, so distinct names or
    addresses cannot grow memory without bound; an evicted key merely starts
    counting again.
    """

    def __init__(
        self, now: Clock, free: int = 5, base: float = 1.0, cap: float = 60.0,
        forget: float = 900.0, per_address_factor: int = 4, entries: int = 30_000,
    ) -> None:
        self._now = now
        self._free = free
        self._base = base
        self._cap = cap
        self._forget = forget
        self._max_entries = entries
        # The delay stops doubling once it reached the cap: 2 ** failures is
        # too large for a float after about 1,024 failures (OverflowError).
        self._max_steps = (
            math.ceil(math.log2(cap / base)) + 1 if 0 < base < cap else 0
        )
        # An address may fail this many times more often than one account
        # from it, so a campus behind one NAT address is not blocked by one
        # user's typos.
        self._address_free = free * per_address_factor
        self._addresses: OrderedDict[str, _Failures] = OrderedDict()
        self._accounts: OrderedDict[tuple[str, str], _Failures] = OrderedDict()

    def _tables(
        self, address: str, account: str
    ) -> list[tuple[OrderedDict[Any, _Failures], Any, int]]:
        return [
            (self._addresses, address, self._address_free),
            (self._accounts, (account, address), self._free),
        ]

    def _delay(self, count: int, free: int) -> float:
        if count <= free:
            return 0.0
        return min(self._cap, self._base * 2 ** min(count - free - 1, self._max_steps))

    def retry_after(self, address: str, account: str) -> float:
        """Seconds to wait before this sign-in may be tried; 0 when it may go now."""
        now = self._now()
        wait = 0.0
        for table, key, free in self._tables(address, account):
            entry = table.get(key)
            if entry is None:
                continue
            if now - entry.last > self._forget:
                del table[key]
                continue
            table.move_to_end(key)
            wait = max(wait, entry.last + self._delay(entry.count, free) - now)
        return max(0.0, wait)

    def failed(self, address: str, account: str) -> None:
        now = self._now()
        for table, key, _ in self._tables(address, account):
            entry = table.get(key)
            if entry is None:
                entry = table[key] = _Failures()
                while len(table) > self._max_entries:
                    table.popitem(last=False)
            else:
                table.move_to_end(key)
                if now - entry.last > self._forget:
                    entry.count = 0
            entry.count += 1
            entry.last = now

    def succeeded(self, address: str, account: str) -> None:
        self._accounts.pop((account, address), None)

    def sizes(self) -> tuple[int, int]:
        """How many addresses and (account, address) keys are kept now."""
        return len(self._addresses), len(self._accounts)
