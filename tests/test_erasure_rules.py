"""Erasure's rules in-process (tests/inprocess.py: no sockets, a task.Clock):
the handler, what other users still see, the notice every node applies, and
a message the writer commits after the erasure. The wire and both databases
are in tests/test_erasure.py."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from chateau.names import DELETED_USER
from chateau.store.records import direct_chat
from tests.inprocess import InProcessChat, make_test_config

ACCOUNT_DELETED = 4005


def make_chat(tmp_path: Path, **chat: str) -> InProcessChat:
    running = InProcessChat(make_test_config(tmp_path, chat=chat) if chat
                            else make_test_config(tmp_path))
    running.start()
    return running


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[InProcessChat]:
    running = make_chat(tmp_path)
    yield running
    running.stop()


def test_account_delete_closes_every_connection_and_keeps_others_history(
    chat: InProcessChat,
) -> None:
    alice = chat.sign_in("alice", "pw")
    alice_too = chat.sign_in("alice", "pw")
    bob = chat.sign_in("bob")
    chat.request(alice, {"type": "GroupMessageInitRequest", "chatname": "team",
                         "recipients": ["bob"]})
    chat.request(alice, {"type": "MessageRequest", "recipient": "team", "content": "hi team"})
    chat.request(bob, {"type": "MessageRequest", "recipient": "alice", "content": "hi alice"})
    bob.take()
    reply = chat.request(alice, {"type": "AccountDeleteRequest", "password": "nope",
                                 "msg_id": 1})
    assert reply["status"] == 401 and alice.closed_with is None
    reply = chat.request(alice, {"type": "AccountDeleteRequest", "password": "pw", "msg_id": 2})
    assert reply == {"type": "AccountDeleteResponse", "status": 200, "msg_id": 2}
    assert alice.closed_with == (ACCOUNT_DELETED, "account deleted")
    assert alice_too.closed_with == (ACCOUNT_DELETED, "account deleted")
    left = [m for m in bob.take() if m["type"] == "GroupEventRecv"]
    assert [(m["event"], m["user"]) for m in left] == [("left", DELETED_USER)]
    group = chat.registry.group("team")
    assert group is not None and group.members == {"bob"} and group.role_of("bob") == "owner"
    records, _ = chat.wait(chat.store.messages.history("team", None, 10))
    assert [(r.sender, r.content) for r in records if r.event is None] == [(DELETED_USER, None)]
    records, _ = chat.wait(chat.store.messages.history(direct_chat(DELETED_USER, "bob"), None, 10))
    assert [(r.sender, r.recipient, r.content) for r in records] == [("bob", DELETED_USER,
                                                                      "hi alice")]
    assert chat.wait(chat.store.accounts.held_until("alice")) is not None


def test_a_message_committed_after_the_erasure_is_erased_too(chat: InProcessChat) -> None:
    """The writer may commit a message sent just before the erasure after it:
    the node that closes the sender's connections erases it once committed."""
    alice = chat.sign_in("alice", "pw")
    chat.sign_in("bob")
    erased = chat.wait(chat.store.erasure.erase("cli:ops", "alice", "erase", 0))
    assert erased is not None
    late = chat.wait(chat.store.messages.add_message(direct_chat("alice", "bob"), "alice",
                                                     "late words", "bob"))
    chat.notices.check()
    chat.clock.settle()
    assert alice.closed_with == (ACCOUNT_DELETED, "account deleted")
    record = chat.wait(chat.store.messages.get_message(late.id))
    assert (record.sender, record.content, record.chat) == (
        DELETED_USER, None, direct_chat(DELETED_USER, "bob"))
    # Nothing is done to an account that exists.
    assert chat.wait(chat.store.erasure.erase_leftovers("bob", "erase")) == 0


def test_anonymise_keeps_the_words(tmp_path: Path) -> None:
    running = make_chat(tmp_path, erase_messages="anonymise")
    try:
        alice = running.sign_in("alice", "pw")
        running.sign_in("bob")
        running.request(alice, {"type": "MessageRequest", "recipient": "bob", "content": "kept"})
        reply = running.request(alice, {"type": "AccountDeleteRequest", "password": "pw"})
        assert reply["status"] == 200
        records, _ = running.wait(running.store.messages.history(
            direct_chat(DELETED_USER, "bob"), None, 10))
        assert [(r.sender, r.content, r.deleted) for r in records] == [(DELETED_USER, "kept",
                                                                        False)]
    finally:
        running.stop()
