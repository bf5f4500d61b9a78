"""Operators over real sockets, on SQLite and PostgreSQL: announcements, bans,
deletion by admins; and chateau-admin's moderation commands reaching a
running ``twistd`` within a second."""

from __future__ import annotations

import time
from getpass import getuser
from pathlib import Path

from twisted.internet.threads import deferToThread

from tests.deferreds import inline, sleep
from tests.processes import TwistdServer
from tests.test_revocation import run_admin, server_config
from tests.wsclient import connect

BANNED = 4003


async def make_admin(server, name: str = "root"):
    first = await server.client(name)
    await first.close()
    assert await server.service.store.accounts.set_admin(name, True)
    admin = await server.client()
    reply = await admin.register(name)
    assert reply["admin"] is True
    return admin


@inline
async def test_an_announcement_reaches_users_online_now_and_the_others_at_sign_in(server):
    root = await make_admin(server)
    alice = await server.client("alice")
    bob = await server.client("bob")
    await bob.close()
    root.send({"type": "AnnounceRequest", "content": "tea at five", "msg_id": "a"})
    # The announcer's own connection gets it too (pushed before the reply).
    own = await root.expect("AnnouncementRecv", content="tea at five")
    reply = await root.expect("AnnounceResponse", status=201, msg_id="a", id=own["id"])
    live = await alice.expect("AnnouncementRecv", id=reply["id"], content="tea at five",
                              by="root")
    assert "offline" not in live
    await alice.nothing(1.0)  # the notice polled afterwards pushes nothing twice
    back = await server.client()
    await back.register("bob")
    await back.expect("AnnouncementRecv", id=reply["id"], offline=True)
    later = await server.client()
    await later.register("carol")
    await later.nothing(0.3)
    refused = await alice.request({"type": "AnnounceRequest", "content": "me too"})
    assert refused["status"] == 403


@inline
async def test_a_ban_closes_connections_and_refuses_sign_in_with_its_reason(server):
    root = await make_admin(server)
    eve = await server.client("eve", "pw")
    other = await server.client()
    await other.register("eve", "pw")
    reply = await root.request({"type": "UserBanRequest", "username": "eve", "hours": 24,
                                "reason": "flooding"})
    assert reply["type"] == "UserBanResponse" and reply["until"].endswith("Z")
    for connection in (eve, other):
        assert await connection.closed(timeout=2) == BANNED
        assert connection.close_reason == "banned"
    again = await server.client()
    refused = await again.request({"type": "RegisterRequest", "username": "eve",
                                   "password": "pw"})
    assert refused["status"] == 403
    assert refused["detail"] == f"banned until {reply['until']}: flooding"
    assert (await root.request({"type": "UserBanRequest", "username": "root",
                                "reason": "x"}))["status"] == 400
    lifted = await root.request({"type": "UserUnbanRequest", "username": "eve"})
    assert lifted == {"type": "UserUnbanResponse", "status": 200, "username": "eve",
                      "msg_id": None}
    await again.register("eve", "pw")


@inline
async def test_a_server_admin_deletes_another_users_message(server):
    root = await make_admin(server)
    alice = await server.client("alice")
    bob = await server.client("bob")
    made = await alice.request({"type": "GroupMessageInitRequest", "recipients": ["bob"],
                                "chatname": "club"})
    assert made["status"] == 200
    await bob.expect("GroupMessageInitResponse", status=201)
    sent = await alice.request({"type": "MessageRequest", "recipient": "club",
                                "content": "spam"})
    await bob.expect("GroupMessageRecv")
    refused = await bob.request({"type": "MessageDeleteRequest", "id": sent["id"]})
    assert refused["status"] == 403
    deleted = await root.request({"type": "MessageDeleteRequest", "id": sent["id"]})
    assert deleted["type"] == "MessageDeleteResponse"
    for member in (alice, bob):
        await member.expect("MessageDeleted", id=sent["id"], chatname="club", sender="alice")


@inline
async def test_chateau_admin_announce_ban_and_delete_reach_a_running_server(
    tmp_path: Path, database_url: str,
):
    config = server_config(tmp_path, database_url)
    with TwistdServer(tmp_path / "node", "--config", str(config)) as node:
        alice = await connect(node.url)
        await alice.register("alice")
        bob = await connect(node.url)
        await bob.register("bob")
        await alice.request({"type": "GroupMessageInitRequest", "recipients": ["bob"],
                             "chatname": "club"})
        await bob.expect("GroupMessageInitResponse", status=201)
        sent = await alice.request({"type": "MessageRequest", "recipient": "club",
                                    "content": "oops"})
        await bob.expect("GroupMessageRecv")

        async def admin(*args: str) -> float:
            result = await deferToThread(run_admin, config, *args)
            assert result.returncode == 0, result.stderr
            return time.monotonic()

        done = await admin("announce", "restart at noon")
        await alice.expect("AnnouncementRecv", content="restart at noon", timeout=2)
        await bob.expect("AnnouncementRecv", content="restart at noon", timeout=2)
        assert time.monotonic() - done < 1.5

        done = await admin("message", "delete", str(sent["id"]))
        await bob.expect("MessageDeleted", id=sent["id"], chatname="club", timeout=2)
        await alice.expect("MessageDeleted", id=sent["id"], timeout=2)
        assert time.monotonic() - done < 1.5

        carol = await connect(node.url)
        await carol.register("carol")
        done = await admin("group", "add", "club", "carol")
        await carol.expect("GroupMessageInitResponse", status=201, chatname="club", timeout=2)
        await bob.expect("GroupEventRecv", event="added", user="carol", timeout=2)
        await alice.expect("GroupEventRecv", event="added", user="carol", timeout=2)
        assert time.monotonic() - done < 1.5
        said = await carol.request({"type": "MessageRequest", "recipient": "club",
                                    "content": "thanks"})
        assert said["type"] == "MessageSendResponse", said
        await bob.expect("GroupMessageRecv", content="thanks")
        await alice.expect("GroupMessageRecv", content="thanks")

        done = await admin("group", "delete", "club", "--reason", "closed")
        await bob.expect("GroupRemovedRecv", chatname="club", reason="closed", banned=False,
                         timeout=2)
        await alice.expect("GroupRemovedRecv", chatname="club", by=f"cli:{getuser()}",
                           timeout=2)
        assert time.monotonic() - done < 1.5
        gone = await alice.request({"type": "MessageRequest", "recipient": "club",
                                    "content": "hello?"})
        assert gone["status"] == 404

        done = await admin("user", "ban", "bob", "--reason", "spam")
        assert await bob.closed(timeout=2) == BANNED
        assert time.monotonic() - done < 1.5
        again = await connect(node.url)
        refused = await again.request({"type": "RegisterRequest", "username": "bob",
                                       "password": "secret"})
        assert refused["status"] == 403 and refused["detail"] == "banned until unbanned: spam"
        await carol.expect("GroupRemovedRecv", chatname="club")
        await sleep(0)
        await carol.close()
        await alice.close()
        await again.close()
    assert "Traceback" not in node.output()
