"""Mentions: the parser (chateau.mentions) and its rules through the handlers, in-process.

The wire over real sockets, both databases and two clustered nodes are in
tests/test_mentions_sockets.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from chateau.mentions import ALL, ALL_REFUSAL, find_mentions
from chateau.store.records import direct_chat
from chateau.store.tables import messages
from tests.inprocess import FakeConnection, InProcessChat, make_test_config

MEMBERS = frozenset({"alice", "bob", "carol", "bob_", "dora.k", "jörg", "all-hands"})


# -- the parser ------------------------------------------------------------------

@pytest.mark.parametrize("content,expected", [
    ("no mentions here", []),
    ("@bob", ["bob"]),
    ("hi @bob", ["bob"]),
    ("hi @bob!", ["bob"]),
    ("@bob, @carol: look", ["bob", "carol"]),
    ("(@carol)", ["carol"]),
    ("\"@carol\"", ["carol"]),
    ("ask @bob.", ["bob"]),                 # a sentence's full stop is not part of the name
    ("ask @bob...", ["bob"]),
    ("ask @bob-", ["bob"]),
    ("@bob_ is someone else", ["bob_"]),    # but a member's name ending in _ is that member
    ("@dora.k said", ["dora.k"]),           # "." inside a name
    ("@dora.k.", ["dora.k"]),
    ("line one\n@bob", ["bob"]),
    ("tab\t@bob", ["bob"]),
    ("…@bob", ["bob"]),
    ("a@bob.c", []),                        # an address, not a mention
    ("mail bob@carol.org", []),
    ("@@bob", []),
    ("@bob@carol", ["bob"]),
    ("@ bob", []),
    ("@", []),
    ("@@@", []),
    ("@dave", []),                          # not a member: ignored
    ("@BOB and @Carol", ["bob", "carol"]),  # canonical: case folded
    ("@ｂｏｂ", ["bob"]),                    # full-width letters
    ("@JÖRG", ["jörg"]),
    ("@jo\u0308rg", ["jörg"]),              # decomposed ö
    ("@аlice", []),                         # a Cyrillic look-alike names nobody
    ("@bob @bob @BOB", ["bob"]),            # unique
    ("@all", [ALL]),
    ("@ALL hands", [ALL]),
    ("@All, @bob", [ALL, "bob"]),
    ("@all-hands", ["all-hands"]),          # another name
    ("@allx", []),
    ("email@all", []),
])
def test_parser(content: str, expected: list[str]) -> None:
    assert find_mentions(content, MEMBERS) == expected


def test_the_list_is_sorted_and_unique() -> None:
    assert find_mentions("@carol @all @bob @carol", MEMBERS) == sorted({"carol", ALL, "bob"})


def test_adversarial_content_is_parsed_quickly() -> None:
    """16,000 characters built to be slow: every case in well under the send's budget."""
    many = {f"u{n}" for n in range(1000)}
    cases = [
        "@" * 16_000,
        "@a" * 8_000,
        "@" + "a" * 15_999,
        "@" + "." * 15_999,
        "@bob" + "." * 15_996,
        "@é " * 5_333,
        "".join(f"@é{n} " for n in range(3_000))[:16_000],
        "".join(f"@u{n} " for n in range(3_000))[:16_000],
        ("@" + "\u0301" * 50 + " ") * 300,
        "a@" * 8_000,
        ".@" * 8_000,
    ]
    for content in cases:
        started = time.perf_counter()
        find_mentions(content, many)
        took = time.perf_counter() - started
        assert took < 0.1, (content[:20], took)


# -- through the handlers ---------------------------------------------------------

def ask(chat: InProcessChat, who: FakeConnection, kind: str, **fields: Any) -> dict[str, Any]:
    return chat.request(who, {"type": kind, **fields})


def send(chat: InProcessChat, who: FakeConnection, recipient: str, content: str) -> dict[str, Any]:
    return ask(chat, who, "GroupMessageRequest", recipient=recipient, content=content)


