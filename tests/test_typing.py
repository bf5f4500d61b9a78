"""Typing (TypingRequest, TypingRecv) in-process, every rule on a task.Clock.

The chat is wired as the service wires it (tests/inprocess.py); the clock
is advanced by hand, so the 2-second window and the 6-second expiry are
checked to the tenth of a second. The wire over real sockets, on both
databases and across two nodes, is in tests/test_typing_sockets.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chateau.errors import BAD_REQUEST, FORBIDDEN, NOT_FOUND
from chateau.typing import EXPIRY, RELAY_INTERVAL
from tests.inprocess import FakeConnection, InProcessChat, make_test_config


def typing(
    chat: InProcessChat, who: FakeConnection, value: bool, **where: str
) -> dict[str, Any]:
    """A TypingRequest; its reply."""
    return chat.request(who, {"type": "TypingRequest", "typing": value, "msg_id": 1, **where})


def say(chat: InProcessChat, who: FakeConnection, value: bool, **where: str) -> None:
    """A TypingRequest that must be answered 200."""
    reply = typing(chat, who, value, **where)
    assert reply == {"type": "TypingResponse", "status": 200, "msg_id": 1}, reply


def recv(chatname: str, username: str, value: bool) -> dict[str, Any]:
    return {"type": "TypingRecv", "status": 200, "chatname": chatname, "username": username,
            "typing": value}


def later(chat: InProcessChat, seconds: float) -> None:
    chat.clock.advance(seconds)


@pytest.fixture
def club(chat: InProcessChat) -> tuple[FakeConnection, FakeConnection, FakeConnection]:
    """alice, bob and carol online, all in the group "club"."""
    alice, bob, carol = chat.sign_in("alice"), chat.sign_in("bob"), chat.sign_in("carol")
    reply = chat.request(alice, {"type": "GroupMessageInitRequest",
                                 "recipients": ["bob", "carol"], "chatname": "club"})
    assert reply["status"] == 200, reply
    for who in (alice, bob, carol):
        who.take()
    return alice, bob, carol


def test_the_others_in_a_group_are_told_but_not_the_typers_other_connections(
    chat: InProcessChat, club: Any,
) -> None:
    alice, bob, carol = club
    phone = chat.sign_in("alice")
    say(chat, alice, True, chatname="Club")
    assert bob.take() == [recv("club", "alice", True)]
    assert carol.take() == [recv("club", "alice", True)]
    assert alice.take() == [] and phone.take() == []


def test_renewals_inside_the_window_are_dropped_and_outside_it_relayed(
    chat: InProcessChat, club: Any,
) -> None:
    alice, bob, _ = club
    say(chat, alice, True, chatname="club")
    assert bob.take() == [recv("club", "alice", True)]
    for _ in range(3):
        later(chat, 0.5)
        say(chat, alice, True, chatname="club")  # answered 200, dropped
        assert bob.take() == []
    later(chat, RELAY_INTERVAL - 1.5)  # the window is over: nothing was pending
    assert bob.take() == []
    say(chat, alice, True, chatname="club")
    assert bob.take() == [recv("club", "alice", True)]


def test_a_false_inside_the_window_waits_for_its_end(chat: InProcessChat, club: Any) -> None:
    alice, bob, carol = club
    say(chat, alice, True, chatname="club")
    bob.take(), carol.take()
    later(chat, 0.5)
    say(chat, alice, False, chatname="club")
    assert bob.take() == []
    later(chat, RELAY_INTERVAL - 0.5 - 0.25)
    assert bob.take() == []
    later(chat, 0.25)
    assert bob.take() == [recv("club", "alice", False)]
    assert carol.take() == [recv("club", "alice", False)]
    later(chat, 10)  # and nothing else: no expiry after a false
    assert bob.take() == []


def test_a_true_after_a_false_in_the_window_cancels_it(chat: InProcessChat, club: Any) -> None:
    alice, bob, _ = club
    say(chat, alice, True, chatname="club")
    bob.take()
    later(chat, 0.5)
    say(chat, alice, False, chatname="club")
    later(chat, 0.5)
    say(chat, alice, True, chatname="club")
    later(chat, RELAY_INTERVAL)
    assert bob.take() == []
    later(chat, EXPIRY - RELAY_INTERVAL - 0.25)  # 6 s after the last true (at 1), less a little
    assert bob.take() == []
    later(chat, 0.25)
    assert bob.take() == [recv("club", "alice", False)]


def test_a_true_right_after_a_pushed_false_waits_for_the_window(
    chat: InProcessChat, club: Any,
) -> None:
    alice, bob, _ = club
    say(chat, alice, True, chatname="club")
    later(chat, 3)
    say(chat, alice, False, chatname="club")
    assert bob.take() == [recv("club", "alice", True), recv("club", "alice", False)]
    later(chat, 1)
    say(chat, alice, True, chatname="club")
    assert bob.take() == []
    later(chat, 1)
    assert bob.take() == [recv("club", "alice", True)]


def test_a_false_nobody_was_told_true_for_is_dropped(chat: InProcessChat, club: Any) -> None:
    alice, bob, carol = club
    say(chat, alice, False, chatname="club")
    later(chat, 10)
    assert bob.take() == [] and carol.take() == []
    assert chat.typing._states == {}


def test_typing_expires_six_seconds_after_the_last_true(chat: InProcessChat, club: Any) -> None:
    alice, bob, carol = club
    say(chat, alice, True, chatname="club")
    bob.take(), carol.take()
    later(chat, EXPIRY - 0.25)
    assert bob.take() == []
    later(chat, 0.25)
    assert bob.take() == [recv("club", "alice", False)]
    assert carol.take() == [recv("club", "alice", False)]
    later(chat, 10)
    assert bob.take() == [] and chat.typing._states == {}


def test_a_renewal_dropped_by_the_rate_still_renews_the_expiry(
    chat: InProcessChat, club: Any,
) -> None:
    alice, bob, _ = club
    say(chat, alice, True, chatname="club")
    later(chat, 1)
    say(chat, alice, True, chatname="club")  # inside the window: not pushed
    bob.take()
    later(chat, EXPIRY - 0.25)
    assert bob.take() == []
    later(chat, 0.25)
    assert bob.take() == [recv("club", "alice", False)]


def test_the_last_connection_closing_ends_the_typing(chat: InProcessChat, club: Any) -> None:
    alice, bob, carol = club
    phone = chat.sign_in("alice")
    say(chat, alice, True, chatname="club")
    bob.take(), carol.take()
    chat.disconnect(phone)  # alice is still here
    assert bob.take() == []
    chat.disconnect(alice)
    assert bob.take() == [recv("club", "alice", False)]
    assert carol.take() == [recv("club", "alice", False)]
    later(chat, 10)
    assert bob.take() == [] and chat.typing._states == {}


def test_signing_out_ends_the_typing(chat: InProcessChat, club: Any) -> None:
    alice, bob, _ = club
    say(chat, alice, True, chatname="club")
    bob.take()
    assert chat.request(alice, {"type": "LogoutRequest"})["status"] == 200
    assert bob.take() == [recv("club", "alice", False)]


def test_a_message_ends_the_typing_without_a_push(chat: InProcessChat, club: Any) -> None:
    alice, bob, _ = club
    say(chat, alice, True, chatname="club")
    bob.take()
    later(chat, 0.5)
    say(chat, alice, False, chatname="club")  # a false was waiting for the window
    ack = chat.request(alice, {"type": "MessageRequest", "recipient": "club", "content": "hi"})
    assert ack["status"] == 200, ack
    later(chat, 10)
    assert [m["type"] for m in bob.take()] == ["GroupMessageRecv"]
    assert chat.typing._states == {}
    say(chat, alice, True, chatname="club")  # typing again: pushed at once
    assert bob.take() == [recv("club", "alice", True)]


def test_a_direct_message_ends_the_typing_in_that_chat_only(
    chat: InProcessChat, club: Any,
) -> None:
    alice, bob, _ = club
    say(chat, alice, True, user="bob")
    say(chat, alice, True, chatname="club")
    bob.take()
    ack = chat.request(alice, {"type": "MessageRequest", "recipient": "bob", "content": "hi"})
    assert ack["status"] == 200, ack
    later(chat, EXPIRY)
    pushes = bob.take()
    assert [m["type"] for m in pushes] == ["MessageRecv", "TypingRecv"]
    assert pushes[1] == recv("club", "alice", False)


def test_direct_typing_is_told_to_the_other_person_by_the_typers_name(
    chat: InProcessChat,
) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    say(chat, alice, True, user="Bob")
    assert bob.take() == [{"type": "TypingRecv", "status": 200, "user": "alice",
                           "username": "alice", "typing": True}]
    assert alice.take() == []
    say(chat, alice, True, user="alice")  # one's own direct chat: nobody to tell
    assert alice.take() == []


def test_direct_typing_to_nobody_is_404_and_refused_as_a_send_is(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    reply = typing(chat, alice, True, user="nobody")
    assert reply["status"] == NOT_FOUND and reply["detail"] == "no such user: 'nobody'"
    settings = chat.request(bob, {"type": "SettingsRequest", "direct_messages": "contacts"})
    assert settings["status"] == 200, settings
    refused = typing(chat, alice, True, user="bob")
    send = chat.request(alice, {"type": "MessageRequest", "recipient": "bob", "content": "x"})
    assert refused["status"] == FORBIDDEN == send["status"]
    assert refused["detail"] == send["detail"] == "'bob' accepts direct messages from contacts only"
    chat.disconnect(bob)  # offline: asked of the database
    assert typing(chat, alice, True, user="bob")["status"] == FORBIDDEN
    bob = chat.sign_in("bob")
    chat.request(alice, {"type": "ContactRequest", "username": "bob"})
    assert chat.request(bob, {"type": "ContactAccept", "username": "alice"})["status"] == 200
    bob.take()
    say(chat, alice, True, user="bob")
    assert bob.take() == [{"type": "TypingRecv", "status": 200, "user": "alice",
                           "username": "alice", "typing": True}]


def test_bad_requests_get_a_clear_refusal(chat: InProcessChat, club: Any) -> None:
    alice, bob, _ = club
    both = typing(chat, alice, True, chatname="club", user="bob")
    neither = typing(chat, alice, True)
    for reply in (both, neither):
        assert reply["status"] == BAD_REQUEST
        assert reply["detail"] == "TypingRequest: give exactly one of 'chatname' or 'user'"
    missing = chat.request(alice, {"type": "TypingRequest", "chatname": "club"})
    assert missing["status"] == BAD_REQUEST and "'typing'" in missing["detail"]
    wrong = chat.request(alice, {"type": "TypingRequest", "chatname": "club", "typing": "yes"})
    assert wrong["status"] == BAD_REQUEST and "'typing'" in wrong["detail"]
    unknown = typing(chat, alice, True, chatname="nowhere")
    assert unknown["status"] == NOT_FOUND
    dave = chat.sign_in("dave")
    outsider = typing(chat, dave, True, chatname="club")
    assert outsider["status"] == FORBIDDEN and "not a member" in outsider["detail"]
    assert bob.take() == []
    say(chat, alice, True, chatname="club")  # and the connection goes on
    assert bob.take() == [recv("club", "alice", True)]


def test_a_random_chat_tells_the_partner_and_refuses_others(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    paired = chat.request(alice, {"type": "RandomMessageRequest", "content": "hello"})
    chatname = paired["chatname"]
    bob.take()
    say(chat, alice, True, chatname=chatname)
    assert bob.take() == [recv(chatname, "alice", True)]
    carol = chat.sign_in("carol")
    refused = typing(chat, carol, True, chatname=chatname)
    assert refused["status"] == FORBIDDEN and "random chat" in refused["detail"]


def test_blocks_either_way_keep_typing_from_a_person(chat: InProcessChat, club: Any) -> None:
    alice, bob, carol = club
    dave = chat.sign_in("dave")
    chat.request(alice, {"type": "GroupAddRequest", "chatname": "club", "users": ["dave"]})
    assert chat.request(bob, {"type": "BlockRequest", "username": "alice"})["status"] == 200
    assert chat.request(alice, {"type": "BlockRequest", "username": "carol"})["status"] == 200
    for who in (bob, carol, dave):
        who.take()
    say(chat, alice, True, chatname="club")
    later(chat, EXPIRY)
    assert bob.take() == [] and carol.take() == []
    assert dave.take() == [recv("club", "alice", True), recv("club", "alice", False)]
    say(chat, alice, True, user="bob")  # 200, and nothing said
    assert bob.take() == []


def test_the_typers_presence_setting_decides_who_is_told(
    chat: InProcessChat, club: Any,
) -> None:
    alice, bob, carol = club
    chat.request(alice, {"type": "ContactRequest", "username": "bob"})
    assert chat.request(bob, {"type": "ContactAccept", "username": "alice"})["status"] == 200
    assert chat.request(alice, {"type": "SettingsRequest", "presence": "contacts"})["status"] == 200
    bob.take(), carol.take()
    say(chat, alice, True, chatname="club")
    assert bob.take() == [recv("club", "alice", True)] and carol.take() == []
    later(chat, EXPIRY)
    assert bob.take() == [recv("club", "alice", False)] and carol.take() == []
    assert chat.request(alice, {"type": "SettingsRequest", "presence": "nobody"})["status"] == 200
    bob.take(), carol.take()
    say(chat, alice, True, chatname="club")
    say(chat, alice, True, user="bob")
    later(chat, EXPIRY)
    assert bob.take() == [] and carol.take() == []


def test_members_offline_are_not_told_and_those_who_come_are_on_a_renewal(
    chat: InProcessChat, club: Any,
) -> None:
    alice, bob, carol = club
    chat.disconnect(carol)
    say(chat, alice, True, chatname="club")
    carol = chat.sign_in("carol")
    carol.take()
    later(chat, 3)
    say(chat, alice, True, chatname="club")
    assert carol.take() == [recv("club", "alice", True)]
    later(chat, EXPIRY)
    assert carol.take() == [recv("club", "alice", False)]
    assert bob.take() == [recv("club", "alice", True)] * 2 + [recv("club", "alice", False)]


def test_typing_works_on_a_server_that_keeps_no_messages(tmp_path: Path) -> None:
    running = InProcessChat(make_test_config(tmp_path, chat={"store_messages": "false"}))
    running.start()
    try:
        alice, bob = running.sign_in("alice"), running.sign_in("bob")
        say(running, alice, True, user="bob")
        assert bob.take() == [{"type": "TypingRecv", "status": 200, "user": "alice",
                               "username": "alice", "typing": True}]
    finally:
        running.stop()


def test_contacts_only_typing_reaches_a_contact_on_another_node(
    chat: InProcessChat, club: Any,
) -> None:
    """The typer's node knows the typer's contacts, not a remote viewer's: that is enough."""
    alice, bob, carol = club
    assert chat.request(alice, {"type": "SettingsRequest", "presence": "contacts"})["status"] == 200
    chat.registry.remote_connect("erin", "n2")
    chat.registry.add_members("club", ["erin"])
    assert chat.typing.audience("alice", ("chatname", "club")) == []
    chat.registry.link_contacts("alice", "erin")
    assert chat.typing.audience("alice", ("chatname", "club")) == ["erin"]
    assert chat.registry.shows_presence("alice", "erin")
    assert not chat.registry.shows_presence("alice", "carol")
