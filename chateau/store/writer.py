"""The message writer: every chat message is committed by one thread, in batches.

This is the hot path of a busy server, so it stays lean: on the reactor
thread a message costs a Deferred and a place in the queue, and on the
writer's thread one row of the next batch's INSERT (see
:func:`chateau.store.messages.add_messages_txn`); everything else is paid
once per batch. A batch fails as
:func:`~chateau.store.engine.run_transaction` does: SQLAlchemy's driver and
pool errors arrive as :class:`~chateau.store.errors.StoreUnavailable`; on
SQLite the rows go in on the driver's own cursor, so an error there is
sqlite3's exception, passed on as it is.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from chateau.store.engine import Engine, run_transaction
from chateau.store.records import StoredMessage

# Committed messages between two SQLite checkpoints: few enough that even
# large messages stay under the 10,000 WAL pages at which the writer's
# connection would checkpoint by itself (see engine.make_engine).
CHECKPOINT_EVERY = 2000

# How many direct chats the message writer remembers as recorded in
# direct_chats (a bounded set of short strings); past that it forgets them all, and each chat's
# next message writes its (already present, so ignored) rows once more.
RECORDED_CHATS_KEPT = 100_000


class MessageWriter:
    """Commits chat messages in batches on one thread: group commit.

    While one batch is being committed, new messages queue up and go in the
    next transaction, so a burst costs a few commits instead of one each.
    A single writer also means ids are assigned in the order the reactor
    routes messages, which offline delivery relies on. Every Deferred fires
    only after its batch has committed.
    """

    _log = Logger()

    def __init__(
        self, reactor: Any, engine: Engine, pool: ThreadPool,
        insert: Callable[..., list[StoredMessage]], max_batch: int = 500,
        origin: str | None = None,
        checkpoint: Callable[[], Deferred[Any]] | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        self._reactor = reactor
        # The batch's transaction (chateau.store.messages.add_messages_txn).
        self._insert = insert
        self._origin = origin
        self._engine = engine
        self._pool = pool
        self._max_batch = max_batch
        # (chat, sender, content, recipient, event, mentions: JSON or None)
        self._queue: list[
            tuple[tuple[str, str, str, str | None, str | None, str | None], Deferred[StoredMessage]]
        ] = []
        self._writing = False
        self._idle_waiters: list[Deferred[None]] = []
        # Started every *checkpoint_every* committed messages, on the store's
        # pool rather than this one (see Store in chateau.store).
        self._checkpoint = checkpoint
        self._checkpoint_every = checkpoint_every
        self._since_checkpoint = 0
        self._checkpointing = False
        # Direct chats whose direct_chats rows are committed: only a chat's
        # first message (since start-up, or since the set was last emptied)
        # writes them. Touched on the reactor thread only.
        self._recorded_chats: set[str] = set()

    def drain(self) -> Deferred[None]:
        """Fires once every queued message is committed (or has failed)."""
        done: Deferred[None] = Deferred()
        if self._writing or self._queue:
            self._idle_waiters.append(done)
        else:
            done.callback(None)
        return done

    def add(
        self, chat: str, sender: str, content: str, recipient: str | None,
        event: str | None = None, mentions: str | None = None,
    ) -> Deferred[StoredMessage]:
        done: Deferred[StoredMessage] = Deferred()
        self._queue.append(((chat, sender, content, recipient, event, mentions), done))
        if not self._writing:
            self._start_soon()
        return done

    def _start_soon(self) -> None:
        """Start the next batch on the next reactor turn, not now.

        Every message read in the current turn (several clients' frames
        arrive in one poll) then lands in the same transaction. Started at
        once, the first of a burst commits alone and the rest wait for it;
        its fan-out then goes out on its own too, costing a socket flush
        per member for one frame instead of one for the whole burst.
        """
        self._writing = True
        self._reactor.callLater(0, self._write_next)

    def _write_next(self) -> None:
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        self._writing = True
        recorded = self._recorded_chats
        new_chats = {
            item[0] for item, _ in batch if item[3] is not None and item[0] not in recorded
        }
        work = deferToThreadPool(
            self._reactor, self._pool, run_transaction, self._engine, self._insert,
            [item for item, _ in batch], self._origin, new_chats,
        )

        def committed(stored: list[StoredMessage]) -> None:
            if new_chats:
                if len(recorded) + len(new_chats) > RECORDED_CHATS_KEPT:
                    recorded.clear()
                recorded.update(new_chats)
            for (_, done), result in zip(batch, stored):
                done.callback(result)
            self._committed(len(stored))

        def failed(failure: Any) -> None:
            for _, done in batch:
                done.errback(failure)

        work.addCallbacks(committed, failed)
        work.addBoth(self._written)

    def _committed(self, count: int) -> None:
        """Start a checkpoint once enough has been committed since the last one."""
        if self._checkpoint is None:
            return
        self._since_checkpoint += count
        if self._checkpointing or self._since_checkpoint < self._checkpoint_every:
            return
        self._since_checkpoint = 0
        self._checkpointing = True

        def done(result: Any) -> None:
            self._checkpointing = False
            if isinstance(result, Failure):
                self._log.warn(
                    "WAL checkpoint failed (the next one retries): {error}",
                    error=result.getErrorMessage(),
                )

        self._checkpoint().addBoth(done)

    def _written(self, _: Any) -> None:
        self._writing = False
        if self._queue:
            self._start_soon()
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            waiter.callback(None)


