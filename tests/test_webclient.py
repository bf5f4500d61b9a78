"""The web client served at ``/``, in headless Chromium driven by Playwright.

The server is a real twistd process and the browser a real Chromium, so
this is the page as people get it. Without Chromium the browser tests are
skipped, except under CI where they fail (scripts/test installs it).
"""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.clientsupport import (  # noqa: F401  (browser and chateau are fixtures)
    browser,
    chat_item,
    chateau,
    frames,
    online_user,
    open_page,
    run_cli,
)
from tests.clientsupport import web_new_group as new_group
from tests.clientsupport import web_send as send
from tests.clientsupport import web_sign_in as sign_in
from tests.webmodules import imports, modules


def fetch(url: str) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode(errors="replace")


def test_static_files_are_served_at_the_root(chateau):
    status, headers, body = fetch(chateau.http_url)
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert '<script type="module" src="app.js"></script>' in body and "Sign in" in body
    status, headers, body = fetch(chateau.http_url + "app.js")
    assert status == 200 and headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert 'from "./session.js"' in body
    status, headers, body = fetch(chateau.http_url + "session.js")
    assert status == 200 and "ResumeRequest" in body
    status, headers, _ = fetch(chateau.http_url + "style.css")
    assert status == 200 and headers["Content-Type"] == "text/css; charset=utf-8"
    assert fetch(chateau.http_url + "missing.txt")[0] == 404
    assert fetch(chateau.http_url + "../setup.py")[0] == 404
    assert "Sign in" not in fetch(chateau.http_url + "ws")[2]  # /ws stays the WebSocket


def test_every_module_is_served_as_javascript_and_its_imports_resolve(chateau):
    # ES modules need a JavaScript content type (with nosniff the browser checks
    # it) and every import must name a file the server serves: follow the page's
    # modules from its script tags, and check none under static/ is left out.
    page = fetch(chateau.http_url)[2]
    todo = [chateau.http_url + src for src in re.findall(r'<script type="module" src="([^"]+)">', page)]
    assert todo, "the page loads no module"
    seen: set[str] = set()
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        status, headers, body = fetch(url)
        assert status == 200, url
        assert headers["Content-Type"] == "text/javascript; charset=utf-8", url
        assert headers["X-Content-Type-Options"] == "nosniff", url
        assert "default-src 'self'" in headers["Content-Security-Policy"], url
        seen.add(url)
        for target in imports(body):
            # Only files beside the page: a relative path, no other origin.
            assert target.startswith("./") and target.endswith(".js"), (url, target)
            todo.append(urllib.parse.urljoin(url, target))
    assert {url.rsplit("/", 1)[1] for url in seen} == set(modules())


def policy_for(port: int, host: bytes | None) -> str:
    """The Content-Security-Policy of ``/`` asked for with exactly this Host header."""
    lines = [b"GET / HTTP/1.1"]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += [b"Connection: close", b"", b""]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"\r\n".join(lines))
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = connection.recv(65536)
            assert chunk, answer
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    assert head[0].startswith("HTTP/1.1 200"), head
    policies = [line.split(":", 1)[1].strip() for line in head[1:]
                if line.lower().startswith("content-security-policy:")]
    assert len(policies) == 1, head
    return policies[0]


