"""What the large-history benches share (bench/conversations.py, bench/search.py).

Both build the same million-message history (bench/dataset.py) on SQLite
and PostgreSQL, time requests over a WebSocket to ``twistd``, and write
their table into bench/RESULTS.md between their own markers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from bench.processes import Postgres, ProcessGroup, postgres_available


def arguments(prog: str, description: str, requests: int, requests_help: str,
              section: str) -> argparse.ArgumentParser:
    """The options both benches take: the history's size, the databases, the results file."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=requests, help=requests_help)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--results", type=Path, default=None,
                        help=f"Markdown file whose {section} section is (re)written")
    return parser


def build(url: str, args: argparse.Namespace) -> Any:
    """The history of the size the options ask for (bench/dataset.py), at *url*."""
    from bench import dataset

    return dataset.build(url, users=args.users, conversations=args.conversations,
                         messages=args.messages)


def percentiles(times: list[float]) -> dict[str, float]:
    """Median and p99 of *times* (ms), under the keys the reports print."""
    times = sorted(times)
    return {"median_ms": statistics.median(times),
            "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))]}


@contextmanager
def database(kind: str, workdir: Path, name: str) -> Iterator[str]:
    """The URL of an empty database of *kind*: a file under *workdir*, or a private PostgreSQL."""
    if kind != "postgresql":
        yield f"sqlite:///{workdir / (name + '.sqlite3')}"
        return
    pg = Postgres(None).start()
    try:
        yield pg.new_database()
    finally:
        pg.stop()


def record(path: Path, section: str, begin: str, end: str) -> None:
    """Put *section* in *path* between *begin* and *end*, replacing what was there."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def run(
    args: argparse.Namespace, prefix: str,
    run_database: Callable[[str, argparse.Namespace, Path, ProcessGroup], dict[str, Any]],
    report: Callable[[list[dict[str, Any]], argparse.Namespace], str],
    markers: tuple[str, str],
) -> None:
    """Run *run_database* on each of ``args.databases``, print the report, record it."""
    results = []
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        for kind in [d.strip() for d in args.databases.split(",") if d.strip()]:
            if kind == "postgresql" and not postgres_available():
                print("PostgreSQL is not installed: skipped")
                continue
            with ProcessGroup() as group:
                results.append(run_database(kind, args, Path(tmp), group))
    section = report(results, args)
    print(section)
    if args.results is not None:
        record(args.results, section, *markers)
