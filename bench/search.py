"""Message search over a large history: SearchRequest latency through a real server.

Builds the history with :mod:`bench.dataset` (one user in 1,000 conversations
over 1,000,000 messages by default), starts ``twistd -n chateau`` on it (SQLite,
and PostgreSQL when installed), signs the main user in over a WebSocket and
times SearchRequest round trips, one at a time, for:

- ``rare``: a word in a few hundred messages;
- ``common``: the most frequent word (in about half the messages): the first
  page of the newest 20;
- ``phrase``: two frequent words in a row;
- ``one chat``: a fairly common word within one group.

    python -m bench.search                               # 1M messages, both databases
    python -m bench.search --messages 100000 --databases sqlite
    python -m bench.search --results bench/RESULTS.md    # also record the figures

Reports median and p99 per case, and how long the build took. The
``--results`` file gets (or has replaced) the section between
``<!-- bench.search -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench import dataset, large
from bench.processes import ProcessGroup, chateau

BEGIN, END = "<!-- bench.search -->", "<!-- /bench.search -->"
TARGET_MS = 100.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return large.arguments("python -m bench.search", __doc__.splitlines()[0], 200,
                           "timed searches per case", "bench.search").parse_args(argv)


def cases(made: dataset.Dataset) -> list[tuple[str, dict[str, Any]]]:
    words = made.vocabulary
    return [
        ("rare word", {"query": words[len(words) // 2]}),
        ("common word", {"query": words[0]}),
        ("phrase", {"query": f'"{words[1]} {words[2]}"'}),
        ("one chat", {"query": words[10], "chatname": made.groups[0]}),
    ]


def measure(url: str, made: dataset.Dataset, requests: int) -> list[dict[str, Any]]:
    """Median and p99 (ms) of each case's SearchRequest round trip, on one signed-in connection."""
    from websockets.sync.client import connect

    rows = []
    with connect(url, max_size=None) as socket:
        socket.send(json.dumps({"type": "RegisterRequest", "username": made.main_user,
                                "password": made.password, "msg_id": "in"}))
        while json.loads(socket.recv()).get("msg_id") != "in":
            pass

        def ask(fields: dict[str, Any]) -> tuple[float, dict[str, Any]]:
            started = time.perf_counter()
            socket.send(json.dumps({"type": "SearchRequest", "msg_id": "q", **fields}))
            while (reply := json.loads(socket.recv())).get("msg_id") != "q":
                pass
            return (time.perf_counter() - started) * 1000, reply

        for name, fields in cases(made):
            for _ in range(5):  # warm the caches
                _, reply = ask(fields)
            assert reply.get("status") == 200, reply
            times = sorted(ask(fields)[0] for _ in range(requests))
            rows.append({
                "case": name, "query": fields["query"], "results": len(reply["results"]),
                **large.percentiles(times),
            })
    return rows


def run_database(kind: str, args: argparse.Namespace, workdir: Path,
                 group: ProcessGroup) -> dict[str, Any]:
    with large.database(kind, workdir, "search") as url:
        made = large.build(url, args)
        server = group.add(chateau(f"chateau-{kind}", workdir / kind, url, {
            "auth": {"bcrypt_cost": 4},
            "limits": {"message_rate": 100000, "message_burst": 100000},
        }, None))
        group.start()
        try:
            rows = measure(server.url, made, args.requests)
        finally:
            server.stop()
        return {"database": kind, "build_s": made.seconds, "rows": rows,
                "messages": made.messages, "conversations": len(made.last_ids)}


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        BEGIN,
        "## Search: SearchRequest over a large history (`python -m bench.search`)",
        "",
        f"One user in {args.conversations:,} conversations over {args.messages:,} messages "
        "(`bench/dataset.py`), one SearchRequest at a time over a WebSocket to `twistd`; "
        f"{args.requests} timed requests per case, page of 20. Target: median < {TARGET_MS:.0f} ms "
        f"on PostgreSQL. Recorded {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| database | case | query | results | median ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        for row in result["rows"]:
            lines.append(f"| {result['database']} | {row['case']} | `{row['query']}` | "
                         f"{row['results']} | {row['median_ms']:.1f} | {row['p99_ms']:.1f} |")
    lines.append("")
    lines.append("Build time of the history: " + ", ".join(
        f"{r['database']} {r['build_s']:.0f} s" for r in results) + ".")
    lines.append(END)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    large.run(parse_args(argv), "chateau-bench-search-", run_database, report, (BEGIN, END))


if __name__ == "__main__":
    main()
