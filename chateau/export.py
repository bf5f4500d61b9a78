"""A user's data export: one JSON document, written in chunks as pages of
messages are read.

:func:`export_chunks` is the one writer of the document, shared by ``GET
/api/me/export`` (chateau.web) and ``chateau-admin user export``
(chateau.admin_data). It is a generator that yields either bytes to write
or a :class:`PageWanted`, to which the caller sends back that page of
messages (``store.erasure.export_messages``); so the same code runs with a
blocking database (the command line, :func:`write_export`) and with the
store's pool behind Deferreds (the server, :class:`ExportProducer`), and
only one page of messages is ever held at a time.

:class:`ExportProducer` is a Twisted push producer registered on the HTTP
request: the transport pauses it when its send buffer is full, and it reads
the next page from the database only once it is resumed, so a slow reader
keeps at most a page and a send buffer in the server's memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Generator

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from chateau.store.erasure import ExportHead
from chateau.store.records import MessageRecord

FORMAT = "chateau-export-1"
# Messages read from the database at a time.
PAGE_SIZE = 500


@dataclass(frozen=True)
class PageWanted:
    """Send back the next *limit* messages of the export after id *after*."""

    after: int
    limit: int


Chunks = Generator["bytes | PageWanted", "list[MessageRecord] | None", None]


def message_entry(record: MessageRecord, username: str) -> dict[str, Any]:
    """One message of the export: a direct message names the other person (``user``),
    anything else its chat (``chatname``)."""
    entry: dict[str, Any] = {"id": record.id, "chat": record.chat}
    if record.recipient is not None:
        entry["user"] = record.recipient if record.sender == username else record.sender
    else:
        entry["chatname"] = record.chat
    entry.update(
        sender=record.sender,
        content=None if record.deleted else record.content,
        timestamp=record.timestamp,
        edited=record.edited,
        deleted=record.deleted,
    )
    if record.event is not None:
        entry["event"] = record.event
    return entry


def export_chunks(
    head: ExportHead, exported_at: str, page_size: int = PAGE_SIZE
) -> Chunks:
    """The document of *head*'s account, in chunks (see the module's docstring)."""
    username = head.account["username"]
    document = {
        "format": FORMAT,
        "exported_at": exported_at,
        "account": head.account,
        "settings": head.settings,
        "contacts": head.contacts,
        "blocks": head.blocks,
        "groups": head.groups,
    }
    opening = json.dumps(document, ensure_ascii=False, indent=1)
    # The document without its closing brace, then the messages array.
    yield (opening[:-2] + ',\n "messages": [').encode()
    after = 0
    first = True
    while True:
        page = yield PageWanted(after, page_size)
        if not page:
            break
        parts = []
        for record in page:
            parts.append(("\n  " if first else ",\n  ")
                         + json.dumps(message_entry(record, username), ensure_ascii=False))
            first = False
        yield "".join(parts).encode()
        if len(page) < page_size:
            break
        after = page[-1].id
    yield b"\n ]\n}\n"


def write_export(
    chunks: Chunks, read_page: Callable[[int, int], list[MessageRecord]],
    write: Callable[[bytes], Any],
) -> None:
    """Drive *chunks* with a blocking *read_page(after, limit)*, writing each chunk."""
    try:
        item = next(chunks)
        while True:
            if isinstance(item, PageWanted):
                item = chunks.send(read_page(item.after, item.limit))
            else:
                write(item)
                item = next(chunks)
    except StopIteration:
        return


@implementer(IPushProducer)
class ExportProducer:
    """Writes *chunks* to *consumer* while it is not paused, reading pages through
    *read_page(after, limit)* (a Deferred) one at a time."""

    _log = Logger()

    def __init__(
        self, consumer: IConsumer, chunks: Chunks,
        read_page: Callable[[int, int], Deferred[list[MessageRecord]]],
    ) -> None:
        self._consumer = consumer
        self._chunks = chunks
        self._read_page = read_page
        self._paused = False
        self._stopped = False
        self._resumed: Deferred[None] | None = None

    def start(self) -> Deferred[bool]:
        """Register and write; fires True once the document is written, False
        when the consumer stopped it first (fails if a page could not be read)."""
        self._consumer.registerProducer(self, True)
        done = ensureDeferred(self._pump())

        def unregister(result: Any) -> Any:
            self._consumer.unregisterProducer()
            return result

        return done.addBoth(unregister)

    async def _pump(self) -> bool:
        item = next(self._chunks)
        try:
            while not self._stopped:
                if self._paused:
                    self._resumed = Deferred()
                    await self._resumed
                    continue
                if isinstance(item, PageWanted):
                    page = await self._read_page(item.after, item.limit)
                    item = self._chunks.send(page)
                else:
                    self._consumer.write(item)
                    item = next(self._chunks)
        except StopIteration:
            return True
        finally:
            self._chunks.close()
        return False

    def _wake(self) -> None:
        resumed, self._resumed = self._resumed, None
        if resumed is not None:
            resumed.callback(None)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._wake()

    def stopProducing(self) -> None:
        self._stopped = True
        self._wake()
