"""Local accounts: bcrypt hashes in the database, hashed on a pool of their own.

bcrypt at cost 12 takes about a quarter of a second; it runs on the hasher's
:class:`ThreadPool` (bcrypt releases the GIL), never on the reactor thread.
"""

from __future__ import annotations

from typing import Any

import bcrypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from chateau.auth import LOCAL, Identity, LoginFailed
from chateau.names import USERNAME_RULE, check_username
from chateau.store import Store

# bcrypt only ever reads the first 72 bytes of a password. Longer ones are
# refused outright rather than silently truncated.
MAX_PASSWORD_BYTES = 72


class Hasher:
    """bcrypt hashing and checking on a dedicated thread pool."""

    def __init__(self, reactor: Any, pool: ThreadPool, cost: int) -> None:
        self._reactor = reactor
        self._pool = pool
        self._cost = cost
        # Checked against when an account does not exist, so that a missing
        # account takes as long as a wrong password.
        self._dummy = bcrypt.hashpw(b"chateau", bcrypt.gensalt(4)).decode()

    def hash(self, password: str) -> Deferred[str]:
        return deferToThreadPool(self._reactor, self._pool, self._hash, password.encode())

    def check(self, password: str, hashed: str | None) -> Deferred[bool]:
        return deferToThreadPool(
            self._reactor, self._pool, self._check, password.encode(),
            (hashed or self._dummy).encode(), hashed is not None,
        )

    def _hash(self, password: bytes) -> str:
        return bcrypt.hashpw(password, bcrypt.gensalt(self._cost)).decode()

    @staticmethod
    def _check(password: bytes, hashed: bytes, real: bool) -> bool:
        # checkpw compares in constant time; a dummy hash never signs anyone in.
        return bcrypt.checkpw(password, hashed) and real


@implementer(ICredentialsChecker)
class LocalChecker:
    """Checks (or, when registration is open, creates) a local account."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, store: Store, hasher: Hasher, registration_open: bool) -> None:
        self._store = store
        self._hasher = hasher
        self._registration_open = registration_open

    def requestAvatarId(self, credentials: Any) -> Deferred[Identity]:
        return ensureDeferred(self._check(credentials.username, credentials.password))

    async def _check(self, raw_username: str, password: str) -> Identity:
        username = check_username(raw_username)
        if username is None:
            raise LoginFailed(f"authentication failed: {USERNAME_RULE}")
        if len(password.encode()) > MAX_PASSWORD_BYTES:
            raise LoginFailed(
                f"authentication failed: passwords are limited to {MAX_PASSWORD_BYTES} "
                "bytes (UTF-8)"
            )
        account = await self._store.get_user(username)
        if account is None and self._registration_open:
            hashed = await self._hasher.hash(password)
            if await self._store.create_user(username, hashed, LOCAL):
                return Identity(username, LOCAL)
            # Someone took the name meanwhile (or it is a group): check as usual.
            account = await self._store.get_user(username)
            if account is None:
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
        return Identity(username, LOCAL, account.display_name)
