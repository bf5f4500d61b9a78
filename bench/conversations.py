"""The conversation list and unread counts over a large history, through a real server.

Builds the history with :mod:`bench.dataset` (one user in 1,000 conversations,
half groups and half direct chats, over 1,000,000 messages by default),
starts ``twistd -n chateau`` on it (SQLite, and PostgreSQL when installed)
and times, over a WebSocket, one request at a time:

- ``ConversationsRequest`` with ``limit`` 50 (the first page);
- the whole list, paged with ``limit`` 50 and ``before`` (20 requests for
  1,000 conversations), as one figure;
- a sign-in's ``unread_total``: a ``ResumeRequest`` round trip on an open
  connection (the unread total is one query of it).

Each in two states: ``few unread`` (the main user's marker a few messages
before each conversation's newest) and ``nothing read`` (no marker at all:
every conversation counts up to its cap of 100 and the total to 1,000, the worst case).

    python -m bench.conversations                              # 1M messages, both databases
    python -m bench.conversations --messages 100000 --databases sqlite
    python -m bench.conversations --results bench/RESULTS.md   # also record the figures

Reports median and p99 per case, and how long the build took. The
``--results`` file gets (or has replaced) the section between
``<!-- bench.conversations -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import text

from bench import dataset, large
from bench.harness import settings
from bench.processes import ProcessGroup, chateau
from chateau.store.engine import in_transaction, make_engine

BEGIN, END = "<!-- bench.conversations -->", "<!-- /bench.conversations -->"
TARGET_MS = 50.0
# Unread messages left in each conversation in the "few unread" state.
FEW_UNREAD = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = large.arguments("python -m bench.conversations", __doc__.splitlines()[0], 100,
                             "timed requests per case (the whole list: a fifth of it)",
                             "bench.conversations")
    parser.add_argument("--states", default="few unread,nothing read",
                        help="which of 'few unread' and 'nothing read' to measure")
    return parser.parse_args(argv)


def measure(url: str, made: dataset.Dataset, requests: int, state: str) -> list[dict[str, Any]]:
    """Median and p99 (ms) of each case, on one signed-in connection (and one for resumes)."""
    from websockets.sync.client import connect

    rows = []
    with connect(url, max_size=None) as socket:

        def ask(conn: Any, message: dict[str, Any]) -> tuple[float, dict[str, Any]]:
            started = time.perf_counter()
            conn.send(json.dumps({**message, "msg_id": "q"}))
            while (reply := json.loads(conn.recv())).get("msg_id") != "q":
                pass
            return (time.perf_counter() - started) * 1000, reply

        _, signed_in = ask(socket, {"type": "RegisterRequest", "username": made.main_user,
                                    "password": made.password})
        assert signed_in.get("status") == 200, signed_in
        key = signed_in["session_key"]

        def first_page() -> tuple[float, dict[str, Any]]:
            return ask(socket, {"type": "ConversationsRequest", "limit": 50})

        def whole_list() -> tuple[float, dict[str, Any]]:
            total, before, listed, pages = 0.0, None, 0, 0
            while True:
                fields: dict[str, Any] = {"type": "ConversationsRequest", "limit": 50}
                if before is not None:
                    fields["before"] = before
                took, reply = ask(socket, fields)
                assert reply.get("status") == 200, reply
                total += took
                pages += 1
                listed += len(reply["conversations"])
                if not reply["more"]:
                    return total, {"conversations": listed, "pages": pages,
                                   "unread_total": None}
                before = reply["conversations"][-1]["activity"]

        def resume() -> tuple[float, dict[str, Any]]:
            # A new connection each time (a signed-in one cannot resume again);
            # only the ResumeRequest's round trip is timed.
            with connect(url, max_size=None) as fresh:
                took, reply = ask(fresh, {"type": "ResumeRequest", "session_key": key})
            assert reply.get("status") == 200, reply
            return took, reply

        cases: list[tuple[str, Callable[[], tuple[float, dict[str, Any]]], int]] = [
            ("ConversationsRequest, limit 50", first_page, requests),
            ("the whole list, paged by 50", whole_list, max(3, requests // 5)),
        ]
        for name, case, count in cases:
            for _ in range(3):  # warm the caches
                _, reply = case()
            times = [case()[0] for _ in range(count)]
            rows.append({"state": state, "case": name, "requests": count,
                         "detail": _detail(reply), **large.percentiles(times)})
            print(f"  {state}: {name}: {rows[-1]}", flush=True)
        times = []
        total = None
        for n in range(requests):
            took, reply = resume()
            if n >= 3:
                times.append(took)
            total = reply.get("unread_total")
        rows.append({"state": state, "case": "sign-in (ResumeRequest) with unread_total",
                     "requests": len(times), "detail": f"unread_total {total}",
                     **large.percentiles(times)})
        print(f"  {state}: {rows[-1]}", flush=True)
    return rows


def _detail(reply: dict[str, Any]) -> str:
    if "pages" in reply:
        return f"{reply['conversations']} conversations in {reply['pages']} pages"
    unread = sum(c["unread"] for c in reply["conversations"])
    return f"{len(reply['conversations'])} conversations, {unread} unread on the page"


def forget_markers(url: str) -> None:
    """The worst case: nothing read anywhere."""
    engine = make_engine(url)
    try:
        in_transaction(engine, lambda c: c.execute(text("DELETE FROM read_markers")))
    finally:
        engine.dispose()


def analyze_markers(url: str) -> None:
    """Statistics of the markers just written, as autovacuum would soon gather them.

    Without them PostgreSQL plans for the empty table the build analysed.
    """
    engine = make_engine(url)
    try:
        if engine.dialect.name == "postgresql":
            in_transaction(engine, lambda c: c.execute(text("ANALYZE read_markers")))
    finally:
        engine.dispose()


def run_database(kind: str, args: argparse.Namespace, workdir: Path,
                 group: ProcessGroup) -> dict[str, Any]:
    with large.database(kind, workdir, "conversations") as url:
        made = large.build(url, args)
        print(f"{kind}: built {made.messages:,} messages in {made.seconds:.0f} s", flush=True)
        rows = []
        for state in [name.strip() for name in args.states.split(",") if name.strip()]:
            if state == "few unread":
                dataset.mark_read(url, made, FEW_UNREAD)
            else:
                forget_markers(url)
            analyze_markers(url)
            # The harness's settings: the abuse limits lifted (one client
            # signs in hundreds of times a minute here).
            server = group.add(chateau(f"chateau-{kind}-{len(rows)}", workdir / kind, url,
                                       settings(store_messages=True), None))
            server.launch()
            server.wait_ready()
            # Nothing read is the slow worst case: fewer requests.
            requests = args.requests if state == "few unread" else max(10, args.requests // 4)
            try:
                rows += measure(server.url, made, requests, state)
            finally:
                server.stop()
            print(f"{kind}: {state} measured", flush=True)
        return {"database": kind, "build_s": made.seconds, "rows": rows,
                "messages": made.messages, "conversations": len(made.last_ids)}


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        BEGIN,
        "## Conversations: ConversationsRequest and unread_total over a large history "
        "(`python -m bench.conversations`)",
        "",
        f"One user in {args.conversations:,} conversations (half groups, half direct chats) over "
        f"{args.messages:,} messages (`bench/dataset.py`), one request at a time over a "
        "WebSocket to `twistd`. *few unread*: the user's marker "
        f"{FEW_UNREAD} messages before each conversation's newest; *nothing read*: no marker "
        "anywhere, so every count reaches its cap (100 per conversation, 1,000 for "
        "unread_total: the worst case). "
        f"Target: median < {TARGET_MS:.0f} ms. "
        f"Recorded {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on a shared 2-core "
        "machine (other work running).",
        "",
        "| database | state | case | requests | result | median ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for row in result["rows"]:
            lines.append(
                f"| {result['database']} | {row['state']} | {row['case']} | {row['requests']} | "
                f"{row['detail']} | {row['median_ms']:.1f} | {row['p99_ms']:.1f} |")
    lines.append("")
    lines.append("Build time of the history: " + ", ".join(
        f"{r['database']} {r['build_s']:.0f} s" for r in results) + ".")
    lines.append(END)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    large.run(parse_args(argv), "chateau-bench-conversations-", run_database, report, (BEGIN, END))


if __name__ == "__main__":
    main()
