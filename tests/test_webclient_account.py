"""The web client's Account dialog and the directory's lifecycle, in headless Chromium.

Profile, password, devices, the data export and deleting the account, each
against a real twistd server (tests/clientsupport.py), with a second browser
context where another device of the same user must see the effect: signed
out (4001) or its account deleted (4005). Also what the group panel shows
of people's profiles, a synced group and a group's retention.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.clientsupport import (  # noqa: F401  (browser and chateau are fixtures)
    browser,
    chat_item,
    chateau,
    open_page,
)
from tests.clientsupport import web_new_group as new_group
from tests.clientsupport import web_send as send
from tests.clientsupport import web_sign_in as sign_in


def signed_in(page, username: str, password: str = "pw") -> None:
    from playwright.sync_api import expect

    sign_in(page, username, password)
    expect(page.locator("#me")).to_contain_text(username)


def open_account(page):
    """The Account dialog, opened from the top bar."""
    page.get_by_role("button", name="Account", exact=True).click()
    return page.locator("#account-dialog")


def open_group_panel(page, chatname: str):
    chat_item(page, chatname).click()
    page.get_by_role("button", name="Group info").click()
    return page.locator("#group-panel")


def member_row(panel, username: str):
    return panel.locator(f'#panel-members li[data-username="{username}"]')


def test_profile_retention_and_a_synced_group_in_the_group_panel(chateau, browser):
    """A saved profile shows in another member's panel; retention is a group setting; a group
    synced from the directory says so and offers no membership controls."""
    from playwright.sync_api import expect

    bob = open_page(browser, chateau.http_url)
    signed_in(bob, "bob")
    alice = open_page(browser, chateau.http_url)
    signed_in(alice, "alice")
    new_group(alice, "club", "bob")
    expect(alice.get_by_role("heading", name="# club")).to_be_visible()

    dialog = open_account(alice)
    expect(dialog.get_by_label("Display name")).to_have_value("")
    expect(dialog.locator("#profile-name-note")).to_be_hidden()
    dialog.get_by_label("Display name").fill("Alice Liddell")
    dialog.get_by_label("Status").fill("in the library until 4")
    dialog.get_by_role("button", name="Save profile").click()
    expect(dialog.locator(".dialog-message")).to_have_text("Profile saved.")
    expect(alice.locator("#me")).to_have_text("Alice Liddell (alice)")
    dialog.get_by_label("Display name").fill("x" * 10 + "\u0007")  # a control character: refused
    dialog.get_by_role("button", name="Save profile").click()
    expect(dialog.locator(".dialog-message")).to_contain_text("Profile not saved:")
    dialog.get_by_role("button", name="Close", exact=True).click()

    panel = open_group_panel(bob, "club")
    row = member_row(panel, "alice")
    expect(row.locator(".member-name")).to_have_text("Alice Liddell (alice)")
    expect(row.locator(".member-status-text")).to_have_text("in the library until 4")
    expect(row).to_have_attribute("title", "in the library until 4")
    expect(member_row(panel, "bob").locator(".member-status-text")).to_have_count(0)
    expect(panel.locator("#panel-directory")).to_be_hidden()

    # Retention: a group setting; empty is the server's default.
    alice_panel = open_group_panel(alice, "club")
    retention = alice_panel.get_by_label("Keep messages for N days", exact=False)
    expect(retention).to_have_value("")
    retention.fill("30")
    alice_panel.get_by_role("button", name="Save group settings").click()
    bob_log = bob.get_by_role("log", name="Conversation")
    expect(bob_log.locator('li.event[data-event="settings"]')).to_have_text(
        "alice changed the group's settings (keep messages: 30 days)")
    alice.reload()
    alice_panel = open_group_panel(alice, "club")
    expect(alice_panel.get_by_label("Keep messages for N days", exact=False)).to_have_value("30")
    alice_panel.get_by_label("Keep messages for N days", exact=False).fill("")  # back to the default
    alice_panel.get_by_role("button", name="Save group settings").click()
    expect(bob_log.locator('li.event[data-event="settings"]').last).to_have_text(
        "alice changed the group's settings (keep messages: server default)")

    # The group becomes a synced one (as the directory sync marks it).
    with sqlite3.connect(chateau.workdir / "chateau.sqlite3") as db:
        db.execute("UPDATE groups SET directory_dn = 'cn=club,ou=groups,dc=example,dc=org' "
                   "WHERE chatname = 'club'")
    for page in (alice, bob):
        page.reload()
        expect(page.locator("#conversation-title")).to_have_text("# club")
    alice_panel = open_group_panel(alice, "club")
    expect(alice_panel.locator("#panel-directory")).to_have_text(
        "Membership follows the campus directory")
    expect(alice_panel.locator("#add-form")).to_be_hidden()
    expect(alice_panel.locator("#invite-section")).to_be_hidden()
    expect(alice_panel.get_by_label("Remove bob")).to_have_count(0)
    expect(alice_panel.get_by_label("Ban bob")).to_have_count(0)
    expect(alice_panel.get_by_label("Mute bob")).to_be_visible()  # roles and mutes still work
    expect(alice.get_by_role("button", name="Leave group")).to_be_hidden()
    bob_panel = open_group_panel(bob, "club")
    expect(bob_panel.locator("#panel-directory")).to_be_visible()
    expect(bob.get_by_role("button", name="Leave group")).to_be_hidden()

    # A directory account's tab (as its sign-in with "Directory account" marks the saved session):
    # the display name is the directory's, and there is no password to change or account to delete.
    alice.evaluate("""() => {
        const saved = JSON.parse(sessionStorage.getItem('chateau.session'));
        sessionStorage.setItem('chateau.session', JSON.stringify({...saved, directory: true}));
    }""")
    alice.reload()
    expect(alice.locator("#me")).to_contain_text("alice")
    dialog = open_account(alice)
    expect(dialog.get_by_label("Display name")).to_have_value("Alice Liddell")
    expect(dialog.get_by_label("Display name")).not_to_be_editable()
    expect(dialog.locator("#profile-name-note")).to_have_text(
        "Your display name comes from the campus directory.")
    expect(dialog.get_by_role("button", name="Change password")).to_be_hidden()
    expect(dialog.get_by_role("button", name="Delete my account")).to_be_hidden()
    dialog.get_by_label("Status").fill("")
    dialog.get_by_role("button", name="Save profile").click()
    expect(dialog.locator(".dialog-message")).to_have_text("Profile saved.")


def test_devices_are_listed_and_revoking_one_signs_it_out(chateau, browser):
    """Two browsers as one user: both listed with their client; revoking the other signs it
    out (the sign-in screen); revoking this one signs this tab out cleanly."""
    from playwright.sync_api import expect

    first = open_page(browser, chateau.http_url)
    signed_in(first, "alice")
    second = open_page(browser, chateau.http_url)
    signed_in(second, "alice")

    dialog = open_account(first)
    devices = dialog.locator("#devices-list li.device")
    expect(devices).to_have_count(2)
    this = dialog.locator('#devices-list li[data-current="true"]')
    expect(this.locator(".device-name")).to_have_text("Web: Chrome on Linux (this device)")
    expect(this.locator(".device-details")).to_contain_text("from 127.0.0.1")
    other = dialog.locator('#devices-list li.device:not([data-current="true"])')
    expect(other.locator(".device-name")).to_have_text("Web: Chrome on Linux")
    other.get_by_role("button", name="Sign out").click()
    expect(dialog.locator(".dialog-message")).to_contain_text("is signed out")
    expect(devices).to_have_count(1)
    expect(second.locator("#signin-notice")).to_contain_text("You were signed out", timeout=5000)
    expect(second.get_by_role("button", name="Sign in")).to_be_visible()
    assert second.evaluate("sessionStorage.getItem('chateau.session')") is None

    # This device: the tab goes back to the sign-in form, saying why.
    this.get_by_role("button", name="Sign out this device").click()
    expect(first.locator("#signin-notice")).to_have_text("You signed this device out.")
    expect(first.get_by_role("button", name="Sign in")).to_be_visible()
    assert first.evaluate("sessionStorage.getItem('chateau.session')") is None
    first.wait_for_timeout(300)  # the server's 4001 afterwards changes nothing
    expect(first.locator("#signin-notice")).to_have_text("You signed this device out.")
    signed_in(first, "alice")


def test_a_password_change_signs_the_other_devices_out(chateau, browser):
    """Wrong old password and a mistyped confirmation are refused; a change keeps this tab
    and signs the other out."""
    from playwright.sync_api import expect

    first = open_page(browser, chateau.http_url)
    signed_in(first, "alice")
    second = open_page(browser, chateau.http_url)
    signed_in(second, "alice")

    dialog = open_account(first)
    dialog.get_by_label("Current password").fill("pw")
    dialog.get_by_label("New password", exact=True).fill("new secret")
    dialog.get_by_label("Confirm new password").fill("new secrt")
    dialog.get_by_role("button", name="Change password").click()
    expect(dialog.locator(".dialog-message")).to_have_text(
        "The new password and its confirmation differ.")
    dialog.get_by_label("Current password").fill("not it")
    dialog.get_by_label("Confirm new password").fill("new secret")
    dialog.get_by_role("button", name="Change password").click()
    expect(dialog.locator(".dialog-message")).to_contain_text("Password not changed:")
    expect(second.locator("#me")).to_have_text("alice")

    dialog.get_by_label("Current password").fill("pw")
    dialog.get_by_label("New password", exact=True).fill("new secret")
    dialog.get_by_label("Confirm new password").fill("new secret")
    dialog.get_by_role("button", name="Change password").click()
    expect(dialog.locator(".dialog-message")).to_have_text(
        "Password changed. Your other devices were signed out; this one stays signed in.")
    expect(dialog.get_by_label("Current password")).to_have_value("")
    expect(second.locator("#signin-notice")).to_contain_text("You were signed out", timeout=5000)
    expect(dialog.locator("#devices-list li.device")).to_have_count(1)
    dialog.get_by_role("button", name="Close", exact=True).click()
    first.reload()  # this tab's key still resumes
    expect(first.locator("#me")).to_have_text("alice")
    sign_in(second, "alice", "pw")
    expect(second.locator("#signin-error")).to_be_visible()
    signed_in(second, "alice", "new secret")


def test_export_then_delete_the_account(chateau, browser, tmp_path: Path):
    """Download my data saves a JSON file with what was sent; deleting the account (password
    asked again) returns to sign-in, another device gets 4005, the name no longer signs in and
    the others see "deleted user"."""
    from playwright.sync_api import expect

    bob = open_page(browser, chateau.http_url)
    signed_in(bob, "bob")
    alice = open_page(browser, chateau.http_url)
    signed_in(alice, "alice")
    other = open_page(browser, chateau.http_url)
    signed_in(other, "alice")
    new_group(alice, "club", "bob")
    send(alice, "remember me <b>fondly</b>")
    expect(alice.get_by_role("log", name="Conversation")).to_contain_text("remember me")

    dialog = open_account(alice)
    with alice.expect_download() as download_info:
        dialog.get_by_role("button", name="Download my data").click()
    download = download_info.value
    assert download.suggested_filename.startswith("chateau-alice-")
    assert download.suggested_filename.endswith(".json")
    saved = tmp_path / "export.json"
    download.save_as(saved)
    document = json.loads(saved.read_text(encoding="utf-8"))
    assert document["format"] == "chateau-export-1"
    assert document["account"]["username"] == "alice"
    assert any(m["content"] == "remember me <b>fondly</b>" and m["sender"] == "alice"
               for m in document["messages"])
    expect(dialog.locator(".dialog-message")).to_contain_text("Your data is downloaded")

    # Deleting asks for the password; a wrong one is refused in words.
    dialog.get_by_role("button", name="Delete my account").click()
    confirm = alice.locator("#delete-dialog")
    expect(confirm).to_be_visible()
    confirm.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Delete my account").click()
    confirm.get_by_label("Your password").fill("wrong")
    confirm.get_by_role("button", name="Delete my account for good").click()
    expect(confirm.locator(".dialog-message")).to_contain_text("Account not deleted:")
    confirm.get_by_label("Your password").fill("pw")
    confirm.get_by_role("button", name="Delete my account for good").click()
    expect(alice.locator("#signin-notice")).to_contain_text("Your account was deleted")
    expect(alice.get_by_role("button", name="Sign in")).to_be_visible()
    assert alice.evaluate("sessionStorage.getItem('chateau.session')") is None

    # The other device: close code 4005, no reconnecting, the sign-in form says why.
    expect(other.locator("#signin-notice")).to_contain_text("Your account was deleted", timeout=5000)
    assert other.evaluate("sessionStorage.getItem('chateau.session')") is None
    other.wait_for_timeout(1500)  # no resume is tried: still the form
    expect(other.get_by_role("button", name="Sign in")).to_be_visible()

    # The name signs in no more.
    sign_in(alice, "alice")
    expect(alice.locator("#signin-error")).to_be_visible()
    expect(alice.locator("#chat")).to_be_hidden()

    # bob sees what alice wrote under "deleted user", muted.
    bob.reload()
    chat_item(bob, "club").click()
    bob_log = bob.get_by_role("log", name="Conversation")
    sender = bob_log.locator("li.from-deleted-user .sender")
    expect(sender).to_have_text("deleted user")
    expect(sender).to_have_class("sender deleted-user")
    expect(bob_log).not_to_contain_text("(deleted user)")
    expect(bob_log.get_by_role("button", name="Report message from (deleted user)")).to_have_count(0)
