"""The wire protocol over real loopback connections, one test per behaviour."""

from __future__ import annotations

import re
import time

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.python.threadpool import ThreadPool

from chateau import accounts
from chateau.auth.local import Hasher
from chateau.store.engine import make_engine
from tests.deferreds import inline
from tests.wsclient import RawClient, client_frame, connect

# -- RegisterRequest ---------------------------------------------------------

@inline
async def test_register_creates_account_and_echoes_msg_id(server):
    alice = await server.client()
    reply = await alice.request(
        {"type": "RegisterRequest", "username": "Alice", "password": "pw", "auth": False,
         "msg_id": {"any": ["json", 1]}}
    )
    key = reply.pop("session_key")
    session_id = reply.pop("session_id")
    assert reply == {"type": "RegisterResponse", "status": 200, "username": "alice", "unread_total": 0,
                     "msg_id": {"any": ["json", 1]}}
    assert isinstance(key, str) and len(key) >= 43  # 256 random bits, URL-safe base64
    assert len(session_id) == 16 and session_id not in key  # its public name


@inline
async def test_register_again_with_right_and_wrong_password(server):
    first = await server.client("alice", "pw")
    await first.close()
    again = await server.client()
    reply = await again.request(
        {"type": "RegisterRequest", "username": "ALICE", "password": "pw", "msg_id": 1})
    assert reply["type"] == "RegisterResponse" and reply["username"] == "alice"
    wrong = await server.client()
    reply = await wrong.request(
        {"type": "RegisterRequest", "username": "alice", "password": "nope", "msg_id": 2})
    assert reply["type"] == "ErrorResponse" and reply["status"] == 301
    assert "wrong username or password" in reply["detail"] and reply["msg_id"] == 2


@inline
async def test_register_twice_on_one_socket_is_302(server):
    alice = await server.client("alice")
    reply = await alice.request(
        {"type": "RegisterRequest", "username": "bob", "password": "pw", "msg_id": 7})
    assert reply["status"] == 302 and reply["type"] == "ErrorResponse"
    assert "already signed in as 'alice'" in reply["detail"] and reply["msg_id"] == 7


@inline
async def test_register_empty_password_is_301(server):
    client = await server.client()
    for password in ("", "   "):
        reply = await client.request(
            {"type": "RegisterRequest", "username": "alice", "password": password})
        assert reply["status"] == 301 and "empty password" in reply["detail"]


@inline
async def test_register_invalid_username_is_301(server):
    client = await server.client()
    for name in ("", "a" * 33, "bad name", "x*", "a,b", "(uid=*)", "~random"):
        reply = await client.request(
            {"type": "RegisterRequest", "username": name, "password": "pw"})
        assert reply["status"] == 301, (name, reply)
        assert "a username is" in reply["detail"]


@inline
async def test_register_directory_without_ldap_is_301(server):
    client = await server.client()
    reply = await client.request(
        {"type": "RegisterRequest", "username": "alice", "password": "pw", "auth": True})
    assert reply["status"] == 301 and "directory sign-in" in reply["detail"]
    assert "not configured" in reply["detail"]


@inline
async def test_register_closed_registration(server_factory, config_factory):
    running = await server_factory(config_factory(auth={"registration": "closed"}))
    client = await running.client()
    reply = await client.request(
        {"type": "RegisterRequest", "username": "newcomer", "password": "pw"})
    assert reply["status"] == 301
    assert "wrong username or password" in reply["detail"]


@inline
async def test_register_password_over_72_bytes_refused(server):
    client = await server.client()
    reply = await client.request(
        {"type": "RegisterRequest", "username": "alice", "password": "é" * 40})
    assert reply["status"] == 301 and "72 bytes" in reply["detail"]


@inline
async def test_username_cannot_take_a_group_name(server):
    alice = await server.client("alice")
    await server.client("bob")
    await alice.request(
        {"type": "GroupMessageInitRequest", "recipients": ["bob"], "chatname": "team"})
    thief = await server.client()
    reply = await thief.request(
        {"type": "RegisterRequest", "username": "team", "password": "pw"})
    assert reply["status"] == 301 and "group name" in reply["detail"]


