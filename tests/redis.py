"""A private Redis server for the tests, on a free loopback port.

``redis-server`` runs in the foreground as a child process with persistence
off (no RDB snapshots, no AOF) in its own temporary directory, and is stopped
by its pid. Readiness and :meth:`RedisServer.command` speak RESP over a raw
socket, so the tests need no Redis client library of their own.

A server may require a password (``requirepass``, or an ACL user given by
*username*) and may speak only TLS (``tls=True``: plain TCP off, a throwaway
CA and a server certificate for 127.0.0.1 made with openssl in its directory,
:attr:`RedisServer.ca_file`); the helpers here sign in and verify like any
client would.

Without ``redis-server`` the tests that use it are skipped, except under CI
where they fail (scripts/test installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.processes import end_process, free_port, wait_ready


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


class RedisError(RuntimeError):
    """The server did not start, or a reply could not be read."""


def _encode(args: tuple[object, ...]) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _reply_end(buffer: bytes, start: int = 0) -> int | None:
    """Index just past the one complete RESP reply at *start*; None if incomplete."""
    line_end = buffer.find(b"\r\n", start)
    if line_end < 0:
        return None
    kind, header = buffer[start:start + 1], buffer[start + 1:line_end]
    after = line_end + 2
    if kind in (b"+", b"-", b":", b",", b"#", b"_", b"("):
        return after
    if kind in (b"$", b"!", b"="):  # bulk string, bulk error, verbatim string
        length = int(header)
        if length < 0:
            return after
        end = after + length + 2
        return end if len(buffer) >= end else None
    if kind in (b"*", b"~", b">", b"%", b"|"):  # array, set, push, map, attributes
        count = int(header)
        if kind in (b"%", b"|"):
            count *= 2
        position = after
        for _ in range(max(count, 0)):
            found = _reply_end(buffer, position)
            if found is None:
                return None
            position = found
        return position
    raise RedisError(f"unexpected RESP reply: {buffer[start:start + 80]!r}")


# What Chateau's nodes send to Redis (docs/cluster.md); an ACL user needs no more.
ACL_COMMANDS = ("auth", "select", "publish", "subscribe", "unsubscribe", "eval", "set", "sadd",
                "srem", "del", "pexpire", "smembers", "exists", "ping")


def make_client_cert(directory: Path, ca: str, name: str) -> tuple[Path, Path]:
    """A client certificate signed by *ca* (for Redis's ``tls-auth-clients yes``)."""
    from tests.slapd import _openssl

    (directory / f"{name}.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=clientAuth\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory,
    )
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=directory,
    )
    return directory / f"{name}.pem", directory / f"{name}.key"


def _quoted(text: str) -> str:
    """*text* as one argument of a redis.conf line."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send *request*; the one RESP reply to it."""
    sock.sendall(request)
    reply = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise RedisError(f"connection closed mid-reply: {reply!r}")
        reply += chunk
        end = _reply_end(reply)
        if end is not None:
            return reply[:end]


class RedisServer:
    def __init__(
        self, password: str | None = None, username: str | None = None, tls: bool = False,
        tls_names: str = "IP:127.0.0.1,DNS:localhost", client_certificates: bool = False,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            reason = (
                "redis-server is not installed (apt-get install redis-server); "
                "scripts/test installs it"
            )
            if _in_ci():
                raise RedisError(reason)
            pytest.skip(reason)
        self.binary = binary
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="chateau-redis-"))
        self.log_path = self.root / "redis.log"
        self.process: subprocess.Popen | None = None
        self.password = password
        self.username = username
        self.tls = tls
        self.ca_file: Path | None = None
        if tls:
            from tests.slapd import make_ca, make_server_cert

            self.ca_file = make_ca(self.root, "ca")
            # The names the certificate gives (a test may leave 127.0.0.1 out).
            self.tls_names = tls_names
            self.cert_file, self.key_file = make_server_cert(self.root, "ca", "server", tls_names)
            # With client_certificates, Redis takes only clients with a certificate of its CA.
            self.client_certificates = client_certificates
            self.client_cert_file, self.client_key_file = make_client_cert(self.root, "ca", "node")

    @property
    def url(self) -> str:
        return self.url_with(self.password)

    def url_with(self, password: str | None) -> str:
        """The URL for this server, signing in with *password* (and the user, if any)."""
        scheme = "rediss" if self.tls else "redis"
        auth = ""
        if password is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(password, safe='')}@"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def _arguments(self) -> list[str]:
        config = self.root / "redis.conf"
        lines = []
        if self.password is not None and self.username is None:
            lines.append(f"requirepass {_quoted(self.password)}")
        if self.username is not None:
            # An ACL user limited to Chateau's keys, channels and commands (as
            # docs/cluster.md gives them, plus PING for the fixture); no default user.
            lines.append("user default off")
            lines.append(
                f"user {self.username} on {_quoted('>' + self.password)} "
                "~chateau:* &chateau:* -@all " + " ".join(f"+{c}" for c in ACL_COMMANDS)
            )
        if self.tls:
            lines += [
                "port 0", f"tls-port {self.port}", f"tls-cert-file {self.cert_file}",
                f"tls-key-file {self.key_file}", f"tls-ca-cert-file {self.ca_file}",
                f"tls-auth-clients {'yes' if self.client_certificates else 'optional'}",
            ]
        else:
            lines.append(f"port {self.port}")
        config.write_text("\n".join(lines) + "\n")
        return [str(config), "--bind", "127.0.0.1"]

    def connect(self, timeout: float = 5.0) -> socket.socket:
        """A socket to the server, through TLS if it speaks TLS, signed in if it needs it."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            if self.tls:
                context = ssl.create_default_context(cafile=str(self.ca_file))
                context.check_hostname = "IP:127.0.0.1" in self.tls_names
                context.load_cert_chain(self.client_cert_file, self.client_key_file)
                sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
            if self.password is not None:
                credentials = (self.username, self.password) if self.username else (self.password,)
                reply = _exchange(sock, _encode(("AUTH", *credentials)))
                if not reply.startswith(b"+OK"):
                    raise RedisError(f"AUTH refused: {reply!r}")
        except BaseException:
            sock.close()
            raise
        return sock

    def start(self, timeout: float = 20.0) -> "RedisServer":
        """Start the server (again, after :meth:`halt`, on the same port)."""
        if self.process is not None and self.process.poll() is None:
            return self
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [self.binary, *self._arguments(),
             "--save", "", "--appendonly", "no", "--dir", str(self.root),
             "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.root,
        )
        log.close()
        problem = wait_ready(self.process, self.ping, timeout, "answer PING")
        if problem is not None:
            output = self.output()
            self.halt()
            raise RedisError(f"redis-server {problem}:\n{output}")
        return self

    def ping(self) -> bool:
        """Whether the server answers PING with +PONG."""
        try:
            with self.connect(timeout=1) as sock:
                return _exchange(sock, _encode(("PING",))).startswith(b"+PONG")
        except (OSError, RedisError):
            return False

    def command(self, *args: object, timeout: float = 5.0) -> bytes:
        """Send one command; its raw RESP reply, e.g. ``b"+OK\\r\\n"`` or ``b"$1\\r\\nx\\r\\n"``."""
        with self.connect(timeout=timeout) as sock:
            return _exchange(sock, _encode(args))

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def halt(self, timeout: float = 10.0) -> None:
        """Stop the server process but keep its port and directory, to :meth:`start` it again."""
        if self.process is None:
            return
        end_process(self.process, timeout=timeout)
        self.process = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server for good and remove its directory."""
        self.halt(timeout)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