def stored_mentions(chat: InProcessChat, chat_key: str) -> list[tuple[str | None, Any]]:
    """(content, messages.mentions as stored) of a chat's messages, oldest first.

    Change rows (an edit's or a deletion's record) are not messages.
    """
    with chat.engine.connect() as connection:
        rows = connection.execute(
            select(messages.c.content, messages.c.mentions)
            .where((messages.c.chat == chat_key) & messages.c.changes.is_(None))
            .order_by(messages.c.id)
        ).all()
    return [(row.content, row.mentions) for row in rows]


@pytest.fixture
def club(chat: InProcessChat) -> dict[str, FakeConnection]:
    """Group "club": olga owner, adam admin, mia and bob members; root a server admin, member."""
    users = {name: chat.sign_in(name) for name in ("olga", "adam", "mia", "bob", "root", "eve")}
    chat.wait(chat.store.accounts.set_admin("root", True))
    reply = ask(chat, users["olga"], "GroupMessageInitRequest", chatname="club",
                recipients=["adam", "mia", "bob", "root"])
    assert reply["status"] == 200, reply
    assert ask(chat, users["olga"], "GroupRoleRequest", chatname="club", user="adam",
               role="admin")["status"] == 200
    for connection in users.values():
        connection.take()
    return users


def test_a_mention_is_stored_carried_and_answered(chat, club) -> None:
    reply = send(chat, club["mia"], "club", "@Bob look, @eve and @Adam")
    assert reply["type"] == "MessageSendResponse"
    assert reply["mentions"] == ["adam", "bob"]  # eve is no member
    for name in ("olga", "adam", "bob", "root"):
        (push,) = club[name].take()
        assert push["type"] == "GroupMessageRecv" and push["mentions"] == ["adam", "bob"]
    assert stored_mentions(chat, "club")[-1] == ("@Bob look, @eve and @Adam", '["adam","bob"]')
    page = ask(chat, club["bob"], "HistoryRequest", chatname="club", limit=1)
    assert page["messages"][0]["mentions"] == ["adam", "bob"]


def test_no_mentions_no_field_and_null_stored(chat, club) -> None:
    reply = send(chat, club["mia"], "club", "hello everyone, mail me at mia@example.org")
    assert "mentions" not in reply
    (push,) = club["bob"].take()
    assert "mentions" not in push
    assert stored_mentions(chat, "club")[-1][1] is None
    page = ask(chat, club["bob"], "HistoryRequest", chatname="club", limit=1)
    assert "mentions" not in page["messages"][0]


def test_at_all_from_a_plain_member_is_refused_and_nothing_stored(chat, club) -> None:
    before = stored_mentions(chat, "club")
    reply = send(chat, club["mia"], "club", "@ALL party!")
    assert reply["type"] == "ErrorResponse" and reply["status"] == 403
    assert reply["detail"] == ALL_REFUSAL
    assert stored_mentions(chat, "club") == before
    assert club["bob"].take() == []


@pytest.mark.parametrize("sender", ["olga", "adam", "root"])
def test_at_all_from_an_owner_an_admin_or_a_server_admin(chat, club, sender: str) -> None:
    reply = send(chat, club[sender], "club", "@all meeting at 5, @bob brings cake")
    assert reply["type"] == "MessageSendResponse", reply
    assert reply["mentions"] == ["@all", "bob"]
    (push,) = club["mia"].take()
    assert push["mentions"] == ["@all", "bob"]
    assert json.loads(stored_mentions(chat, "club")[-1][1]) == ["@all", "bob"]


def test_a_plain_members_at_all_is_not_pipelined(chat, club) -> None:
    """It asks the database whether the sender is a server admin first."""
    from chateau.handlers import sending
    from chateau.messages import decode_request

    def request(content: str) -> Any:
        return decode_request({"type": "GroupMessageRequest", "recipient": "club",
                               "content": content})

    assert sending.pipelines(chat.services, request("@bob hi"), "mia")
    assert not sending.pipelines(chat.services, request("@all hi"), "mia")
    assert sending.pipelines(chat.services, request("@all hi"), "adam")


