"""chateau-client's catching up, typing, read markers and mentions, without a network.

/unread and /sync page while the server says ``more``; /search's marks; the
unread count at sign-in; typing sent (on a terminal only, never more than
needed) and shown in the prompt until it ends; read markers sent for what the
current chat shows and "seen" said once; mentions of you stand out.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from chateau.client import awareness
from chateau.client.text import EMPHASIS, STRONG, format_time, marked, render
from tests.test_client_units import Harness

WHEN = "2024-01-02T03:04:05.000Z"
AT = format_time(WHEN)


def started(interactive: bool = False, **register: Any) -> Harness:
    h = Harness()
    h.ui.interactive = interactive
    h.start(**register)
    return h


def sent(h: Harness, kind: str) -> list[dict[str, Any]]:
    """The requests of *kind* sent on the current connection, without msg_id."""
    return [{k: v for k, v in m.items() if k != "msg_id"} for m in h.conn.sent
            if m.get("type") == kind]


def conversation(activity: int, unread: int, **key: Any) -> dict[str, Any]:
    return {**key, "activity": activity, "unread": unread, "mentions": 0, "read": 0,
            "last_message": {"id": activity, "sender": "bob", "content": "hi",
                             "timestamp": WHEN, "edited": False, "deleted": False}}


# -- unread_total at sign-in ---------------------------------------------------------


def test_unread_total_is_told_at_sign_in_and_after_a_resume():
    h = Harness()
    Deferred.fromCoroutine(h.session.start())
    h.reply(type="RegisterResponse", status=200, username="alice", session_key="k1",
            unread_total=7)
    assert h.ui.lines[-1] == "* 7 unread messages: /unread lists them"
    h.session.connection_closed(h.conn, 1006, None)
    h.reply(type="ResumeResponse", status=200, username="alice", unread_total=1)
    assert h.ui.lines[-2:] == ["* reconnected: session resumed",
                               "* 1 unread message: /unread lists them"]

    many = Harness()
    Deferred.fromCoroutine(many.session.start())
    many.reply(type="RegisterResponse", status=200, username="alice", unread_total=1000)
    assert many.ui.lines[-1] == "* 999+ unread messages: /unread lists them"

    quiet = Harness()
    Deferred.fromCoroutine(quiet.session.start())
    quiet.reply(type="RegisterResponse", status=200, username="alice", unread_total=0)
    assert "signed in as alice" in quiet.ui.lines[-1]  # nothing said when nothing is unread


# -- /unread -----------------------------------------------------------------------------


def test_unread_pages_while_more_and_lists_only_the_unread():
    h = started()
    h.session.handle_line("/unread")
    h.reply(type="ConversationsResponse", status=200, more=True, conversations=[
        conversation(90, 2, chatname="club"), conversation(80, 0, user="dave")])
    assert sent(h, "ConversationsRequest")[-1] == {"type": "ConversationsRequest",
                                                   "limit": 200, "before": 80}
    h.reply(type="ConversationsResponse", status=200, more=False, conversations=[
        conversation(70, 1, user="carol")])
    assert len(sent(h, "ConversationsRequest")) == 2
    assert h.ui.lines[-3:] == ["--- unread: 3 in 2 conversations ---",
                               f"  #club  2 unread  {AT} bob: hi",
                               f"  @carol  1 unread  {AT} bob: hi"]
    assert {"club"} <= h.session.groups and "carol" in h.session.users


def test_unread_stops_when_a_page_makes_no_progress_or_fails():
    h = started()
    h.session.handle_line("/unread")
    h.reply(type="ConversationsResponse", status=200, more=True,
            conversations=[conversation(0, 1, user="zed")])
    assert len(sent(h, "ConversationsRequest")) == 1  # activity 0: nothing before it
    assert h.ui.lines[-1].startswith("  @zed  1 unread")
    h.session.handle_line("/unread")
    h.reply(type="ConversationsResponse", status=200, more=True,
            conversations=[conversation(5, 1, user="zed")])
    h.reply(type="ErrorResponse", status=501, detail="this server keeps no messages")
    assert h.ui.lines[-1] == ("! no conversation list: this server keeps no messages (501)")


# -- /search marks ------------------------------------------------------------------------


def test_marks_are_bold_on_a_terminal_and_stars_otherwise():
    text = marked("a picnic\x1b, b", [[2, 8], [4, 6], [9, 99], [3, 1]])
    assert text == f"a {EMPHASIS[0]}picnic{EMPHASIS[1]}^[, b"
    assert render(text, styled=False) == "a *picnic*^[, b"
    assert render(text, styled=True) == "a \x1b[1;7mpicnic\x1b[22;27m^[, b"
    assert render(f"{STRONG[0]}x{STRONG[1]}", styled=False) == "x"


def test_search_results_are_bold_on_a_terminal():
    h = started(interactive=True)
    h.session.handle_line("/search picnic")
    h.reply(type="SearchResponse", status=200, query="picnic", more=False, results=[
        {"id": 3, "user": "bob", "sender": "bob", "timestamp": WHEN, "snippet": "the picnic",
         "highlights": [[4, 10]]}])
    assert h.ui.lines[-1].endswith("[@bob] bob: the \x1b[1;7mpicnic\x1b[22;27m")


# -- /sync ------------------------------------------------------------------------------


def test_sync_pages_from_the_sessions_position_and_prints_like_live_pushes():
    h = started()
    h.push(type="MessageRecv", status=200, sender="bob", chatname="bob", content="seen live",
           id=10, timestamp=WHEN)
    h.session.handle_line("/sync")
    assert sent(h, "SyncRequest") == [{"type": "SyncRequest", "limit": 500}]
    h.reply(type="SyncResponse", status=200, since=9, until=12, more=True, messages=[
        {"id": 10, "user": "bob", "sender": "bob", "content": "seen live", "timestamp": WHEN,
         "edited": False, "deleted": False},
        {"id": 11, "chatname": "club", "sender": "carol", "content": "@alice hi",
         "timestamp": WHEN, "edited": False, "deleted": False, "mentions": ["alice"]},
        {"id": 12, "chatname": "club", "timestamp": WHEN, "hidden": True}])
    assert sent(h, "SyncRequest")[-1] == {"type": "SyncRequest", "limit": 500, "since": 12}
    h.reply(type="SyncResponse", status=200, since=12, until=15, more=False, messages=[
        {"id": 13, "change": "edited", "message": 11, "chatname": "club", "sender": "carol",
         "timestamp": WHEN, "content": "@alice hello"},
        {"id": 14, "change": "deleted", "message": 10, "user": "bob", "sender": "bob",
         "timestamp": WHEN},
        {"id": 15, "chatname": "club", "sender": "carol", "content": "carol added dave",
         "timestamp": WHEN, "edited": False, "deleted": False,
         "event": {"event": "added", "user": "dave", "by": "carol"}}],
        groups=["club", "lab"])
    at = AT
    assert h.ui.lines[-6:] == [
        f"{at} [#club] carol: @alice hi  (mentions you)",
        f"{at} [#club] (a message from someone you blocked, hidden)",
        "* carol edited a message in #club: @alice hello",
        "* a message in @bob was deleted",
        f"{at} [#club] * carol added dave",
        "* in sync: 5 new (1 more already shown)",
    ]
    assert h.session.groups == {"club", "lab"}
    assert len(sent(h, "SyncRequest")) == 2


def test_sync_refused():
    h = started()
    h.session.handle_line("/sync now")
    assert h.ui.lines[-1] == "! usage: /sync"
    h.session.handle_line("/sync")
    h.reply(type="ErrorResponse", status=501, detail="this server keeps no messages")
    assert h.ui.lines[-1] == "! not synced: this server keeps no messages (501)"


# -- typing -----------------------------------------------------------------------------


def test_typing_is_sent_on_a_terminal_renewed_and_ended():
    h = started(interactive=True)
    h.session.handle_line("/to bob")
    h.session.line_edited("h")
    h.session.line_edited("he")  # no second request within the renewal time
    assert sent(h, "TypingRequest") == [{"type": "TypingRequest", "user": "bob", "typing": True}]
    h.reply(type="TypingResponse", status=200)
    h.clock.advance(awareness.RENEW)
    h.session.line_edited("hel")
    assert len(sent(h, "TypingRequest")) == 2
    h.session.line_edited("")  # erased
    assert sent(h, "TypingRequest")[-1] == {"type": "TypingRequest", "user": "bob",
                                            "typing": False}
    h.session.line_edited("/who")  # a command is not typing
    assert len(sent(h, "TypingRequest")) == 3
    h.session.groups.add("club")
    h.session.handle_line("/to club")
    h.session.line_edited("x")
    h.session.handle_line("x")  # sent: typing ends
    typing = sent(h, "TypingRequest")[-2:]
    assert typing == [{"type": "TypingRequest", "chatname": "club", "typing": True},
                      {"type": "TypingRequest", "chatname": "club", "typing": False}]
    assert h.conn.sent[-1]["type"] == "GroupMessageRequest"


def test_switching_chats_while_typing_ends_it_in_the_old_one():
    h = started(interactive=True)
    h.session.handle_line("/to bob")
    h.session.line_edited("hi")
    h.session.current = "carol"
    h.session.line_edited("hi!")
    assert [(m.get("user"), m["typing"]) for m in sent(h, "TypingRequest")] == [
        ("bob", True), ("bob", False), ("carol", True)]


def test_piped_input_sends_no_typing_nor_read_markers():
    h = started(interactive=False)
    h.session.handle_line("/to bob")
    h.session.line_edited("hello")
    h.push(type="MessageRecv", status=200, sender="bob", chatname="bob", content="hi", id=4,
           timestamp=WHEN)
    h.clock.advance(10)
    assert sent(h, "TypingRequest") == [] and sent(h, "ReadRequest") == []


def test_who_is_typing_shows_in_the_prompt_until_it_ends():
    h = started()
    h.session.handle_line("/to bob")
    shown = len(h.ui.lines)
    h.push(type="TypingRecv", status=200, user="dave", username="dave", typing=True)
    assert h.ui.prompt == "(dave is typing to you…) bob> "
    h.push(type="TypingRecv", status=200, user="dave", username="dave", typing=False)
    h.push(type="TypingRecv", status=200, user="bob", username="bob", typing=True)
    assert h.ui.prompt == "(bob is typing…) bob> "
    h.push(type="TypingRecv", status=200, chatname="club", username="carol", typing=True)
    assert h.ui.prompt == "(bob is typing…; carol is typing in club…) bob> "
    h.push(type="TypingRecv", status=200, user="bob", username="bob", typing=False)
    assert h.ui.prompt == "(carol is typing in club…) bob> "
    h.push(type="GroupMessageRecv", status=201, chatname="club", sender="carol",
           content="done", id=5, timestamp=WHEN)
    assert h.ui.prompt == "bob> "
    h.push(type="TypingRecv", status=200, user="bob", username="bob", typing=True)
    h.clock.advance(awareness.EXPIRY - 0.1)
    assert "bob is typing" in h.ui.prompt
    h.clock.advance(0.2)
    assert h.ui.prompt == "bob> "
    assert len(h.ui.lines) == shown + 1  # only carol's message: typing prints no lines


# -- read markers -------------------------------------------------------------------------


def test_messages_shown_in_the_current_chat_are_marked_read():
    h = started(interactive=True)
    h.push(type="MessageRecv", status=200, sender="bob", chatname="bob", content="one", id=4,
           timestamp=WHEN)
    h.push(type="MessageRecv", status=200, sender="bob", chatname="bob", content="two", id=5,
           timestamp=WHEN)
    h.push(type="GroupMessageRecv", status=201, chatname="club", sender="carol",
           content="elsewhere", id=6, timestamp=WHEN)
    assert sent(h, "ReadRequest") == []
    h.clock.advance(awareness.READ_DELAY)
    assert sent(h, "ReadRequest") == [{"type": "ReadRequest", "user": "bob", "id": 5}]
    h.reply(type="ReadResponse", status=200, user="bob", id=5)
    h.session.handle_line("/to club")
    h.session.handle_line("/history")
    h.reply(type="HistoryResponse", status=200, chatname="club", more=False, messages=[
        {"id": 6, "sender": "carol", "content": "elsewhere", "timestamp": WHEN,
         "edited": False, "deleted": False}])
    h.clock.advance(awareness.READ_DELAY)
    assert sent(h, "ReadRequest")[-1] == {"type": "ReadRequest", "chatname": "club", "id": 6}
    h.push(type="MessageRecv", status=200, sender="dan", chatname="~1", random=True,
           content="hi", id=7, timestamp=WHEN)
    h.session.handle_line("/to ~dan")
    h.push(type="MessageRecv", status=200, sender="dan", chatname="~1", random=True,
           content="still there?", id=8, timestamp=WHEN)
    h.clock.advance(awareness.READ_DELAY)
    assert len(sent(h, "ReadRequest")) == 2  # random chats have no read marker


def test_seen_is_said_once_when_the_other_side_reads_your_latest_message():
    h = started()
    h.session.handle_line("/to bob")
    h.session.handle_line("hello")
    h.reply(type="MessageSendResponse", status=200, id=20, timestamp=WHEN)
    shown = len(h.ui.lines)
    h.push(type="ReadRecv", status=200, user="bob", username="bob", id=19)
    h.push(type="ReadRecv", status=200, user="bob", username="alice", id=20)  # my other device
    assert len(h.ui.lines) == shown
    h.push(type="ReadRecv", status=200, user="bob", username="bob", id=20)
    h.push(type="ReadRecv", status=200, user="bob", username="bob", id=21)
    h.push(type="ReadRecv", status=200, chatname="club", username="carol", id=30)
    assert h.ui.lines[shown:] == ["* bob has seen your message"]


# -- mentions -------------------------------------------------------------------------------


def test_a_message_mentioning_you_stands_out():
    h = started(interactive=True)
    h.push(type="GroupMessageRecv", status=201, chatname="club", sender="bob",
           content="@alice look", id=5, timestamp=WHEN, mentions=["alice"])
    assert h.ui.lines[-1].startswith("\x1b[1m")
    assert h.ui.lines[-1].endswith("[#club] bob: @alice look  (mentions you)\x1b[22m")
    h.push(type="GroupMessageRecv", status=201, chatname="club", sender="bob",
           content="@all meeting", id=6, timestamp=WHEN, mentions=["@all"], offline=True)
    assert h.ui.lines[-1].endswith("(mentions you, while you were offline)\x1b[22m")
    h.push(type="GroupMessageRecv", status=201, chatname="club", sender="bob",
           content="@carol hi", id=7, timestamp=WHEN, mentions=["carol"])
    assert h.ui.lines[-1].endswith("[#club] bob: @carol hi")
