"""Account administration for ``chateau-admin``: plain blocking calls.

These run in the admin command's own process, never in the server, and no
reactor runs there: each operation is one transaction, run on the calling
thread with :func:`~chateau.store.engine.in_transaction` and built from the
store's own account functions (chateau.store.accounts), so the rules and
the SQL are the server's. Revoking an account's keys stamps it, and every
running server closes its connections within ``[chat]
revocation_check_interval`` seconds (see chateau.signout). Each change is
recorded in the audit log in its transaction, with the actor ``cli:`` + the
operator's login name (:func:`cli_actor`) unless another is given.
"""

from __future__ import annotations

import getpass
import secrets
from dataclasses import dataclass

import bcrypt

from chateau.auth import LOCAL
from chateau.auth.passwords import PasswordProblem, password_problem
from chateau.names import USERNAME_RULE, check_new_username, check_username
from chateau.store.audit import record_txn
from chateau.store.accounts import (
    create_user_txn,
    get_user_txn,
    list_users_txn,
    name_collisions_txn,
    revoke_all_sessions_txn,
    session_counts_txn,
    set_disabled_txn,
    set_password_hash_txn,
)
from chateau.store.deprovisioning import Deprovisioned, deprovisioned_txn
from chateau.store.engine import Connection, Engine, in_transaction
from chateau.store.invites import (
    create_invite_txn,
    hash_invite,
    list_invites_txn,
    revoke_invite_txn,
)
from chateau.store.records import InviteRecord, NameClaim, NameCollision, now_millis
from chateau.store.migrate import upgrade_to_head


class AdminError(Exception):
    """The operation cannot be done; the message says why."""


def cli_actor() -> str:
    """Who the audit log records for a command-line action: ``cli:`` + the login name."""
    return "cli:" + getpass.getuser()


@dataclass(frozen=True)
class UserSummary:
    username: str
    method: str
    disabled: bool
    display_name: str | None
    sessions: int
    # Set when the directory no longer lets this account in (chateau.deprovisioning).
    deprovisioned: Deprovisioned | None = None


def _username(raw: str) -> str:
    name = check_username(raw)
    if name is None:
        raise AdminError(f"invalid username {raw!r}: {USERNAME_RULE}")
    return name


def hash_password(password: str, cost: int) -> str:
    problem = password_problem(password, local=True)
    if problem is PasswordProblem.EMPTY:
        raise AdminError("the password must not be empty")
    if problem is not None:
        raise AdminError(problem.reason)
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()


def add_user(
    engine: Engine, raw: str, password: str, cost: int, actor: str | None = None,
) -> str:
    username = check_new_username(raw)
    if username is None:
        raise AdminError(f"invalid username {raw!r}: {USERNAME_RULE}")
    hashed = hash_password(password, cost)

    def txn(connection: Connection) -> NameClaim:
        claim = create_user_txn(connection, username, hashed, LOCAL, None)
        if claim:
            record_txn(connection, actor or cli_actor(), "user_add", username, "",
                       {"method": LOCAL})
        return claim

    claim = in_transaction(engine, txn)
    if claim.confusable:
        raise AdminError(f"{username!r} looks like the existing name {claim.blocked_by!r}")
    if not claim:
        raise AdminError(f"{username!r} is already taken by a user or a group")
    return username


def set_password(
    engine: Engine, raw: str, password: str, cost: int, actor: str | None = None,
) -> int:
    """Reset a local account's password; every session key is revoked. How many were."""
    username = _username(raw)
    hashed = hash_password(password, cost)

    def txn(connection: Connection) -> int:
        user = get_user_txn(connection, username)
        if user is None:
            raise AdminError(f"no such user: {username!r}")
        if user.auth_method != LOCAL:
            raise AdminError(f"{username!r} is a directory account: change it in the directory")
        set_password_hash_txn(connection, username, hashed)
        revoked = revoke_all_sessions_txn(connection, username)
        record_txn(connection, actor or cli_actor(), "password_reset", username, "",
                   {"sessions_revoked": revoked})
        return revoked

    return in_transaction(engine, txn)


