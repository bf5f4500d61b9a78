"""chateau-client's account commands against a real server: /sessions, /revoke,
/profile and /password, typed through a pipe into the real client talking to
a real ``twistd`` server (their parsing and words: tests/test_client_commands.py)."""

from __future__ import annotations

import json
import re

from tests.clientsupport import (  # noqa: F401  (chateau is a fixture)
    chateau,
    register,
    run_cli,
)
from tests.test_client_governance import typed


def test_sessions_revoke_profile_and_password_over_a_real_server(chateau):
    # A session kept by a scripted sign-in (--send does not sign out), named by its client.
    # --send waits for the sign-in's reply (bcrypt, unread_total), then 0.5 s of quiet.
    result = run_cli(chateau.url, "--send", "-", "--wait", "0.5", "--strict",
                     input=json.dumps(register("alice", client="script")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"RegisterResponse"' in result.stdout, result.stdout

    shown = typed(chateau.url, "alice", "/sessions")
    assert "--- your sessions: 2 ---" in shown, shown
    mine = [line for line in shown if line.endswith("(this one)")]
    assert len(mine) == 1 and "chateau-client, from 127.0.0.1, last used" in mine[0], shown
    other = [line for line in shown if "  script, from 127.0.0.1" in line]
    assert len(other) == 1, shown
    script_id = other[0].split()[0]
    assert re.fullmatch(r"[0-9a-f]{16}", script_id)

    shown = typed(chateau.url, "alice", f"/revoke {script_id}", f"/revoke {script_id}",
                  "/sessions")
    assert f"* session {script_id} signed out" in shown
    assert any(line.startswith(f"! session {script_id} not signed out: ")
               and line.endswith("(404)") for line in shown), shown
    assert "--- your sessions: 1 ---" in shown

    shown = typed(chateau.url, "alice", "/profile name Alice Liddell",
                  "/profile status down the rabbit hole", "/profile", "/profile status x\x07")
    assert '* alice: display name "Alice Liddell", status not set' in shown
    assert shown.count('* alice: display name "Alice Liddell", status "down the rabbit hole"') == 2
    assert any(line.startswith("! profile not changed: ") and line.endswith("(400)")
               for line in shown), shown

    shown = typed(chateau.url, "alice", "/password wrong new-pw", "/password pw new-pw")
    assert any(line.startswith("! password not changed: ") and line.endswith("(401)")
               for line in shown), shown
    assert "* password changed; your other sessions were signed out" in shown
    assert not any("new-pw" in line for line in shown)
    again = run_cli(chateau.url, "--user", "alice", password="new-pw", input="/profile\n")
    assert again.returncode == 0, again.stdout + again.stderr
    assert '* alice: display name "Alice Liddell", status "down the rabbit hole"' in (
        again.stdout.splitlines())
    old = run_cli(chateau.url, "--user", "alice", password="pw", input="/profile\n")
    assert old.returncode != 0 and "sign-in failed" in old.stdout + old.stderr
