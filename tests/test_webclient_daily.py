"""The web client's daily-use parts, in headless Chromium against a real twistd server.

The conversation list (unread and mention badges, the last message, the
order by activity, live updates), reading (ReadRequest when a conversation
is shown on a visible page, badges cleared on the user's other device by
ReadRecv) and "Seen" in direct chats (ReadRecv and peer_read). One server
serves the whole module; each test has its own users.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.clientsupport import (  # noqa: F401  (browser is a fixture)
    ChateauProcess,
    TcpProxy,
    browser,
    open_page,
    online_user,
    run_cli,
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


def db_insert(server: ChateauProcess, rows: list[tuple]) -> None:
    """Messages put straight into the server's database: (chat, recipient, sender, content,
    created_at ms, mentions JSON or None)."""
    with sqlite3.connect(Path(server.workdir) / "chateau.sqlite3") as db:
        db.executemany(
            "INSERT INTO messages (chat, recipient, sender, content, created_at, edited, deleted, "
            "mentions) VALUES (?, ?, ?, ?, ?, 0, 0, ?)", rows)


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


def test_counts_capped_at_99_plus_and_unread_mentions(server, browser):
    """What the server counts (ConversationsRequest), as the list shows it: 100 is "99+"; a
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
    db_insert(server, [("@carl:dora", "dora", "carl", f"number {n}", now + n, None)
                       for n in range(1000)])
    db_insert(server, [("den", None, "carl", "@dora look", now + 2000, '["dora"]'),
                       ("den", None, "carl", "@all meeting", now + 2001, '["@all"]'),
                       ("den", None, "carl", "no one", now + 2002, None)])

    dora = signed_in(browser, server, "dora")
    expect(item(dora, "u:carl")).to_have_attribute("aria-label", "carl 99+ unread")
    expect(item(dora, "u:carl").locator(".badge")).to_have_text("99+")
    expect(item(dora, "u:carl").locator(".chat-preview")).to_have_text("number 999")
    expect(item(dora, "c:den")).to_have_attribute("aria-label", "den 3 unread, 2 mentioning you")
    expect(item(dora, "c:den").locator(".mention-badge")).to_have_text("@2")
    expect(dora.locator("#chats .chat-item").first).to_have_attribute("data-chat", "c:den")
    # The list's counts: 100 ("100 or more") and 3.
    expect(dora).to_have_title("(103+) Chateau")
    item(dora, "c:den").click()
    expect(dora.get_by_role("log", name="Conversation")).to_contain_text("@all meeting")
    expect(item(dora, "c:den")).to_have_attribute("aria-label", "den")
    expect(item(dora, "c:den").locator(".mention-badge")).to_have_count(0)


def test_typing_lines_from_the_others_and_typing_sent_while_writing(server, browser):
    from playwright.sync_api import expect

    gina = signed_in(browser, server, "gina")
    hank = signed_in(browser, server, "hank")
    ivy = signed_in(browser, server, "ivy")
    new_group(gina, "yard", "hank, ivy")
    expect(gina.get_by_role("heading", name="# yard")).to_be_visible()
    for page in (hank, ivy):
        item(page, "c:yard").click()
        expect(page.get_by_role("heading", name="# yard")).to_be_visible()
    box = {page: page.get_by_label("Message", exact=True) for page in (gina, hank, ivy)}

    box[hank].press_sequentially("wait for")
    expect(gina.locator("#typing")).to_have_text("hank is typing…")
    expect(hank.locator("#typing")).to_have_text("")  # not to oneself
    box[ivy].press_sequentially("me too")
    expect(gina.locator("#typing")).to_have_text("hank and ivy are typing…")
    expect(hank.locator("#typing")).to_have_text("ivy is typing…")
    # Ivy empties the box: typing false. Hank sends: his line goes with his message.
    box[ivy].fill("")
    expect(gina.locator("#typing")).to_have_text("hank is typing…")
    hank.get_by_role("button", name="Send").click()
    expect(gina.get_by_role("log", name="Conversation")).to_contain_text("wait for")
    expect(gina.locator("#typing")).to_have_text("")

    # Someone who stops without sending is no longer typing after 6 s.
    box[ivy].press_sequentially("hm")
    expect(gina.locator("#typing")).to_have_text("ivy is typing…")
    expect(gina.locator("#typing")).to_have_text("", timeout=12_000)

    # In a direct chat too, only in that chat.
    online_user(gina, "hank").click()
    expect(gina.locator("#typing")).to_have_text("")
    online_user(hank, "gina").click()
    box[hank].press_sequentially("psst")
    expect(gina.locator("#typing")).to_have_text("hank is typing…")
    item(gina, "c:yard").click()
    expect(gina.locator("#typing")).to_have_text("")


