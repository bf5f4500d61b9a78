"""Both clients with the server's durable features: sessions, history, offline
delivery and contacts.

A :class:`TcpProxy` between client and server cuts connections the way a
lost network does; the clients must come back on their own and resume with
their session key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

import pytest

from tests.clientsupport import (  # noqa: F401  (browser and chateau are fixtures)
    TcpProxy,
    browser,
    chat_item,
    chateau,
    finish,
    frames,
    online_user,
    open_page,
    register,
    run_cli,
    spawn,
)
from tests.clientsupport import web_new_group as new_group
from tests.clientsupport import web_send as send
from tests.clientsupport import web_sign_in as sign_in


def say(url: str, sender: str, *messages: tuple[str, str]) -> None:
    """*sender* sends (recipient, content) messages with a --send run."""
    script = "\n".join(
        json.dumps({"type": "GroupMessageRequest", "recipient": to, "content": text})
        for to, text in messages
    )
    result = run_cli(url, "--user", sender, "--send", "-", "--wait", "0.5", "--strict",
                     password="pw", input=script)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def proxy(chateau) -> Iterator[TcpProxy]:
    forwarder = TcpProxy(chateau.port)
    yield forwarder
    forwarder.close()


# -- chateau-client ----------------------------------------------------------------


def test_send_mode_can_resume_and_log_out(chateau):
    signed_in = run_cli(chateau.url, "--send", "-", "--wait", "0.5", "--strict",
                        input=json.dumps(register("alice")))
    key = frames(signed_in.stdout)[0]["session_key"]
    assert isinstance(key, str) and key
    script = [{"type": "ResumeRequest", "session_key": key, "msg_id": 1},
              {"type": "LogoutRequest", "msg_id": 2}]
    resumed = run_cli(chateau.url, "--send", "-", "--wait", "0.5", "--strict",
                      input=json.dumps(script))
    assert resumed.returncode == 0, resumed.stdout
    replies = [f for f in frames(resumed.stdout) if "msg_id" in f]
    assert [f["type"] for f in replies] == ["ResumeResponse", "LogoutResponse"]
    revoked = run_cli(chateau.url, "--send", "-", "--wait", "0.5", "--strict",
                      input=json.dumps(script[0]))
    assert revoked.returncode == 4 and frames(revoked.stdout)[0]["status"] == 301


def test_cli_resumes_after_a_dropped_connection(chateau, proxy, tmp_path):
    alice = spawn(proxy.url(), "alice", tmp_path)
    alice.expect("signed in as alice")
    bob = spawn(chateau.url, "bob", tmp_path)
    bob.expect("signed in as bob")
    alice.send("/to bob\r")
    alice.expect("now talking in")

    proxy.drop()
    alice.expect("connection lost")
    alice.expect("reconnected: session resumed")
    bob.send("/msg alice still there?\r")
    alice.expect(r"\[@bob\] bob: still there\?")
    alice.send("yes, back again\r")
    bob.expect(r"\[@alice\] alice: yes, back again")
    assert finish(alice) == 0
    assert finish(bob) == 0


def test_cli_shows_messages_missed_while_offline(chateau, tmp_path):
    run_cli(chateau.url, "--send", "-", input=json.dumps(register("carol")))
    say(chateau.url, "dave", ("carol", "first while away"), ("carol", "second while away"))
    carol = spawn(chateau.url, "carol", tmp_path)
    carol.expect("signed in as carol")
    carol.expect(r"\[@dave\] dave: first while away  \(while you were offline\)")
    carol.expect(r"\[@dave\] dave: second while away  \(while you were offline\)")
    assert finish(carol) == 0


def test_cli_history_of_direct_and_group_chats(chateau, tmp_path):
    run_cli(chateau.url, "--send", "-", input=json.dumps(register("erin")))
    say(chateau.url, "frank", ("erin", "hello erin"))
    say(chateau.url, "erin", ("frank", "hello frank"))
    erin = spawn(chateau.url, "erin", tmp_path)
    erin.expect("signed in as erin")
    erin.send("/history frank\r")
    erin.expect(r"--- @frank: 2 messages ---")
    erin.expect(r"\[@frank\] frank: hello erin")
    erin.expect(r"\[@frank\] erin: hello frank")
    erin.expect("start of the conversation")

    erin.send('/group "reading club" frank\r')
    erin.expect("now talking there")
    for number in range(25):
        erin.send(f"note {number}\r")
        erin.expect(f"erin: note {number}\r")
    erin.send("/history\r")
    erin.expect(r"--- #reading club: 20 messages ---")
    erin.expect(r"erin: note 5\r")
    erin.expect(r"erin: note 24\r")
    erin.expect(re.escape('/history "reading club" again for older messages'))
    erin.send('/history "reading club"\r')
    erin.expect(r"--- #reading club: 5 earlier messages ---")
    erin.expect(r"erin: note 0\r")
    erin.expect(r"erin: note 4\r")
    erin.expect("start of the conversation")
    assert finish(erin) == 0


def test_cli_contacts(chateau, tmp_path):
    gina = spawn(chateau.url, "gina", tmp_path)
    gina.expect("signed in as gina")
    hank = spawn(chateau.url, "hank", tmp_path)
    hank.expect("signed in as hank")
    gina.send("/contacts\r")
    gina.expect("contacts: none yet")
    gina.send("/contacts add hank\r")
    gina.expect("asked hank to be a contact")
    hank.expect("gina asks to be your contact: /contacts accept gina")
    hank.send("/contacts\r")
    hank.expect("contact request from gina")
    hank.send("/contacts accept gina\r")
    hank.expect("gina is now a contact")
    gina.expect(r"hank is now a contact \(online\)")
    gina.send("/contacts\r")
    gina.expect(r"contacts: hank \(online\)")
    gina.send("/contacts remove nobody-here\r")
    gina.expect("could not remove the contact:")
    assert finish(gina) == 0
    assert finish(hank) == 0


# -- the web client ------------------------------------------------------------------


def test_web_reload_resumes_with_history(chateau, browser, tmp_path: Path):
    from playwright.sync_api import expect

    alice = open_page(browser, chateau.http_url)
    sign_in(alice, "alice")
    bob = open_page(browser, chateau.http_url)
    sign_in(bob, "bob")
    expect(online_user(alice, "bob")).to_be_visible()

    new_group(alice, "night owls", "bob")
    send(alice, "who is awake?")
    chat_item(bob, "night owls").click()
    bob_log = bob.get_by_role("log", name="Conversation")
    expect(bob_log).to_contain_text("who is awake?")
    send(bob, "me, sadly")
    alice_log = alice.get_by_role("log", name="Conversation")
    expect(alice_log).to_contain_text("me, sadly")
    online_user(bob, "alice").click()
    send(bob, "a private word")
    expect(chat_item(alice, "bob")).to_be_visible()

    key = alice.evaluate("JSON.parse(sessionStorage.getItem('chateau.session')).key")
    alice.reload()
    # No password asked: the stored key resumes the session...
    expect(alice.locator("#me")).to_have_text("alice")
    expect(alice.get_by_label("Password", exact=True)).to_be_hidden()
    expect(alice.locator("#status")).to_have_text("Connected")
    # ...and the open chat is back, filled from the server's history.
    expect(alice.get_by_role("heading", name="# night owls")).to_be_visible()
    expect(alice.locator("#conversation-subtitle")).to_have_text("Group: alice, bob")
    expect(alice_log).to_contain_text("who is awake?")
    expect(alice_log).to_contain_text("me, sadly")
    chat_item(alice, "bob").click()
    expect(alice_log).to_contain_text("a private word")
    assert alice.evaluate("JSON.parse(sessionStorage.getItem('chateau.session')).key") == key
    send(alice, "back after a reload")
    expect(bob_log).to_contain_text("back after a reload")
    alice.screenshot(path=str(tmp_path / "webclient-resumed.png"))

    # A revoked key leads back to the form with the reason.
    bogus = {"key": "bogus", "username": "alice"}
    alice.evaluate("s => sessionStorage.setItem('chateau.session', JSON.stringify(s))", bogus)
    alice.reload()
    expect(alice.get_by_role("button", name="Sign in")).to_be_visible()
    expect(alice.locator("#signin-notice")).to_contain_text("session has ended")


def test_web_reconnects_after_a_dropped_connection(chateau, proxy, browser):
    from playwright.sync_api import expect

    carol = open_page(browser, proxy.url("/", "http"))
    sign_in(carol, "carol")
    expect(carol.locator("#status")).to_have_text("Connected")
    dave = open_page(browser, chateau.http_url)
    sign_in(dave, "dave")
    online_user(dave, "carol").click()
    send(dave, "before the drop")
    chat_item(carol, "dave").click()
    carol_log = carol.get_by_role("log", name="Conversation")
    expect(carol_log).to_contain_text("before the drop")

    proxy.drop()
    expect(carol.locator("#status")).to_contain_text("reconnecting")
    expect(carol.locator("#status")).to_have_text("Connected")
    expect(carol.get_by_label("Password", exact=True)).to_be_hidden()
    send(dave, "after the drop")
    expect(carol_log).to_contain_text("after the drop")
    send(carol, "still here")
    expect(dave.get_by_role("log", name="Conversation")).to_contain_text("still here")
