"""Durable chat over the wire: history, offline delivery, sessions, contacts,
edit and delete, heartbeat, group members, the HTTP user API."""

from __future__ import annotations

import functools
import json

from twisted.internet import reactor
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from tests.deferreds import inline, sleep
from tests.wsclient import send_message as send


async def make_group(creator, chatname: str, *members: str) -> None:
    reply = await creator.request({"type": "GroupMessageInitRequest",
                                   "recipients": list(members), "chatname": chatname})
    assert reply["status"] == 200, reply


# -- history -----------------------------------------------------------------

@inline
async def test_history_pages_newest_first(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    await make_group(alice, "team", "bob")
    await bob.expect("GroupMessageInitResponse")
    ids = [(await send(alice, "team", f"m{n}"))["id"] for n in range(7)]
    for _ in ids:
        await bob.recv()
    assert ids == sorted(ids)
    page = await bob.request({"type": "HistoryRequest", "chatname": "Team", "limit": 3,
                              "msg_id": "h"})
    assert page["type"] == "HistoryResponse" and page["chatname"] == "team"
    assert page["msg_id"] == "h" and page["more"] is True
    assert [m["content"] for m in page["messages"]] == ["m6", "m5", "m4"]
    first = page["messages"][0]
    assert first == {"id": ids[6], "sender": "alice", "content": "m6",
                     "timestamp": first["timestamp"], "edited": False, "deleted": False}
    page = await bob.request({"type": "HistoryRequest", "chatname": "team", "limit": 3,
                              "before": page["messages"][-1]["id"]})
    assert [m["content"] for m in page["messages"]] == ["m3", "m2", "m1"]
    page = await bob.request({"type": "HistoryRequest", "chatname": "team",
                              "before": page["messages"][-1]["id"]})
    assert [m["content"] for m in page["messages"]] == ["m0"] and page["more"] is False


@inline
async def test_history_of_direct_chat_and_errors(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    eve = await server.client("eve")
    await send(alice, "bob", "hi bob")
    await bob.expect("MessageRecv")
    await send(bob, "alice", "hi alice")
    await alice.expect("MessageRecv")
    page = await alice.request({"type": "HistoryRequest", "user": "bob"})
    assert page["user"] == "bob"
    assert [(m["sender"], m["content"]) for m in page["messages"]] == [
        ("bob", "hi alice"), ("alice", "hi bob")]
    page = await eve.request({"type": "HistoryRequest", "user": "bob"})
    assert page["messages"] == []  # eve's own (empty) conversation with bob
    await make_group(alice, "secret", "bob")
    denied = await eve.request({"type": "HistoryRequest", "chatname": "secret"})
    assert denied["status"] == 403
    missing = await eve.request({"type": "HistoryRequest", "chatname": "nothing"})
    assert missing["status"] == 404
    assert (await eve.request({"type": "HistoryRequest", "user": "ghost"}))["status"] == 404
    for bad in ({}, {"chatname": "secret", "user": "bob"}, {"user": "bob", "limit": 101},
                {"user": "bob", "limit": 0}):
        reply = await alice.request({"type": "HistoryRequest", **bad})
        assert reply["status"] == 400, (bad, reply)


# -- offline delivery ----------------------------------------------------------

@inline
async def test_offline_messages_arrive_at_sign_in_in_order_once(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    await make_group(alice, "team", "bob")
    await bob.close()
    sent = [await send(alice, "bob", "direct 1"), await send(alice, "team", "group 2"),
            await send(alice, "bob", "direct 3")]
    bob = await server.client()
    reply = await bob.request({"type": "RegisterRequest", "username": "bob",
                               "password": "secret"})
    assert reply["type"] == "RegisterResponse"
    missed = [await bob.recv() for _ in sent]
    assert [m["id"] for m in missed] == [s["id"] for s in sent]
    assert all(m["offline"] is True for m in missed)
    assert missed[0]["type"] == "MessageRecv" and missed[0]["chatname"] == "alice"
    assert missed[1]["type"] == "GroupMessageRecv" and missed[1]["chatname"] == "team"
    await bob.nothing()
    # Live now: nothing is pushed twice, on this connection or the next.
    live = await send(alice, "bob", "live 4")
    got = await bob.expect("MessageRecv", content="live 4")
    assert "offline" not in got and got["id"] == live["id"]
    await bob.close()
    bob = await server.client("bob")
    await bob.nothing(0.3)


@inline
async def test_offline_delivery_skips_own_and_deleted_messages(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    await make_group(alice, "team", "bob")
    await bob.close()
    gone = await send(alice, "team", "oops")
    await alice.request({"type": "MessageDeleteRequest", "id": gone["id"]})
    kept = await send(alice, "team", "kept")
    bob = await server.client("bob")
    got = await bob.expect("GroupMessageRecv", content="kept", offline=True)
    assert got["id"] == kept["id"]
    await bob.nothing()


@inline
async def test_second_connection_gets_no_replay(server):
    bob = await server.client("bob")
    await bob.close()
    alice = await server.client("alice")
    await send(alice, "bob", "while away")
    first = await server.client("bob")
    await first.expect("MessageRecv", offline=True)
    second = await server.client("bob")
    await second.nothing()


# -- sessions ------------------------------------------------------------------

@inline
async def test_resume_logout_and_bad_keys(server):
    alice = await server.client()
    reply = await alice.request({"type": "RegisterRequest", "username": "alice",
                                 "password": "secret"})
    key = reply["session_key"]
    other = await server.client()
    resumed = await other.request({"type": "ResumeRequest", "session_key": key, "msg_id": 1})
    assert resumed.pop("session_id") == reply["session_id"]
    assert resumed == {"type": "ResumeResponse", "status": 200, "username": "alice", "unread_total": 0,
                       "msg_id": 1}
    assert (await other.request({"type": "ResumeRequest", "session_key": key}))["status"] == 302
    bad = await server.client()
    reply = await bad.request({"type": "ResumeRequest", "session_key": key + "x"})
    assert reply["status"] == 301 and "session key" in reply["detail"]
    out = await other.request({"type": "LogoutRequest", "msg_id": 2})
    assert out == {"type": "LogoutResponse", "status": 200, "msg_id": 2}
    assert (await other.request({"type": "ClientListRequest"}))["status"] == 301
    again = await server.client()
    assert (await again.request({"type": "ResumeRequest", "session_key": key}))["status"] == 301


@inline
async def test_session_keys_expire(server_factory, config_factory):
    running = await server_factory(config_factory(chat={"session_lifetime_days": "0.00001"}))
    alice = await running.client()
    key = (await alice.request({"type": "RegisterRequest", "username": "alice",
                                "password": "pw"}))["session_key"]
    await sleep(1.2)
    late = await running.client()
    reply = await late.request({"type": "ResumeRequest", "session_key": key})
    assert reply["status"] == 301


@inline
async def test_resume_delivers_missed_messages(server):
    bob = await server.client()
    key = (await bob.request({"type": "RegisterRequest", "username": "bob",
                              "password": "pw"}))["session_key"]
    await bob.close()
    alice = await server.client("alice")
    await send(alice, "bob", "catch up")
    bob = await server.client()
    bob.send({"type": "ResumeRequest", "session_key": key})
    await bob.expect("ResumeResponse", username="bob")
    await bob.expect("MessageRecv", content="catch up", offline=True)


# -- contacts and presence -------------------------------------------------------

@inline
async def test_contacts_request_accept_presence_remove(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    reply = await alice.request({"type": "ContactRequest", "username": "Bob", "msg_id": 1})
    assert reply == {"type": "ContactRequestResponse", "status": 200, "username": "bob",
                     "state": "pending", "msg_id": 1}
    await bob.expect("ContactRequestRecv", **{"from": "alice"})
    listing = await bob.request({"type": "ContactListRequest"})
    assert listing["contacts"] == []
    assert listing["pending"] == [{"username": "alice", "direction": "incoming"}]
    reply = await bob.request({"type": "ContactAccept", "username": "alice"})
    assert reply["type"] == "ContactAcceptResponse" and reply["online"] is True
    await alice.expect("ContactAcceptRecv", username="bob", online=True)
    listing = await alice.request({"type": "ContactListRequest"})
    assert listing["contacts"] == [{"username": "bob", "online": True}]
    assert listing["pending"] == []
    await bob.close()
    await alice.expect("PresenceRecv", username="bob", online=False)
    bob = await server.client("bob")
    await alice.expect("PresenceRecv", username="bob", online=True)
    reply = await bob.request({"type": "ContactRemove", "username": "alice"})
    assert reply["type"] == "ContactRemoveResponse"
    await alice.expect("ContactRemoveRecv", username="bob")
    assert (await alice.request({"type": "ContactListRequest"}))["contacts"] == []
    await bob.close()
    await alice.nothing()  # no presence for someone who is no longer a contact


@inline
async def test_contact_request_waits_for_offline_user_and_deny(server):
    carol = await server.client("carol")
    await carol.close()
    alice = await server.client("alice")
    await alice.request({"type": "ContactRequest", "username": "carol"})
    carol = await server.client("carol")
    await carol.expect("ContactRequestRecv", **{"from": "alice"})
    reply = await carol.request({"type": "ContactDeny", "username": "alice"})
    assert reply["type"] == "ContactDenyResponse"
    assert (await carol.request({"type": "ContactDeny", "username": "alice"}))["status"] == 404
    assert (await alice.request({"type": "ContactListRequest"}))["pending"] == []
    for bad, status in (("ghost", 404), ("alice", 400)):
        reply = await alice.request({"type": "ContactRequest", "username": bad})
        assert reply["status"] == status
    assert (await alice.request({"type": "ContactAccept", "username": "carol"}))["status"] == 404
    assert (await alice.request({"type": "ContactRemove", "username": "carol"}))["status"] == 404


@inline
async def test_mutual_requests_make_contacts(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    await alice.request({"type": "ContactRequest", "username": "bob"})
    await bob.expect("ContactRequestRecv")
    reply = await bob.request({"type": "ContactRequest", "username": "alice"})
    assert reply.get("state") == "contact", reply
    await alice.expect("ContactAcceptRecv", username="bob")


# -- edit and delete ---------------------------------------------------------------

@inline
async def test_edit_and_delete_only_by_author(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    await make_group(alice, "team", "bob")
    await bob.expect("GroupMessageInitResponse")
    ack = await send(alice, "team", "helo")
    await bob.expect("GroupMessageRecv")
    denied = await bob.request({"type": "MessageEditRequest", "id": ack["id"], "content": "x"})
    assert denied["status"] == 403
    assert (await bob.request({"type": "MessageDeleteRequest", "id": ack["id"]}))["status"] == 403
    reply = await alice.request({"type": "MessageEditRequest", "id": ack["id"],
                                 "content": "hello", "msg_id": 3})
    assert reply == {"type": "MessageEditResponse", "status": 200, "id": ack["id"], "msg_id": 3}
    await bob.expect("MessageEdited", id=ack["id"], chatname="team", sender="alice",
                     content="hello")
    page = await bob.request({"type": "HistoryRequest", "chatname": "team"})
    assert page["messages"][0]["content"] == "hello" and page["messages"][0]["edited"] is True
    reply = await alice.request({"type": "MessageDeleteRequest", "id": ack["id"]})
    assert reply["type"] == "MessageDeleteResponse"
    await bob.expect("MessageDeleted", id=ack["id"], chatname="team")
    page = await bob.request({"type": "HistoryRequest", "chatname": "team"})
    assert page["messages"][0]["deleted"] is True and page["messages"][0]["content"] is None
    gone = await alice.request({"type": "MessageEditRequest", "id": ack["id"], "content": "y"})
    assert gone["status"] == 404
    assert (await alice.request({"type": "MessageDeleteRequest", "id": 999999}))["status"] == 404


@inline
async def test_edit_direct_message_tells_the_recipient(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    ack = await send(alice, "bob", "typo")
    await bob.expect("MessageRecv")
    await alice.request({"type": "MessageEditRequest", "id": ack["id"], "content": "fixed"})
    await bob.expect("MessageEdited", chatname="alice", content="fixed")


# -- heartbeat, members, leave ---------------------------------------------------

@inline
async def test_heartbeat_echoes_payload_even_before_sign_in(server):
    client = await server.client()
    reply = await client.request({"type": "HeartbeatRequest", "payload": {"t": 1}, "msg_id": 9})
    assert reply == {"type": "HeartbeatResponse", "status": 200, "payload": {"t": 1},
                     "msg_id": 9}


@inline
async def test_group_members_with_presence(server):
    alice = await server.client("alice")
    await server.client("bob")
    carol = await server.client("carol")
    await make_group(alice, "team", "bob", "carol")
    await carol.close()
    reply = await alice.request({"type": "GroupMembersRequest", "chatname": "team"})
    none = {"display_name": None, "status_text": None}
    assert reply["members"] == [{"username": "alice", "online": True, **none},
                                {"username": "bob", "online": True, **none},
                                {"username": "carol", "online": False, **none}]
    eve = await server.client("eve")
    assert (await eve.request({"type": "GroupMembersRequest", "chatname": "team"}))["status"] == 403


@inline
async def test_group_info_gives_roles_and_settings_and_an_owner_always_remains(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    carol = await server.client("carol")
    await make_group(alice, "team", "bob", "carol")
    await bob.expect("GroupMessageInitResponse", chatname="team")
    await carol.close()
    reply = await bob.request({"type": "GroupInfoRequest", "chatname": "team", "msg_id": 2})
    assert reply["type"] == "GroupInfoResponse" and reply["msg_id"] == 2, reply
    assert reply["creator"] == "alice" and reply["topic"] == ""
    assert reply["settings"]["who_can_send"] == "everyone"
    assert [(m["username"], m["role"], m["online"]) for m in reply["members"]] == [
        ("alice", "owner", True), ("bob", "member", True), ("carol", "member", False)]
    assert (await alice.request({"type": "GroupLeaveRequest", "chatname": "team"}))["status"] == 200
    await bob.expect("GroupMemberLeftRecv", chatname="team", user="alice")
    await bob.expect("GroupEventRecv", chatname="team", event="left", user="alice", by="alice")
    reply = await bob.request({"type": "GroupInfoRequest", "chatname": "team"})
    assert [(m["username"], m["role"]) for m in reply["members"]] == [
        ("bob", "owner"), ("carol", "member")]
    eve = await server.client("eve")
    assert (await eve.request({"type": "GroupInfoRequest", "chatname": "team"}))["status"] == 403


@inline
async def test_group_roles_are_set_by_owners_and_told_to_members(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    await make_group(alice, "team", "bob")
    await bob.expect("GroupMessageInitResponse", chatname="team")
    reply = await alice.request({"type": "GroupRoleRequest", "chatname": "team", "user": "bob",
                                 "role": "owner", "msg_id": 3})
    assert reply == {"type": "GroupRoleResponse", "status": 200, "chatname": "team",
                     "user": "bob", "role": "owner", "msg_id": 3}
    await bob.expect("GroupEventRecv", chatname="team", event="role", user="bob", by="alice",
                     role="owner")
    reply = await alice.request({"type": "GroupRoleRequest", "chatname": "team",
                                 "user": "alice", "role": "member"})
    assert reply["status"] == 200
    await bob.expect("GroupEventRecv", event="role", user="alice", role="member")
    reply = await bob.request({"type": "GroupRoleRequest", "chatname": "team",
                               "user": "bob", "role": "admin"})
    assert reply["status"] == 409 and "must keep an owner" in reply["detail"], reply


# -- HTTP ------------------------------------------------------------------------

async def _http_get_as(key: str, url: str) -> tuple[int, dict]:
    return await http_get(url, key)


async def http_get(url: str, key: str | None = None) -> tuple[int, dict]:
    headers = Headers({b"authorization": [f"Bearer {key}".encode()]} if key else {})
    response = await Agent(reactor).request(b"GET", url.encode(), headers)
    body = await readBody(response)
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]
    return response.code, json.loads(body)


@inline
async def test_http_user_api_needs_a_live_session_key(server):
    alice = await server.client()
    key = (await alice.register("alice"))["session_key"]
    url = server.http_url + "api/users/alice"
    for given in (None, "not-a-key", "", "x" * 5000):
        code, body = await http_get(url, given)
        assert code == 401 and body["status"] == 401, (given, code, body)
    assert (await http_get(url, key))[0] == 200
    # A revoked key (signed out) no longer looks anyone up.
    assert (await alice.request({"type": "LogoutRequest"}))["status"] == 200
    assert (await http_get(url, key))[0] == 401


@inline
async def test_who_is_online_is_told_only_to_signed_in_connections(server):
    await server.client("alice")
    stranger = await server.client()
    reply = await stranger.request({"type": "ClientListRequest"})
    assert reply["status"] == 301 and "clients" not in reply
    await stranger.register("bob")
    assert (await stranger.request({"type": "ClientListRequest"}))["clients"] == ["alice"]


@inline
async def test_http_user_api_may_be_public(server_factory, config_factory):
    running = await server_factory(config_factory(server={"public_user_lookup": "true"}))
    await running.client("alice")
    code, body = await http_get(running.http_url + "api/users/alice")
    assert code == 200 and body["username"] == "alice"


@inline
async def test_http_user_api(server):
    alice = await server.client()
    key = (await alice.register("alice"))["session_key"]
    bob = await server.client("bob")
    await bob.close()
    http_get = functools.partial(_http_get_as, key)
    code, body = await http_get(server.http_url + "api/users/Alice")
    assert code == 200 and body == {"username": "alice", "display_name": None,
                                    "status_text": None, "online": True}
    code, body = await http_get(server.http_url + "api/users/bob")
    assert code == 200 and body["online"] is False
    code, body = await http_get(server.http_url + "api/users/nobody")
    assert code == 404 and body["status"] == 404 and "nobody" in body["detail"]
    code, body = await http_get(server.http_url + "api/users/a*b")
    assert code == 404


@inline
async def test_member_offline_at_group_creation_is_told_at_sign_in(server):
    carol = await server.client("carol")
    await carol.close()
    alice = await server.client("alice")
    await make_group(alice, "later", "carol")
    await send(alice, "later", "welcome")
    carol = await server.client("carol")
    await carol.expect("GroupMessageInitResponse", status=201, chatname="later",
                       creator="alice", members=["alice", "carol"], offline=True)
    await carol.expect("GroupMessageRecv", content="welcome", offline=True)
    await carol.close()
    carol = await server.client("carol")
    await carol.nothing()


@inline
async def test_ephemeral_mode_stores_nothing_and_says_so(server_factory, config_factory):
    running = await server_factory(config_factory(chat={"store_messages": "false"}))
    alice = await running.client("alice")
    bob = await running.client("bob")
    await make_group(alice, "team", "bob")
    await bob.expect("GroupMessageInitResponse")
    first = await send(alice, "team", "one")
    second = await send(alice, "bob", "two")
    assert second["id"] > first["id"]
    await bob.expect("GroupMessageRecv", content="one", id=first["id"])
    await bob.expect("MessageRecv", content="two")
    for request in ({"type": "HistoryRequest", "chatname": "team"},
                    {"type": "MessageEditRequest", "id": first["id"], "content": "x"},
                    {"type": "MessageDeleteRequest", "id": first["id"]}):
        reply = await alice.request(request)
        assert reply["status"] == 501 and "store_messages = false" in reply["detail"], reply
    await bob.close()
    reply = await alice.request({"type": "MessageRequest", "recipient": "bob", "content": "x"})
    assert reply["status"] == 404 and "keeps no messages" in reply["detail"]
    assert (await send(alice, "team", "to nobody online"))["id"] > second["id"]
    bob = await running.client("bob")
    await bob.nothing()


@inline
async def test_sqlite_wal_checkpoints_run_on_the_store_pool_not_the_writer(server, monkeypatch):
    import threading

    from chateau.store import engine as engine_module

    writer = server.service.store.writer
    if server.service.engine.dialect.name != "sqlite":
        assert writer._checkpoint is None  # only SQLite has a WAL to copy back
        return
    seen = []
    real = engine_module.checkpoint_txn

    def spy(connection):
        result = real(connection)
        seen.append((threading.current_thread().name, result))
        return result

    monkeypatch.setattr(engine_module, "checkpoint_txn", spy)
    monkeypatch.setattr(writer, "_checkpoint_every", 5)
    alice = await server.client("alice")
    await server.client("bob")
    # A checkpoint still running when the next is due is not doubled: the
    # next commit after it ends starts one. So, on a busy machine, keep
    # sending (a bounded number) until two have run.
    for n in range(60):
        await send(alice, "bob", f"m{n}")
        if len(seen) >= 2:
            break
        if n >= 10:
            await sleep(0.05)
    assert len(seen) >= 2, seen
    for thread, (busy, pages, copied) in seen:
        assert thread.startswith("PoolThread-chateau-db-") and "writer" not in thread
        assert busy == 0 and pages > 0 and copied == pages


@inline
async def test_a_direct_chat_is_recorded_with_its_first_committed_message_only(server):
    """Offline delivery finds direct messages through direct_chats: the rows
    must be there from a chat's first message on, written once, and never
    taken for written when their batch failed."""
    from sqlalchemy import delete, select

    from chateau.store.tables import direct_chats

    store = server.service.store
    writer = store.writer

    def rows(connection):
        return sorted(tuple(row) for row in connection.execute(select(direct_chats)))

    def forget(connection):
        connection.execute(delete(direct_chats))

    await writer.add("@ann:ben", "ann", "first", "ben")
    assert await store.runner.run(rows) == [("ann", "@ann:ben"), ("ben", "@ann:ben")]
    # Known now: the chat's next messages write no rows (these were removed).
    await store.runner.run(forget)
    await writer.add("@ann:ben", "ben", "second", "ann")
    await writer.add("@ann:ben", "ann", "third", "ben")
    assert await store.runner.run(rows) == []
    # A batch that fails (here a NULL chat name) records none of its chats...
    failing = [writer.add("@cat:dan", "cat", "lost", "dan"), writer.add(None, "cat", "bad", "dan")]
    for done in failing:
        try:
            await done
        except Exception:
            pass
        else:
            raise AssertionError("the batch should have failed")
    assert await store.runner.run(rows) == []
    # ...so the chat's next committed message does; group messages add none.
    await writer.add("@cat:dan", "dan", "again", "cat")
    await writer.add("team", "dan", "to the group", None)
    assert await store.runner.run(rows) == [("cat", "@cat:dan"), ("dan", "@cat:dan")]
