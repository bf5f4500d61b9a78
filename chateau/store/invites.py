"""Invite codes: ``[auth] registration = invite`` lets a code make accounts.

``chateau-admin invite create|list|revoke`` runs these transaction functions
with :func:`~chateau.store.engine.in_transaction`; the server consumes a code
through :class:`Invites` on the store's pool. Only a code's SHA-256 is kept.
A code is consumed in the same transaction as the account it creates: the
conditional ``UPDATE`` takes one use only while uses are left and the code
has not expired (PostgreSQL locks the row, SQLite has one writer), and a
name that turns out to be taken rolls the use back.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from chateau.store.accounts import create_user_txn
from chateau.store.engine import Runner
from chateau.store.records import InviteRecord, NameClaim, now_millis
from chateau.store.tables import invites


class NameTaken(Exception):
    """The account's name was not free: the transaction, and the code's use, roll back."""

    def __init__(self, claim: NameClaim) -> None:
        super().__init__(claim.name)
        self.claim = claim


def hash_invite(code: str) -> str:
    return hashlib.sha256(code.strip().encode()).hexdigest()


class Invites:
    """Accounts made with an invite code: each method returns a Deferred."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def create_invited_user(
        self, code: str, username: str, password_hash: str, auth_method: str,
    ) -> Deferred[NameClaim | None]:
        """None when the code is unknown, used up or expired; else the name's claim.

        A claim that failed (the name, or one that looks like it, is taken)
        gives the code's use back.
        """

        def taken(failure: Failure) -> NameClaim:
            failure.trap(NameTaken)
            return failure.value.claim

        return self._runner.run(
            create_invited_user_txn, hash_invite(code), username, password_hash, auth_method
        ).addErrback(taken)


def _usable(now: int) -> Any:
    return (invites.c.uses > 0) & or_(invites.c.expires_at.is_(None), invites.c.expires_at > now)


def consume_invite_txn(connection: Connection, code_hash: str) -> bool:
    """Take one use of the code, if it has one left and has not expired."""
    result = connection.execute(
        update(invites)
        .where((invites.c.code_hash == code_hash) & _usable(now_millis()))
        .values(uses=invites.c.uses - 1)
    )
    return result.rowcount == 1


def create_invited_user_txn(
    connection: Connection, code_hash: str, username: str, password_hash: str, auth_method: str,
) -> NameClaim | None:
    if not consume_invite_txn(connection, code_hash):
        return None
    claim = create_user_txn(connection, username, password_hash, auth_method, None)
    if not claim:
        raise NameTaken(claim)
    return claim


def create_invite_txn(
    connection: Connection, code_hash: str, uses: int, expires_at: int | None
) -> int:
    """Store a new code; its id (what ``invite list`` shows)."""
    result = connection.execute(
        insert(invites).values(
            code_hash=code_hash, uses=uses, created_at=now_millis(), expires_at=expires_at,
        )
    )
    return int(result.inserted_primary_key[0])


def list_invites_txn(connection: Connection) -> list[InviteRecord]:
    """Every code still usable, oldest first."""
    rows = connection.execute(
        select(invites).where(_usable(now_millis())).order_by(invites.c.id)
    )
    return [InviteRecord(row.id, row.uses, row.created_at, row.expires_at) for row in rows]


def revoke_invite_txn(connection: Connection, code_or_id: str) -> list[int]:
    """Delete a code, named by itself or by its id; the ids deleted (none: no such code)."""
    where = invites.c.code_hash == hash_invite(code_or_id)
    if code_or_id.strip().isdigit():
        where = where | (invites.c.id == int(code_or_id))
    ids = [int(i) for i in connection.execute(select(invites.c.id).where(where)).scalars()]
    if ids:
        connection.execute(delete(invites).where(invites.c.id.in_(ids)))
    return ids
