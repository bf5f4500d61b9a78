"""``--send`` mode: raw JSON messages out, every frame back as one JSON line.

It exists for shell scripts and tests, so its input is forgiving (one
message, an array of messages, or JSON lines) and its output is exact: one
line of JSON per frame, in arrival order, nothing else on standard output.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from twisted.internet.defer import Deferred

from chateau.client.session import EXIT_CONNECTION, EXIT_OK, EXIT_SERVER_ERROR
from chateau.client.wire import (
    NORMAL_CLOSE,
    ClientConnection,
    ClientSetupError,
    ConnectionFailed,
    ServerURL,
    open_connection,
)

_NOTHING = object()

# How long --send waits for the first frame, whatever --wait says: the first
# reply is usually a sign-in's, which hashes a password, and a script on a
# busy machine must not end before it. Every later frame is followed by
# --wait seconds of quiet at most.
FIRST_FRAME_WAIT = 30.0


def parse_messages(text: str, source: str) -> list[Any]:
    """The messages in one file's text.

    The whole text as one JSON value is tried first: an array is a list of
    messages, anything else is one message. Otherwise each non-blank line
    must be one JSON value (JSON lines).
    """
    if not text.strip():
        return []
    try:
        value = json.loads(text)
    except ValueError:
        value = _NOTHING
    if value is not _NOTHING:
        return list(value) if isinstance(value, list) else [value]
    messages = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            messages.append(json.loads(line))
        except ValueError as exc:
            raise ClientSetupError(
                f"{source}:{number}: not JSON ({exc.msg} at column {exc.colno})"
            ) from None
    return messages


def read_messages(paths: list[str], stdin: TextIO) -> list[Any]:
    """Every message of every file, in order; ``-`` is standard input."""
    messages: list[Any] = []
    for path in paths:
        if path == "-":
            text, source = stdin.read(), "<stdin>"
        else:
            try:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
            except OSError as exc:
                raise ClientSetupError(f"--send {path}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise ClientSetupError(f"--send {path}: not UTF-8 text") from None
            source = path
        messages.extend(parse_messages(text, source))
    return messages


class _Recorder:
    """Prints frames as they come and notices the quiet period after them."""

    def __init__(self, reactor: Any, out: TextIO, err: TextIO, wait: float) -> None:
        self.reactor = reactor
        self.out = out
        self.err = err
        self.wait = wait
        self.errors = 0
        self.close_code: int | None = None
        self.done: Deferred[None] = Deferred()
        self._timer: Any = None

    def start_quiet_timer(self, first: bool = False) -> None:
        self._cancel_timer()
        wait = max(self.wait, FIRST_FRAME_WAIT) if first else self.wait
        self._timer = self.reactor.callLater(wait, self._finish)

    def frame_received(self, connection: ClientConnection, frame: Any, raw: bytes) -> None:
        if isinstance(frame, dict) and frame.get("type") == "ErrorResponse":
            self.errors += 1
        if frame is None:
            line = raw.decode("utf-8", "replace").replace("\n", " ")
        else:
            line = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
        self.out.write(line + "\n")
        self.out.flush()
        if self._timer is not None:
            self.start_quiet_timer()

    def connection_closed(self, connection: ClientConnection, code: int | None,
                          reason: str | None) -> None:
        self.close_code = code
        if not self.done.called and code != NORMAL_CLOSE:
            text = f"{code}" + (f" {reason}" if reason else "")
            self.err.write(f"chateau-client: the server closed the connection: {text}\n")
        self._finish()

    def _finish(self) -> None:
        self._cancel_timer()
        if not self.done.called:
            self.done.callback(None)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


async def run_send(
    reactor: Any,
    server: ServerURL,
    messages: list[Any],
    *,
    ca_file: str | None,
    wait: float,
    strict: bool,
    out: TextIO,
    err: TextIO,
    sign_in: dict[str, Any] | None = None,
) -> int:
    """Send *messages* (after *sign_in*, if given) and print replies until quiet."""
    recorder = _Recorder(reactor, out, err, wait)
    try:
        connection = await open_connection(reactor, server, recorder, ca_file)
    except ConnectionFailed as exc:
        err.write(f"chateau-client: cannot connect to {server.url}: {exc}\n")
        return EXIT_CONNECTION
    if sign_in is not None:
        connection.send_json(sign_in)
    for message in messages:
        connection.send_json(message)
    # Until the first frame, the longer wait; after each frame, --wait.
    recorder.start_quiet_timer(first=sign_in is not None or bool(messages))
    await recorder.done
    await connection.close()
    abnormal = recorder.close_code not in (None, NORMAL_CLOSE)
    if strict and (recorder.errors or abnormal):
        return EXIT_SERVER_ERROR
    return EXIT_OK
