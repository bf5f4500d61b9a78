"""Blocking HTTP over a plain socket, from a chosen source address.

For what client libraries will not send (oversized or malformed heads, a
forged ``X-Forwarded-For``, a PROXY protocol header) and for binding the
client side to another loopback address (all of 127.0.0.0/8 is loopback on
Linux), so that one test can be several clients. Blocking: call it from a
thread when the server runs in this process's reactor.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

HANDSHAKE_HEADERS = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # The socket, still open, when the answer was a 101 (a live WebSocket).
    sock: socket.socket | None = None


def open_socket(host: str, port: int, source: str | None = None,
                timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if source is not None:
        sock.bind((source, 0))
    sock.connect((host, port))
    return sock


def read_response(sock: socket.socket) -> Response:
    """One response head and its Content-Length body; the body up to EOF without one."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            if not data:
                raise ConnectionError("closed without an answer")
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if status == 101:
        return Response(status, headers, rest, sock)
    length = headers.get("content-length")
    while length is not None and len(rest) < int(length):
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    if length is None and headers.get("connection", "").lower() == "close":
        while chunk := sock.recv(65536):
            rest += chunk
    return Response(status, headers, rest)


def exchange(host: str, port: int, data: bytes, source: str | None = None,
             keep: bool = False) -> Response:
    """Send *data* on a new connection; the first response. The socket is
    closed unless the answer is a 101 or *keep* is set."""
    sock = open_socket(host, port, source)
    try:
        sock.sendall(data)
        response = read_response(sock)
    except BaseException:
        sock.close()
        raise
    if response.sock is None:
        if keep:
            response.sock = sock
        else:
            sock.close()
    return response


def get(host: str, port: int, path: str = "/health", headers: str = "",
        source: str | None = None, prefix: bytes = b"") -> Response:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}Connection: close\r\n\r\n"
    return exchange(host, port, prefix + request.encode(), source)


def handshake(host: str, port: int, headers: str = "", source: str | None = None,
              prefix: bytes = b"", path: str = "/ws") -> Response:
    """A WebSocket opening handshake; a 101 keeps its socket open in ``sock``."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{HANDSHAKE_HEADERS}{headers}\r\n"
    return exchange(host, port, prefix + request.encode(), source)