def test_direct_messages_and_random_chats_have_no_mentions(chat, club) -> None:
    reply = send(chat, club["mia"], "bob", "@bob @all hi")
    assert reply["type"] == "MessageSendResponse" and "mentions" not in reply
    (push,) = club["bob"].take()
    assert "mentions" not in push
    assert stored_mentions(chat, direct_chat("bob", "mia"))[-1][1] is None
    random = ask(chat, club["mia"], "RandomMessageRequest", content="@all hey")
    assert random["status"] == 200 and "mentions" not in random
    pair = random["chatname"]
    again = send(chat, club["mia"], pair, "@all @" + random["client"])
    assert again["type"] == "MessageSendResponse" and "mentions" not in again


def test_catch_up_carries_the_mentions(chat, club) -> None:
    chat.disconnect(club["bob"])
    send(chat, club["mia"], "club", "@bob you missed this")
    back = chat.sign_in("bob")
    pushes = [m for m in back.take() if m["type"] == "GroupMessageRecv"]
    assert pushes[-1]["offline"] is True and pushes[-1]["mentions"] == ["bob"]


def test_an_edit_recomputes_the_mentions(chat, club) -> None:
    sent = send(chat, club["mia"], "club", "@bob hi")
    club["bob"].take()
    reply = ask(chat, club["mia"], "MessageEditRequest", id=sent["id"], content="@olga @adam hi")
    assert reply["status"] == 200
    (push,) = club["bob"].take()
    assert push["type"] == "MessageEdited" and push["mentions"] == ["adam", "olga"]
    assert stored_mentions(chat, "club")[-1][1] == '["adam","olga"]'
    # An edit that mentions nobody clears them.
    ask(chat, club["mia"], "MessageEditRequest", id=sent["id"], content="hi")
    (push,) = club["bob"].take()
    assert "mentions" not in push
    assert stored_mentions(chat, "club")[-1][1] is None
    page = ask(chat, club["bob"], "HistoryRequest", chatname="club", limit=1)
    assert "mentions" not in page["messages"][0]


def test_an_edit_to_at_all_follows_the_send_rule(chat, club) -> None:
    sent = send(chat, club["mia"], "club", "@bob hi")
    club["bob"].take()
    reply = ask(chat, club["mia"], "MessageEditRequest", id=sent["id"], content="@all hi")
    assert reply["status"] == 403 and reply["detail"] == ALL_REFUSAL
    assert club["bob"].take() == []
    assert stored_mentions(chat, "club")[-1] == ("@bob hi", '["bob"]')
    mine = send(chat, club["adam"], "club", "meeting")
    club["bob"].take()
    reply = ask(chat, club["adam"], "MessageEditRequest", id=mine["id"], content="@all meeting")
    assert reply["status"] == 200
    (push,) = club["bob"].take()
    assert push["mentions"] == ["@all"]


def test_a_deleted_message_shows_no_mentions(chat, club) -> None:
    sent = send(chat, club["mia"], "club", "@bob hi")
    assert ask(chat, club["mia"], "MessageDeleteRequest", id=sent["id"])["status"] == 200
    page = ask(chat, club["bob"], "HistoryRequest", chatname="club", limit=1)
    assert page["messages"][0]["deleted"] is True and "mentions" not in page["messages"][0]
    assert stored_mentions(chat, "club")[-1] == (None, None)  # gone with the words