def bcrypt_cost_of(hashed: str) -> int:
    """The cost a bcrypt hash was made with, from its ``$2b$NN$`` prefix."""
    match = re.fullmatch(r"\$2[abxy]?\$(\d\d)\$[./A-Za-z0-9]{53}", hashed)
    assert match is not None, hashed
    return int(match.group(1))


@inline
async def test_unknown_user_check_uses_the_configured_bcrypt_cost():
    pool = ThreadPool(minthreads=0, maxthreads=1, name="test-bcrypt")
    pool.start()
    try:
        hasher = Hasher(reactor, pool, 10, 30.0)
        assert hasher.dummy_hash is None  # nothing hashed on the reactor thread
        assert not await hasher.check("anything", None)
        assert bcrypt_cost_of(hasher.dummy_hash) == 10
    finally:
        pool.stop()


@inline
async def test_unknown_user_costs_as_much_as_a_wrong_password(server_factory, config_factory):
    # With registration closed, a name that has no account must not answer
    # faster than one that has: else names can be enumerated by timing.
    config = config_factory(auth={"registration": "closed", "bcrypt_cost": "10"},
                            limits={"signin_free_failures": "1000"})
    running = await server_factory(config)
    engine = make_engine(config.database.url)
    try:
        await deferToThread(accounts.add_user, engine, "alice", "right password", 10)
    finally:
        engine.dispose()
    client = await running.client()

    async def refused_in(username: str) -> float:
        started = time.perf_counter()
        reply = await client.request(
            {"type": "RegisterRequest", "username": username, "password": "wrong password"},
            timeout=30)
        elapsed = time.perf_counter() - started
        assert reply["status"] == 301 and "wrong username or password" in reply["detail"]
        return elapsed

    await refused_in("alice"), await refused_in("nobody")  # warm up both paths
    unknown, known = [], []
    for number in range(7):  # interleaved, so load on the machine hits both alike
        unknown.append(await refused_in(f"nobody{number}"))
        known.append(await refused_in("alice"))
    # Load from other processes only ever adds time, so the fastest of
    # several tries is the check's own cost (medians flake on a busy machine).
    ratio = min(unknown) / min(known)
    assert 0.5 < ratio < 2, (ratio, unknown, known)


# -- not signed in -----------------------------------------------------------

@inline
async def test_every_request_needs_sign_in(server):
    client = await server.client()
    requests = [
        {"type": "GroupMessageInitRequest", "recipients": ["x"], "chatname": "c"},
        {"type": "GroupMessageRequest", "recipient": "x", "content": "hi"},
        {"type": "MessageRequest", "recipient": "x", "content": "hi"},
        {"type": "ClientListRequest"},
        {"type": "RandomMessageRequest", "content": "hi"},
        {"type": "GroupLeaveRequest", "chatname": "c"},
    ]
    for number, request in enumerate(requests):
        reply = await client.request({**request, "msg_id": number})
        assert reply["type"] == "ErrorResponse" and reply["status"] == 301, reply
        assert "not signed in" in reply["detail"] and reply["msg_id"] == number


# -- GroupMessageInitRequest -------------------------------------------------

