"""The HTTP side of the port: the client's real address (behind a proxy too)
and the limits on requests, heads, bodies and handshakes, over real sockets."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher

from tests import rawhttp
from tests.conftest import make_config
from tests.deferreds import inline

HOST = "127.0.0.1"


def port_of(running: Any) -> int:
    return running.service.ports[0].getHost().port


async def blocking(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking client call off the reactor thread, which serves the server."""
    return await deferToThread(call, *args, **kwargs)


def close_all(responses: list[rawhttp.Response]) -> None:
    for response in responses:
        if response.sock is not None:
            response.sock.close()


def v1(source: str) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 40000 8888\r\n".encode()


# -- H4: the real client address -------------------------------------------


@inline
async def test_forwarded_for_from_a_trusted_proxy_counts_each_client(server_factory, tmp_path):
    running = await server_factory(make_config(tmp_path, 
        server={"trusted_proxies": "127.0.0.1"}, limits={"max_connections_per_address": "1"}))
    port = port_of(running)
    opened = []
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        for header in ("X-Forwarded-For: 203.0.113.1\r\n",
                       "Forwarded: for=203.0.113.2;proto=http\r\n"):
            opened.append(await blocking(rawhttp.handshake, HOST, port, header))
            assert opened[-1].status == 101, opened[-1]
        again = await blocking(rawhttp.handshake, HOST, port, "X-Forwarded-For: 203.0.113.1\r\n")
        assert again.status == 429, again
        # An invalid value is ignored (the proxy's address is used), and logged.
        bad = await blocking(rawhttp.handshake, HOST, port, "X-Forwarded-For: nonsense\r\n")
        opened.append(bad)
        assert bad.status == 101
        assert (await blocking(rawhttp.get, HOST, port)).status == 200
        # The header was logged once (with its HTTP request, not again by the WebSocket).
        warned = [formatEvent(event) for event in events
                  if "invalid {header} header" in event.get("log_format", "")]
        assert warned == [
            "ignored an invalid X-Forwarded-For header from the proxy 127.0.0.1: 'nonsense'"
        ], warned
        # A refusal names the client a trusted proxy gave.
        head = (f"POST /health HTTP/1.1\r\nHost: {HOST}\r\nX-Forwarded-For: 203.0.113.9\r\n"
                "Content-Length: 5000000\r\n\r\n")
        refused = await blocking(rawhttp.exchange, HOST, port, head.encode())
        assert refused.status == 413
        assert any("refused an HTTP request from 203.0.113.9: 413" in formatEvent(event)
                   for event in events), [formatEvent(event) for event in events]
    finally:
        globalLogPublisher.removeObserver(events.append)
        close_all(opened)


@inline
async def test_forwarded_for_from_anyone_else_is_ignored(server_factory, tmp_path):
    running = await server_factory(make_config(tmp_path, 
        server={"trusted_proxies": "10.0.0.0/8"}, limits={"max_connections_per_address": "1"}))
    port = port_of(running)
    first = await blocking(rawhttp.handshake, HOST, port, "X-Forwarded-For: 203.0.113.1\r\n")
    try:
        assert first.status == 101
        forged = await blocking(rawhttp.handshake, HOST, port, "X-Forwarded-For: 203.0.113.2\r\n")
        assert forged.status == 429, forged
    finally:
        close_all([first])


@inline
async def test_proxy_protocol_listener(server_factory, tmp_path):
    running = await server_factory(make_config(tmp_path, 
        server={"listen": "haproxy:tcp:0:interface=127.0.0.1"},
        limits={"max_connections_per_address": "1"}))
    port = port_of(running)
    opened = []
    try:
        assert (await blocking(rawhttp.get, HOST, port, prefix=v1("192.0.2.1"))).status == 200
        for source in ("192.0.2.1", "192.0.2.2"):
            opened.append(await blocking(rawhttp.handshake, HOST, port, prefix=v1(source)))
            assert opened[-1].status == 101
        again = await blocking(rawhttp.handshake, HOST, port, prefix=v1("192.0.2.2"))
        assert again.status == 429
    finally:
        close_all(opened)


# -- M5: the limits of the HTTP side -----------------------------------------


@inline
async def test_an_oversized_body_gets_413(server_factory, tmp_path):
    running = await server_factory(make_config(tmp_path, limits={"max_request_body": "1000"}))
    port = port_of(running)
    head = f"POST /health HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5000000\r\n\r\n"
    refused = await blocking(rawhttp.exchange, HOST, port, head.encode())
    assert refused.status == 413, refused
    assert b"1000" in refused.body
    # Without a length, the chunks are counted.
    chunked = (f"POST /health HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n"
               + ("200\r\n" + "x" * 0x200 + "\r\n") * 3)
    refused = await blocking(rawhttp.exchange, HOST, port, chunked.encode())
    assert refused.status == 413, refused
    small = f"POST /health HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 10\r\n\r\n0123456789"
    assert (await blocking(rawhttp.exchange, HOST, port, small.encode())).status != 413


