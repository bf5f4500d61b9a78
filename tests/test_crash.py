"""Acknowledged messages survive a crash, and state survives a restart."""

from __future__ import annotations

import signal

from tests.processes import Peer, TwistdServer


def test_kill_9_right_after_acks_loses_nothing(tmp_path, database_url):
    sent, acked = 240, 150  # under the 256 requests one connection may queue
    config = tmp_path / "fast.ini"
    config.write_text("[limits]\nmessage_rate = 100000\nmessage_burst = 1000\n")
    with TwistdServer(tmp_path, "--db", database_url, "--config", str(config)) as server:
        alice, bob = Peer(server.url), Peer(server.url)
        alice.sign_in("alice")
        bob.sign_in("bob")
        assert alice.request(type="GroupMessageInitRequest", recipients=["bob"],
                             chatname="log")["status"] == 200
        bob.close()
        for number in range(sent):
            alice.send(type="MessageRequest", recipient="log", content=f"seq {number}",
                       msg_id=number)
        acks = []
        while len(acks) < acked:
            reply = alice.recv()
            assert reply["type"] == "MessageSendResponse", reply
            acks.append(reply)
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    assert [ack["msg_id"] for ack in acks] == list(range(acked))

    with TwistdServer(tmp_path, "--db", database_url) as server:
        bob = Peer(server.url)
        bob.sign_in("bob")
        history = bob.history(chatname="log")
        ids = [m["id"] for m in history]
        contents = [m["content"] for m in history]
        assert len(set(ids)) == len(ids) and ids == sorted(ids)
        # Every acknowledged message is there, once, in the order sent; any
        # unacknowledged ones that made it follow them in order.
        assert contents[:acked] == [f"seq {n}" for n in range(acked)]
        assert contents == [f"seq {n}" for n in range(len(contents))]
        assert [m["id"] for m in history[:acked]] == [ack["id"] for ack in acks]
        # bob was offline throughout: each message was pushed to him once, in order.
        assert [(m["id"], m["offline"]) for m in bob.pushed] == [(i, True) for i in ids]
        bob.close()


def test_offline_delivery_and_membership_survive_a_restart(tmp_path, database_url):
    with TwistdServer(tmp_path, "--db", database_url) as server:
        alice, bob = Peer(server.url), Peer(server.url)
        alice.sign_in("alice")
        key = bob.sign_in("bob")["session_key"]
        alice.request(type="GroupMessageInitRequest", recipients=["bob"], chatname="team")
        bob.close()
        alice.request(type="MessageRequest", recipient="team", content="before restart")
        alice.request(type="ContactRequest", username="bob")
        alice.close()

    with TwistdServer(tmp_path, "--db", database_url) as server:
        bob = Peer(server.url)
        resumed = bob.request(type="ResumeRequest", session_key=key)
        assert resumed["type"] == "ResumeResponse" and resumed["username"] == "bob"
        frames = [bob.recv(), bob.recv()]
        assert frames[0] == {"type": "ContactRequestRecv", "status": 200, "from": "alice"}
        assert frames[1]["type"] == "GroupMessageRecv" and frames[1]["offline"] is True
        assert frames[1]["content"] == "before restart"
        # Back in the group without doing anything.
        ack = bob.request(type="MessageRequest", recipient="team", content="after restart")
        assert ack["type"] == "MessageSendResponse"
        bob.close()