@inline
async def test_group_init_notifies_online_members(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    await server.client("carol")  # an account, then offline
    await server.clients[-1].close()
    reply = await alice.request(
        {"type": "GroupMessageInitRequest", "recipients": ["Bob", "carol"],
         "chatname": "Study Group", "msg_id": "g"})
    assert reply == {"type": "GroupMessageInitResponse", "status": 200,
                     "chatname": "study group", "msg_id": "g"}
    await bob.expect("GroupMessageInitResponse", status=201, chatname="study group",
                     creator="alice", members=["alice", "bob", "carol"])


@inline
async def test_group_init_taken_name_and_user_name(server):
    alice = await server.client("alice")
    await server.client("bob")
    await alice.request({"type": "GroupMessageInitRequest", "recipients": ["bob"], "chatname": "c1"})
    for chatname in ("C1", "bob"):
        reply = await alice.request(
            {"type": "GroupMessageInitRequest", "recipients": ["bob"], "chatname": chatname})
        assert reply["type"] == "ErrorResponse" and reply["status"] == 301, reply
        assert "is taken" in reply["detail"]


@inline
async def test_group_init_unknown_recipient_creates_nothing(server):
    alice = await server.client("alice")
    await server.client("bob")
    reply = await alice.request(
        {"type": "GroupMessageInitRequest", "recipients": ["bob", "ghost"], "chatname": "c"})
    assert reply["status"] == 404 and "ghost" in reply["detail"]
    reply = await alice.request({"type": "GroupMessageRequest", "recipient": "c", "content": "x"})
    assert reply["status"] == 404


@inline
async def test_group_init_bad_chatname_and_empty_recipients(server):
    alice = await server.client("alice")
    reply = await alice.request(
        {"type": "GroupMessageInitRequest", "recipients": ["alice"], "chatname": "ok"})
    assert reply["status"] == 400 and "at least one other user" in reply["detail"]
    reply = await alice.request(
        {"type": "GroupMessageInitRequest", "recipients": ["bob"], "chatname": " spaced "})
    assert reply["status"] == 400 and "chatname" in reply["detail"]


# -- GroupMessageRequest / MessageRequest ------------------------------------

@inline
async def test_group_message_first_is_201_then_200(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    carol = await server.client("carol")
    await alice.request(
        {"type": "GroupMessageInitRequest", "recipients": ["bob", "carol"], "chatname": "team"})
    await bob.expect("GroupMessageInitResponse", status=201)
    await carol.expect("GroupMessageInitResponse", status=201)
    ack = await alice.request(
        {"type": "GroupMessageRequest", "recipient": "team", "content": "hello", "msg_id": 5})
    assert ack["type"] == "MessageSendResponse" and ack["status"] == 200 and ack["msg_id"] == 5
    assert isinstance(ack["id"], int) and ack["timestamp"].endswith("Z")
    for member in (bob, carol):
        got = await member.expect("GroupMessageRecv", status=201, sender="alice",
                                  chatname="team", content="hello")
        assert got["id"] == ack["id"] and got["timestamp"] == ack["timestamp"]
    ack2 = await bob.request({"type": "MessageRequest", "recipient": "team", "content": "hi"})
    assert ack2["id"] > ack["id"]
    await alice.expect("GroupMessageRecv", status=200, sender="bob", content="hi")
    await carol.expect("GroupMessageRecv", status=200, sender="bob", content="hi")
    await bob.nothing()


@inline
async def test_group_message_non_member_is_403(server):
    alice = await server.client("alice")
    await server.client("bob")
    eve = await server.client("eve")
    await alice.request({"type": "GroupMessageInitRequest", "recipients": ["bob"], "chatname": "team"})
    reply = await eve.request({"type": "GroupMessageRequest", "recipient": "team", "content": "x"})
    assert reply["status"] == 403 and "not a member" in reply["detail"]


@inline
async def test_direct_message(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    ack = await alice.request({"type": "GroupMessageRequest", "recipient": "BOB", "content": "yo"})
    assert ack["type"] == "MessageSendResponse"
    got = await bob.expect("MessageRecv", status=200, sender="alice", chatname="alice",
                           groupchat=False, content="yo")
    assert got["id"] == ack["id"]


@inline
async def test_direct_message_to_offline_user_is_accepted(server):
    bob = await server.client("bob")
    await bob.close()
    alice = await server.client("alice")
    ack = await alice.request({"type": "MessageRequest", "recipient": "bob", "content": "later"})
    assert ack["type"] == "MessageSendResponse"


@inline
async def test_message_to_nobody_is_404(server):
    alice = await server.client("alice")
    reply = await alice.request({"type": "MessageRequest", "recipient": "nobody", "content": "x"})
    assert reply["status"] == 404 and "nobody" in reply["detail"]


@inline
async def test_message_content_limits(server):
    alice = await server.client("alice")
    await server.client("bob")
    reply = await alice.request({"type": "MessageRequest", "recipient": "bob", "content": ""})
    assert reply["status"] == 400 and "empty" in reply["detail"]
    reply = await alice.request(
        {"type": "MessageRequest", "recipient": "bob", "content": "x" * 16385})
    assert reply["status"] == 413


@inline
async def test_user_with_two_connections_gets_messages_on_both(server):
    alice = await server.client("alice")
    bob1 = await server.client("bob")
    bob2 = await server.client("bob")
    await alice.request({"type": "MessageRequest", "recipient": "bob", "content": "both"})
    await bob1.expect("MessageRecv", content="both")
    await bob2.expect("MessageRecv", content="both")


# -- ClientListRequest -------------------------------------------------------

@inline
async def test_client_list_excludes_requester_and_offline(server):
    alice = await server.client("alice")
    await server.client("bob")
    carol = await server.client("carol")
    reply = await alice.request({"type": "ClientListRequest", "msg_id": 1})
    assert reply == {"type": "ClientListResponse", "status": 200,
                     "clients": ["bob", "carol"], "msg_id": 1}
    await carol.close()
    reply = await alice.request({"type": "ClientListRequest"})
    assert reply["clients"] == ["bob"]


# -- RandomMessageRequest ----------------------------------------------------

@inline
async def test_random_alone_is_404(server):
    alice = await server.client("alice")
    reply = await alice.request({"type": "RandomMessageRequest", "content": "anyone?"})
    assert reply["status"] == 404 and "not enough people online" in reply["detail"]


@inline
async def test_random_pair_chat_and_disconnect(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    reply = await alice.request({"type": "RandomMessageRequest", "content": "hi stranger"})
    assert reply["type"] == "RandomMessageResponse" and reply["client"] == "bob"
    chatname = reply["chatname"]
    got = await bob.expect("MessageRecv", status=200, sender="alice", chatname=chatname,
                           content="hi stranger")
    assert got["random"] is True
    ack = await bob.request({"type": "GroupMessageRequest", "recipient": chatname, "content": "hey"})
    assert ack["type"] == "MessageSendResponse"
    await alice.expect("GroupMessageRecv", sender="bob", chatname=chatname, content="hey")
    outsider = await server.client("carol")
    reply = await outsider.request(
        {"type": "GroupMessageRequest", "recipient": chatname, "content": "me too"})
    assert reply["status"] == 403
    await bob.close()
    await alice.expect("RandomChatEndedRecv", chatname=chatname, user="bob", reason="disconnected")
    reply = await alice.request(
        {"type": "GroupMessageRequest", "recipient": chatname, "content": "still there?"})
    assert reply["status"] == 404


@inline
async def test_random_pair_leave(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    reply = await alice.request({"type": "RandomMessageRequest", "content": "hi"})
    await bob.expect("MessageRecv")
    left = await bob.request({"type": "GroupLeaveRequest", "chatname": reply["chatname"]})
    assert left["type"] == "GroupLeaveResponse"
    await alice.expect("RandomChatEndedRecv", user="bob", reason="left")


# -- GroupLeaveRequest -------------------------------------------------------

@inline
async def test_group_leave_tells_members(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    await alice.request({"type": "GroupMessageInitRequest", "recipients": ["bob"], "chatname": "t"})
    await bob.expect("GroupMessageInitResponse")
    reply = await bob.request({"type": "GroupLeaveRequest", "chatname": "t", "msg_id": 3})
    assert reply == {"type": "GroupLeaveResponse", "status": 200, "chatname": "t", "msg_id": 3}
    await alice.expect("GroupMemberLeftRecv", chatname="t", user="bob")
    reply = await bob.request({"type": "MessageRequest", "recipient": "t", "content": "x"})
    assert reply["status"] == 403
    reply = await bob.request({"type": "GroupLeaveRequest", "chatname": "nope"})
    assert reply["status"] == 404


# -- malformed input ---------------------------------------------------------

@inline
async def test_malformed_frames_get_400_and_connection_keeps_working(server):
    alice = await server.client("alice")
    bad = [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('"text"', "JSON object"),
        ('{"msg_id": 9}', "missing field 'type'"),
        ('{"type": 5}', "'type' must be a string"),
        ('{"type": "Nope", "msg_id": 4}', "unknown request type 'Nope'"),
        ('{"type": "MessageRequest", "content": "x"}', "missing field 'recipient'"),
        ('{"type": "MessageRequest", "recipient": 3, "content": "x"}',
         "'recipient' must be a string"),
        ('{"type": "GroupMessageInitRequest", "recipients": "bob", "chatname": "c"}',
         "'recipients' must be a list of strings"),
        ('{"type": "GroupMessageInitRequest", "recipients": ["a", 1], "chatname": "c"}',
         "'recipients' must be a list of strings"),
        ('{"type": "RegisterRequest", "username": "a", "password": "b", "auth": "yes"}',
         "'auth' must be true or false"),
    ]
    for frame, detail in bad:
        alice.send(frame)
        reply = await alice.recv()
        assert reply["type"] == "ErrorResponse" and reply["status"] == 400, (frame, reply)
        assert detail in reply["detail"], (frame, reply)
    alice.send(b'{"type": "ClientListRequest"}', binary=True)
    reply = await alice.recv()
    assert reply["status"] == 400 and "binary" in reply["detail"]
    alice.send('{"type": "Nope", "msg_id": 4}')
    assert (await alice.recv())["msg_id"] == 4
    reply = await alice.request({"type": "ClientListRequest"})
    assert reply["type"] == "ClientListResponse"


@inline
async def test_oversized_frame_closes_with_1009(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    alice.send("x" * (64 * 1024 + 1))
    assert await alice.closed() == 1009
    reply = await bob.request({"type": "ClientListRequest"})
    assert reply["clients"] == []


@inline
async def test_disallowed_origin_is_refused(server_factory, config_factory):
    running = await server_factory(
        config_factory(server={"allowed_origins": "https://chat.example.edu"}))
    try:
        await connect(running.url, origin="https://evil.example.com")
    except ConnectionError:
        pass
    else:
        raise AssertionError("a foreign origin was let in")
    client = await connect(running.url, origin="https://chat.example.edu")
    running.clients.append(client)
    await client.register("alice")


@inline
async def test_look_alike_names_are_one_name(server):
    await server.client("alice", "alice-password")
    for look_alike in ("ＡＬＩＣＥ", "Alice", "ALİCE".replace("İ", "I")):
        impostor = await server.client()
        reply = await impostor.request({"type": "RegisterRequest", "username": look_alike,
                                        "password": "impostor"})
        assert reply["status"] == 301, (look_alike, reply)
    bob = await server.client("bob")
    ack = await bob.request({"type": "MessageRequest", "recipient": "ａｌｉｃｅ", "content": "hi"})
    assert ack["type"] == "MessageSendResponse"
    reply = await bob.request({"type": "GroupMessageInitRequest", "recipients": ["alice"],
                               "chatname": "Ｔｅａｍ"})
    assert reply["chatname"] == "team"


@inline
async def test_replies_keep_request_order_while_sends_share_a_commit(server):
    alice = await server.client("alice")
    bob = await server.client("bob")
    frames = [
        {"type": "MessageRequest", "recipient": "bob", "content": "one", "msg_id": 1},
        {"type": "MessageRequest", "recipient": "bob", "content": "", "msg_id": 2},
        "not json",
        {"type": "MessageRequest", "recipient": "bob", "content": "three", "msg_id": 3},
        {"type": "ClientListRequest", "msg_id": 4},
        {"type": "MessageRequest", "recipient": "nobody", "content": "x", "msg_id": 5},
        {"type": "MessageRequest", "recipient": "bob", "content": "six", "msg_id": 6},
    ]
    for frame in frames:
        alice.send(frame)
    replies = [await alice.recv() for _ in frames]
    assert [r["msg_id"] for r in replies] == [1, 2, None, 3, 4, 5, 6]
    assert [r["type"] for r in replies] == [
        "MessageSendResponse", "ErrorResponse", "ErrorResponse", "MessageSendResponse",
        "ClientListResponse", "ErrorResponse", "MessageSendResponse"]
    ids = [r["id"] for r in replies if r["type"] == "MessageSendResponse"]
    assert ids == sorted(ids)
    got = [await bob.recv() for _ in range(3)]
    assert [g["content"] for g in got] == ["one", "three", "six"]
    assert [g["id"] for g in got] == ids


# -- closing -------------------------------------------------------------------

@inline
async def test_requests_after_the_clients_close_frame_are_not_processed(server):
    """A MessageRequest after the close frame, in the same TCP write, is never sent.

    Nor is one that arrived before the close frame but was still queued
    behind an earlier request; a send already started is committed as usual.
    (Autobahn already stopped reading after answering a client's close frame;
    this guards it, and the queued case.)
    """
    import json

    from twisted.internet.threads import deferToThread

    bob = await server.client("bob")

    def alice_closes_then_sends() -> list[tuple[int, bytes]]:
        alice = RawClient(server.url)
        try:
            signed_in = alice.request({"type": "RegisterRequest", "username": "alice",
                                       "password": "secret"})
            assert signed_in["type"] == "RegisterResponse", signed_in
            # Answered once the sign-in is wholly done: nothing is in flight now.
            assert alice.request({"type": "HeartbeatRequest"})["type"] == "HeartbeatResponse"
            before = {"type": "MessageRequest", "recipient": "bob", "content": "before close",
                      "msg_id": 1}
            # Waits for the database while "queued" waits behind it.
            history = {"type": "HistoryRequest", "user": "bob", "msg_id": 2}
            queued = {"type": "MessageRequest", "recipient": "bob", "content": "queued",
                      "msg_id": 3}
            after = {"type": "MessageRequest", "recipient": "bob", "content": "after close",
                     "msg_id": 4}
            alice.write(b"".join(client_frame(json.dumps(request).encode())
                                 for request in (before, history, queued))
                        + client_frame((1000).to_bytes(2, "big"), opcode=8)
                        + client_frame(json.dumps(after).encode()))
            return alice.frames_until_end()
        finally:
            alice.close()

    frames = await deferToThread(alice_closes_then_sends)
    assert frames[-1][0] == 8, frames  # the server answered the close frame
    # Its commit may still be under way when the server drops the connection.
    await bob.expect("MessageRecv", content="before close")
    assert await bob.frames_until_heartbeat() == []
    await bob.nothing(0.3)
    page = await bob.request({"type": "HistoryRequest", "user": "alice"})
    assert [m["content"] for m in page["messages"]] == ["before close"], page


@inline
async def test_requests_after_the_server_started_closing_are_not_processed(server):
    """Once the server has sent its close frame, a request the client sends is dropped.

    The client may not even get a reply any more (nothing follows a close
    frame), so a message it sends then must not be stored or delivered.
    """
    import json

    from twisted.internet.threads import deferToThread

    bob = await server.client("bob")
    alice = await deferToThread(RawClient, server.url)
    try:
        signed_in = await deferToThread(alice.request, {
            "type": "RegisterRequest", "username": "alice", "password": "secret"})
        assert signed_in["type"] == "RegisterResponse", signed_in
        (connection,) = [c for c in server.service.factory.connections if c.username == "alice"]
        connection.close_for(1001, "server shutting down")
        opcode, payload = await deferToThread(alice.read_frame)
        assert opcode == 8 and payload[:2] == (1001).to_bytes(2, "big"), (opcode, payload)
        late = {"type": "MessageRequest", "recipient": "bob", "content": "too late",
                "msg_id": 3}
        await deferToThread(alice.write, client_frame(json.dumps(late).encode()))
        await bob.nothing(0.5)
    finally:
        alice.close()
    page = await bob.request({"type": "HistoryRequest", "user": "alice"})
    assert page["messages"] == [], page