@inline
async def test_oversized_heads_get_431(server_factory, tmp_path):
    running = await server_factory(make_config(tmp_path, 
        limits={"max_header_bytes": "4096", "max_headers": "20"}))
    port = port_of(running)
    many = "".join(f"X-Filler-{number}: {number}\r\n" for number in range(21))
    refused = await blocking(rawhttp.get, HOST, port, headers=many)
    assert refused.status == 431, refused
    for headers in ("X-Big: " + "a" * 5000 + "\r\n", "X-Big: " + "a" * 30000 + "\r\n",
                    "".join(f"X-F{n}: " + "b" * 300 + "\r\n" for n in range(15))):
        refused = await blocking(rawhttp.get, HOST, port, headers=headers)
        assert refused.status == 431, refused
    # A request line alone over the limit is a URI too long.
    assert (await blocking(rawhttp.get, HOST, port, "/" + "u" * 5000)).status == 414
    assert (await blocking(rawhttp.get, HOST, port, "/" + "u" * 40000)).status == 414
    fine = "".join(f"X-Filler-{number}: {number}\r\n" for number in range(15))
    assert (await blocking(rawhttp.get, HOST, port, headers=fine)).status == 200
    # The WebSocket handshake is held to the same rules.
    assert (await blocking(rawhttp.handshake, HOST, port, many)).status == 431


@inline
async def test_http_requests_per_address_get_429(server_factory, tmp_path):
    running = await server_factory(make_config(tmp_path, 
        limits={"http_request_rate": "0.5", "http_request_burst": "3"}))
    port = port_of(running)
    statuses = [(await blocking(rawhttp.get, HOST, port, source="127.0.0.2")) for _ in range(4)]
    assert [r.status for r in statuses] == [200, 200, 200, 429], statuses
    assert int(statuses[-1].headers["retry-after"]) >= 1
    # Another address is not affected.
    assert (await blocking(rawhttp.get, HOST, port, source="127.0.0.3")).status == 200
    metrics = await blocking(rawhttp.get, HOST, port, "/metrics", source="127.0.0.4")
    assert b'chateau_http_refusals_total{reason="http_rate"} 1.0' in metrics.body


@inline
async def test_handshakes_per_address_get_429(server_factory, tmp_path):
    running = await server_factory(make_config(tmp_path, 
        limits={"handshake_rate": "0.5", "handshake_burst": "2"}))
    port = port_of(running)
    opened = []
    try:
        for _ in range(2):
            opened.append(await blocking(rawhttp.handshake, HOST, port, source="127.0.0.2"))
        assert [r.status for r in opened] == [101, 101]
        refused = await blocking(rawhttp.handshake, HOST, port, source="127.0.0.2")
        assert refused.status == 429 and int(refused.headers["retry-after"]) >= 1
        # Plain HTTP from that address and handshakes from others still go.
        assert (await blocking(rawhttp.get, HOST, port, source="127.0.0.2")).status == 200
        opened.append(await blocking(rawhttp.handshake, HOST, port, source="127.0.0.3"))
        assert opened[-1].status == 101
    finally:
        close_all(opened)


def test_address_rates_are_bounded_and_per_address():
    from twisted.internet.task import Clock

    from chateau.limits import AddressRates

    clock = Clock()
    rates = AddressRates(rate=1, burst=2, now=clock.seconds, entries=100)
    assert [rates.take("a") for _ in range(3)] == [0, 0, 1.0]
    assert rates.take("b") == 0
    for number in range(10_000):
        rates.take(f"10.0.{number // 256}.{number % 256}")
    assert len(rates) == 100
    clock.advance(1)
    assert rates.take("a") == 0  # evicted: starts again with a full bucket


@inline
async def test_a_unix_socket_listener_keeps_the_limits(server_factory, tmp_path):
    """A peer without an IP address (nginx over a UNIX socket) is one key, "?"."""
    import socket as sockets

    path = tmp_path / "chateau.sock"
    await server_factory(make_config(
        tmp_path, server={"listen": f"tcp:0:interface=127.0.0.1 unix:{path}"},
        limits={"http_request_rate": "0.5", "http_request_burst": "2"}))

    def get_over_unix() -> int:
        with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return rawhttp.read_response(sock).status

    assert [await blocking(get_over_unix) for _ in range(3)] == [200, 200, 429]
