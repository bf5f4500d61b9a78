"""The client's parts without a network: session logic, line editor, --send files."""

from __future__ import annotations

import io
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from chateau.client.scripting import parse_messages, read_messages
from chateau.client.session import (
    EXIT_OK,
    EXIT_SIGN_IN,
    ChatSession,
    clean,
    format_time,
    split_name,
)
from chateau.client.terminal import EOF, INTERRUPT, LINE, LineEditor, fit_line, text_width
from chateau.client.wire import ClientSetupError, ConnectionFailed, parse_server_url


class FakeConnection:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed = False

    def send_json(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def close(self) -> Deferred:
        self.closed = True
        return succeed(None)

    def drop(self) -> None:
        self.closed = True


class FakeUI:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.prompt = ""

    def show(self, text: str) -> None:
        self.lines.extend(text.split("\n"))

    def set_prompt(self, prompt: str) -> None:
        self.prompt = prompt


class Harness:
    """A session whose connections are fakes handed out in order."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.ui = FakeUI()
        self.outcomes: list[Any] = []
        self.connections: list[FakeConnection] = []
        self.session = ChatSession(self.clock, self.connect, self.ui, "Alice", "pw")

    def connect(self, session: ChatSession) -> Deferred:
        outcome = self.outcomes.pop(0) if self.outcomes else FakeConnection()
        if isinstance(outcome, Deferred):
            return outcome
        if isinstance(outcome, Exception):
            return fail(outcome)
        self.connections.append(outcome)
        return succeed(outcome)

    @property
    def conn(self) -> FakeConnection:
        return self.connections[-1]

    def reply(self, **frame: Any) -> None:
        """Answer the last request sent on the current connection."""
        frame.setdefault("msg_id", self.conn.sent[-1]["msg_id"])
        self.session.frame_received(self.conn, frame, b"")

    def push(self, **frame: Any) -> None:
        self.session.frame_received(self.conn, frame, b"")

    def start(self, session_key: str | None = None) -> None:
        started = Deferred.fromCoroutine(self.session.start())
        assert self.conn.sent[-1]["type"] == "RegisterRequest"
        extra = {"session_key": session_key} if session_key else {}
        self.reply(type="RegisterResponse", status=200, username="alice", **extra)
        assert started.result is None


def test_sign_in_then_chat_and_commands():
    h = Harness()
    h.start()
    assert h.conn.sent[0] == {"type": "RegisterRequest", "username": "alice", "password": "pw",
                              "auth": False, "client": "chateau-client", "msg_id": 1}
    assert h.ui.prompt == "> "
    h.session.handle_line("hello")
    assert "no current chat" in h.ui.lines[-1]
    h.session.handle_line("/to Bob")
    assert h.ui.prompt == "bob> "
    h.session.handle_line("hi bob")
    assert h.conn.sent[-1]["type"] == "GroupMessageRequest"
    assert h.conn.sent[-1]["recipient"] == "bob" and h.conn.sent[-1]["content"] == "hi bob"
    h.reply(type="MessageSendResponse", status=200, id=7, timestamp="2024-01-02T03:04:05.000Z")
    assert h.ui.lines[-1].endswith("[bob] alice: hi bob")
    h.session.handle_line("//slash")
    assert h.conn.sent[-1]["content"] == "/slash"
    h.reply(type="ErrorResponse", status=404, detail="no such user or group: 'bob'")
    assert h.ui.lines[-1] == "! message to bob not sent: no such user or group: 'bob' (404)"


def test_incoming_messages_and_duplicates():
    h = Harness()
    h.start()
    h.push(type="MessageRecv", status=200, sender="bob", chatname="bob", groupchat=False,
           content="two\nlines", id=3, timestamp="2024-01-02T03:04:05.000Z")
    assert h.ui.lines[-2].endswith("[@bob] bob: two") and h.ui.lines[-1] == "    lines"
    assert h.session.current == "bob"  # the first chat becomes the current one
    shown = len(h.ui.lines)
    h.push(type="MessageRecv", status=200, sender="bob", chatname="bob", content="two\nlines",
           id=3, timestamp="2024-01-02T03:04:05.000Z", offline=True)
    assert len(h.ui.lines) == shown  # the same message id is shown once
    h.push(type="GroupMessageRecv", status=201, sender="carol", chatname="club", content="x",
           id=4, timestamp="2024-01-02T03:04:05.000Z", offline=True)
    assert h.ui.lines[-1].endswith("[#club] carol: x  (while you were offline)")
    h.push(type="SomethingNew", value=1)
    assert h.ui.lines[-1] == '* {"type": "SomethingNew", "value": 1}'


def test_reconnect_without_session_key_signs_in_again_and_sends_queued_lines():
    h = Harness()
    h.start()
    first = h.conn
    h.session.handle_line("/to bob")
    pending_connection: Deferred = Deferred()
    h.outcomes = [ConnectionFailed("refused"), pending_connection]
    h.session.connection_closed(first, 1006, None)
    assert "connection lost" in h.ui.lines[-2] and "refused" in h.ui.lines[-1]
    assert h.ui.prompt == "(offline) bob> "
    h.session.handle_line("typed while offline")
    assert "goes out once reconnected" in h.ui.lines[-1]
    h.clock.advance(1)  # the retry after a failed attempt
    second = FakeConnection()
    h.connections.append(second)
    pending_connection.callback(second)
    assert second.sent[0]["type"] == "RegisterRequest"
    assert second.sent[0]["password"] == "pw"
    h.reply(type="RegisterResponse", status=200, username="alice")
    assert "* reconnected: signed in again" in h.ui.lines
    assert second.sent[-1]["content"] == "typed while offline"
    assert h.ui.prompt == "bob> "


def test_reconnect_resumes_with_session_key_or_falls_back():
    h = Harness()
    h.start(session_key="k1")
    h.session.connection_closed(h.conn, 1006, None)
    assert h.conn.sent[-1] == {"type": "ResumeRequest", "session_key": "k1",
                               "client": "chateau-client", "msg_id": h.conn.sent[-1]["msg_id"]}
    h.reply(type="ResumeResponse", status=200, username="alice")
    assert h.ui.lines[-1] == "* reconnected: session resumed"

    h.session.connection_closed(h.conn, 1006, None)
    assert h.conn.sent[-1]["type"] == "ResumeRequest"
    h.reply(type="ErrorResponse", status=301, detail="session key is invalid")
    assert h.conn.sent[-1]["type"] == "RegisterRequest"
    h.reply(type="RegisterResponse", status=200, username="alice", session_key="k2")
    assert h.ui.lines[-1] == "* reconnected: signed in again"
    assert h.session.session_key == "k2"

    h.session.connection_closed(h.conn, 1006, None)
    h.reply(type="ErrorResponse", status=301, detail="expired")
    h.reply(type="ErrorResponse", status=301, detail="wrong username or password")
    assert h.session.finished.result == EXIT_SIGN_IN


def test_quit_logs_out_when_there_is_a_session_key():
    h = Harness()
    h.start(session_key="k1")
    h.session.handle_line("/quit")
    assert h.conn.sent[-1]["type"] == "LogoutRequest"
    h.reply(type="LogoutResponse", status=200)
    assert h.conn.closed and h.session.finished.result == EXIT_OK


def test_history_pages_back_and_tries_the_other_kind_of_name():
    h = Harness()
    h.start()
    h.session.handle_line("/history club")
    assert h.conn.sent[-1]["user"] == "club"
    h.reply(type="ErrorResponse", status=404, detail="no such user: 'club'")
    request = h.conn.sent[-1]
    assert request["chatname"] == "club" and "before" not in request
    h.reply(type="HistoryResponse", status=200, chatname="club", more=True, messages=[
        {"id": 9, "sender": "bob", "content": "new", "timestamp": "2024-01-02T03:04:05Z",
         "edited": True, "deleted": False},
        {"id": 8, "sender": "carol", "content": "old", "timestamp": "2024-01-02T03:04:05Z",
         "edited": False, "deleted": True},
    ])
    assert h.ui.lines[-4] == "--- #club: 2 messages ---"
    assert h.ui.lines[-3].endswith("[#club] carol:   (deleted)")
    assert h.ui.lines[-2].endswith("[#club] bob: new  (edited)")
    assert h.ui.lines[-1] == "--- /history club again for older messages ---"
    h.session.handle_line("/history club")
    assert h.conn.sent[-1]["chatname"] == "club" and h.conn.sent[-1]["before"] == 8


def test_contacts_listing_and_changes():
    h = Harness()
    h.start()
    h.session.handle_line("/contacts")
    h.reply(type="ContactListResponse", status=200,
            contacts=[{"username": "bob", "online": True}],
            pending=[{"username": "carol", "direction": "incoming"}])
    assert h.ui.lines[-2:] == ["* contacts: bob (online)", "* contact request from carol"]
    h.session.handle_line("/contacts accept Carol")
    assert h.conn.sent[-1] == {"type": "ContactAccept", "username": "carol",
                               "msg_id": h.conn.sent[-1]["msg_id"]}
    h.session.handle_line("/contacts frobnicate x")
    assert h.ui.lines[-1].startswith("! usage: /contacts")


def test_clean_defuses_terminal_controls():
    assert clean("a\x1b[2Jb\x07") == "a^[[2Jb^G"
    assert clean("left\u202eright") == "left\\u202eright"
    assert clean("tab\there\nnext") == "tab    here\nnext"
    assert clean("\x9b") == "\\u009b"


def test_format_time_and_split_name():
    from datetime import date

    assert format_time(None) == "--:--"
    assert format_time("nonsense") == "nonsense"
    long_ago = format_time("2001-02-03T04:05:06Z", today=date(2030, 1, 1))
    assert len(long_ago) == len("2001-02-03 04:05")
    assert split_name('"book club" hello there') == ("book club", "hello there")
    assert split_name("bob  hi") == ("bob", "hi")


def test_line_editor_keys():
    editor = LineEditor()
    assert editor.feed("helo") == []
    editor.feed("\x1b[D")  # left
    editor.feed("l")
    assert editor.text == "hello" and editor.cursor == 4
    editor.feed("\x01X\x05!")  # Ctrl-A, Ctrl-E
    assert editor.text == "Xhello!"
    editor.feed("\x17")  # Ctrl-W deletes the word before the cursor
    assert editor.text == ""
    editor.feed("one two")
    editor.feed("\x1b[1;5D")  # Ctrl-Left
    editor.feed("\x1b[3~")  # Delete
    assert editor.text == "one wo"
    assert editor.feed("\r\n") == [(LINE, "one wo")]  # CR LF is one Enter
    editor.feed("draft")
    editor.feed("\x1b[A")
    assert editor.text == "one wo"
    editor.feed("\x1b[B")
    assert editor.text == "draft"
    editor.feed("\x15")
    assert editor.feed("\x04") == [(EOF, "")]
    assert editor.feed("\x03") == [(INTERRUPT, "")]
    editor.feed("é日\x00\x1bx")  # control characters and unknown Alt keys are dropped
    assert editor.text == "é日"


def test_fit_line_keeps_the_cursor_visible():
    assert fit_line("> ", "hi", 2, 80, 0) == ("> hi", 4, 0)
    text = "x" * 100
    visible, column, scroll = fit_line("> ", text, 100, 40, 0)
    assert text_width(visible) <= 39 and column <= 39 and scroll > 0
    visible, column, scroll = fit_line("> ", text, 0, 40, scroll)
    assert scroll == 0 and column == 2
    assert text_width("日本") == 4 and text_width("e\u0301") == 1


def test_send_files_may_hold_one_message_an_array_or_json_lines():
    assert parse_messages('{"type": "A"}', "f") == [{"type": "A"}]
    assert parse_messages('[{"type": "A"}, {"type": "B"}]', "f") == [{"type": "A"}, {"type": "B"}]
    assert parse_messages('{"type": "A"}\n\n{"type": "B"}\n', "f") == [{"type": "A"}, {"type": "B"}]
    assert parse_messages("  \n", "f") == []
    with pytest.raises(ClientSetupError, match="f:2: not JSON"):
        parse_messages('{"type": "A"}\n{oops}\n', "f")
    assert read_messages(["-"], io.StringIO('"raw"')) == ["raw"]


def test_server_urls():
    url = parse_server_url("wss://chat.example.edu/ws")
    assert url.secure and url.port == 443 and url.host == "chat.example.edu"
    with pytest.raises(ClientSetupError):
        parse_server_url("http://example.com/")


def test_missing_chromium_fails_under_ci_and_skips_elsewhere(monkeypatch):
    from tests import clientsupport

    monkeypatch.setattr(clientsupport, "chromium_path", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Chromium is missing"):
        clientsupport.require_chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        clientsupport.require_chromium()


def test_signed_out_by_the_server_stops_and_asks_to_sign_in_again():
    """Close code 4001: the key was revoked; no reconnecting with an old password."""
    h = Harness()
    h.start(session_key="k1")
    h.session.connection_closed(h.conn, 4001, "signed out: sign in again")
    assert "signed you out" in h.ui.lines[-1] and "sign in" in h.ui.lines[-1]
    assert h.session.session_key is None
    assert h.session.finished.result == EXIT_SIGN_IN
    assert not any(m["type"] == "ResumeRequest" for m in h.conn.sent)


def test_send_waits_for_the_first_frame_then_stops_after_wait_seconds_of_quiet(monkeypatch):
    """A slow sign-in (bcrypt on a busy machine) does not end a --send script early."""
    from twisted.internet.defer import ensureDeferred

    from chateau.client import scripting

    clock = Clock()
    connection = FakeConnection()
    recorders: list[Any] = []

    def opened(reactor: Any, server: Any, recorder: Any, ca_file: Any) -> Deferred:
        recorders.append(recorder)
        return succeed(connection)

    monkeypatch.setattr(scripting, "open_connection", opened)
    out = io.StringIO()
    done = ensureDeferred(scripting.run_send(
        clock, parse_server_url("ws://127.0.0.1:1/ws"), [{"type": "ClientListRequest"}],
        ca_file=None, wait=0.5, strict=False, out=out, err=io.StringIO(),
        sign_in={"type": "RegisterRequest"},
    ))
    [recorder] = recorders
    assert [m["type"] for m in connection.sent] == ["RegisterRequest", "ClientListRequest"]
    clock.advance(5)  # far past --wait, but nothing has come yet
    assert not done.called
    recorder.frame_received(connection, {"type": "RegisterResponse"}, b"")
    clock.advance(0.4)
    recorder.frame_received(connection, {"type": "ClientListResponse"}, b"")
    clock.advance(0.4)
    assert not done.called
    clock.advance(0.2)
    assert done.called and connection.closed
    assert [line for line in out.getvalue().splitlines()] == [
        '{"type":"RegisterResponse"}', '{"type":"ClientListResponse"}',
    ]
    clock.advance(scripting.FIRST_FRAME_WAIT)
