"""Local accounts: bcrypt hashes in the database, hashed on a pool of their own.

bcrypt at cost 12 takes about a quarter of a second; it runs on the hasher's
:class:`ThreadPool` (bcrypt releases the GIL), never on the reactor thread. A
sign-in for a missing account is checked against a dummy hash of the same
cost, so that it takes as long as a wrong password for a real one.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable, TypeVar

import bcrypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from chateau.auth import LOCAL, Identity, LoginFailed, held_refusal
from chateau.auth.passwords import password_problem
from chateau.errors import CONFLICT, FORBIDDEN, TOO_MANY_REQUESTS, UNAVAILABLE, ChateauError
from chateau.limits import AddressRates
from chateau.names import USERNAME_RULE, check_new_username, check_username
from chateau.store import Store
from chateau.store.records import iso_timestamp
from chateau.threads import in_thread_with_deadline, run_in_background_priority

T = TypeVar("T")


class Hasher:
    """bcrypt hashing and checking on a dedicated thread pool, within a deadline.

    The hashing threads run only on CPU time nothing else wants (see
    :func:`run_in_background_priority`), so that a sign-in storm cannot slow
    the chat down. The price is that a machine kept busy by other work can
    starve them: each password is therefore hashed or checked within
    *deadline* seconds of being asked, or the sign-in is answered "busy".
    A job that has not started by then never starts.
    """

    _log = Logger()

    def __init__(self, reactor: Any, pool: ThreadPool, cost: int, deadline: float) -> None:
        self._reactor = reactor
        self._pool = pool
        self._cost = cost
        self._deadline = deadline
        # Checked against when an account does not exist, so that a missing
        # account takes as long as a wrong password: made at the configured
        # cost (a cheaper one would let names be enumerated by timing), once,
        # on the pool, never on the reactor thread (see prepare()).
        self._dummy: str | None = None
        self._dummy_lock = threading.Lock()

    @property
    def dummy_hash(self) -> str | None:
        """The hash a missing account is checked against; None until made."""
        return self._dummy

    def prepare(self) -> Deferred[str]:
        """Make the dummy hash on the pool now (the service does, before it listens).

        Otherwise the first sign-in for a missing account makes it, and so
        costs two hashes; every later one costs exactly one, like a real one.
        """
        return deferToThreadPool(self._reactor, self._pool, self._dummy_hashed)

    def hash(self, password: str) -> Deferred[str]:
        return self._in_thread(self._hash, password.encode())

    def check(self, password: str, hashed: str | None) -> Deferred[bool]:
        """Whether *password* matches *hashed*; None (no account) is never a match."""
        if hashed is None:
            return self._in_thread(self._check_missing, password.encode())
        return self._in_thread(self._check, password.encode(), hashed.encode(), True)

    def _in_thread(self, work: Callable[..., T], *args: Any) -> Deferred[T]:
        return in_thread_with_deadline(
            self._reactor, self._pool, self._deadline, lambda _given_up: work(*args), self._expired
        )

    def _expired(self, timeout: float) -> ChateauError:
        self._log.warn(
            "a password was not checked within {timeout} s (the hashing threads are "
            "starved or overloaded); the sign-in was answered busy",
            timeout=timeout,
        )
        return ChateauError(
            UNAVAILABLE,
            f"server busy: the password could not be checked within {timeout:g} seconds; "
            "retry shortly",
        )

    def _hash(self, password: bytes) -> str:
        run_in_background_priority(idle=True)
        return bcrypt.hashpw(password, bcrypt.gensalt(self._cost)).decode()

    def _dummy_hashed(self) -> str:
        run_in_background_priority(idle=True)
        with self._dummy_lock:  # made once, however many threads ask at first
            if self._dummy is None:
                self._dummy = bcrypt.hashpw(b"chateau", bcrypt.gensalt(self._cost)).decode()
            return self._dummy

    def _check_missing(self, password: bytes) -> bool:
        return self._check(password, self._dummy_hashed().encode(), False)

    @staticmethod
    def _check(password: bytes, hashed: bytes, real: bool) -> bool:
        run_in_background_priority(idle=True)
        # checkpw compares in constant time; a dummy hash never signs anyone in.
        return bcrypt.checkpw(password, hashed) and real


@implementer(ICredentialsChecker)
class LocalChecker:
    """Checks (or, when registration is open or by invite, creates) a local account."""

    credentialInterfaces = (IUsernamePassword,)
    _log = Logger()

    def __init__(
        self, store: Store, hasher: Hasher, registration: str | bool,
        reserved: Callable[[str], Deferred[bool]] | None = None,
        signups: AddressRates | None = None,
    ) -> None:
        self._store = store
        self._hasher = hasher
        # "open", "closed" or "invite" ([auth] registration); a bool for open/closed.
        if isinstance(registration, bool):
            registration = "open" if registration else "closed"
        self._registration = registration
        # Accounts one address may create (open or by invite), per hour.
        self._signups = signups
        # With directory sign-in on too, asked before a NEW local account is
        # created: True when the directory has that name (then it stays the
        # directory user's). Failing to ask refuses the registration.
        self._reserved = reserved

    def hash_password(self, password: str) -> Deferred[str]:
        """The bcrypt hash of a new password, made on the hashing pool."""
        return self._hasher.hash(password)

    def requestAvatarId(self, credentials: Any) -> Deferred[Identity]:
        return ensureDeferred(self._check(
            credentials.username, credentials.password,
            getattr(credentials, "address", "?"), getattr(credentials, "invite", None),
        ))

    async def _check(
        self, raw_username: str, password: str, address: str = "?", invite: str | None = None
    ) -> Identity:
        username = check_username(raw_username)
        if username is None:
            raise LoginFailed(f"authentication failed: {USERNAME_RULE}")
        problem = password_problem(password, local=True)
        if problem is not None:
            raise LoginFailed(f"authentication failed: {problem.reason}")
        account = await self._store.accounts.get_user(username)
        creating = self._registration == "open" or (
            self._registration == "invite" and invite is not None
        )
        if account is None and creating:
            if check_new_username(raw_username) != username:
                # Only found, never taken: a name of the older NFKC rule.
                raise LoginFailed(f"authentication failed: {USERNAME_RULE}")
            await self._refuse_if_reserved(username)
            self._check_signup_rate(address)
            hashed = await self._hasher.hash(password)
            if invite is not None and self._registration == "invite":
                outcome = await self._store.invites.create_invited_user(
                    invite, username, hashed, LOCAL
                )
                if outcome is None:
                    raise LoginFailed(
                        "authentication failed: the invite code is unknown, used up or expired"
                    )
                claim = outcome
            else:
                claim = await self._store.accounts.create_user(username, hashed, LOCAL)
            if claim:
                self._log.info(
                    "new local account {username} from {address}{how}",
                    username=username, address=address,
                    how=" (invite)" if invite is not None else "",
                )
                if self._signups is not None:
                    self._signups.take(address)
                return Identity(username, LOCAL)
            if claim.held_until is not None:
                raise LoginFailed(held_refusal(claim.blocked_by or username, claim.held_until))
            if claim.confusable:
                raise LoginFailed(
                    f"cannot register {username!r}: it looks like the existing name "
                    f"{claim.blocked_by!r}; choose another name",
                    CONFLICT,
                )
            # Someone took the name meanwhile (or it is a group): check as usual.
            account = await self._store.accounts.get_user(username)
            if account is None:
                held = await self._store.accounts.held_until(username)
                if held is not None:
                    raise LoginFailed(
                        f"authentication failed: the name {username!r} is reserved until "
                        f"{iso_timestamp(held)}; please choose another name"
                    )
                raise LoginFailed(f"authentication failed: {username!r} is a group name")
        if account is not None and account.auth_method != LOCAL:
            raise LoginFailed(
                f"authentication failed: {username!r} is a directory account; "
                "sign in with auth: true"
            )
        matches = await self._hasher.check(password, account.password_hash if account else None)
        if not matches:
            raise LoginFailed("authentication failed: wrong username or password")
        if account.disabled:
            raise LoginFailed("authentication failed: this account is disabled")
        banned = account.ban_refusal()
        if banned is not None:
            raise LoginFailed(banned, FORBIDDEN)
        return Identity(username, LOCAL, account.display_name)

    def _check_signup_rate(self, address: str) -> None:
        if self._signups is None:
            return
        wait = self._signups.wait(address)
        if wait:
            raise ChateauError(
                TOO_MANY_REQUESTS,
                f"too many new accounts from your address: wait {math.ceil(wait)} s "
                "before creating another",
                retry_after=round(wait, 3),
            )

    async def _refuse_if_reserved(self, username: str) -> None:
        """Fail closed: no new local name the directory has, or might have."""
        if self._reserved is None:
            return
        try:
            taken = await self._reserved(username)
        except Exception as exc:
            self._log.warn(
                "local registration of {username} refused: cannot ask the directory "
                "whether it has that name: {reason}",
                username=username, reason=getattr(exc, "reason", None) or repr(exc),
            )
            raise LoginFailed(
                f"authentication failed: cannot create the local account {username!r} now: "
                "the directory could not be asked whether the name is taken; try again later"
            ) from None
        if taken:
            raise LoginFailed(
                f"authentication failed: {username!r} is a directory account; "
                "sign in with auth: true"
            )
