"""No password or session key reaches any log, at any level."""

from __future__ import annotations

import json

import websocket
from twisted.logger import formatEvent, globalLogPublisher

from tests.deferreds import inline
from tests.processes import TwistdServer

PASSWORD = "Tr0ub4dor&3-secret"
WRONG = "hunter2-wrong-guess"


@inline
async def test_no_secret_in_any_log_event(server):
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        alice = await server.client()
        reply = await alice.request({"type": "RegisterRequest", "username": "alice",
                                     "password": PASSWORD})
        key = reply["session_key"]
        guess = await server.client()
        await guess.request({"type": "RegisterRequest", "username": "alice", "password": WRONG})
        # A password typed into the username field is refused, and not logged either.
        await guess.request({"type": "RegisterRequest", "username": PASSWORD, "password": "x"})
        resumed = await server.client()
        await resumed.request({"type": "ResumeRequest", "session_key": key})
        await resumed.request({"type": "ResumeRequest", "session_key": key})
        bad = await server.client()
        await bad.request({"type": "ResumeRequest", "session_key": key[::-1]})
        await resumed.request({"type": "LogoutRequest"})
        alice.send(f'{{"type": "RegisterRequest", "password": "{PASSWORD}", "oops"')
        await alice.recv()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert events, "nothing was logged at all"
    text = "\n".join(formatEvent(event) + " " + repr(event) for event in events)
    for secret in (PASSWORD, WRONG, key, key[::-1]):
        assert secret not in text


def test_no_secret_in_twistd_output(tmp_path):
    with TwistdServer(tmp_path) as server:
        peer = websocket.create_connection(server.url, timeout=10)
        peer.send(json.dumps({"type": "RegisterRequest", "username": "alice",
                              "password": PASSWORD}))
        key = json.loads(peer.recv())["session_key"]
        peer.send(json.dumps({"type": "LogoutRequest"}))
        peer.recv()
        peer.send(json.dumps({"type": "RegisterRequest", "username": "alice",
                              "password": WRONG}))
        peer.recv()
        peer.close()
        server.stop()
        output = server.output()
    assert "signed in" in output  # the log is there, just without secrets
    for secret in (PASSWORD, WRONG, key):
        assert secret not in output