def set_disabled(
    engine: Engine, raw: str, disabled: bool = True, actor: str | None = None,
) -> int:
    """Disable (or enable) an account; disabling revokes every session key."""
    username = _username(raw)

    def txn(connection: Connection) -> int:
        if get_user_txn(connection, username) is None:
            raise AdminError(f"no such user: {username!r}")
        set_disabled_txn(connection, username, disabled)
        revoked = revoke_all_sessions_txn(connection, username) if disabled else 0
        record_txn(connection, actor or cli_actor(), "user_disable" if disabled else "user_enable",
                   username, "", {"sessions_revoked": revoked} if disabled else {})
        return revoked

    return in_transaction(engine, txn)


def list_users(engine: Engine) -> list[UserSummary]:
    def txn(connection: Connection) -> list[UserSummary]:
        counts = session_counts_txn(connection)
        deprovisioned = deprovisioned_txn(connection)
        return [
            UserSummary(user.username, user.auth_method, user.disabled, user.display_name,
                        counts.get(user.username, 0), deprovisioned.get(user.username))
            for user in list_users_txn(connection)
        ]

    return in_transaction(engine, txn)


def create_invite(
    engine: Engine, uses: int = 1, hours: float | None = None, actor: str | None = None,
) -> tuple[int, str]:
    """A new invite code (128 random bits) for *uses* accounts, expiring after *hours*.

    Returns its id and the code; only the code's hash is stored, so this is
    the one time it can be shown.
    """
    if uses < 1:
        raise AdminError("--uses must be at least 1")
    if hours is not None and not hours > 0:
        raise AdminError("--hours must be more than 0")
    code = secrets.token_urlsafe(16)
    while code.startswith("-"):  # `chateau-admin invite revoke CODE` would read it as an option
        code = secrets.token_urlsafe(16)
    expires = None if hours is None else now_millis() + int(hours * 3_600_000)

    def txn(connection: Connection) -> int:
        invite_id = create_invite_txn(connection, hash_invite(code), uses, expires)
        # The code itself is never recorded: whoever reads the log could use it.
        record_txn(connection, actor or cli_actor(), "invite_create", f"invite {invite_id}", "",
                   {"uses": uses, "expires_at": expires})
        return invite_id

    return in_transaction(engine, txn), code


def list_invites(engine: Engine) -> list[InviteRecord]:
    """The codes still usable (uses left, not expired)."""
    return in_transaction(engine, list_invites_txn)


def revoke_invite(engine: Engine, code_or_id: str, actor: str | None = None) -> None:
    def txn(connection: Connection) -> list[int]:
        revoked = revoke_invite_txn(connection, code_or_id)
        for invite_id in revoked:
            record_txn(connection, actor or cli_actor(), "invite_revoke", f"invite {invite_id}")
        return revoked

    if not in_transaction(engine, txn):
        raise AdminError(f"no such invite: {code_or_id!r}")


def name_collisions(engine: Engine) -> list[NameCollision]:
    """Existing names flagged as confusable with older ones (``names collisions``)."""
    return in_transaction(engine, name_collisions_txn)


def upgrade_database(engine: Engine, actor: str | None = None) -> tuple[str | None, str]:
    """Apply the packaged migrations; the revisions before and after.

    An upgrade of an existing schema is audited (``db_upgrade``) once the
    audit log is there; creating the schema from nothing is not.
    """

    def txn(connection: Connection) -> tuple[str | None, str]:
        before, after = upgrade_to_head(connection)
        if before is not None and before != after:
            record_txn(connection, actor or cli_actor(), "db_upgrade", "schema", "",
                       {"from": before, "to": after})
        return before, after

    return in_transaction(engine, txn)
