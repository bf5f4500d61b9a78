"""Limits: the pure rate objects with a fake clock, then each limit over the wire."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twisted.cred.credentials import IUsernamePassword
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure

from chateau.auth import Authenticator, LoginFailed
from chateau.errors import ChateauError
from chateau.limits import SignInThrottle, TokenBucket
from chateau.names import USERNAME_RULE
from tests.deferreds import inline, sleep
from tests.wsclient import connect


def test_token_bucket_allows_bursts_then_the_rate():
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=3, now=clock.seconds)
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    assert bucket.take() == 0.5
    clock.advance(0.5)
    assert bucket.take() == 0
    clock.advance(10)
    assert [bucket.take() for _ in range(4)][:3] == [0, 0, 0]


def test_sign_in_throttle_grows_is_capped_and_stays_per_address():
    clock = Clock()
    throttle = SignInThrottle(clock.seconds, free=2, base=1, cap=8)
    for _ in range(2):
        throttle.failed("10.0.0.1", "alice")
    assert throttle.retry_after("10.0.0.1", "alice") == 0
    delays = []
    for _ in range(6):
        throttle.failed("10.0.0.1", "alice")
        delays.append(throttle.retry_after("10.0.0.1", "alice"))
    assert delays == [1, 2, 4, 8, 8, 8]
    # The real user elsewhere is not locked out; other accounts are not either.
    assert throttle.retry_after("10.0.0.2", "alice") == 0
    assert throttle.retry_after("10.0.0.1", "bob") == 0
    clock.advance(8)
    assert throttle.retry_after("10.0.0.1", "alice") == 0
    # The address as a whole has four times the free failures: it is now
    # blocked too, for everybody behind it, until its delay passes.
    throttle.failed("10.0.0.1", "bob")
    assert throttle.retry_after("10.0.0.1", "bob") > 0

    fresh = SignInThrottle(clock.seconds, free=2, base=1, cap=8)
    fresh.failed("10.0.0.3", "carol")
    fresh.failed("10.0.0.3", "carol")
    fresh.succeeded("10.0.0.3", "carol")  # a success forgets the account's failures
    fresh.failed("10.0.0.3", "carol")
    fresh.failed("10.0.0.3", "carol")
    assert fresh.retry_after("10.0.0.3", "carol") == 0


@inline
async def test_rate_limit_answers_429_then_disconnects(server_factory, config_factory):
    running = await server_factory(config_factory(
        limits={"message_rate": "1", "message_burst": "3", "rate_strikes": "4"}))
    alice = await running.client("alice")  # the sign-in took one token
    replies = []
    for number in range(6):
        alice.send({"type": "HeartbeatRequest", "msg_id": number})
    for _ in range(6):
        replies.append(await alice.recv())
    assert [r["type"] for r in replies[:2]] == ["HeartbeatResponse"] * 2, replies
    refused = [r for r in replies if r["type"] == "ErrorResponse"]
    assert len(refused) == 4
    assert all(r["status"] == 429 and r["retry_after"] > 0 for r in refused)
    # Still open; keeping on past rate_strikes closes it.
    alice.send({"type": "HeartbeatRequest"})
    assert await alice.closed() == 1008
    bob = await running.client("bob")
    assert (await bob.request({"type": "HeartbeatRequest"}))["type"] == "HeartbeatResponse"


@inline
async def test_connection_caps(server_factory, config_factory):
    running = await server_factory(config_factory(limits={"max_connections_per_address": "2"}))
    first = await running.client()
    await running.client()
    try:
        await connect(running.url)
    except ConnectionError as error:
        assert "429" in str(error)
    else:
        raise AssertionError("a third connection from one address was let in")
    await first.close()
    running.clients.append(await connect(running.url))


@inline
async def test_total_connection_cap(server_factory, config_factory):
    running = await server_factory(config_factory(limits={"max_connections": "1"}))
    await running.client()
    try:
        await connect(running.url)
    except ConnectionError as error:
        assert "503" in str(error)
    else:
        raise AssertionError("the connection cap was not enforced")


@inline
async def test_failed_sign_ins_are_throttled(server_factory, config_factory):
    running = await server_factory(config_factory(limits={"signin_free_failures": "2"}))
    owner = await running.client("alice", "right")
    await owner.close()
    guesser = await running.client()
    statuses = []
    for _ in range(4):
        reply = await guesser.request({"type": "RegisterRequest", "username": "alice",
                                       "password": "wrong"})
        statuses.append(reply["status"])
    assert statuses[:3] == [301, 301, 301]
    assert statuses[3] == 429
    blocked = await guesser.request({"type": "RegisterRequest", "username": "alice",
                                     "password": "right"})
    assert blocked["status"] == 429 and blocked["retry_after"] > 0
    assert "too many failed sign-ins" in blocked["detail"]
    # Other accounts from the same address still sign in.
    other = await running.client()
    assert (await other.request({"type": "RegisterRequest", "username": "bob",
                                 "password": "pw"}))["type"] == "RegisterResponse"


@inline
async def test_groups_per_user_limit(server_factory, config_factory):
    running = await server_factory(config_factory(limits={"max_groups_per_user": "2"}))
    alice = await running.client("alice")
    await running.client("bob")
    for name in ("g1", "g2"):
        reply = await alice.request({"type": "GroupMessageInitRequest", "recipients": ["bob"],
                                     "chatname": name})
        assert reply["status"] == 200
    carol = await running.client("carol")
    reply = await carol.request({"type": "GroupMessageInitRequest", "recipients": ["bob"],
                                 "chatname": "g3"})
    assert reply["status"] == 413 and "'bob' is already in 2 groups" in reply["detail"]


@inline
async def test_a_silent_connection_is_closed_after_the_handshake_timeout(
    server_factory, config_factory
):
    import socket

    from twisted.internet.threads import deferToThread

    running = await server_factory(config_factory(server={"open_handshake_timeout": "0.5"}))
    port = running.service.ports[0].getHost().port

    def connect_and_stay_silent() -> tuple[bytes, float]:
        import time

        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # never finishes
            started = time.monotonic()
            data = sock.recv(4096)
            while data:
                more = sock.recv(4096)
                if not more:
                    break
                data += more
            return data, time.monotonic() - started

    _, waited = await deferToThread(connect_and_stay_silent)
    assert waited < 5  # closed by the server, not by our own 10 s timeout


@inline
async def test_the_handshake_timeout_does_not_touch_open_websockets(
    server_factory, config_factory
):
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    running = await server_factory(config_factory(server={"open_handshake_timeout": "0.3"}))
    alice = await running.client("alice")
    pause = Deferred()
    reactor.callLater(1.0, pause.callback, None)
    await pause
    reply = await alice.request({"type": "HeartbeatRequest", "payload": 1})
    assert reply["type"] == "HeartbeatResponse"


async def _flood(client, frames: int, payload: bytes, binary: bool) -> list[dict]:
    """Send up to *frames* copies of *payload*; every reply until the server closes the connection.

    Sent in batches, stopping once closed, as a flooding client would be
    stopped: what is still in flight after the server's close frame must be
    parsed before the client's reply to it, within Autobahn's closing
    handshake timeout (1 s), which a loaded test machine may miss.
    """
    protocol = client.protocol
    for number in range(frames):
        if protocol.state != protocol.STATE_OPEN:
            break
        client.send(payload, binary=binary)
        if number % 100 == 99:
            await sleep(0.01)
    code = await client.closed(timeout=30)
    statuses = [reply.get("status") for reply in client.inbox.pending]
    assert code == 1008, (code, len(statuses), sorted(set(statuses)))
    assert client.protocol.remoteCloseReason == "rate limit exceeded"
    return list(client.inbox.pending)


def _check_flood_replies(replies: list[dict], burst: int, strikes: int, detail: str) -> None:
    """The burst answered as usual (400 *detail*), then 429s until the strike rule closed it."""
    statuses = [reply.get("status") for reply in replies]
    first_refusal = statuses.index(429)
    answered = replies[:first_refusal]
    # The burst, plus what the bucket refilled meanwhile (1 a second).
    assert burst - 1 <= len(answered) <= burst + 3, statuses
    assert all(r["status"] == 400 and detail in r["detail"] for r in answered), answered
    refused = replies[first_refusal:]
    assert all(r["status"] == 429 and r["retry_after"] > 0 for r in refused), refused
    # Closed by the strike rule: a few refusals, not one reply per frame sent.
    assert strikes <= len(refused) <= strikes + 3, statuses


@inline
async def test_binary_and_malformed_frames_count_against_the_rate(server_factory, config_factory):
    burst, strikes = 10, 5
    running = await server_factory(config_factory(
        limits={"message_rate": "1", "message_burst": str(burst), "rate_strikes": str(strikes)}))
    bob = await running.client("bob")
    carol = await running.client("carol")

    # Before signing in: binary frames.
    binary = await running.client()
    replies = await _flood(binary, 10_000, b'{"type": "HeartbeatRequest"}', binary=True)
    _check_flood_replies(replies, burst, strikes, "binary frames are not supported")
    assert (await bob.request({"type": "HeartbeatRequest"}))["type"] == "HeartbeatResponse"

    # Signed in: frames that are not JSON, then valid JSON that is no request.
    for payload, detail in ((b"not json {", "not valid JSON"),
                            (b'{"type": "Nope"}', "unknown request type 'Nope'")):
        malformed = await running.client(f"flood{len(payload)}")
        # Answered once the sign-in is wholly done, so replies are not held behind it.
        assert (await malformed.request({"type": "HeartbeatRequest"}))["status"] == 200
        replies = await _flood(malformed, 10_000, payload, binary=False)
        # The sign-in and the heartbeat took one token each.
        _check_flood_replies(replies, burst - 2, strikes, detail)
        ack = await bob.request({"type": "MessageRequest", "recipient": "carol",
                                 "content": "still here"})
        assert ack["type"] == "MessageSendResponse", ack
        await carol.expect("MessageRecv", content="still here")


class _Refuses:
    """A checker that refuses every sign-in, as a wrong password does."""

    credentialInterfaces = (IUsernamePassword,)

    def requestAvatarId(self, credentials: object) -> Deferred:
        return fail(LoginFailed("authentication failed: wrong username or password"))


def _authenticator(clock: Clock, **throttle: object) -> tuple[Authenticator, SignInThrottle]:
    limits = SignInThrottle(clock.seconds, **throttle)  # type: ignore[arg-type]
    return Authenticator({"local": _Refuses()}, max_pending=64, throttle=limits), limits


def _sign_in(auth: Authenticator, username: str, address: str = "10.0.0.1") -> ChateauError:
    outcome: list[object] = []
    ensureDeferred(auth.sign_in(username, "wrong", False, address)).addBoth(outcome.append)
    assert len(outcome) == 1 and isinstance(outcome[0], Failure), outcome
    assert outcome[0].check(ChateauError), outcome[0].getTraceback()
    return outcome[0].value


def test_five_thousand_failures_on_one_key_still_answer_429():
    # 2 ** failures once overflowed a float after about 1,045 failures.
    clock = Clock()
    auth, _ = _authenticator(clock, free=1, base=1.0, cap=60.0)
    for _ in range(5000):
        clock.advance(61)  # past the block, so each try is checked and fails
        assert _sign_in(auth, "alice").status == 301
    refusal = _sign_in(auth, "alice")
    assert refusal.status == 429 and refusal.extra["retry_after"] == 60


def test_throttle_keys_on_the_canonical_name_and_is_bounded():
    clock = Clock()
    auth, throttle = _authenticator(clock, free=1, cap=60.0, entries=1000)
    # Names that differ only in case or width are one account.
    for name in ("alice", "ALICE", "Ａｌｉｃｅ"):
        _sign_in(auth, name, "10.0.0.9")
    assert _sign_in(auth, "aLiCe", "10.0.0.9").status == 429
    assert throttle.sizes() == (1, 1)
    # Invalid names are refused as before, and never reach the table.
    for name in ("a" * 100_000, "bad name", "x*", "", "(uid=*)", "~random"):
        refusal = _sign_in(auth, name, "10.0.0.8")
        assert refusal.status == 301 and refusal.detail == (
            f"authentication failed: {USERNAME_RULE}"), refusal
    assert throttle.sizes() == (1, 1)
    # 100,000 distinct names from 100,000 addresses: each table stays at its cap.
    for number in range(100_000):
        throttle.failed(f"10.{number // 65536}.{number // 256 % 256}.{number % 256}",
                        f"user{number}")
    assert throttle.sizes() == (1000, 1000)
    # The most recently used entries are the ones kept: the last name's
    # second failure blocks it; the first one's was forgotten.
    throttle.failed("10.1.134.159", "user99999")
    assert throttle.retry_after("10.1.134.159", "user99999") > 0
    assert throttle.sizes() == (1000, 1000)
    throttle.failed("10.0.0.0", "user0")
    assert throttle.retry_after("10.0.0.0", "user0") == 0


_DISTINCT_NAMES = """
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import fail
from chateau.auth import Authenticator
from chateau.errors import ChateauError
from chateau.limits import SignInThrottle

