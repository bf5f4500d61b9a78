"""``chateau-client``: the command line, the password, and the two modes."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any, Sequence

from chateau import __version__
from chateau.client.session import EXIT_CONNECTION, EXIT_USAGE, ChatSession
from chateau.client.wire import (
    ClientSetupError,
    ServerURL,
    load_trust_root,
    open_connection,
    parse_server_url,
)

PASSWORD_VARIABLE = "CHATEAU_PASSWORD"
PING_INTERVAL = 20.0

DESCRIPTION = """\
Chat on a Chateau server from a terminal, or script it.

Interactive:  chateau-client ws://HOST:8888/ws --user alice
Scripted:     chateau-client ws://HOST:8888/ws --send messages.json [--user alice]

The password is read from $CHATEAU_PASSWORD, or asked for."""

EPILOG = """\
--send files hold one JSON message, a JSON array of messages, or JSON lines
(one message per line); '-' reads standard input. Every frame received is
printed as one JSON line until nothing has arrived for --wait seconds after
the first frame (which is waited for up to 30 seconds).

exit status: 0 done; 1 could not connect; 2 bad command line or --send file;
3 sign-in refused (interactive); 4 an ErrorResponse arrived or the server
closed the connection abnormally (--send with --strict)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chateau-client",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", help="the server's WebSocket URL, ws://HOST:PORT/ws or wss://...")
    parser.add_argument("-u", "--user", help="sign in as this user")
    parser.add_argument(
        "--directory", action="store_true",
        help="sign in with a directory (LDAP) account rather than a local one",
    )
    parser.add_argument(
        "--ca-file", metavar="PEM",
        help="trust the CA certificates in this PEM file for wss:// (instead of the system's)",
    )
    parser.add_argument(
        "--send", nargs="+", metavar="FILE",
        help="send the JSON messages in these files ('-' for standard input) and print replies",
    )
    parser.add_argument(
        "--wait", type=float, default=1.0, metavar="SECONDS",
        help="with --send: stop after this long without a frame, once the first has come "
             "(default 1)",
    )
    parser.add_argument(
        "--strict", action="store_true",
        help="with --send: exit 4 if any ErrorResponse arrives",
    )
    parser.add_argument("--version", action="version", version=f"chateau-client {__version__}")
    return parser


def read_password(username: str) -> str:
    """$CHATEAU_PASSWORD, else asked for without echo."""
    password = os.environ.get(PASSWORD_VARIABLE)
    if password is not None:
        return password
    return getpass.getpass(f"Password for {username}: ")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.wait < 0:
        parser.error("--wait must not be negative")
    if args.send is None and not args.user:
        parser.error("--user is needed to chat (or give --send FILE to send raw messages)")
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # names and messages are anyone's Unicode
    try:
        server = parse_server_url(args.url)
        if args.ca_file:
            load_trust_root(args.ca_file)  # a bad file is a usage error, found now
        messages = None
        if args.send is not None:
            from chateau.client.scripting import read_messages

            messages = read_messages(args.send, sys.stdin)
    except ClientSetupError as exc:
        print(f"chateau-client: {exc}", file=sys.stderr)
        return EXIT_USAGE
    password = None
    if args.user:
        try:
            password = read_password(args.user)
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return EXIT_USAGE

    from twisted.internet import task

    if messages is not None:
        return _react(task, _send_main, server, args, messages, password)
    return _react(task, _chat_main, server, args, password)


def _react(task: Any, function: Any, *args: Any) -> int:
    try:
        task.react(function, args)
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else EXIT_CONNECTION
    return 0


async def _send_main(reactor: Any, server: ServerURL, args: argparse.Namespace,
                     messages: list[Any], password: str | None) -> None:
    from chateau.client.scripting import run_send

    sign_in = None
    if args.user:
        sign_in = {"type": "RegisterRequest", "username": args.user, "password": password,
                   "auth": args.directory}
    code = await run_send(
        reactor, server, messages, ca_file=args.ca_file, wait=args.wait, strict=args.strict,
        out=sys.stdout, err=sys.stderr, sign_in=sign_in,
    )
    raise SystemExit(code)


async def _chat_main(reactor: Any, server: ServerURL, args: argparse.Namespace,
                     password: str) -> None:
    from chateau.client.terminal import PlainUI, TerminalUI

    interactive = (
        sys.stdin.isatty() and sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
    )
    ui: TerminalUI | PlainUI = TerminalUI(reactor) if interactive else PlainUI(reactor)

    def connect(session: ChatSession) -> Any:
        return open_connection(reactor, server, session, args.ca_file, ping_interval=PING_INTERVAL)

    session = ChatSession(
        reactor, connect, ui, args.user, password, directory=args.directory,
        server_name=server.url,
    )
    code = await session.start()
    if code is not None:
        raise SystemExit(code)
    # However the reactor stops (a signal included), the terminal is restored.
    reactor.addSystemEventTrigger("before", "shutdown", ui.stop)
    ui.start(session)
    try:
        code = await session.finished
    finally:
        ui.stop()
    raise SystemExit(code)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
