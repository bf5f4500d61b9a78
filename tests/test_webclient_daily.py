"""The web client's daily-use parts, in headless Chromium against a real twistd server.

The conversation list (unread and mention badges, the last message, the
order by activity, live updates), reading (ReadRequest when a conversation
is shown on a visible page, badges cleared on the user's other device by
ReadRecv) and "Seen" in direct chats (ReadRecv and peer_read). One server
serves the whole module; each test has its own users.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.clientsupport import (  # noqa: F401  (browser is a fixture)
    ChateauProcess,
    browser,
    open_page,
    online_user,
)
from tests.clientsupport import web_new_group as new_group
from tests.clientsupport import web_send as send
from tests.clientsupport import web_sign_in as sign_in


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChateauProcess]:
    process = ChateauProcess(tmp_path_factory.mktemp("daily") / "server").start()
    try:
        yield process
    finally:
        process.stop()


def signed_in(browser: Any, server: ChateauProcess, username: str) -> Any:
    from playwright.sync_api import expect

    page = open_page(browser, server.http_url)
    sign_in(page, username)
    expect(page.locator("#me")).to_have_text(username)
    return page


def item(page: Any, chat: str) -> Any:
    """A conversation in the sidebar by its id: "c:club" for a group, "u:bob" for a direct chat."""
    return page.locator(f'#chats .chat-item[data-chat="{chat}"]')


def set_visible(page: Any, visible: bool) -> None:
    """Make the page look shown or hidden to its scripts (as a background tab would)."""
    page.evaluate("""(visible) => {
        Object.defineProperty(document, "visibilityState",
            {configurable: true, get: () => (visible ? "visible" : "hidden")});
        document.dispatchEvent(new Event("visibilitychange"));
    }""", visible)


def test_unread_badges_last_messages_order_and_reading_on_every_device(server, browser):
    from playwright.sync_api import expect

    bob = signed_in(browser, server, "bob")
    alice = signed_in(browser, server, "alice")
    new_group(alice, "club", "bob")
    expect(alice.get_by_role("heading", name="# club")).to_be_visible()
    send(alice, "first")
    send(alice, "second")
    # Live: two unread for bob (the "added you" line is no message), the last one shown.
    expect(item(bob, "c:club")).to_have_attribute("aria-label", "club 2 unread")
    expect(item(bob, "c:club").locator(".chat-preview")).to_have_text("alice: second")
    expect(item(alice, "c:club").locator(".chat-preview")).to_have_text("You: second")

    # Bob's second device gets the same from the server (ConversationsRequest).
    phone = signed_in(browser, server, "bob")
    expect(item(phone, "c:club")).to_have_attribute("aria-label", "club 2 unread")
    expect(item(phone, "c:club").locator(".badge")).to_have_text("2")
    expect(item(phone, "c:club").locator(".chat-preview")).to_have_text("alice: second")

    # A direct message: its conversation goes to the top of both of bob's lists.
    online_user(alice, "bob").click()
    send(alice, "psst")
    for page in (bob, phone):
        expect(item(page, "u:alice")).to_have_attribute("aria-label", "alice 1 unread")
        expect(page.locator("#chats .chat-item").first).to_have_attribute("data-chat", "u:alice")
        expect(item(page, "u:alice").locator(".chat-preview")).to_have_text("psst")

    # Reading the group on one device clears its badge on the other (ReadRecv).
    item(bob, "c:club").click()
    expect(bob.get_by_role("log", name="Conversation")).to_contain_text("second")
    expect(item(bob, "c:club")).to_have_attribute("aria-label", "club")
    expect(item(phone, "c:club")).to_have_attribute("aria-label", "club")
    expect(item(phone, "u:alice")).to_have_attribute("aria-label", "alice 1 unread")

    # A new message in the group moves it back to the top; bob has the group open and shown,
    # so it is read at once, on both devices.
    item(alice, "c:club").click()
    send(alice, "third")
    expect(phone.locator("#chats .chat-item").first).to_have_attribute("data-chat", "c:club")
    expect(item(phone, "c:club").locator(".chat-preview")).to_have_text("alice: third")
    expect(bob.get_by_role("log", name="Conversation")).to_contain_text("third")
    expect(item(bob, "c:club")).to_have_attribute("aria-label", "club")
    expect(item(phone, "c:club")).to_have_attribute("aria-label", "club")

    # A hidden page reads nothing: the count grows until the page is shown again.
    set_visible(bob, False)
    send(alice, "fourth")
    expect(item(bob, "c:club")).to_have_attribute("aria-label", "club 1 unread")
    expect(item(phone, "c:club")).to_have_attribute("aria-label", "club 1 unread")
    set_visible(bob, True)
    expect(item(bob, "c:club")).to_have_attribute("aria-label", "club")
    expect(item(phone, "c:club")).to_have_attribute("aria-label", "club")


def test_seen_under_the_last_message_the_other_side_read(server, browser):
    from playwright.sync_api import expect

    erin = signed_in(browser, server, "erin")
    fred = signed_in(browser, server, "fred")
    online_user(erin, "fred").click()
    send(erin, "one")
    send(erin, "two")
    erin_log = erin.get_by_role("log", name="Conversation")
    expect(erin_log).to_contain_text("two")
    expect(erin.locator(".message.seen")).to_have_count(0)
    expect(item(fred, "u:erin")).to_have_attribute("aria-label", "erin 2 unread")

    # Fred opens the chat: erin sees "Seen" under her last message (ReadRecv).
    item(fred, "u:erin").click()
    seen = erin.locator(".message.seen")
    expect(seen).to_have_count(1)
    expect(seen.locator(".body")).to_have_text("two")
    expect(seen.locator(".note")).to_have_text("Seen")

    # A newer message is not seen yet: "Seen" stays under "two" until fred reads it.
    set_visible(fred, False)
    send(erin, "three")
    expect(erin_log).to_contain_text("three")
    expect(seen.locator(".body")).to_have_text("two")
    set_visible(fred, True)
    expect(seen.locator(".body")).to_have_text("three")

    # After a reload the server's peer_read puts it back in place.
    erin.reload()
    expect(erin.get_by_role("heading", name="fred", exact=True)).to_be_visible()
    expect(erin_log).to_contain_text("three")
    expect(erin.locator(".message.seen .body")).to_have_text("three")


def test_counts_capped_at_999_plus_and_unread_mentions(server, browser):
    """What the server counts (ConversationsRequest), as the list shows it: 1000 is "999+"; a
    group's unread mentions of the user (and of @all) have their own badge."""
    from playwright.sync_api import expect

    dora = signed_in(browser, server, "dora")
    carl = signed_in(browser, server, "carl")
    online_user(carl, "dora").click()
    send(carl, "hi dora")
    new_group(carl, "den", "dora")
    expect(carl.get_by_role("heading", name="# den")).to_be_visible()
    expect(item(dora, "u:carl")).to_have_attribute("aria-label", "carl 1 unread")
    dora.context.close()

    now = int(time.time() * 1000)
    with sqlite3.connect(Path(server.workdir) / "chateau.sqlite3") as db:
        db.executemany(
            "INSERT INTO messages (chat, recipient, sender, content, created_at, edited, deleted) "
            "VALUES ('@carl:dora', 'dora', 'carl', ?, ?, 0, 0)",
            [(f"number {n}", now + n) for n in range(1000)])
        db.executemany(
            "INSERT INTO messages (chat, recipient, sender, content, created_at, edited, deleted, "
            "mentions) VALUES ('den', NULL, 'carl', ?, ?, 0, 0, ?)",
            [("@dora look", now + 2000, '["dora"]'), ("@all meeting", now + 2001, '["@all"]'),
             ("no one", now + 2002, None)])

    dora = signed_in(browser, server, "dora")
    expect(item(dora, "u:carl")).to_have_attribute("aria-label", "carl 999+ unread")
    expect(item(dora, "u:carl").locator(".badge")).to_have_text("999+")
    expect(item(dora, "u:carl").locator(".chat-preview")).to_have_text("number 999")
    expect(item(dora, "c:den")).to_have_attribute("aria-label", "den 3 unread, 2 mentioning you")
    expect(item(dora, "c:den").locator(".mention-badge")).to_have_text("@2")
    expect(dora.locator("#chats .chat-item").first).to_have_attribute("data-chat", "c:den")
    assert dora.title() == "(999+) Chateau"
    item(dora, "c:den").click()
    expect(dora.get_by_role("log", name="Conversation")).to_contain_text("@all meeting")
    expect(item(dora, "c:den")).to_have_attribute("aria-label", "den")
    expect(item(dora, "c:den").locator(".mention-badge")).to_have_count(0)