class Refuses:
    credentialInterfaces = (IUsernamePassword,)
    def requestAvatarId(self, credentials):
        return fail(UnauthorizedLogin())

def peak_rss():
    # VmHWM, not getrusage: ru_maxrss survives exec, so it would start at
    # the size of the test process that started this one.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")

now = [0.0]
throttle = SignInThrottle(lambda: now[0])
auth = Authenticator({"local": Refuses()}, max_pending=64, throttle=throttle)

def sign_in(name):
    try:
        auth.sign_in(name, "wrong", False, "10.0.0.1").send(None)
    except ChateauError as refusal:
        assert refusal.status == 301, refusal
    else:
        raise AssertionError("not refused")
    now[0] += 61  # slowly enough never to be blocked

for number in range(1000):  # warm up: what every sign-in allocates anyway
    sign_in(f"w{number}")
start = peak_rss()
for number in range(100_000):
    sign_in(f"{number:0>300}")
middle = peak_rss()
for number in range(100_000):
    throttle.failed("10.0.0.1", f"{number:0>32}")  # what a valid name costs
    now[0] += 61
end = peak_rss()
print(middle - start, end - start)
"""


def test_many_distinct_names_keep_memory_bounded():
    # A client sending 100,000 distinct long names from one address, slowly
    # enough never to be blocked, then 100,000 distinct valid names: with the
    # default bounds the process grows (peak RSS) by less than 20 MB. A fresh
    # process, so nothing else the tests did is counted.
    result = subprocess.run([sys.executable, "-c", _DISTINCT_NAMES], capture_output=True,
                            text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    invalid_grown, grown = map(int, result.stdout.split())
    assert invalid_grown < 2 * 2**20, f"{invalid_grown / 2**20:.1f} MB"
    assert grown < 20 * 2**20, f"{grown / 2**20:.1f} MB"


@inline
async def test_many_failed_sign_ins_over_the_wire_still_answer_429(
    server_factory, config_factory
):
    # Past about 1,025 counted failures the delay once overflowed a float and
    # the sign-in died with a traceback instead of an answer.
    running = await server_factory(config_factory(
        limits={"signin_free_failures": "1", "signin_max_delay": "0.002",
                "message_rate": "100000", "message_burst": "100000"}))
    owner = await running.client("alice", "right")
    await owner.close()
    guesser = await running.client()
    failures = throttled = 0
    while failures < 1100:
        reply = await guesser.request({"type": "RegisterRequest", "username": "alice",
                                       "password": "wrong"})
        assert reply["status"] in (301, 429), reply
        if reply["status"] == 301:
            failures += 1
        else:
            throttled += 1
            assert 0 <= reply["retry_after"] <= 0.002, reply
            await deferLater(reactor, reply["retry_after"], lambda: None)
    assert throttled, "never throttled"
