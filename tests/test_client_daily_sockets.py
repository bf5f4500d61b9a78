"""chateau-client's catching up, read markers and typing against a real server.

The words and the paging are tested without a network in
tests/test_client_daily.py; here the requests go over a real socket to a real
``twistd``: piped input for what one person asks, pseudo-terminals where a
person reads and types (read markers and typing are sent only there).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.clientsupport import chateau, finish, frames, run_cli, spawn  # noqa: F401
from tests.test_client_governance import new_group, sign_up, typed


def send_as(url: str, user: str, *requests: dict) -> list[dict]:
    result = run_cli(url, "--user", user, "--send", "-", "--wait", "0.5", "--strict",
                     password="pw", input="\n".join(json.dumps(r) for r in requests))
    assert result.returncode == 0, result.stdout + result.stderr
    return frames(result.stdout)


def test_unread_and_unread_total_over_a_real_server(chateau, tmp_path: Path):
    sign_up(chateau.url, "alice", "bob", "carol", "dave")
    new_group(chateau.url, "carol", "book club", "alice", "bob")
    typed(chateau.url, "bob", "/msg alice lunch at one?", "/msg alice or two")
    typed(chateau.url, "carol", '/msg "book club" has anyone started chapter three?')
    typed(chateau.url, "alice", "/msg carol thanks")  # your own messages are not unread

    shown = typed(chateau.url, "alice", "/unread")
    assert "* 3 unread messages: /unread lists them" in shown
    assert "--- unread: 3 in 2 conversations ---" in shown
    lines = [line for line in shown if line.startswith("  ")]
    assert len(lines) == 2
    assert re.fullmatch(r"  #book club  1 unread  [-\d: ]+ carol: has anyone started"
                        r" chapter three\?", lines[0]), lines
    assert re.fullmatch(r"  @bob  2 unread  [-\d: ]+ bob: or two", lines[1]), lines

    # Piped input marks nothing read; another client's ReadRequest does.
    assert "--- unread: 3 in 2 conversations ---" in typed(chateau.url, "alice", "/unread")
    history = send_as(chateau.url, "alice", {"type": "HistoryRequest", "user": "bob",
                                              "msg_id": 1})
    newest = history[1]["messages"][0]["id"]
    send_as(chateau.url, "alice", {"type": "ReadRequest", "user": "bob", "id": newest})
    shown = typed(chateau.url, "alice", "/unread")
    assert "* 1 unread message: /unread lists them" in shown
    assert "--- unread: 1 in 1 conversation ---" in shown
    typed(chateau.url, "bob", "/msg carol hi")
    shown = typed(chateau.url, "carol", "/unread")  # carol wrote the group's last message
    assert "--- unread: 2 in 2 conversations ---" in shown
    assert [line.split("  ")[1] for line in shown if line.startswith("  ")] == ["@bob", "@alice"]
    shown = typed(chateau.url, "dave", "/unread")  # no conversations at all
    assert shown[1:] == ["* nothing unread"]


def test_a_terminal_marks_what_it_shows_read_and_says_when_you_were_seen(chateau, tmp_path):
    sign_up(chateau.url, "alice", "bob")
    bob = spawn(chateau.url, "bob", tmp_path)
    bob.expect("signed in as bob")
    alice = spawn(chateau.url, "alice", tmp_path)
    alice.expect("signed in as alice")
    bob.send("/to alice\r")
    bob.expect(r"now talking in")
    bob.send("are you there?\r")
    bob.expect(r"\[alice\] bob: are you there\?")
    # alice's terminal shows it in her current chat: marked read, and bob is told once.
    alice.expect(r"\[@bob\] bob: are you there\?")
    bob.expect(re.escape("* alice has seen your message"))
    assert finish(alice) == 0
    assert "* nothing unread" in typed(chateau.url, "alice", "/unread")
    # Piped input reads nothing: bob's next message stays unread, and no "seen".
    bob.send("still there?\r")
    bob.expect(r"bob: still there\?")
    shown = typed(chateau.url, "alice", "/unread")
    assert "* 1 unread message: /unread lists them" in shown
    assert finish(bob) == 0
    log = (tmp_path / "bob.terminal.log").read_text(encoding="utf-8")
    assert log.count("has seen your message") == 1
