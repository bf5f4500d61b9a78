"""Storage: accounts, groups, messages, contacts and cursors in a SQL database.

The package is the only part of Chateau that knows SQLAlchemy. Its layout:

- ``tables``: the schema (``migrate`` checks and applies its Alembic migrations);
- ``records``: the plain records and helpers the layers above use;
- ``errors``: :class:`StoreUnavailable`, what a database failure becomes;
- ``engine``: the engine, and the runner that runs a transaction function
  on the store's thread pool and returns a Deferred;
- ``writer``: the single thread that commits chat messages in batches;
- one module per domain (``accounts``, ``messages``, ``groups``,
  ``group_settings``, ``membership``, ``contacts``, ``cursors``, ``invites``,
  ``audit``, ``reports``, ``safety``, ``announcements``, ``notices``,
  ``deprovisioning``, ``identity``, ``group_sync``, ``devices``: a user's
  own keys, password and profile, ``erasure``, ``retention``, ``reading``: read markers and unread counts),
  each with its transaction functions and a small class that runs them
  through the runner; ``operators`` composes several domains' functions for
  ``chateau-admin``'s moderation commands.

:class:`Store` composes them: ``store.messages.history(...)``,
``store.accounts.get_user(...)``. No SQLAlchemy call ever runs on the
reactor thread.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.python.threadpool import ThreadPool

from chateau.store import migrate
from chateau.store.accounts import Accounts, Sessions
from chateau.store.announcements import Announcements
from chateau.store.contacts import Contacts
from chateau.store.cursors import Cursors
from chateau.store.deprovisioning import Deprovisioning
from chateau.store.devices import Devices
from chateau.store.engine import Engine, Runner
from chateau.store.erasure import Erasure
from chateau.store.errors import StoreUnavailable
from chateau.store.group_settings import GroupSettings
from chateau.store.group_sync import GroupSyncStore
from chateau.store.groups import Groups
from chateau.store.identity import Identity
from chateau.store.invites import Invites
from chateau.store.membership import Membership
from chateau.store.messages import Messages, add_messages_txn
from chateau.store.audit import Audit
from chateau.store.reports import Reports
from chateau.store.retention import Retention
from chateau.store.safety import Safety
from chateau.store.notices import Notices
from chateau.store.reading import Reading
from chateau.store.writer import MessageWriter

__all__ = ["Store", "StoreUnavailable"]


class Store:
    """The database, reached only through the store's own thread pools.

    Everything it uses is passed in: the engine, the pool for transactions,
    the message writer's own pool (the same one when None), the reactor, the
    observer that times each call, and the cluster node name recorded with
    each message (None alone).
    """

    def __init__(
        self, reactor: Any, engine: Engine, pool: ThreadPool, writer_pool: ThreadPool | None = None,
        observe: Callable[[Deferred[Any]], Deferred[Any]] | None = None,
        origin: str | None = None,
    ) -> None:
        self.runner = Runner(reactor, engine, pool, observe)
        self.origin = origin
        # On SQLite the WAL is copied back into the database by the store's
        # pool, not the writer's thread (see engine.checkpoint_txn).
        checkpoint = self.runner.checkpoint if self.runner.is_sqlite else None
        self.writer = MessageWriter(
            reactor, engine, writer_pool or pool, add_messages_txn, origin=origin,
            checkpoint=checkpoint,
        )
        self.accounts = Accounts(self.runner)
        self.sessions = Sessions(self.runner)
        self.messages = Messages(self.runner, self.writer)
        self.groups = Groups(self.runner)
        self.group_settings = GroupSettings(self.runner, self.writer)
        self.contacts = Contacts(self.runner)
        self.cursors = Cursors(self.runner)
        self.invites = Invites(self.runner)
        self.audit = Audit(self.runner)
        self.reports = Reports(self.runner)
        self.membership = Membership(self.runner)
        self.safety = Safety(self.runner)
        self.announcements = Announcements(self.runner)
        self.notices = Notices(self.runner)
        self.deprovisioning = Deprovisioning(self.runner)
        self.identity = Identity(self.runner, self.writer)
        self.group_sync = GroupSyncStore(self.runner)
        # A user's own keys (as devices), password and profile.
        self.devices = Devices(self.runner)
        self.erasure = Erasure(self.runner)
        self.retention = Retention(self.runner)
        # Read markers, unread counts and the conversation list.
        self.reading = Reading(self.runner)

    def prepare_schema(self) -> Deferred[None]:
        """Create the schema if the database is empty; refuse an outdated one."""
        return self.runner.run(migrate.prepare)

    def checkpoint(self) -> Deferred[tuple[int, int, int]]:
        """Copy SQLite's WAL back into the database; (busy, WAL pages, pages copied)."""
        return self.runner.checkpoint()

    def ping(self) -> Deferred[None]:
        """One round trip to the database (for /health)."""
        return self.runner.ping()
