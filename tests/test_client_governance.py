"""chateau-client's governance commands against a real server.

The commands' parsing and words are tested without a network in
tests/test_client_commands.py; here they go over a real socket to a real
``twistd`` server: piped input for what one person does, a pseudo-terminal
for what the other members see pushed to them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pexpect

from tests.clientsupport import (  # noqa: F401  (chateau is a fixture)
    REPO,
    chateau,
    cli_command,
    finish,
    frames,
    register,
    run_cli,
    spawn,
)
from tests.processes import checkout_env


def sign_up(url: str, *names: str) -> None:
    for name in names:
        result = run_cli(url, "--send", "-", "--wait", "0.5", "--strict",
                         input=json.dumps(register(name)))
        assert result.returncode == 0, result.stdout + result.stderr


def typed(url: str, user: str, *lines: str) -> list[str]:
    """*user* types *lines* into the client through a pipe; what it printed."""
    result = run_cli(url, "--user", user, password="pw", input="".join(f"{l}\n" for l in lines))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\x1b" not in result.stdout
    return result.stdout.splitlines()


def new_group(url: str, creator: str, chatname: str, *members: str) -> None:
    request = {"type": "GroupMessageInitRequest", "chatname": chatname,
               "recipients": list(members)}
    result = run_cli(url, "--user", creator, "--send", "-", "--wait", "0.5", "--strict",
                     password="pw", input=json.dumps(request))
    assert result.returncode == 0, result.stdout + result.stderr
    assert frames(result.stdout)[1]["type"] == "GroupMessageInitResponse"


def test_info_and_role_over_a_real_server(chateau, tmp_path: Path):
    sign_up(chateau.url, "alice", "bob", "carol")
    new_group(chateau.url, "alice", "book club", "bob", "carol")

    shown = typed(chateau.url, "alice", '/info "book club"')
    assert "--- #book club ---" in shown
    assert "  no topic" in shown
    assert any(re.fullmatch(r"  created by alice (at|on) [-\d: ]+", line) for line in shown)
    assert ("  settings: join invite, visibility private, who_can_add admins,"
            " who_can_send everyone, retention_days default") in shown
    assert ("  members (3): alice (owner, online), bob (member, offline),"
            " carol (member, offline)") in shown

    # bob, online in a terminal, sees alice make him admin as a system line.
    bob = spawn(chateau.url, "bob", tmp_path)
    bob.expect("signed in as bob")
    shown = typed(chateau.url, "alice", '/role "book club" bob admin')
    assert "* bob is now admin in book club" in shown
    bob.expect(r"\d\d:\d\d \[#book club\] \* alice made you admin")

    # Refusals carry the server's detail and status.
    bob.send('/role "book club" carol owner\r')
    bob.expect(re.escape("! role not changed: only an owner of 'book club' sets roles (403)"))
    shown = typed(chateau.url, "alice", '/role "book club" alice member', "/info nowhere",
                  '/role "book club" dave admin')
    assert ("! role not changed: 'book club' must keep an owner: make another member owner"
            " first (409)") in shown
    assert "! no information on nowhere: no such group: 'nowhere' (404)" in shown
    assert "! role not changed: 'dave' is not a member of 'book club' (404)" in shown

    # The change is in the group's information and, as an event, in its history.
    bob.send('/info "book club"\r')
    bob.expect(r"members \(3\): alice \(owner, offline\), bob \(admin, online\),"
               r" carol \(member, offline\)")
    bob.send('/history "book club"\r')
    bob.expect(r"--- #book club: 1 message ---")
    bob.expect(r"\[#book club\] \* alice made you admin")
    assert finish(bob) == 0

    # Bad usage never reaches the server.
    shown = typed(chateau.url, "carol", '/role "book club" bob king')
    assert ("! /role: ROLE must be owner or admin or member, not 'king'"
            " (usage: /role GROUP USER ROLE)") in shown


# -- signed out or banned while connected ------------------------------------------


def run_admin(server, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    """``chateau-admin`` on the running server's database."""
    config = server.workdir / "admin.ini"
    config.write_text(
        f"[database]\nurl = sqlite:///{server.workdir / 'chateau.sqlite3'}\n"
        "[auth]\nbcrypt_cost = 4\n"
    )
    env = checkout_env(**({"CHATEAU_PASSWORD": password} if password is not None else {}))
    result = subprocess.run(
        [sys.executable, "-m", "chateau.admin", "--config", str(config), *args],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def piped(url: str, user: str) -> subprocess.Popen:
    """The client reading commands from a pipe left open, as a script would run it."""
    return subprocess.Popen(
        cli_command(url, "--user", user), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, cwd=REPO, env=checkout_env(CHATEAU_PASSWORD="pw"),
    )


def wait_for_line(process: subprocess.Popen, text: str) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if text in line:
            return
    raise AssertionError(f"the client ended without printing {text!r}")


def test_signed_out_by_the_server_exits_3_in_both_modes(chateau, tmp_path: Path):
    sign_up(chateau.url, "gina")
    on_terminal = spawn(chateau.url, "gina", tmp_path)
    on_terminal.expect("signed in as gina")
    on_pipe = piped(chateau.url, "gina")
    try:
        wait_for_line(on_pipe, "signed in as gina")
        run_admin(chateau, "user", "passwd", "gina", password="new")
        on_terminal.expect("the server signed you out")
        on_terminal.expect(pexpect.EOF)
        on_terminal.close()
        assert on_terminal.exitstatus == 3
        wait_for_line(on_pipe, "the server signed you out")
        status = on_pipe.wait(timeout=15)
        assert status == 3, on_pipe.stdout.read()
    finally:
        if on_pipe.poll() is None:
            on_pipe.kill()
            on_pipe.wait()


def make_admin(server, name: str) -> None:
    """Make *name* a server admin, as an operator does (chateau-admin user admin NAME)."""
    run_admin(server, "user", "admin", name)


def test_reports_over_a_real_server(chateau, tmp_path: Path):
    sign_up(chateau.url, "root", "bob", "carol")
    make_admin(chateau, "root")
    new_group(chateau.url, "carol", "club", "bob")

    # carol sees message IDs after /ids on, and reports one of bob's messages.
    carol = spawn(chateau.url, "carol", tmp_path)
    carol.expect("signed in as carol")
    carol.send("/ids on\r")
    carol.expect("message IDs are shown")
    result = run_cli(chateau.url, "--user", "bob", "--send", "-", "--wait", "0.5", "--strict",
                     password="pw", input=json.dumps(
                         {"type": "GroupMessageRequest", "recipient": "club",
                          "content": "buy now"}))
    (message_id,) = [f["id"] for f in frames(result.stdout) if f["type"] == "MessageSendResponse"]
    carol.expect(re.escape(f"[#club] bob: buy now  (id {message_id})"))
    carol.send(f"/report message {message_id} spam\r")
    carol.expect(r"\* report (\d+) on message \d+ sent to the server's moderators")
    first = int(carol.match.group(1))
    carol.send("/report user bob keeps at it\r")
    carol.expect(r"\* report (\d+) on bob sent to the server's moderators")
    carol.send("/report message 999999 spam\r")
    carol.expect(re.escape("! report on message 999999 not sent:"
                           " no message with id 999999 that you can see (404)"))
    carol.send("/reports\r")
    carol.expect(re.escape("! no reports: only server admins may read reports (403)"))
    assert finish(carol) == 0

    shown = typed(chateau.url, "root", "/reports")
    assert "--- open reports: 2 ---" in shown
    assert any(re.fullmatch(rf"  #{first} [-\d: ]+ carol reported user bob message {message_id}"
                            r" in club: spam \[open\]", line) for line in shown), shown
    assert any(re.fullmatch(r"      [-\d: ]+ bob: buy now", line) for line in shown), shown
    shown = typed(chateau.url, "root", f"/resolve {first} warn first time")
    assert f"* report {first} resolved: warn" in shown
    shown = typed(chateau.url, "root", f"/resolve {first} dismiss changed my mind")
    assert any(line.startswith(f"! report {first} not resolved: ") and line.endswith("(409)")
               for line in shown), shown
    shown = typed(chateau.url, "root", "/reports closed")
    assert "--- closed reports: 1 ---" in shown
    assert any(re.fullmatch(r"      resolved by root (at|on) [-\d: ]+: warn: first time", line)
               for line in shown), shown


def test_group_settings_and_directory_over_a_real_server(chateau, tmp_path: Path):
    sign_up(chateau.url, "alice", "bob", "carol")
    new_group(chateau.url, "alice", "club", "bob")
    bob = spawn(chateau.url, "bob", tmp_path)
    bob.expect("signed in as bob")
    bob.send("/to club\r")
    bob.expect("now talking in #club")

    # /topic, /set and /rename: the answer in words, a system line for the others.
    shown = typed(chateau.url, "alice", "/topic club Dune, chapters 1-5")
    assert shown[-3:] == ["* updated club", "  topic: Dune, chapters 1-5",
                          "  settings: join invite, visibility private, who_can_add admins,"
                          " who_can_send everyone, retention_days default"]
    bob.expect(re.escape("[#club] * alice set the topic: Dune, chapters 1-5"))
    shown = typed(chateau.url, "alice", "/set club join open visibility public")
    assert ("  settings: join open, visibility public, who_can_add admins,"
            " who_can_send everyone, retention_days default") in shown
    bob.expect(re.escape("[#club] * alice changed the settings: join open, visibility public"))
    assert "* renamed club to #readers" in typed(chateau.url, "alice", "/rename club Readers")
    bob.expect(re.escape("[#readers] * alice renamed the group from club to readers"))
    bob.expect(re.escape("#readers> "))  # bob's current chat follows the rename
    bob.send("still here\r")
    bob.expect(re.escape("[#readers] bob: still here"))

    # Refusals carry the server's words; bad values never reach it.
    bob.send("/topic readers mine now\r")
    bob.expect(r"! topic not set: .+ \(403\)")
    bob.send("/set readers join sometimes\r")
    bob.expect(re.escape("! /set: join must be invite or open, not 'sometimes'"))
    shown = typed(chateau.url, "alice", "/rename readers bob", '/topic club ""')
    assert any(line.startswith("! readers not renamed: ") and line.endswith("(409)")
               for line in shown), shown
    assert "! topic not set: no such group: 'club' (404)" in shown

    # /groups: the public directory; /join by name for an open group.
    new_group(chateau.url, "alice", "chess", "bob")
    typed(chateau.url, "alice", "/set chess visibility public", "/topic chess Sundays")
    shown = typed(chateau.url, "carol", "/groups", "/groups dune")
    assert "--- public groups: 2 ---" in shown
    assert '  readers (2 members, open: /join): Dune, chapters 1-5' in shown
    assert "  chess (2 members, by invitation): Sundays" in shown
    assert "--- public groups matching 'dune': 1 ---" in shown
    assert "* no public groups matching 'nothing'" in typed(chateau.url, "carol",
                                                          "/groups nothing")
    assert "* joined #readers; /to readers to talk there" in typed(chateau.url, "carol",
                                                                   "/join readers")
    bob.expect(re.escape("[#readers] * carol joined"))
    shown = typed(chateau.url, "carol", "/join chess")  # public, but by invitation only
    assert any(line.startswith("! could not join chess: ") and line.endswith("(403)")
               for line in shown), shown
    assert finish(bob) == 0


def test_membership_commands_over_a_real_server(chateau, tmp_path: Path):
    sign_up(chateau.url, "alice", "bob", "carol", "dave", "erin")
    new_group(chateau.url, "alice", "club", "bob")
    bob = spawn(chateau.url, "bob", tmp_path)
    bob.expect("signed in as bob")
    carol = spawn(chateau.url, "carol", tmp_path)
    carol.expect("signed in as carol")

    # /add: the added user is told, the others see a system line.
    assert "* added carol to club (already members: bob)" in typed(
        chateau.url, "alice", "/add club carol bob")
    carol.expect(r"you are in #club, started by alice \(members: alice, bob, carol\)")
    bob.expect(r"\[#club\] \* alice added carol")
    assert "! nobody added to club: no such user: 'nobody-here' (404)" in typed(
        chateau.url, "alice", "/add club nobody-here")

    # /mute and /unmute: a muted member reads but cannot send.
    shown = typed(chateau.url, "alice", "/mute club carol 30")
    assert any(re.fullmatch(r"\* muted carol in club until [-\d: ]+", line) for line in shown)
    carol.expect(r"\[#club\] \* alice muted you until")
    carol.send("/msg club hello?\r")
    carol.expect(r"! message to #club not sent: you are muted in 'club' until \S+ \(403\)")
    assert "* carol is not muted in club" in typed(chateau.url, "alice", "/unmute club carol")
    carol.expect(r"\[#club\] \* alice unmuted you")

    # /kick with a reason: the removed member is told who and why.
    assert "* removed carol from club" in typed(chateau.url, "alice",
                                                "/kick club carol off topic")
    carol.expect(re.escape("* you were removed from #club by alice: off topic"))
    bob.expect(re.escape("[#club] * alice removed carol: off topic"))
    # Not an admin: refused with the server's words.
    bob.send("/kick club alice\r")
    bob.expect(r"! could not remove alice: .+ \(403\)")

    # /ban keeps carol out until /unban.
    assert "* banned carol from club" in typed(chateau.url, "alice", "/ban club carol spam")
    assert "! nobody added to club: 'carol' is banned from 'club' (409)" in typed(
        chateau.url, "alice", "/add club carol")
    shown = typed(chateau.url, "alice", "/info club")
    assert any(re.fullmatch(r"  banned: carol by alice (at|on) [-\d: ]+: spam", line)
               for line in shown)
    assert "* carol is no longer banned from club" in typed(chateau.url, "alice",
                                                           "/unban club carol")
    assert "! could not unban carol: 'carol' is not banned from 'club' (404)" in typed(
        chateau.url, "alice", "/unban club carol")

    # /invite and /join with the code; a used-up code is refused in words.
    shown = typed(chateau.url, "alice", "/invite club --uses 1 --hours 2")
    code = next(re.fullmatch(r"\* invite code for #?club: (\S+) \(up to 1 use, until .+\)", line)
                for line in shown if line.startswith("* invite code")).group(1)
    assert f"  others join with: /join {code}" in shown
    assert "* joined #club; /to club to talk there" in typed(chateau.url, "dave", f"/join {code}")
    bob.expect(r"\[#club\] \* dave joined")
    shown = typed(chateau.url, "erin", f"/join {code}")
    assert any(line.startswith(f"! could not join {code}:") and
               "no such invite code (or it has expired or been used up) (404)" in line
               for line in shown), shown
    # A member joining again is told so; a private group is not joined by its name.
    shown = typed(chateau.url, "alice", "/invite club")
    again = next(re.fullmatch(r"\* invite code for #?club: (\S+) \(any number of uses, until .+\)",
                              line) for line in shown if line.startswith("* invite code")).group(1)
    assert "* you are already in #club" in typed(chateau.url, "dave", f"/join {again}")
    shown = typed(chateau.url, "erin", "/join #club")
    assert any(line.startswith("! could not join club: ") and line.endswith("(403)")
               for line in shown), shown

    # A departure is told once, though it comes both as GroupMemberLeftRecv and as an event.
    shown = typed(chateau.url, "dave", "/leave club")
    assert any(re.fullmatch(r"\* you left #?club", line) for line in shown), shown
    bob.expect("dave left")
    result = run_cli(chateau.url, "--user", "alice", "--send", "-", "--wait", "0.5", "--strict",
                     password="pw", input=json.dumps(
                         {"type": "GroupMessageRequest", "recipient": "club", "content": "marker"}))
    assert result.returncode == 0, result.stdout
    bob.expect(re.escape("[#club] alice: marker"))
    assert "dave left" not in bob.before
    assert finish(bob) == 0
    assert finish(carol) == 0


def test_blocks_and_settings_over_a_real_server(chateau, tmp_path: Path):
    sign_up(chateau.url, "alice", "bob", "carol")
    new_group(chateau.url, "carol", "club", "alice", "bob")

    shown = typed(chateau.url, "alice", "/block Bob", "/block alice", "/block nobody-here")
    assert "* blocked bob" in shown
    assert any(line.startswith("! could not block alice: ") and line.endswith("(400)")
               for line in shown), shown
    assert any(line.startswith("! could not block nobody-here: ") and line.endswith("(404)")
               for line in shown), shown
    shown = typed(chateau.url, "alice", "/blocked")
    assert any(re.fullmatch(r"\* blocked: bob \(since [-\d: ]+\)", line) for line in shown)

    # bob's messages in the shared group are hidden from alice, not from carol.
    result = run_cli(chateau.url, "--user", "bob", "--send", "-", "--wait", "0.5", "--strict",
                     password="pw", input=json.dumps(
                         {"type": "GroupMessageRequest", "recipient": "club", "content": "psst"}))
    assert result.returncode == 0, result.stdout
    shown = typed(chateau.url, "alice", "/history club")
    assert any(re.fullmatch(r"[-\d: ]+ \[#club\] \(a message from someone you blocked, hidden\)",
                            line) for line in shown), shown
    assert not any("psst" in line for line in shown)
    assert any(line.endswith("[#club] bob: psst") for line in typed(chateau.url, "carol",
                                                                   "/history club"))

    shown = typed(chateau.url, "alice", "/unblock bob")
    assert "* unblocked bob" in shown
    assert "* you have blocked nobody" in typed(chateau.url, "alice", "/blocked")

    # /settings reads and changes; the server holds them to it.
    assert ("* settings: direct_messages everyone, presence everyone, random_chat on,"
            " read_receipts on") in typed(chateau.url, "alice", "/settings")
    shown = typed(chateau.url, "alice", "/settings direct_messages contacts random_chat off")
    assert ("* settings: direct_messages contacts, presence everyone, random_chat off,"
            " read_receipts on") in shown
    shown = typed(chateau.url, "carol", "/msg alice hello")
    assert ("! message to alice not sent: 'alice' accepts direct messages from contacts only"
            " (403)") in shown
    shown = typed(chateau.url, "alice", "/settings presence friends")
    assert shown[-1].startswith("! /settings: presence must be everyone or contacts or nobody")


def test_operators_over_a_real_server(chateau, tmp_path: Path):
    sign_up(chateau.url, "root", "bob", "carol", "eve")
    make_admin(chateau, "root")
    eve = spawn(chateau.url, "eve", tmp_path)
    eve.expect("signed in as eve")
    eve_script = piped(chateau.url, "eve")
    try:
        wait_for_line(eve_script, "signed in as eve")

        # /announce: everyone online at once, set apart; the others at sign-in.
        shown = typed(chateau.url, "root", "/announce The server restarts at 18:00 UTC")
        assert shown[0].startswith("* signed in as root (a server admin) on ")
        assert any(re.fullmatch(r"\* announcement \d+ sent to everyone", line) for line in shown)
        eve.expect(r"!! announcement from root: The server restarts at 18:00 UTC  \(\d\d:\d\d\)")
        shown = typed(chateau.url, "carol", "/who")
        # Once, whichever way it comes: at sign-in (while you were offline), or
        # live when the node's poll of the announcement runs after the sign-in.
        told = [line for line in shown if re.fullmatch(
            r"!! announcement from root: The server restarts at 18:00 UTC"
            r"  \([-\d: ]+(, while you were offline)?\)", line)]
        assert len(told) == 1, shown
        shown = typed(chateau.url, "bob", "/announce me too", "/userban eve spam")
        assert any(line.startswith("! announcement not sent: ") and line.endswith("(403)")
                   for line in shown), shown
        assert any(line.startswith("! could not ban eve: ") and line.endswith("(403)")
                   for line in shown), shown

        # /userban: eve's connections close with 4003; both her clients exit 3.
        shown = typed(chateau.url, "root", "/userban eve 24 flooding the lobby")
        assert any(re.fullmatch(r"\* banned eve from the server until [-\d: ]+", line)
                   for line in shown), shown
        eve.expect(re.escape("! the server closed the connection: you are banned from it"
                             " (banned)"))
        eve.expect(pexpect.EOF)
        eve.close()
        assert eve.exitstatus == 3
        wait_for_line(eve_script, "you are banned from it")
        status = eve_script.wait(timeout=15)
        assert status == 3, eve_script.stdout.read()
    finally:
        if eve_script.poll() is None:
            eve_script.kill()
            eve_script.wait()
    refused = run_cli(chateau.url, "--user", "eve", password="pw", input="")
    assert refused.returncode == 3
    assert re.search(r"! sign-in failed: banned until \S+: flooding the lobby", refused.stdout)

    # /userunban lets her back.
    assert "* eve may sign in again" in typed(chateau.url, "root", "/userunban eve")
    assert typed(chateau.url, "eve", "/who")[0].startswith("* signed in as eve on ")
    shown = typed(chateau.url, "root", "/userunban eve")
    assert any(line.startswith("! could not unban eve: ") for line in shown), shown
