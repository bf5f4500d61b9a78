"""Signing users out everywhere: ``chateau-admin user passwd`` and ``user
disable`` close the account's live connections within a second, with close
code 4001 ("sign in again"), on a real ``twistd`` server."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from twisted.internet.threads import deferToThread

from tests.deferreds import inline
from tests.processes import TwistdServer, checkout_env
from tests.wsclient import connect

SIGNED_OUT = 4001


def run_admin(config: Path, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    env = checkout_env(**({"CHATEAU_PASSWORD": password} if password is not None else {}))
    return subprocess.run(
        [sys.executable, "-m", "chateau.admin", "--config", str(config), *args],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )


def server_config(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "chateau.ini"
    path.write_text(
        f"[database]\nurl = {database_url}\n[auth]\nbcrypt_cost = 4\n"
        # The old periodic check must not be what closes them.
        "[chat]\naccount_check_interval = 60\n"
    )
    return path


async def admin_then_closed(config: Path, client, *args: str, password: str | None = None):
    """Run chateau-admin; the close code the client got and the seconds after the command."""
    result = await deferToThread(run_admin, config, *args, password=password)
    assert result.returncode == 0, result.stderr
    done = time.monotonic()
    code = await client.closed(timeout=5)
    return code, time.monotonic() - done, result


@inline
async def test_password_reset_and_disable_close_live_connections_at_once(tmp_path, database_url):
    config = server_config(tmp_path, database_url)
    with TwistdServer(tmp_path / "node", "--config", str(config)) as node:
        alice = await connect(node.url)
        assert (await alice.register("alice", "old"))["status"] == 200
        second = await connect(node.url)
        assert (await second.register("alice", "old"))["status"] == 200
        bob = await connect(node.url)
        assert (await bob.register("bob", "pw"))["status"] == 200

        code, after, result = await admin_then_closed(
            config, alice, "user", "passwd", "alice", password="new"
        )
        assert code == SIGNED_OUT and after < 1.0, (code, after)
        assert await second.closed(timeout=1) == SIGNED_OUT
        assert "close code 4001" in result.stdout
        # Everyone else carries on; the new password signs in.
        assert (await bob.request({"type": "ClientListRequest"}))["clients"] == []
        again = await connect(node.url)
        assert (await again.register("alice", "new"))["status"] == 200

        code, after, _ = await admin_then_closed(config, again, "user", "disable", "alice")
        assert code == SIGNED_OUT and after < 1.0, (code, after)
        assert (await bob.request({"type": "HeartbeatRequest"}))["status"] == 200
        await bob.close()
    assert "Traceback" not in node.output()


@inline
async def test_only_revoked_accounts_are_signed_out(server_factory, config_factory):
    """A key logged out on one connection does not sign out another one that
    shares it unless the account was revoked: only revocations close."""
    from tests.deferreds import sleep

    config = config_factory(chat={"revocation_check_interval": "0.05"})
    running = await server_factory(config)
    alice = await running.client()
    key = (await alice.register("alice"))["session_key"]
    shared = await running.client()
    assert (await shared.request({"type": "ResumeRequest", "session_key": key}))["status"] == 200
    assert (await shared.request({"type": "LogoutRequest"}))["status"] == 200
    await sleep(0.5)
    assert (await alice.request({"type": "HeartbeatRequest"}))["status"] == 200
