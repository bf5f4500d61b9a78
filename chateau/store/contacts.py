"""Contacts: one row per pair of users, pending until the addressee accepts.

Transaction functions (``*_txn``) take a connection and return plain
records; :class:`Contacts` runs them on the store's pool.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.store.engine import Runner
from chateau.store.records import ContactBook, now_millis
from chateau.store.tables import contacts


class Contacts:
    """Contact requests and contact books: each method returns a Deferred."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def request_contact(
        self, requester: str, addressee: str, most: int | None = None
    ) -> Deferred[str]:
        """"requested", "accepted" (they had asked us), "pending" or "already";
        "too_many_sent" / "too_many_received" when a new request would put
        either side past *most* pending requests."""
        return self._runner.run(request_contact_txn, requester, addressee, most)

    def accept_contact(self, addressee: str, requester: str) -> Deferred[bool]:
        return self._runner.run(accept_contact_txn, addressee, requester)

    def deny_contact(self, addressee: str, requester: str) -> Deferred[bool]:
        return self._runner.run(deny_contact_txn, addressee, requester)

    def remove_contact(self, username: str, other: str) -> Deferred[bool]:
        return self._runner.run(remove_contact_txn, username, other)

    def contact_book(self, username: str) -> Deferred[ContactBook]:
        return self._runner.run(contact_book_txn, username)

    def are_contacts(self, first: str, second: str) -> Deferred[bool]:
        """Whether the two are accepted contacts."""
        return self._runner.run(are_contacts_txn, first, second)


def _pair_row(connection: Connection, first: str, second: str) -> Any:
    return connection.execute(
        select(contacts).where(
            ((contacts.c.requester == first) & (contacts.c.addressee == second))
            | ((contacts.c.requester == second) & (contacts.c.addressee == first))
        )
    ).first()


def _pending_count(connection: Connection, column: Any, username: str) -> int:
    return int(connection.execute(
        select(func.count()).select_from(contacts).where((column == username) & ~contacts.c.accepted)
    ).scalar() or 0)


def are_contacts_txn(connection: Connection, first: str, second: str) -> bool:
    row = _pair_row(connection, first, second)
    return row is not None and bool(row.accepted)


def request_contact_txn(
    connection: Connection, requester: str, addressee: str, most: int | None = None
) -> str:
    row = _pair_row(connection, requester, addressee)
    if row is None and most is not None:
        if _pending_count(connection, contacts.c.requester, requester) >= most:
            return "too_many_sent"
        if _pending_count(connection, contacts.c.addressee, addressee) >= most:
            return "too_many_received"
    if row is None:
        connection.execute(
            insert(contacts).values(
                requester=requester, addressee=addressee, accepted=False,
                created_at=now_millis(),
            )
        )
        return "requested"
    if row.accepted:
        return "already"
    if row.requester == addressee:
        connection.execute(
            update(contacts)
            .where((contacts.c.requester == addressee) & (contacts.c.addressee == requester))
            .values(accepted=True)
        )
        return "accepted"
    return "pending"


def accept_contact_txn(connection: Connection, addressee: str, requester: str) -> bool:
    result = connection.execute(
        update(contacts)
        .where(
            (contacts.c.requester == requester)
            & (contacts.c.addressee == addressee)
            & ~contacts.c.accepted
        )
        .values(accepted=True)
    )
    return result.rowcount == 1


def deny_contact_txn(connection: Connection, addressee: str, requester: str) -> bool:
    result = connection.execute(
        delete(contacts).where(
            (contacts.c.requester == requester)
            & (contacts.c.addressee == addressee)
            & ~contacts.c.accepted
        )
    )
    return result.rowcount == 1


def remove_contact_txn(connection: Connection, username: str, other: str) -> bool:
    result = connection.execute(
        delete(contacts).where(
            ((contacts.c.requester == username) & (contacts.c.addressee == other))
            | ((contacts.c.requester == other) & (contacts.c.addressee == username))
        )
    )
    return result.rowcount > 0


def contact_book_txn(connection: Connection, username: str) -> ContactBook:
    accepted: list[str] = []
    pending: list[tuple[str, str, int]] = []
    rows = connection.execute(
        select(contacts).where(
            (contacts.c.requester == username) | (contacts.c.addressee == username)
        )
    )
    for row in rows:
        other = row.addressee if row.requester == username else row.requester
        if row.accepted:
            accepted.append(other)
        else:
            direction = "outgoing" if row.requester == username else "incoming"
            pending.append((other, direction, int(row.created_at)))
    return ContactBook(sorted(accepted), sorted(pending))
