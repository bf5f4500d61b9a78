"""Directory sign-in as a twisted.cred checker.

The directory client (``chateau.auth.directory``) blocks. :class:`LdapChecker`
runs every call of it on the checker's own bounded :class:`ThreadPool`, and
the reactor gives up on its own after a deadline, so a dead or silent
directory costs its users a clear 301 and costs everybody else nothing.

It also applies the naming rule: the directory's uid, canonicalised, is the
account name, and a name that belongs to a local account is never handed to
a directory user (nor the other way round, see ``LocalChecker``'s
``reserved`` hook). The arrow goes one way: this module uses the client, the
client knows nothing of it.
"""

from __future__ import annotations

import threading
import unicodedata
from typing import Any, Callable, TypeVar

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from chateau.auth import DIRECTORY, Identity, LoginFailed
from chateau.auth.directory import (
    MISCONFIGURED_DETAIL,
    AccountStatus,
    Directory,
    DirectoryError,
    DirectoryRefused,
    DirectoryUnavailable,
    DirectoryUser,
)
from chateau.auth.passwords import password_problem
from chateau.errors import CONFLICT, FORBIDDEN
from chateau.names import USERNAME_RULE, check_new_username, check_username
from chateau.store import Store
from chateau.threads import in_thread_with_deadline, run_in_background_priority

T = TypeVar("T")


@implementer(ICredentialsChecker)
class LdapChecker:
    """Checks a directory account and provisions its row on first sign-in."""

    credentialInterfaces = (IUsernamePassword,)
    _log = Logger()

    def __init__(
        self, store: Store, directory: Directory, reactor: Any, pool: ThreadPool
    ) -> None:
        self._store = store
        self._directory = directory
        self._reactor = reactor
        self._pool = pool
        # Each step waits at most `timeout`; a whole attempt, queueing for a
        # thread included, gets one more `timeout` than there are servers.
        self.deadline = directory.timeout * (len(directory.urls) + 1)

    def requestAvatarId(self, credentials: Any) -> Deferred[Identity]:
        return ensureDeferred(self._check(credentials.username, credentials.password))

    def is_reserved(self, username: str) -> Deferred[bool]:
        """Whether the directory has *username*: LocalChecker's ``reserved`` hook."""
        return self._in_thread(self._directory.has_user, username)

    def _in_thread(self, work: Callable[..., T], *args: Any) -> Deferred[T]:
        def job(cancelled: threading.Event) -> T:
            # ldap3 parses in pure Python: keep the reactor thread ahead.
            run_in_background_priority()
            return work(*args, cancelled=cancelled)

        def expired(timeout: float) -> DirectoryUnavailable:
            return DirectoryUnavailable(
                f"authentication failed: the directory did not answer within {timeout:g} "
                "seconds; try again later",
                f"no result within {timeout:g} s from {' '.join(self._directory.urls)}",
            )

        return in_thread_with_deadline(self._reactor, self._pool, self.deadline, job, expired)

    async def _check(self, raw_username: str, password: str) -> Identity:
        username = check_username(raw_username)
        if username is None:
            raise LoginFailed(f"authentication failed: {USERNAME_RULE}")
        problem = password_problem(password)
        if problem is not None:
            raise LoginFailed(f"authentication failed: {problem.reason}")
        # Ask with the letters as typed (case-insensitive matching is the
        # directory's job); NFKC only, so nothing new can appear.
        typed = unicodedata.normalize("NFKC", raw_username)
        try:
            user = await self._in_thread(self._directory.authenticate, typed, password)
        except DirectoryRefused as refused:
            self._log.info(
                "directory refused {username}: {reason}",
                username=username, reason=refused.reason,
            )
            raise LoginFailed(refused.detail) from None
        except DirectoryError as failure:
            self._log.warn(
                "directory sign-in for {username} failed: {reason}",
                username=username, reason=failure.reason,
            )
            raise LoginFailed(failure.detail) from None
        except Exception:
            self._log.failure("directory sign-in for {username} failed", username=username)
            raise LoginFailed(MISCONFIGURED_DETAIL) from None
        identity = await self._account_for(user)
        await self._signed_in(identity.username)
        return identity

    async def _signed_in(self, username: str) -> None:
        """The directory let *username* in: a check as good as a re-check, and a
        deprovisioned account comes back (chateau.deprovisioning)."""
        now = int(self._reactor.seconds() * 1000)
        if await self._store.deprovisioning.signed_in(username, now):
            self._log.info("directory account {username} reprovisioned: the directory "
                           "lets it sign in again", username=username)

    def account_status(
        self, username: str, directory_id: str | None
    ) -> Deferred[AccountStatus]:
        """Whether *username* may still sign in (Directory.account_status), on the
        directory pool with the sign-in deadline: the deprovisioning re-check."""
        return self._in_thread(self._directory.account_status, username, directory_id)

    async def _account_for(self, user: DirectoryUser) -> Identity:
        """Apply the naming rule: a directory user never takes a local name."""
        name = user.username
        record = await self._store.accounts.get_user(name)
        if record is None:
            if check_new_username(name) != name:
                self._log.warn(
                    "directory user {dn} refused: {username!r} follows only the older "
                    "NFKC name rule, and new names must pass PRECIS",
                    dn=user.dn, username=name,
                )
                raise LoginFailed(
                    f"authentication failed: the directory name {name!r} cannot be used "
                    f"here: {USERNAME_RULE}"
                )
            claim = await self._store.accounts.create_user(
                name, None, DIRECTORY, user.display_name
            )
            if claim:
                self._log.info(
                    "directory account {username} created for {dn}", username=name, dn=user.dn
                )
                return Identity(name, DIRECTORY, user.display_name)
            if claim.confusable:
                self._log.warn(
                    "directory user {dn} refused: {username!r} looks like the existing name "
                    "{other!r} here; rename one of them to let them in",
                    dn=user.dn, username=name, other=claim.blocked_by,
                )
                raise LoginFailed(
                    f"authentication failed: the name {name!r} looks like the existing name "
                    f"{claim.blocked_by!r} on this server; please tell the server "
                    "administrator",
                    CONFLICT,
                )
            record = await self._store.accounts.get_user(name)
            if record is None:
                self._log.warn(
                    "directory user {dn} refused: {username!r} is a group name here; "
                    "rename the group to let them in",
                    dn=user.dn, username=name,
                )
                raise LoginFailed(
                    f"authentication failed: the name {name!r} is taken by a group on this "
                    "server; please tell the server administrator"
                )
        if record.auth_method != DIRECTORY:
            self._log.warn(
                "directory user {dn} refused: {username!r} is a local account on this "
                "server; rename or remove the local account to let the directory user in",
                dn=user.dn, username=name,
            )
            raise LoginFailed(
                f"authentication failed: the name {name!r} belongs to a local account on "
                "this server, not to your directory account; please tell the server "
                "administrator"
            )
        if record.disabled:
            raise LoginFailed("authentication failed: this account is disabled")
        banned = record.ban_refusal()
        if banned is not None:
            raise LoginFailed(banned, FORBIDDEN)
        return Identity(name, DIRECTORY, user.display_name or record.display_name)
