"""Real processes for the client tests.

The server runs as ``twistd -n chateau`` with this checkout first on the
Python path (so the web client and server code under test are the working
tree's, installed or not). :class:`TcpProxy` sits between clients and the
server and can cut every connection at once, which is how a dropped network
is simulated. The clients run as subprocesses too: the CLI through a pipe or
a pseudo-terminal, the web client in Chromium.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.processes import checkout_env, end_process, wait_ready

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
# twistd, run by this interpreter whatever the PATH holds.
TWISTD = "from twisted.scripts.twistd import run; run()"
_LISTENING = re.compile(r"Chateau listening on .*port=(\d+)\)")


class ChateauProcess:
    """A real server on a free loopback port, its database in *workdir*."""

    def __init__(self, workdir: Path, tls: tuple[Path, Path] | None = None) -> None:
        self.workdir = workdir
        self.tls = tls
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / "twistd.log"

    @property
    def url(self) -> str:
        if self.tls:
            return f"wss://localhost:{self.port}/ws"
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 30.0) -> "ChateauProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "fast.ini"
        config.write_text(
            "[auth]\nbcrypt_cost = 4\n[limits]\nsignups_per_hour_per_address = 100000\n"
            "signins_per_minute_per_address = 100000\n"
        )
        if self.tls:
            cert, key = self.tls
            listen = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        else:
            listen = "tcp:0:interface=127.0.0.1"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "chateau",
                 "--config", str(config), "--listen", listen,
                 "--db", f"sqlite:///{self.workdir / 'chateau.sqlite3'}"],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=checkout_env(),
            )
        problem = wait_ready(
            self.process, lambda: _LISTENING.search(self.output()) is not None, timeout, "listen"
        )
        if problem is not None:
            output = self.output()
            if problem.startswith("did not"):
                self.stop()
            raise RuntimeError(f"the server {problem}:\n{output}")
        self.port = int(_LISTENING.search(self.output()).group(1))
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None:
            return
        end_process(self.process, timeout=15)
        self.process = None


@pytest.fixture
def chateau(tmp_path: Path) -> Iterator[ChateauProcess]:
    server = ChateauProcess(tmp_path / "server").start()
    try:
        yield server
    finally:
        server.stop()


class TcpProxy:
    """Forwards a loopback port to the server; :meth:`drop` cuts every connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._refusing = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def url(self, path: str = "/ws", scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing:
                _hard_close(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, one: socket.socket, other: socket.socket) -> None:
        pair = [one, other]
        try:
            while True:
                readable, _, _ = select.select(pair, [], [], 0.5)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (other if sock is one else one).sendall(data)
        except OSError:
            return
        finally:
            for sock in pair:
                _hard_close(sock)

    def drop(self) -> None:
        """Reset every open connection, as a dead network would (both ends see it)."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _hard_close(sock)

    def refuse(self, refusing: bool = True) -> None:
        """While refusing, every new connection is reset at once: the network is down."""
        self._refusing = refusing
        if refusing:
            self.drop()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.drop()


def _hard_close(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "chateau.client", *args]


def run_cli(*args: str, input: str | None = None, password: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """``chateau-client ARGS`` to completion; its output as text."""
    extra = {"CHATEAU_PASSWORD": password} if password is not None else {}
    return subprocess.run(
        cli_command(*args), input=input, capture_output=True, text=True, timeout=timeout,
        cwd=REPO, env=checkout_env(**extra),
    )


def spawn(url: str, user: str, tmp_path: Path, password: str | None = "pw",
          *extra: str) -> Any:
    """The interactive client on a pseudo-terminal; its screen is logged in *tmp_path*."""
    import pexpect

    env = checkout_env(**({"CHATEAU_PASSWORD": password} if password is not None else {}))
    env["TERM"] = "xterm"
    child = pexpect.spawn(
        sys.executable, cli_command(url, "--user", user, *extra)[1:], cwd=str(REPO), env=env,
        encoding="utf-8", timeout=15, dimensions=(40, 120),
    )
    child.logfile_read = open(tmp_path / f"{user}.terminal.log", "w", encoding="utf-8")
    return child


def finish(child: Any, how: str = "/quit\r") -> int:
    """Leave the interactive client (with /quit unless told otherwise); its exit status."""
    import pexpect

    child.send(how)
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for ``localhost`` signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Chateau test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_path = directory / "ca.pem"
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ))
    return ca_path, cert_path, key_path


# -- Chromium ---------------------------------------------------------------


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_chromium() -> str:
    """Chromium's path; without it the test is skipped, or fails under CI."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401  (only whether it is there)
    except ImportError:
        reason = "playwright is not installed (pip install '.[test]')"
    path = chromium_path()
    if path is None and reason is None:
        reason = "Chromium is missing (apt-get install chromium, or run scripts/test)"
    if reason is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    assert path is not None
    return path


def launch_chromium(playwright: Any) -> Any:
    """Headless Debian Chromium.

    Playwright refuses ``--user-data-dir`` with ``launch()``: it gives every
    launch a fresh temporary profile of its own, removed afterwards, which
    is what that flag would have been for.
    """
    return playwright.chromium.launch(
        executable_path=require_chromium(), headless=True, args=CHROMIUM_ARGS,
    )


# -- helpers shared by the CLI and browser tests ---------------------------------

BROWSER_TIMEOUT = 15_000  # ms; the web client's online list refreshes every 5 s


def frames(output: str) -> list[dict]:
    """``--send`` output: one JSON frame per line."""
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def register(username: str, password: str = "pw", **extra: Any) -> dict:
    return {"type": "RegisterRequest", "username": username, "password": password,
            "auth": False, **extra}


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium for one test (skipped without it, failed under CI)."""
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=BROWSER_TIMEOUT)
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
            # A script error the page did not catch fails the test, even when
            # what the test looks at happened to come out right.
            errors = [error for context in chromium.contexts for page in context.pages
                      for error in getattr(page, "script_errors", ())]
            assert errors == [], f"the page's scripts failed: {errors}"
        finally:
            chromium.close()


def open_page(browser: Any, url: str) -> Any:
    """A page in a context of its own, so each user has their own storage."""
    context = browser.new_context(viewport={"width": 1180, "height": 760})
    context.set_default_timeout(BROWSER_TIMEOUT)
    page = context.new_page()
    page.script_errors = []  # read when the browser fixture ends
    page.on("pageerror", lambda error: page.script_errors.append(f"{page.url}: {error}"))
    page.goto(url)
    return page


def web_sign_in(page: Any, username: str, password: str = "pw") -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()


def web_new_group(page: Any, chatname: str, members: str) -> None:
    """Start a group from the page's form; *members* as typed (comma-separated)."""
    page.get_by_role("button", name="New group").click()
    page.get_by_label("Group name").fill(chatname)
    page.get_by_label("Members").fill(members)
    page.get_by_role("button", name="Create group").click()


def web_send(page: Any, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_role("button", name="Send").click()


def online_user(page: Any, username: str) -> Any:
    return page.get_by_label("Online").get_by_role("button", name=username, exact=True)


def chat_item(page: Any, title: str) -> Any:
    """A chat in the sidebar, whatever its unread count."""
    name = re.compile(rf"^{re.escape(title)}( \d+\+? unread(, \d+\+? mentioning you)?)?$")
    return page.locator("#chats").get_by_role("button", name=name)
