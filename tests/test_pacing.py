"""What the server owes a client always reaches it: sizes, pages and pacing.

Real ``twistd`` servers, real sockets, third-party clients (websocket-client)
that read as fast as they can. Every message a user should have arrives
exactly once and in order, however much they missed; a frame the server
builds is never lost for its size; a connection whose backlog of live
messages outgrows its bound is closed with 1013 and gets them next time.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import websocket

from chateau.store.engine import in_transaction, make_engine
from chateau.store.messages import add_messages_txn
from chateau.store.records import direct_chat
from tests.processes import TwistdServer

MAX_MESSAGE_SIZE = 65536
SEND_BUFFER = 1048576
EMOJI = "\U0001F600"  # four bytes of UTF-8


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chateau.sqlite3'}"
    return request.getfixturevalue("postgres").new_database()


def write_config(
    tmp_path: Path, db_url: str, database_threads: int = 4, **limits: int
) -> Path:
    path = tmp_path / "chateau.ini"
    extra = "".join(f"{key} = {value}\n" for key, value in limits.items())
    path.write_text(
        f"[database]\nurl = {db_url}\nthreads = {database_threads}\n"
        "[auth]\nbcrypt_cost = 4\n"
        "[limits]\nmessage_rate = 100000\nmessage_burst = 10000\n" + extra
    )
    return path


def connect(url: str, receive_buffer: int | None = None) -> websocket.WebSocket:
    options = ((socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer),) if receive_buffer else ()
    return websocket.create_connection(url, timeout=10, sockopt=options)


def send(ws: websocket.WebSocket, **message: Any) -> int:
    """Send *message* as raw UTF-8 JSON (as a browser does); the frame's size."""
    text = json.dumps(message, ensure_ascii=False)
    ws.send(text)
    return len(text.encode())


def recv(ws: websocket.WebSocket) -> dict:
    return json.loads(ws.recv())


def sign_in(ws: websocket.WebSocket, username: str) -> dict:
    send(ws, type="RegisterRequest", username=username, password="pw")
    reply = recv(ws)
    assert reply["type"] == "RegisterResponse", reply
    return reply


def reply_to(ws: websocket.WebSocket, kind: str) -> dict:
    """The next reply (a frame of *kind* or an ErrorResponse), skipping pushes."""
    while True:
        frame = recv(ws)
        if frame["type"] in (kind, "ErrorResponse"):
            return frame


def metric(server: TwistdServer, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10).read()
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.decode().splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[1])
    return 0.0


# SQLite's default page cache per connection (PRAGMA cache_size = -2000).
SQLITE_PAGE_CACHE = 2000 * 1024


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[TwistdServer]:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'chateau.sqlite3'}")
    with TwistdServer(tmp_path, "--config", str(config)) as server:
        yield server


# -- H1: no frame is lost for its size ------------------------------------------


