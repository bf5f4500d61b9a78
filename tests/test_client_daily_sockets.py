"""chateau-client's catching up, read markers and typing against a real server.

The words and the paging are tested without a network in
tests/test_client_daily.py; here the requests go over a real socket to a real
``twistd``: piped input for what one person asks, pseudo-terminals where a
person reads and types (read markers and typing are sent only there).

The server parts of /search, /sync, typing and mentions are built on their own
branches; each test of them runs once its server part is in this tree (it is
skipped, saying which part is missing, until then).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.clientsupport import chateau, finish, frames, register, run_cli, spawn  # noqa: F401
from tests.test_client_governance import piped, typed, wait_for_line

# --send stops this long after the last frame (it waits longer for the first,
# a sign-in's reply, whatever the machine's load).
QUIET = "0.5"


def send_as(url: str, user: str | None, *requests: dict) -> list[dict]:
    """*requests* sent as *user* (signed in first) with ``--send``; every frame received."""
    signed_in = ("--user", user) if user else ()
    result = run_cli(url, *signed_in, "--send", "-", "--wait", QUIET, "--strict",
                     password="pw", input="\n".join(json.dumps(r) for r in requests))
    assert result.returncode == 0, result.stdout + result.stderr
    received = frames(result.stdout)
    assert received and received[0]["type"] == "RegisterResponse", received
    return received


def sign_up(url: str, *names: str) -> None:
    for name in names:
        send_as(url, None, register(name))


def new_group(url: str, creator: str, chatname: str, *members: str) -> None:
    received = send_as(url, creator, {"type": "GroupMessageInitRequest", "chatname": chatname,
                                      "recipients": list(members)})
    assert received[1]["type"] == "GroupMessageInitResponse", received


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


def test_search_over_a_real_server(chateau, tmp_path: Path):
    sign_up(chateau.url, "alice", "bob", "carol")
    new_group(chateau.url, "carol", "book club", "alice", "bob")
    typed(chateau.url, "bob", "/msg alice bring the picnic blanket")
    typed(chateau.url, "carol", '/msg "book club" a picnic on Friday?', "/msg alice no picnics")
    shown = typed(chateau.url, "alice", "/search picnic", '/search "#book club" picnic',
                  "/search @bob picnic", "/search zebra", "/search --before 1 picnic")
    text = "\n".join(shown)
    assert "--- search 'picnic': 2 results ---" in shown, text  # words, not parts of words
    results = [line for line in shown if line.startswith("  ")]
    assert re.fullmatch(r"  [-\d: ]+ \[#book club\] carol: a \*picnic\* on Friday\?",
                        results[0]), results
    assert re.fullmatch(r"  [-\d: ]+ \[@bob\] bob: bring the \*picnic\* blanket",
                        results[1]), results
    assert "--- search 'picnic' in \"#book club\": 1 result ---" in shown
    assert "--- search 'picnic' in @bob: 1 result ---" in shown
    assert "* no messages match 'zebra'" in shown
    assert "* no older messages match 'picnic'" in shown

    # More than a page: the last line says how to see the older ones, and that works.
    requests = [{"type": "GroupMessageRequest", "recipient": "alice", "content": f"lunch {n}"}
                for n in range(23)]
    received = send_as(chateau.url, "bob", *requests)
    assert [f["type"] for f in received].count("MessageSendResponse") == 23
    shown = typed(chateau.url, "alice", "/search @bob lunch")
    assert "--- search 'lunch' in @bob: 20 results ---" in shown
    assert re.fullmatch(r"  [-\d: ]+ \[@bob\] bob: \*lunch\* 22", shown[shown.index(
        "--- search 'lunch' in @bob: 20 results ---") + 1])
    more = shown[-1]
    assert re.fullmatch(r"  \(more: /search --before \d+ @bob lunch\)", more), shown
    shown = typed(chateau.url, "alice", more.strip()[len("(more: "):-1])
    assert "--- search 'lunch' in @bob: 3 results ---" in shown
    assert re.fullmatch(r"  [-\d: ]+ \[@bob\] bob: \*lunch\* 0", shown[-1])
    sign_up(chateau.url, "dave")
    refused = typed(chateau.url, "dave", '/search "#book club" x', "/search #nowhere x")
    assert any(line.startswith("! no search: ") and line.endswith("(403)") for line in refused)
    assert any(line.startswith("! no search: ") and line.endswith("(404)") for line in refused)


def test_sync_over_a_real_server(chateau, tmp_path: Path):
    sign_up(chateau.url, "alice", "bob")
    alice = piped(chateau.url, "alice")
    try:
        wait_for_line(alice, "signed in as alice")
        # From alice's other device: not pushed to this session, found by /sync.
        send_as(chateau.url, "alice", {"type": "GroupMessageRequest", "recipient": "bob",
                                       "content": "sent from my phone"})
        sent = send_as(chateau.url, "bob", {"type": "GroupMessageRequest",
                                            "recipient": "alice", "content": "hi alice"})
        wait_for_line(alice, "bob: hi alice")  # live
        (reply,) = [f for f in sent if f["type"] == "MessageSendResponse"]
        send_as(chateau.url, "bob", {"type": "MessageEditRequest", "id": reply["id"],
                                     "content": "hello alice"})
        wait_for_line(alice, "edited a message")  # live
        alice.stdin.write("/sync\n")
        alice.stdin.flush()
        lines = []
        for line in alice.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("* in sync"):
                break
        assert re.fullmatch(r"[-\d: ]+ \[@bob\] alice: sent from my phone", lines[0]), lines
        assert lines[1:] == ["* bob edited a message in @bob: hello alice",
                             "* in sync: 2 new (1 more already shown)"]
        alice.stdin.write("/sync\n/quit\n")
        alice.stdin.flush()
        wait_for_line(alice, "* in sync: nothing new")
        assert alice.wait(timeout=15) == 0
    finally:
        if alice.poll() is None:
            alice.kill()
            alice.wait()


def test_typing_is_shown_on_the_other_terminal_until_it_ends(chateau, tmp_path: Path):
    sign_up(chateau.url, "alice", "bob")
    bob = spawn(chateau.url, "bob", tmp_path)
    bob.expect("signed in as bob")
    alice = spawn(chateau.url, "alice", tmp_path)
    alice.expect("signed in as alice")
    alice.send("/to bob\r")
    alice.expect("now talking in")
    alice.send("hel")
    bob.expect(re.escape("(alice is typing to you…) > "))
    alice.send("lo\r")
    bob.expect(r"\[@alice\] alice: hello")
    bob.expect(r"\r> \x1b\[K")  # the message ends the typing
    bob.send("/to alice\r")
    bob.expect("now talking in")
    alice.send("are you")
    bob.expect(re.escape("(alice is typing…) @alice> "))
    alice.send("\x15")  # erased (Ctrl-U)
    bob.expect(r"\r@alice> \x1b\[K")
    assert finish(alice) == 0 and finish(bob) == 0

    # Piped input types nothing: bob's terminal never shows carol typing.
    sign_up(chateau.url, "carol")
    bob = spawn(chateau.url, "bob", tmp_path)
    bob.expect("signed in as bob")
    typed(chateau.url, "carol", "/to bob", "a message typed in a script")
    bob.expect("carol: a message typed in a script")
    assert finish(bob) == 0
    assert "carol is typing" not in (tmp_path / "bob.terminal.log").read_text(encoding="utf-8")


def test_a_mention_of_you_stands_out_over_a_real_server(chateau, tmp_path: Path):
    sign_up(chateau.url, "alice", "bob", "carol")
    new_group(chateau.url, "carol", "club", "alice", "bob")
    alice = spawn(chateau.url, "alice", tmp_path)
    alice.expect("signed in as alice")
    typed(chateau.url, "bob", "/msg club @alice have you read it?", "/msg club @carol and you?")
    alice.expect(re.escape("\x1b[1m") + r"[-\d: ]+ \[#club\] bob: @alice have you read it\?"
                 r"  \(mentions you\)" + re.escape("\x1b[22m"))
    alice.expect(r"\x1b\[K[-\d: ]+ \[#club\] bob: @carol and you\?\r")  # not bold
    assert finish(alice) == 0
    shown = typed(chateau.url, "alice", "/history club")
    assert any(line.endswith("bob: @alice have you read it?") for line in shown)
    typed(chateau.url, "carol", "/msg club @all meeting at noon")
    shown = typed(chateau.url, "bob", "/unread")
    assert any(line.startswith("  #club  1 unread, 1 mention  ") for line in shown), shown
