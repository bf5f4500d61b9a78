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

from chateau.auth import DIRECTORY, Identity, LoginFailed, held_refusal
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
from chateau.store.identity import DirectorySignIn
from chateau.store.records import NameClaim, iso_timestamp, now_millis
from chateau.threads import in_thread_with_deadline, run_in_background_priority

T = TypeVar("T")


@implementer(ICredentialsChecker)
class LdapChecker:
    """Checks a directory account and provisions its row on first sign-in."""

    credentialInterfaces = (IUsernamePassword,)
    _log = Logger()

    def __init__(
        self, store: Store, directory: Directory, reactor: Any, pool: ThreadPool,
        rename_hold_days: float = 90.0,
    ) -> None:
        self._store = store
        self._directory = directory
        self._reactor = reactor
        self._pool = pool
        # How long a renamed user's old name stays reserved ([ldap] rename_hold_days).
        self._hold_ms = int(rename_hold_days * 86_400_000)
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
        """The account of *user*, found by its stable id (docs/ldap.md, Stable identity).

        The account bound to the entry's id is the user's, whatever its name:
        renamed here when the uid changed. Otherwise the account with the
        uid's name is bound (made before ids were bound), or, when it is
        bound to somebody else (a recycled uid), that is settled with the
        directory first; or a new account is made and bound.
        """
        if user.directory_id is None:
            self._log.warn(
                "directory entry {dn} has no [ldap] id_attribute value: its account is "
                "found by name only, so a renamed or recycled uid cannot be told apart",
                dn=user.dn,
            )
            return await self._account_by_name(user)
        name = user.username
        may_take = check_new_username(name) == name
        result = None
        renames: list[tuple[str, str, str]] = []
        for _ in range(3):
            result = await self._store.identity.directory_sign_in(
                name, user.directory_id, user.display_name, now_millis() + self._hold_ms,
                may_take,
            )
            if result.outcome != "recycled":
                break
            renames += await self._settle_recycled(user, result)
        assert result is not None
        if result.outcome == "created":
            self._log.info(
                "directory account {username} created for {dn}", username=name, dn=user.dn
            )
        elif result.outcome == "renamed":
            assert result.old_name is not None
            renames.append((result.old_name, name, result.rename_id))
            self._log.info(
                "directory account {old} renamed to {username}: its uid changed in the "
                "directory ({dn})",
                old=result.old_name, username=name, dn=user.dn,
            )
        elif result.bound:
            self._log.info(
                "directory account {username} bound to its entry's id ({dn})",
                username=name, dn=user.dn,
            )
        elif result.outcome != "ok":
            raise self._refusal(user, result)
        record = result.record
        assert record is not None
        if record.disabled:
            raise LoginFailed("authentication failed: this account is disabled")
        banned = record.ban_refusal()
        if banned is not None:
            raise LoginFailed(banned, FORBIDDEN)
        return Identity(
            record.username, DIRECTORY, user.display_name or record.display_name,
            tuple(renames),
        )

    def _confusable(self, user: DirectoryUser, name: str, claim: NameClaim) -> LoginFailed:
        """The refusal of a directory name that looks like an existing one here."""
        self._log.warn(
            "directory user {dn} refused: {username!r} looks like the existing name "
            "{other!r} here; rename one of them to let them in",
            dn=user.dn, username=name, other=claim.blocked_by,
        )
        return LoginFailed(
            f"authentication failed: the name {name!r} looks like the existing name "
            f"{claim.blocked_by!r} on this server; please tell the server administrator",
            CONFLICT,
        )

    async def _settle_recycled(
        self, user: DirectoryUser, result: DirectorySignIn
    ) -> list[tuple[str, str, str]]:
        """The uid's account is bound to another entry: ask the directory about it.

        Still there under another uid: the old account follows it there (its
        name is then held, and the newcomer is refused meanwhile). Gone: the
        old account is retired and the name freed for the newcomer. The
        rename made, if any.
        """
        assert result.record is not None and result.other_id is not None
        name = result.record.username
        try:
            other = await self._in_thread(self._directory.find_by_id, result.other_id)
        except DirectoryError as failure:
            self._log.warn(
                "directory user {dn} refused: {username!r} belongs to another directory "
                "entry ({other_id}), which could not be looked up: {reason}",
                dn=user.dn, username=name, other_id=result.other_id, reason=failure.reason,
            )
            raise LoginFailed(failure.detail) from None
        if other is not None and other.username != name:
            renamed = await self._store.identity.rename_account(
                name, other.username, result.other_id, now_millis() + self._hold_ms
            )
            if renamed.outcome == "taken":
                self._log.warn(
                    "directory user {dn} refused: {username!r} belongs to the account of "
                    "{other_dn}, now {new!r} in the directory, and that name is taken here "
                    "({blocked_by!r}); rename one of them",
                    dn=user.dn, username=name, other_dn=other.dn, new=other.username,
                    blocked_by=renamed.claim.blocked_by if renamed.claim else None,
                )
                raise LoginFailed(
                    f"authentication failed: the name {name!r} still belongs to another "
                    "person's account on this server; please tell the server administrator"
                )
            if renamed.outcome != "renamed":
                return []
            self._log.info(
                "directory account {username} renamed to {new}: its entry ({other_dn}) "
                "has a new uid, and {username!r} was given to {dn}",
                username=name, new=other.username, other_dn=other.dn, dn=user.dn,
            )
            return [(name, other.username, renamed.rename_id)]
        retired = await self._store.identity.retire_account(name, result.other_id)
        if retired.outcome != "renamed":
            return []
        self._log.warn(
            "directory account {username} retired as {retired}: its entry "
            "({other_id}) is gone from the directory and {dn} now has its uid",
            username=name, retired=retired.new_name, other_id=result.other_id,
            dn=user.dn,
        )
        return [(name, retired.new_name, retired.rename_id)]

    def _refusal(self, user: DirectoryUser, result: DirectorySignIn) -> LoginFailed:
        """Why the account of *user* cannot be had (and the warning for the log)."""
        name = user.username
        claim = result.claim
        if result.outcome == "unacceptable":
            return self._unacceptable(user)
        if result.outcome == "local":
            return self._local_refusal(user)
        if claim is not None and claim.held_until is not None:
            held = claim.blocked_by or name
            self._log.warn(
                "directory user {dn} refused: {username!r} is held until {until} after a "
                "rename",
                dn=user.dn, username=held, until=iso_timestamp(claim.held_until),
            )
            return LoginFailed(held_refusal(held, claim.held_until))
        if claim is not None and claim.confusable:
            return self._confusable(user, name, claim)
        if result.record is not None:
            self._log.warn(
                "directory account {old} could not be renamed to {username!r} (its new uid "
                "in {dn}): the name is taken here; rename what has it",
                old=result.record.username, username=name, dn=user.dn,
            )
            return LoginFailed(
                f"authentication failed: your directory name is now {name!r}, which is "
                "taken on this server; please tell the server administrator"
            )
        return self._group_name(user)

    def _unacceptable(self, user: DirectoryUser) -> LoginFailed:
        """A new account's name must pass PRECIS; the directory's uid does not."""
        name = user.username
        self._log.warn(
            "directory user {dn} refused: {username!r} follows only the older "
            "NFKC name rule, and new names must pass PRECIS",
            dn=user.dn, username=name,
        )
        return LoginFailed(
            f"authentication failed: the directory name {name!r} cannot be used "
            f"here: {USERNAME_RULE}"
        )

    def _group_name(self, user: DirectoryUser) -> LoginFailed:
        """The directory's uid is a group's name here."""
        name = user.username
        self._log.warn(
            "directory user {dn} refused: {username!r} is a group name here; "
            "rename the group to let them in",
            dn=user.dn, username=name,
        )
        return LoginFailed(
            f"authentication failed: the name {name!r} is taken by a group on this "
            "server; please tell the server administrator"
        )

    def _local_refusal(self, user: DirectoryUser) -> LoginFailed:
        name = user.username
        self._log.warn(
            "directory user {dn} refused: {username!r} is a local account on this "
            "server; rename or remove the local account to let the directory user in",
            dn=user.dn, username=name,
        )
        return LoginFailed(
            f"authentication failed: the name {name!r} belongs to a local account on "
            "this server, not to your directory account; please tell the server "
            "administrator"
        )

    async def _account_by_name(self, user: DirectoryUser) -> Identity:
        """Apply the naming rule: a directory user never takes a local name."""
        name = user.username
        record = await self._store.accounts.get_user(name)
        if record is None:
            if check_new_username(name) != name:
                raise self._unacceptable(user)
            claim = await self._store.accounts.create_user(
                name, None, DIRECTORY, user.display_name
            )
            if claim:
                self._log.info(
                    "directory account {username} created for {dn}", username=name, dn=user.dn
                )
                return Identity(name, DIRECTORY, user.display_name)
            if claim.confusable:
                raise self._confusable(user, name, claim)
            record = await self._store.accounts.get_user(name)
            if record is None:
                raise self._group_name(user)
        if record.auth_method != DIRECTORY:
            raise self._local_refusal(user)
        if record.disabled:
            raise LoginFailed("authentication failed: this account is disabled")
        banned = record.ban_refusal()
        if banned is not None:
            raise LoginFailed(banned, FORBIDDEN)
        return Identity(name, DIRECTORY, user.display_name or record.display_name)