def test_search_marks_the_words_and_opens_the_conversation_at_the_message(server, browser):
    from playwright.sync_api import expect

    jill = signed_in(browser, server, "jill")
    kim = signed_in(browser, server, "kim")
    new_group(jill, "books", "kim")
    expect(jill.get_by_role("heading", name="# books")).to_be_visible()
    send(jill, "the quick <b>brown</b> fox jumps")
    expect(jill.get_by_role("log", name="Conversation")).to_contain_text("fox jumps")
    now = int(time.time() * 1000)
    db_insert(server, [("books", None, "kim", f"filler {n}", now + n, None) for n in range(80)])

    kim.get_by_label("Search messages").fill("fox")
    kim.get_by_role("button", name="Find", exact=True).click()
    results = kim.get_by_label("Search results")
    result = results.locator(".search-result")
    expect(result).to_have_count(1)
    expect(result.locator(".result-chat")).to_have_text("# books")
    expect(result.locator(".result-sender")).to_have_text("jill")
    expect(result.locator(".result-snippet")).to_contain_text("quick <b>brown</b> fox")
    expect(result.locator("mark")).to_have_text(["fox"])
    expect(results.locator("b")).to_have_count(0)  # the content is text, never markup

    result.click()
    log = kim.get_by_role("log", name="Conversation")
    focused = kim.locator(".message.focus")
    expect(focused.locator(".body")).to_have_text("the quick <b>brown</b> fox jumps")
    expect(focused).to_be_in_viewport()
    expect(log).to_contain_text("filler 0")
    expect(log).not_to_contain_text("filler 79")  # the page after the hit, not the latest
    kim.get_by_role("button", name="Load newer messages").click()
    expect(log).to_contain_text("filler 79")
    expect(kim.get_by_role("button", name="Load newer messages")).to_be_hidden()

    kim.get_by_label("Search messages").fill("nothing-like-this")
    kim.get_by_role("button", name="Find", exact=True).click()
    expect(kim.locator("#search-status")).to_have_text("No messages found.")


def test_jump_to_date_shows_the_page_after_that_day(server, browser):
    from playwright.sync_api import expect

    signed_in(browser, server, "moe").context.close()
    lou = signed_in(browser, server, "lou")
    # Older days first (ids grow with time, as on a live server), then the group around them.
    day = 24 * 3600 * 1000
    now = int(time.time() * 1000)
    db_insert(server, [("attic", None, "lou", "from long ago", now - 60 * day, None)]
              + [("attic", None, "lou", f"a month ago {n}", now - 30 * day + n, None) for n in range(3)])
    new_group(lou, "attic", "moe")
    expect(lou.get_by_role("heading", name="# attic")).to_be_visible()
    send(lou, "today")
    log = lou.get_by_role("log", name="Conversation")
    expect(log).to_contain_text("today")

    import datetime
    moment = datetime.date.fromtimestamp((now - 40 * day) / 1000).isoformat()
    lou.get_by_label("Jump to date").fill(moment)
    lou.get_by_role("button", name="Jump to date").click()
    expect(lou.locator(".message.focus .body")).to_have_text("a month ago 0")
    expect(log).not_to_contain_text("from long ago")
    expect(log).to_contain_text("today")
    lou.get_by_role("button", name="Load older messages").click()
    expect(log).to_contain_text("from long ago")


def test_mentions_marked_counted_and_announced(server, browser):
    from playwright.sync_api import expect


    mia = signed_in(browser, server, "mia")
    ned = signed_in(browser, server, "ned")
    new_group(mia, "band", "ned")
    expect(mia.get_by_role("heading", name="# band")).to_be_visible()
    online_user(ned, "mia").click()  # ned looks elsewhere
    send(mia, "@ned bring the drums")
    expect(ned.locator("#toast")).to_have_text("mia mentioned you in # band")
    expect(item(ned, "c:band")).to_have_attribute("aria-label", "band 1 unread, 1 mentioning you")
    expect(item(ned, "c:band").locator(".mention-badge")).to_have_text("@")
    send(mia, "no one here")
    send(mia, "@all rehearsal at 6")
    expect(item(ned, "c:band")).to_have_attribute("aria-label", "band 3 unread, 2 mentioning you")
    item(ned, "c:band").click()
    expect(ned.locator(".message.mention .body")).to_have_text(
        ["@ned bring the drums", "@all rehearsal at 6"])
    expect(item(ned, "c:band")).to_have_attribute("aria-label", "band")
    expect(mia.locator(".message.mention")).to_have_count(0)  # her own words


def test_catching_up_after_a_reconnect_applies_edits_and_deletions(server, browser):
    from playwright.sync_api import expect

    olga = signed_in(browser, server, "olga")
    proxy = TcpProxy(server.port)
    try:
        pia = open_page(browser, proxy.url("/", "http"))
        sign_in(pia, "pia")
        expect(pia.locator("#me")).to_have_text("pia")
        new_group(olga, "pond", "pia")
        expect(olga.get_by_role("heading", name="# pond")).to_be_visible()
        send(olga, "to be edited")
        send(olga, "to be deleted")
        item(pia, "c:pond").click()
        log = pia.get_by_role("log", name="Conversation")
        expect(log).to_contain_text("to be deleted")
        ids = pia.locator("#messages li.message").evaluate_all("(items) => items.map((li) => li.dataset.id)")

        # The proxy resets every connection and refuses new ones; browser offline emulation is
        # not used, since it can hide the reset from the page's WebSocket.
        proxy.refuse()
        expect(pia.locator("#status")).to_contain_text("reconnecting")
        edit = {"type": "MessageEditRequest", "id": int(ids[0]), "content": "edited while away"}
        delete = {"type": "MessageDeleteRequest", "id": int(ids[1])}
        # --send waits for the sign-in's reply, then --wait seconds of quiet.
        out = run_cli(server.url, "--user", "olga", "--send", "-", "--wait", "0.5",
                      input="\n".join(json.dumps(m) for m in (edit, delete)), password="pw")
        assert '"MessageEditResponse"' in out.stdout and '"MessageDeleteResponse"' in out.stdout, out
        send(olga, "sent while away")
        proxy.refuse(False)
        # The page's next attempt comes after its growing back-off, up to 16 s by now.
        expect(pia.locator("#status")).to_have_text("Connected", timeout=30_000)
        expect(log).to_contain_text("edited while away")
        expect(log).to_contain_text("This message was deleted.")
        expect(log).to_contain_text("sent while away")
    finally:
        proxy.close()