def test_mentions_count_against_the_frame_limit(tmp_path: Path) -> None:
    """Content that fits alone, but not with its mentions, is refused (413)."""
    chat = InProcessChat(make_test_config(tmp_path, server={"max_message_size": "4096"}))
    chat.start()
    try:
        names = [f"member{n:03}" for n in range(150)]
        users = {name: chat.sign_in(name) for name in ["owner", *names]}
        reply = ask(chat, users["owner"], "GroupMessageInitRequest", chatname="big",
                    recipients=names)
        assert reply["status"] == 200, reply
        from chateau import messages as wire

        room = 4096 - wire.MESSAGE_ENVELOPE
        content = " ".join(f"@{name}" for name in names)
        content += " " + "x" * (room - wire.content_wire_size(content) - 1)
        assert wire.content_wire_size(content) == room  # fits without mentions
        reply = send(chat, users["owner"], "big", content)
        assert reply["status"] == 413 and "mentions" in reply["detail"], reply
        assert send(chat, users["owner"], "big", content.replace("@", "#"))["status"] == 200
    finally:
        chat.stop()


# -- a user's rename ------------------------------------------------------------------

def test_a_rename_moves_the_users_name_in_the_mentions_of_their_groups(database_url) -> None:
    """On both databases: re-sorted; a name that only starts alike and a group the user
    left are untouched."""
    from sqlalchemy import insert

    from chateau.store import migrate
    from chateau.store import tables as t
    from chateau.store.accounts import create_user_txn
    from chateau.store.engine import make_engine
    from chateau.store.identity import rename_user_txn
    from chateau.store.messages import mentions_json

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            migrate.prepare(connection)
            for name in ("ivan", "bob", "iva_", "carol"):
                assert create_user_txn(connection, name, None, "ldap", None)
            for chatname in ("club", "left"):
                connection.execute(insert(t.names).values(name=chatname, kind="group",
                                                          skeleton=chatname))
                connection.execute(insert(t.groups).values(chatname=chatname, creator="bob",
                                                           created_at=1))
            connection.execute(insert(t.group_members), [
                {"chatname": "club", "username": name, "role": "member"}
                for name in ("ivan", "bob", "iva_")] + [
                {"chatname": "left", "username": "bob", "role": "owner"}])
            message = {"created_at": 1, "edited": False, "deleted": False, "sender": "bob",
                       "recipient": None, "content": "..."}
            connection.execute(insert(t.messages), [
                {**message, "chat": "club", "mentions": mentions_json(["ivan", "bob"])},
                {**message, "chat": "club", "mentions": mentions_json(["@all", "ivan"])},
                {**message, "chat": "club", "mentions": mentions_json(["iva_"])},
                {**message, "chat": "club", "mentions": None},
                {**message, "chat": "left", "mentions": mentions_json(["ivan"])}])
        with engine.begin() as connection:
            assert rename_user_txn(connection, "ivan", "zed", None).outcome == "renamed"
        with engine.begin() as connection:
            stored = connection.execute(
                select(t.messages.c.mentions).order_by(t.messages.c.id)).scalars().all()
        assert stored == ['["bob","zed"]', '["@all","zed"]', '["iva_"]', None, '["ivan"]']
    finally:
        engine.dispose()


def test_erasing_an_account_in_erase_mode_drops_its_messages_mentions(chat, club) -> None:
    send(chat, club["mia"], "club", "@bob @olga hi")
    kept = send(chat, club["bob"], "club", "@olga hello")
    assert chat.wait(chat.store.erasure.erase("cli:ops", "mia", "erase", 0)) is not None
    assert stored_mentions(chat, "club")[-2:] == [(None, None), ("@olga hello", '["olga"]')]
    assert kept["mentions"] == ["olga"]


def test_an_ephemeral_server_still_carries_mentions_live(tmp_path: Path) -> None:
    chat = InProcessChat(make_test_config(tmp_path, chat={"store_messages": "false"}))
    chat.start()
    try:
        alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
        assert ask(chat, alice, "GroupMessageInitRequest", chatname="club",
                   recipients=["bob"])["status"] == 200
        bob.take()
        reply = send(chat, bob, "club", "@alice hi")
        assert reply["mentions"] == ["alice"]
        (push,) = alice.take()
        assert push["mentions"] == ["alice"]
        assert send(chat, bob, "club", "@all hi")["status"] == 403
    finally:
        chat.stop()