POLICY_REST = ("default-src 'self'; connect-src 'self'{}; img-src 'self' data:; "
               "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def test_the_page_may_connect_only_to_its_own_origin(chateau):
    # An injected script must not be able to reach any other WebSocket server.
    origin = f"127.0.0.1:{chateau.port}"
    policy = fetch(chateau.http_url)[1]["Content-Security-Policy"]
    assert policy == POLICY_REST.format(f" ws://{origin} wss://{origin}")
    connect = next(part for part in policy.split(";") if part.strip().startswith("connect-src"))
    assert connect.split()[1:] == ["'self'", f"ws://{origin}", f"wss://{origin}"]
    # Bare schemes (any server at all) are gone.
    assert "ws:" not in connect.split() and "wss:" not in connect.split()
    assert policy_for(chateau.port, b"Chat.Example.EDU") == POLICY_REST.format(
        " ws://chat.example.edu wss://chat.example.edu")
    assert policy_for(chateau.port, b"[::1]:8443") == POLICY_REST.format(
        " ws://[::1]:8443 wss://[::1]:8443")


def test_a_hostile_host_header_cannot_widen_the_policy(chateau):
    only_self = POLICY_REST.format("")
    for host in (b"evil.example; script-src *", b"evil.example wss://attacker.example",
                 b"127.0.0.1:1,wss:", b"a'b", b"*", b"evil.example:", b"evil.example:99999",
                 b"evil.example:80:80", b"\xff\xfe", b"", None):
        assert policy_for(chateau.port, host) == only_self, host


def test_two_browser_users_chat(chateau, browser, tmp_path: Path):
    from playwright.sync_api import expect

    alice = open_page(browser, chateau.http_url)
    expect(alice.get_by_role("button", name="Sign in")).to_be_visible()
    sign_in(alice, "Alice")
    expect(alice.locator("#me")).to_have_text("alice")
    expect(alice.get_by_label("Password", exact=True)).to_be_hidden()

    # A refused sign-in is explained with the server's words.
    bob = open_page(browser, chateau.http_url)
    sign_in(bob, "alice", "not her password")
    expect(bob.locator("#signin-error")).to_contain_text("wrong username or password")
    sign_in(bob, "bob")
    expect(bob.locator("#me")).to_have_text("bob")

    # Each sees the other online.
    expect(online_user(bob, "alice")).to_be_visible()
    expect(online_user(alice, "bob")).to_be_visible()

    # A group: alice starts it and writes; bob finds it in his chats.
    new_group(alice, "study group", "bob")
    expect(alice.get_by_role("heading", name="# study group")).to_be_visible()
    send(alice, "hello group")
    alice_log = alice.get_by_role("log", name="Conversation")
    expect(alice_log).to_contain_text("hello group")
    expect(chat_item(bob, "study group").locator(".badge")).to_be_visible()  # unread
    chat_item(bob, "study group").click()
    bob_log = bob.get_by_role("log", name="Conversation")
    expect(bob_log).to_contain_text("hello group")
    expect(bob_log).to_contain_text("alice added you to this group")
    send(bob, "hi all")
    expect(alice_log).to_contain_text("hi all")

    # Direct messages: bob picks alice from the online list.
    online_user(bob, "alice").click()
    expect(bob.get_by_role("heading", name="alice", exact=True)).to_be_visible()
    send(bob, "just for you <b>not bold</b>")
    chat_item(alice, "bob").click()
    expect(alice_log).to_contain_text("just for you <b>not bold</b>")
    send(alice, "thanks!")
    expect(bob_log).to_contain_text("thanks!")

    # A random chat.
    alice.get_by_role("button", name="Random chat").click()
    send(alice, "anyone out there?")
    expect(alice.get_by_role("heading", name="Random: bob")).to_be_visible()
    chat_item(bob, "Random: alice").click()
    expect(bob_log).to_contain_text("anyone out there?")
    send(bob, "me!")
    expect(alice_log).to_contain_text("me!")

    # Errors from the server reach the person, in words.
    new_group(alice, "ghosts", "nobody-at-all")
    expect(alice.locator("#toast")).to_contain_text("unknown recipient 'nobody-at-all'")

    chat_item(alice, "study group").click()
    expect(alice_log).to_contain_text("hi all")
    screenshot = tmp_path / "webclient.png"
    alice.screenshot(path=str(screenshot))
    bob.screenshot(path=str(tmp_path / "webclient-bob.png"))
    assert screenshot.stat().st_size > 10_000

    # Signing out goes back to the form and forgets the session.
    bob.get_by_role("button", name="Sign out").click()
    expect(bob.get_by_role("button", name="Sign in")).to_be_visible()
    assert bob.evaluate("sessionStorage.getItem('chateau.session')") is None


def test_a_password_reset_takes_the_page_back_to_the_sign_in_form(chateau, browser, tmp_path):
    """Close code 4001: the page forgets its session and asks to sign in again."""
    from playwright.sync_api import expect

    from tests.test_revocation import run_admin

    page = open_page(browser, chateau.http_url)
    sign_in(page, "alice")
    expect(page.locator("#me")).to_have_text("alice")
    config = tmp_path / "admin.ini"
    config.write_text(
        f"[database]\nurl = sqlite:///{chateau.workdir / 'chateau.sqlite3'}\n"
        "[auth]\nbcrypt_cost = 4\n"
    )
    result = run_admin(config, "user", "passwd", "alice", password="new secret")
    assert result.returncode == 0, result.stderr
    expect(page.locator("#signin-notice")).to_contain_text("You were signed out", timeout=5000)
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('chateau.session')") is None
    sign_in(page, "alice", "new secret")
    expect(page.locator("#me")).to_have_text("alice")


def open_group_panel(page, chatname: str):
    """Open a group's conversation and its panel; the panel's locator."""
    chat_item(page, chatname).click()
    page.get_by_role("button", name="Group info").click()
    return page.locator("#group-panel")


def member_row(panel, username: str):
    return panel.locator(f'#panel-members li[data-username="{username}"]')


def test_group_panel_shows_roles_and_owners_change_them(chateau, browser, tmp_path: Path):
    """The panel: topic, members with roles and online state; owners set roles, events show."""
    from playwright.sync_api import expect

    alice = open_page(browser, chateau.http_url)
    sign_in(alice, "alice")
    bob = open_page(browser, chateau.http_url)
    sign_in(bob, "bob")
    expect(bob.locator("#me")).to_have_text("bob")
    new_group(alice, "council", "bob")
    expect(alice.get_by_role("heading", name="# council")).to_be_visible()

    panel = open_group_panel(alice, "council")
    expect(panel.get_by_role("heading", name="# council")).to_be_visible()
    expect(panel.locator("#panel-topic")).to_have_text("No topic yet.")
    expect(member_row(panel, "alice").locator(".role")).to_have_text("owner")
    expect(member_row(panel, "bob").locator(".role")).to_have_text("member")
    expect(member_row(panel, "bob")).to_contain_text("online")
    expect(panel.get_by_label("Remove bob")).to_be_visible()

    # bob, a member, sees the same members but no controls over others.
    bob_panel = open_group_panel(bob, "council")
    expect(member_row(bob_panel, "alice").locator(".role")).to_have_text("owner")
    expect(bob_panel.get_by_label("Role of alice")).to_have_count(0)
    expect(bob_panel.get_by_label("Remove alice")).to_have_count(0)
    expect(bob_panel.locator("#topic-form")).to_be_hidden()

    # The owner makes bob an admin: a system line on both sides, and bob's panel follows.
    panel.get_by_label("Role of bob").select_option("admin")
    alice_log = alice.get_by_role("log", name="Conversation")
    expect(alice_log.locator("li.event")).to_have_text("alice made bob admin")
    bob_log = bob.get_by_role("log", name="Conversation")
    expect(bob_log.locator('li.event[data-event="role"]')).to_have_text("alice made bob admin")
    expect(member_row(bob_panel, "bob").locator(".role")).to_have_text("admin")
    expect(member_row(panel, "bob").locator(".role")).to_have_text("admin")
    alice.screenshot(path=str(tmp_path / "group-panel.png"))

    # The event is in the group's history too: after a reload it is there once.
    alice.reload()
    expect(alice.get_by_role("heading", name="# council")).to_be_visible()
    expect(alice_log.locator("li.event")).to_have_count(1)
    expect(alice_log.locator("li.event")).to_have_text("alice made bob admin")

    # The server's refusal reaches the owner in words: the last owner cannot step down.
    panel = open_group_panel(alice, "council")
    panel.get_by_label("Role of alice").select_option("member")
    expect(alice.locator("#toast")).to_contain_text("must keep an owner")
    expect(member_row(panel, "alice").locator(".role")).to_have_text("owner")


def make_server_admin(chateau, username: str) -> None:
    """Make an existing account a server admin, straight in the server's database."""
    from chateau.store.accounts import set_admin_txn
    from chateau.store.engine import in_transaction, make_engine

    engine = make_engine(f"sqlite:///{chateau.workdir / 'chateau.sqlite3'}")
    try:
        assert in_transaction(engine, set_admin_txn, username, True)
    finally:
        engine.dispose()


def as_user(chateau, username: str, *messages: dict) -> list[dict]:
    """Send *messages* as *username* with ``chateau-client --send``; every frame that came back."""
    result = run_cli(chateau.url, "--user", username, "--send", "-",
                     input="\n".join(json.dumps(message) for message in messages), password="pw")
    assert result.returncode == 0, result.stderr
    return frames(result.stdout)


def test_reporting_a_message_and_a_person(chateau, browser):
    """Report asks for a reason and says the report's number; a warning reaches the person."""
    from playwright.sync_api import expect

    bob = open_page(browser, chateau.http_url)
    sign_in(bob, "bob")
    expect(bob.locator("#me")).to_have_text("bob")
    alice = open_page(browser, chateau.http_url)
    sign_in(alice, "alice")
    new_group(alice, "club", "bob")
    send(alice, "you are all fools")
    chat_item(bob, "club").click()
    bob_log = bob.get_by_role("log", name="Conversation")
    expect(bob_log).to_contain_text("you are all fools")

    # A message: the reason is asked for (a blank one is not sent), the number shown.
    bob_log.get_by_role("button", name="Report message from alice").click()
    ask = bob.locator("#ask-dialog")
    ask.get_by_role("button", name="OK", exact=True).click()
    expect(ask.locator(".dialog-message")).to_have_text("Reason: please fill it in.")
    ask.get_by_label("Reason", exact=True).fill("insults")
    ask.get_by_role("button", name="OK", exact=True).click()
    expect(bob.locator("#toast")).to_contain_text("Report sent (number ")
    message_report = int(re.search(r"number (\d+)", bob.locator("#toast").text_content()).group(1))

    # A person, from the group panel; cancelling sends nothing.
    panel = open_group_panel(bob, "club")
    panel.get_by_label("Report alice", exact=True).click()
    ask.get_by_role("button", name="Cancel").click()
    expect(ask).to_be_hidden()
    panel.get_by_label("Report alice", exact=True).click()
    ask.get_by_label("Reason", exact=True).fill("keeps insulting")
    ask.get_by_role("button", name="OK", exact=True).click()
    expect(bob.locator("#toast")).to_contain_text(f"Report sent (number {message_report + 1})")

    # The server's refusal, in its words.
    panel.get_by_label("Report alice", exact=True).click()
    ask.get_by_label("Reason", exact=True).fill("x" * 1001)
    ask.get_by_role("button", name="OK", exact=True).click()
    expect(bob.locator("#toast")).to_contain_text("Report not sent: ")

    # A server admin warns alice: the warning is shown to her, apart from messages.
    as_user(chateau, "root")
    make_server_admin(chateau, "root")
    replies = as_user(chateau, "root", {"type": "ReportResolveRequest", "report_id": message_report,
                                        "action": "warn", "note": "mind your language", "msg_id": 1})
    assert any(frame.get("type") == "ReportResolveResponse" for frame in replies), replies
    warning = alice.get_by_role("region", name="Announcements")
    expect(warning).to_contain_text("A warning from the moderators")
    expect(warning).to_contain_text("mind your language")


def test_topic_rename_settings_and_the_directory(chateau, browser):
    """Topic, settings and a rename reach members live and at catch-up; the directory lists it."""
    from playwright.sync_api import expect

    bob = open_page(browser, chateau.http_url)
    sign_in(bob, "bob")
    expect(bob.locator("#me")).to_have_text("bob")
    alice = open_page(browser, chateau.http_url)
    sign_in(alice, "alice")
    new_group(alice, "club", "bob")
    expect(alice.get_by_role("heading", name="# club")).to_be_visible()
    chat_item(bob, "club").click()
    bob_log = bob.get_by_role("log", name="Conversation")

    panel = open_group_panel(alice, "club")
    panel.get_by_label("New topic").fill("chapter 3 on Friday")
    panel.get_by_role("button", name="Set topic").click()
    expect(panel.locator("#panel-topic")).to_have_text("chapter 3 on Friday")
    expect(bob_log.locator('li.event[data-event="topic"]')).to_have_text(
        "alice set the topic: chapter 3 on Friday")
    expect(bob.locator("#conversation-subtitle")).to_have_text("Topic: chapter 3 on Friday")

    # A rename while bob's page is open: his conversation moves, with its messages.
    send(bob, "see you there")
    expect(alice.get_by_role("log", name="Conversation")).to_contain_text("see you there")
    panel.get_by_label("Name", exact=True).fill("book club")
    panel.get_by_label("Visibility").select_option("public")
    panel.get_by_role("button", name="Save group settings").click()
    expect(alice.locator("#conversation-title")).to_have_text("# book club")
    expect(bob.locator("#conversation-title")).to_have_text("# book club")
    expect(chat_item(bob, "club")).to_have_count(0)
    expect(bob_log.locator('li.event[data-event="renamed"]')).to_have_text(
        "alice renamed the group from club to book club")
    expect(bob_log.locator('li.event[data-event="settings"]')).to_have_text(
        "alice changed the group's settings (visibility: public)")
    expect(bob_log).to_contain_text("see you there")

    # A rename while bob is away: at catch-up the conversation moves too, and stays one.
    bob.goto("about:blank")
    panel.get_by_label("Name", exact=True).fill("readers")
    panel.get_by_role("button", name="Save group settings").click()
    expect(alice.locator("#conversation-title")).to_have_text("# readers")
    send(alice, "renamed while you were out")
    expect(alice.get_by_role("log", name="Conversation")).to_contain_text("renamed while you were out")
    bob.goto(chateau.http_url)
    expect(bob.locator("#conversation-title")).to_have_text("# readers")
    expect(bob.locator("#chats li")).to_have_count(1)
    expect(bob_log).to_contain_text("renamed while you were out")
    expect(bob_log).to_contain_text("see you there")
    expect(bob_log.locator('li.event[data-event="renamed"]')).to_have_count(2)

    # The directory: public groups by name or topic, with their member counts.
    bob.get_by_role("button", name="Find groups").click()
    bob.get_by_label("Public groups").fill("CHAPTER")
    bob.get_by_role("button", name="Search", exact=True).click()
    entry = bob.locator("#directory-results li", has_text="readers")
    expect(entry).to_contain_text("2 members · chapter 3 on Friday")
    entry.get_by_role("button", name="Open readers").click()
    bob.get_by_label("Public groups").fill("nothing like it")
    bob.get_by_role("button", name="Search", exact=True).click()
    expect(bob.locator("#directory-results")).to_have_text("No public group matches.")

    # A refusal in the server's words: a member is not an admin.
    bob_panel = open_group_panel(bob, "readers")
    expect(bob_panel.locator("#group-settings-form")).to_be_hidden()
    new_group(alice, "other", "bob")
    expect(alice.locator("#conversation-title")).to_have_text("# other")
    alice.locator("#group-panel").get_by_label("Name", exact=True).fill("readers")
    alice.locator("#group-panel").get_by_role("button", name="Save group settings").click()
    expect(alice.locator("#toast")).to_contain_text("Group settings not changed:")
    expect(alice.locator("#conversation-title")).to_have_text("# other")


def panel_action(page, label: str, reason: str | None = None, field: str = "Reason (optional)"):
    """Click a member control; answer its question (a reason, minutes) if it asks one."""
    page.locator("#group-panel").get_by_label(label, exact=True).click()
    if reason is not None:
        page.get_by_label(field, exact=True).fill(reason)
        page.locator("#ask-dialog").get_by_role("button", name="OK", exact=True).click()


def test_group_admins_add_remove_ban_mute_and_invite(chateau, browser):
    """Add, ban with a reason, unban, mute, remove, and an invite code, across three pages."""
    from playwright.sync_api import expect

    pages = {}
    for name in ("carol", "bob", "alice"):
        pages[name] = open_page(browser, chateau.http_url)
        sign_in(pages[name], name)
        expect(pages[name].locator("#me")).to_have_text(name)
    alice, bob, carol = pages["alice"], pages["bob"], pages["carol"]
    new_group(alice, "club", "bob")
    expect(alice.get_by_role("heading", name="# club")).to_be_visible()
    chat_item(bob, "club").click()
    logs = {name: page.get_by_role("log", name="Conversation") for name, page in pages.items()}

    # Adding: the new member gets the group, the others a system line.
    panel = open_group_panel(alice, "club")
    panel.get_by_label("Add people").fill("carol")
    panel.get_by_role("button", name="Add", exact=True).click()
    expect(logs["alice"].locator("li.event")).to_have_text("alice added carol")
    expect(logs["bob"].locator('li.event[data-event="added"]')).to_have_text("alice added carol")
    chat_item(carol, "club").click()
    expect(logs["carol"]).to_contain_text("alice added you to this group")
    expect(member_row(panel, "carol").locator(".role")).to_have_text("member")

    # A ban with a reason: bob's group turns read-only and says who and why.
    panel_action(alice, "Ban bob", "spam")
    expect(bob.locator("#removed-banner")).to_have_text(
        "alice banned you from this group: spam. It is read-only now.")
    expect(bob.get_by_label("Message", exact=True)).to_be_disabled()
    expect(logs["carol"].locator('li.event[data-event="banned"]')).to_have_text("alice banned bob (spam)")
    expect(member_row(panel, "bob")).to_have_count(0)
    expect(panel.locator("#panel-bans")).to_contain_text("bob, by alice: spam")
    panel.get_by_label("Unban bob").click()
    expect(logs["carol"].locator('li.event[data-event="unbanned"]')).to_have_text("alice unbanned bob")
    expect(panel.locator("#panel-bans")).to_contain_text("Nobody.")

    # A mute: carol reads but cannot write, and is told until when.
    panel_action(alice, "Mute carol", "5", field="Minutes")
    expect(logs["carol"].locator('li.event[data-event="muted"]')).to_contain_text("alice muted carol until")
    expect(member_row(panel, "carol")).to_contain_text("muted until")
    send(carol, "can I talk?")
    expect(logs["carol"]).to_contain_text("not sent: you are muted in 'club' until")
    panel_action(alice, "Unmute carol")
    expect(logs["carol"].locator('li.event[data-event="unmuted"]')).to_have_text("alice unmuted carol")

    # Removing without a reason.
    panel_action(alice, "Remove carol", "")
    expect(carol.locator("#removed-banner")).to_have_text(
        "alice removed you from this group. It is read-only now.")

    # An invite code brings bob back.
    panel.get_by_role("button", name="Create invite code").click()
    expect(panel.locator("#invite-code")).not_to_be_empty()
    code = panel.locator("#invite-code").text_content()
    bob.get_by_role("button", name="Find groups").click()
    bob.get_by_label("Invite code").fill("not-a-code")
    bob.get_by_role("button", name="Join with code").click()
    expect(bob.locator("#toast")).to_contain_text("no such invite code")
    bob.get_by_label("Invite code").fill(code)
    bob.get_by_role("button", name="Join with code").click()
    expect(bob.locator("#removed-banner")).to_be_hidden()
    expect(bob.get_by_label("Message", exact=True)).to_be_enabled()
    expect(logs["alice"].locator('li.event[data-event="joined"]')).to_have_text("bob joined")
    send(bob, "back again")
    expect(logs["alice"]).to_contain_text("back again")

    # An open public group: carol, removed but not banned, finds it and joins by name.
    panel.get_by_label("Who can join").select_option("open")
    panel.get_by_label("Visibility").select_option("public")
    panel.get_by_role("button", name="Save group settings").click()
    expect(logs["bob"].locator('li.event[data-event="settings"]')).to_have_text(
        "alice changed the group's settings (join: open, visibility: public)")
    carol.get_by_role("button", name="Find groups").click()
    carol.get_by_role("button", name="Search", exact=True).click()
    carol.get_by_role("button", name="Join club").click()
    expect(carol.locator("#removed-banner")).to_be_hidden()
    expect(logs["carol"]).to_contain_text("back again")  # the group's history, read again
    expect(logs["bob"].locator('li.event[data-event="joined"]').last).to_have_text("carol joined")

    # Leaving: one line for the members, whichever of the two pushes comes first.
    carol.get_by_role("button", name="Leave group").click()
    expect(logs["bob"].locator("li.event", has_text="carol left")).to_have_count(1)
    bob.wait_for_timeout(300)
    expect(logs["bob"].locator("li", has_text="carol left")).to_have_count(1)


def test_block_and_the_settings_page(chateau, browser):
    """Blocking hides a person's group messages, now and in history; settings are kept."""
    from playwright.sync_api import expect

    bob = open_page(browser, chateau.http_url)
    sign_in(bob, "bob")
    expect(bob.locator("#me")).to_have_text("bob")
    alice = open_page(browser, chateau.http_url)
    sign_in(alice, "alice")
    new_group(alice, "club", "bob")
    send(alice, "first from alice")
    chat_item(bob, "club").click()
    bob_log = bob.get_by_role("log", name="Conversation")
    expect(bob_log).to_contain_text("first from alice")

    # Block from the group panel: alice's messages are hidden, now and in history.
    panel = open_group_panel(bob, "club")
    panel.get_by_label("Block alice", exact=True).click()
    expect(bob.locator("#toast")).to_contain_text("You blocked alice")
    expect(bob_log.locator("li.hidden-message")).to_have_text("message hidden (blocked user)")
    send(alice, "second from alice")
    send(bob, "anyone?")
    expect(bob_log).to_contain_text("anyone?")
    bob.reload()
    expect(bob.locator("#conversation-title")).to_have_text("# club")
    expect(bob_log).to_contain_text("anyone?")
    expect(bob_log.locator("li.hidden-message")).to_have_count(2)
    expect(bob_log.locator("li.hidden-message").first).to_have_text("message hidden (blocked user)")
    expect(bob_log).not_to_contain_text("from alice")

    # The settings page: the blocked list, and settings that are kept.
    bob.get_by_role("button", name="Settings", exact=True).click()
    dialog = bob.locator("#settings-dialog")
    expect(dialog.locator("#blocked-list")).to_contain_text("alice")
    dialog.get_by_label("Direct messages from").select_option("contacts")
    dialog.get_by_role("button", name="Save settings").click()
    expect(dialog.locator(".dialog-message")).to_have_text("Settings saved.")
    dialog.get_by_label("Unblock alice").click()
    expect(dialog.locator("#blocked-list")).to_contain_text("Nobody.")
    dialog.get_by_role("button", name="Close", exact=True).click()
    expect(bob_log).to_contain_text("second from alice")  # history shows them again
    expect(bob_log.locator("li.hidden-message")).to_have_count(0)
    bob.reload()
    bob.get_by_role("button", name="Settings", exact=True).click()
    expect(bob.get_by_label("Direct messages from")).to_have_value("contacts")
    bob.locator("#settings-dialog").get_by_role("button", name="Close", exact=True).click()

    # The setting holds: alice, not a contact, cannot write to bob directly.
    online_user(alice, "bob").click()
    send(alice, "psst")
    expect(alice.get_by_role("log", name="Conversation")).to_contain_text(
        "'bob' accepts direct messages from contacts only")


def chateau_admin(chateau, tmp_path: Path, *args: str) -> None:
    """``chateau-admin ARGS`` on the server's database; it must succeed."""
    from tests.test_revocation import run_admin

    config = tmp_path / "admin.ini"
    config.write_text(
        f"[database]\nurl = sqlite:///{chateau.workdir / 'chateau.sqlite3'}\n"
        "[auth]\nbcrypt_cost = 4\n"
    )
    result = run_admin(config, *args)
    assert result.returncode == 0, result.stderr


def test_announcements_reports_and_a_server_ban(chateau, browser, tmp_path: Path):
    """A server admin announces (a banner, also for who was away) and closes a report; a banned
    user's page is closed with 4003 and shows the sign-in form, then the ban's reason."""
    from playwright.sync_api import expect

    alice = open_page(browser, chateau.http_url)
    sign_in(alice, "alice")
    expect(alice.locator("#me")).to_have_text("alice")
    expect(alice.get_by_role("button", name="Moderation")).to_be_hidden()
    carol = open_page(browser, chateau.http_url)
    sign_in(carol, "carol")
    expect(carol.locator("#me")).to_have_text("carol")
    carol.get_by_role("button", name="Sign out").click()
    chateau_admin(chateau, tmp_path, "user", "admin", "alice")
    alice.reload()  # resumes: ResumeResponse says admin
    expect(alice.get_by_role("button", name="Moderation")).to_be_visible()

    bob = open_page(browser, chateau.http_url)
    sign_in(bob, "bob")
    online_user(bob, "alice").click()
    bob.get_by_role("button", name="Report alice").click()
    bob.get_by_label("Reason", exact=True).fill("spam in my inbox")
    bob.locator("#ask-dialog").get_by_role("button", name="OK", exact=True).click()
    expect(bob.locator("#toast")).to_contain_text("Report sent (number")

    alice.get_by_role("button", name="Moderation").click()
    dialog = alice.locator("#moderation-dialog")
    report = dialog.locator("#reports-list li.report", has_text="spam in my inbox")
    expect(report).to_contain_text("bob reported alice")
    report.get_by_placeholder("Note (optional)").fill("talked to her")
    report.get_by_role("button", name="Warn").click()
    expect(dialog.locator(".dialog-message")).to_contain_text("closed: warn")
    expect(dialog.locator("#reports-list")).to_contain_text("No reports.")
    dialog.get_by_label("Show").select_option("closed")
    expect(dialog.locator("#reports-list")).to_contain_text("Closed by alice: warn (talked to her)")

    dialog.get_by_label("Announcement to everyone").fill("maintenance at six")
    dialog.get_by_role("button", name="Announce", exact=True).click()
    expect(dialog.locator(".dialog-message")).to_contain_text("Announcement sent")
    banner = bob.get_by_role("region", name="Announcements")
    expect(banner).to_contain_text("Announcement from alice")
    expect(banner).to_contain_text("maintenance at six")
    banner.get_by_role("button", name="Dismiss announcement").click()
    expect(banner).to_be_hidden()
    sign_in(carol, "carol")  # away when it was sent
    expect(carol.get_by_role("region", name="Announcements")).to_contain_text(
        "maintenance at six")
    expect(carol.get_by_role("region", name="Announcements")).to_contain_text(
        "while you were away")

    # A server-wide ban closes bob's page with 4003: the sign-in form, then the reason.
    dialog.get_by_label("User", exact=True).fill("bob")
    dialog.get_by_role("button", name="Ban from the server").click()
    expect(dialog.locator(".dialog-message")).to_contain_text("bob not banned: ")  # no reason
    dialog.get_by_label("Why").fill("flooding")
    dialog.get_by_role("button", name="Ban from the server").click()
    expect(dialog.locator(".dialog-message")).to_have_text("bob is banned until the ban is lifted.")
    expect(bob.locator("#signin-notice")).to_contain_text("banned", timeout=5000)
    expect(bob.get_by_role("button", name="Sign in")).to_be_visible()
    assert bob.evaluate("sessionStorage.getItem('chateau.session')") is None
    sign_in(bob, "bob")
    expect(bob.locator("#signin-error")).to_have_text("banned until unbanned: flooding")
    dialog.get_by_role("button", name="Lift the ban").click()
    expect(dialog.locator(".dialog-message")).to_have_text("bob's ban is lifted.")
    sign_in(bob, "bob")
    expect(bob.locator("#me")).to_have_text("bob")