def test_near_limit_direct_messages_are_refused_at_once_or_delivered(sqlite_server):
    """Whatever is accepted reaches an offline recipient, and so does what follows."""
    url = sqlite_server.url
    bob = connect(url)
    sign_in(bob, "bob")
    bob.close()
    alice = connect(url)
    sign_in(alice, "alice")

    # A request frame of exactly 65,525 bytes, content under 16,384 characters.
    overhead = len(json.dumps(
        {"type": "MessageRequest", "recipient": "bob", "content": "", "msg_id": "near"},
        ensure_ascii=False
    ).encode())
    room = 65525 - overhead
    near_limit = EMOJI * (room // 4) + "a" * (room % 4)
    assert len(near_limit) <= 16384
    sent = {"near": near_limit, "emoji": EMOJI * 16000, "after": "and this one after it"}
    accepted: list[str] = []
    for name, content in sent.items():
        size = send(alice, type="MessageRequest", recipient="bob", content=content, msg_id=name)
        if name == "near":
            assert size == 65525
        reply = reply_to(alice, "MessageSendResponse")
        assert reply["msg_id"] == name
        if reply["type"] == "ErrorResponse":
            assert reply["status"] == 413, reply
            assert "max_message_size" in reply["detail"], reply
        else:
            accepted.append(content)
    # The 16,000-emoji message fits in a frame: it is accepted.
    assert sent["emoji"] in accepted and sent["after"] in accepted

    bob = connect(url)
    sign_in(bob, "bob")
    got = [recv(bob) for _ in accepted]
    assert [frame["content"] for frame in got] == accepted
    assert all(frame["offline"] for frame in got)
    alice.close()
    bob.close()


def test_a_history_page_of_maximum_size_messages_is_answered(sqlite_server):
    url = sqlite_server.url
    alice, bob = connect(url), connect(url)
    sign_in(alice, "alice")
    sign_in(bob, "bob")
    send(alice, type="GroupMessageInitRequest", recipients=["bob"], chatname="big")
    assert reply_to(alice, "GroupMessageInitResponse")["status"] == 200
    bob.close()  # away: alice's messages wait for him, and alice asks for the history
    sent_ids = []
    for number in range(100):
        # The largest content a message may have: 16,000 emoji (64,000 bytes).
        content = f"{number:03d}" + EMOJI * 15999
        send(alice, type="MessageRequest", recipient="big", content=content)
        reply = reply_to(alice, "MessageSendResponse")
        assert reply["type"] == "MessageSendResponse", reply
        sent_ids.append(reply["id"])

    raw_sizes: list[int] = []
    found: list[dict] = []
    before = None
    for _ in range(200):
        send(alice, type="HistoryRequest", chatname="big", limit=100, before=before)
        while True:
            raw = alice.recv()
            page = json.loads(raw)
            if page["type"] in ("HistoryResponse", "ErrorResponse"):
                break
        assert page["type"] == "HistoryResponse", page
        raw_sizes.append(len(raw.encode()))
        assert page["messages"], page
        found.extend(page["messages"])
        if not page["more"]:
            break
        before = page["messages"][-1]["id"]
    assert [entry["id"] for entry in reversed(found)] == sent_ids
    assert [entry["content"][:3] for entry in reversed(found)] == [f"{n:03d}" for n in range(100)]
    # Split by bytes: each page fits in a frame a client with the same limit accepts.
    assert max(raw_sizes) <= MAX_MESSAGE_SIZE
    assert len(raw_sizes) > 1
    alice.close()


# -- the catch-up buffer bound: 1013, and the messages stay -----------------------


def populate(db_url: str, rows: list[tuple[str, str, str, str | None]]) -> None:
    """Insert messages straight into the database (the server is stopped meanwhile)."""
    engine = make_engine(db_url)
    try:
        for start in range(0, len(rows), 500):
            in_transaction(engine, add_messages_txn, rows[start:start + 500])
    finally:
        engine.dispose()


def set_up_users(url: str) -> None:
    """dave, erin, bob and carol, with a group of three (created while dave is away)."""
    for name in ("dave", "erin"):
        away = connect(url)
        sign_in(away, name)
        away.close()
    bob, carol = connect(url), connect(url)
    sign_in(bob, "bob")
    sign_in(carol, "carol")
    send(bob, type="GroupMessageInitRequest", recipients=["dave", "carol"], chatname="study")
    assert reply_to(bob, "GroupMessageInitResponse")["status"] == 200
    bob.close()
    carol.close()


def backlog(count: int, size: int) -> list[tuple[str, str, str, str | None]]:
    """*count* messages of *size* bytes for dave: in the group and direct from bob and carol."""
    rows: list[tuple[str, str, str, str | None]] = []
    for number in range(count):
        content = f"old:{number}:".ljust(size, "x")
        kind = number % 3
        if kind == 0:
            rows.append(("study", "bob" if number % 2 else "carol", content, None))
        elif kind == 1:
            rows.append((direct_chat("bob", "dave"), "bob", content, "dave"))
        else:
            rows.append((direct_chat("carol", "dave"), "carol", content, "dave"))
    return rows


def read_frames(ws: websocket.WebSocket, into: list[dict], until: Any) -> None:
    """Read chat frames into *into* as fast as possible until *until*() or the close."""
    while not until():
        try:
            opcode, data = ws.recv_data(control_frame=True)
        except (websocket.WebSocketException, OSError):
            return
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            into.append({"type": "close", "code": int.from_bytes(data[:2], "big"),
                         "reason": data[2:].decode(errors="replace")})
            return
        if opcode == websocket.ABNF.OPCODE_TEXT:
            frame = json.loads(data)
            if frame["type"] in ("MessageRecv", "GroupMessageRecv"):
                into.append(frame)


def test_live_messages_past_the_bound_close_with_1013_and_stay_stored(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'chateau.sqlite3'}"
    config = write_config(tmp_path, db_url, send_buffer=262144)
    server = TwistdServer(tmp_path, "--config", str(config))
    with server:
        set_up_users(server.url)
    populate(db_url, backlog(300, 10_000))  # 3 MB: more than every buffer on the way
    with server:
        # dave signs in and reads nothing for now.
        dave = connect(server.url, receive_buffer=4096)
        sign_in(dave, "dave")
        time.sleep(1.0)
        bob = connect(server.url)
        sign_in(bob, "bob")
        live_ids = []
        for number in range(40):  # 400 KB while dave is being caught up
            send(bob, type="MessageRequest", recipient="dave",
                 content=f"live:{number}:".ljust(10_000, "y"))
            reply = reply_to(bob, "MessageSendResponse")
            assert reply["type"] == "MessageSendResponse", reply
            live_ids.append(reply["id"])
        first: list[dict] = []
        read_frames(dave, first, lambda: False)
        dave.close()
        assert first and first[-1]["type"] == "close", first[-3:]
        assert first[-1]["code"] == 1013, first[-1]
        assert "try again later" in first[-1]["reason"], first[-1]
        assert metric(server, "chateau_frames_dropped_total", reason="hold_overflow") >= 1
        assert "held for" in server.output()
        first = first[:-1]

        # Nothing is lost: signing in again brings everything, in order, once.
        dave = connect(server.url)
        sign_in(dave, "dave")
        second: list[dict] = []
        wanted = 300 + len(live_ids)
        read_frames(dave, second, lambda: bool(second) and second[-1]["id"] >= live_ids[-1])
        ids = [frame["id"] for frame in second]
        assert ids == sorted(set(ids)), "in order, each once"
        # The second catch-up starts no later than where the first really stopped.
        got = {frame["id"] for frame in first} | set(ids)
        assert len(got) == wanted
        assert set(live_ids) <= got
        dave.close()
        bob.close()


# -- issue 17: a device that missed a lot catches up ------------------------------


@pytest.mark.parametrize("count", [300, 3000], ids=["3MB", "30MB"])
def test_a_device_that_missed_a_lot_gets_everything_once_in_order(tmp_path, db_url, count):
    # One database thread: each pooled SQLite connection keeps its own page
    # cache (2 MB, bounded by SQLite), which is the database's memory and not
    # the catch-up's; with one, erin's warm-up below fills the only cache.
    config = write_config(tmp_path, db_url, database_threads=1)
    server = TwistdServer(tmp_path, "--config", str(config))
    with server:
        set_up_users(server.url)
    # erin missed 10 MB first: her catch-up warms the server up (code paths
    # and the database's cache).
    warm_up = 1000
    populate(db_url, [(direct_chat("bob", "erin"), "bob", "warm".ljust(10_000, "w"), "erin")]
             * warm_up + backlog(count, 10_000))
    with server:
        pid = server.process.pid
        bob = connect(server.url)
        sign_in(bob, "bob")
        erin = connect(server.url)
        sign_in(erin, "erin")
        erin_got: list[dict] = []
        read_frames(erin, erin_got, lambda: len(erin_got) >= warm_up)
        assert len(erin_got) == warm_up
        rss_before = status_kib(pid, "VmRSS")

        dave = connect(server.url)
        received: list[dict] = []
        live_ids: list[int] = []
        sign_in(dave, "dave")
        reader = threading.Thread(
            target=read_frames,
            args=(dave, received, lambda: len(received) >= count + 20),
            daemon=True,
        )
        reader.start()
        # bob chats with dave live, meanwhile: direct and in the group.
        for number in range(20):
            recipient = "dave" if number % 2 else "study"
            send(bob, type="MessageRequest", recipient=recipient, content=f"live:{number}")
            reply = reply_to(bob, "MessageSendResponse")
            assert reply["type"] == "MessageSendResponse", reply
            live_ids.append(reply["id"])
            time.sleep(0.02)
        reader.join(120)
        assert not reader.is_alive(), f"dave got {len(received)} of {count + 20}"
        peak = status_kib(pid, "VmHWM")

        ids = [frame["id"] for frame in received]
        assert ids == sorted(set(ids)), "each message once, in order"
        old = [f["content"].split(":")[1] for f in received if f["content"].startswith("old:")]
        assert old == [str(n) for n in range(count)]
        live = [f["content"] for f in received if f["content"].startswith("live:")]
        assert live == [f"live:{n}" for n in range(20)]
        assert [f["offline"] for f in received if f["content"].startswith("old:")] == [True] * count
        assert "stopped reading" not in server.output()
        if count == 3000:
            page = 256 * 1024
            growth = (peak - rss_before) * 1024
            # SQLite keeps its page cache in the server's memory, up to 2,000 KiB
            # per connection (its default cache_size), and empties it whenever
            # another connection writes (bob, here): refilled as the backlog is
            # read, it is the database's memory, bounded by SQLite, not the
            # catch-up's. (With cache_size at 200 KiB the growth measured 0.67 MB.)
            database = SQLITE_PAGE_CACHE if db_url.startswith("sqlite") else 0
            assert growth < 2 * SEND_BUFFER + page + database, (rss_before, peak)
        for ws in (bob, erin, dave):
            ws.close()


def test_a_catch_up_cut_short_resumes_where_delivery_stopped(tmp_path):
    """A client that leaves half way gets the rest next time: nothing lost, little twice.

    It says goodbye after 50 frames and reads what was already on its way up
    to the server's close frame: everything the server wrote.
    """
    db_url = f"sqlite:///{tmp_path / 'chateau.sqlite3'}"
    config = write_config(tmp_path, db_url)
    server = TwistdServer(tmp_path, "--config", str(config))
    with server:
        set_up_users(server.url)
    populate(db_url, backlog(300, 10_000))
    with server:
        dave = connect(server.url, receive_buffer=4096)
        sign_in(dave, "dave")
        first: list[dict] = []
        read_frames(dave, first, lambda: len(first) >= 50)
        dave.send_close()
        read_frames(dave, first, lambda: False)
        dave.close()
        assert first[-1]["type"] == "close"
        first = first[:-1]
        assert 50 <= len(first) < 300
        dave = connect(server.url)
        sign_in(dave, "dave")
        second: list[dict] = []
        read_frames(dave, second, lambda: bool(second) and second[-1]["content"].startswith("old:299:"))
        ids = [frame["id"] for frame in second]
        assert ids == sorted(set(ids)), "in order, each once"
        seen = {f["content"] for f in first}
        again = [f for f in second if f["content"] in seen]
        # Nothing lost; repeated at most what was written after the server last
        # saw its buffer drain (about 64 KiB and a frame), which the client skips by id.
        assert {f["content"] for f in first + second} == {
            f"old:{n}:".ljust(10_000, "x") for n in range(300)}
        assert len(again) * 10_000 <= 65536 + 10_100, len(again)
        assert again == second[:len(again)]
        assert "stopped reading" not in server.output()
        dave.close()


def test_an_answer_over_max_message_size_still_goes_out(sqlite_server):
    """The limit on what clients send is not applied to what the server answers."""
    ws = connect(sqlite_server.url)
    overhead = len(json.dumps({"type": "HeartbeatRequest", "payload": ""}).encode())
    payload = "p" * (MAX_MESSAGE_SIZE - overhead)
    assert send(ws, type="HeartbeatRequest", payload=payload) == MAX_MESSAGE_SIZE
    raw = ws.recv()
    assert len(raw.encode()) > MAX_MESSAGE_SIZE
    reply = json.loads(raw)
    assert reply["type"] == "HeartbeatResponse" and reply["payload"] == payload
    assert metric(sqlite_server, "chateau_frames_dropped_total", reason="send_failed") == 0
    ws.close()


def test_the_wire_size_rule_is_exact_and_documented():
    """Content fits exactly when its largest frame does; the docs give the envelope's size."""
    from types import SimpleNamespace

    from chateau import messages
    from chateau.errors import ChateauError
    from chateau.handlers.context import check_wire_size

    assert messages.MESSAGE_ENVELOPE == 596  # docs/protocol.md, docs/security.md, chateau.ini
    ctx = SimpleNamespace(config=SimpleNamespace(server=SimpleNamespace(max_message_size=65536)))
    room = 65536 - messages.MESSAGE_ENVELOPE
    check_wire_size(ctx, "a" * room)
    check_wire_size(ctx, EMOJI * 16000)
    check_wire_size(ctx, "\x01" * (room // 6))
    for too_big in ("a" * (room + 1), "\x01" * (room // 6 + 1), '"' * (room // 2 + 1)):
        with pytest.raises(ChateauError) as refused:
            check_wire_size(ctx, too_big)
        assert refused.value.status == 413
    # The largest frames really are that size.
    content = "a" * room
    push = messages.group_message_recv(first=True, sender="u" * 32, chatname="c" * 64,
                                       content=content, message_id=2**63 - 1,
                                       timestamp="2026-12-04T13:22:05.123Z")
    push.update(offline=True, edited=True)
    assert len(messages.encode(push)) <= 65536
