"""Turn py-spy's raw (collapsed-stack) recordings into a table of hot spots.

py-spy ``--format raw --threads`` writes one line per distinct stack:
``thread (TID): NAME;frame;frame;... COUNT``, a frame being
``function (file:line)``. Line numbers are dropped so a function counts as
one place. Percentages are of the samples of the thread named, idle time
excluded (py-spy does not sample idle threads unless asked).

    python -m bench.hotspots bench/out/profile-*/S1-chateau-ephemeral-1000_members.txt
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def _frame(text: str) -> str:
    """``send (autobahn/websocket/protocol.py:123)`` → ``send (websocket/protocol.py)``."""
    text = _LINE.sub(")", text)
    name, _, place = text.partition(" (")
    parts = place.rstrip(")").split("/")
    return f"{name} ({'/'.join(parts[-2:])})" if place else name


# Where a sample's leaf frame is, in words; the first match wins.
LAYERS: list[tuple[str, str]] = [
    ("untilConcludes (twisted/python/util.py", "socket send() (syscall, via Twisted)"),
    ("Connection.doRead (twisted/internet/tcp.py", "socket recv() (syscall, via Twisted)"),
    ("chateau/", "Chateau's own code"),
    ("hl (autobahn/util.py", "Autobahn debug-log arguments (hl/hltype/hlval, click.style)"),
    ("hltype (autobahn/util.py", "Autobahn debug-log arguments (hl/hltype/hlval, click.style)"),
    ("hlval (autobahn/util.py", "Autobahn debug-log arguments (hl/hltype/hlval, click.style)"),
    ("click/", "Autobahn debug-log arguments (hl/hltype/hlval, click.style)"),
    ("autobahn/", "Autobahn framing and handshake"),
    ("txaio/", "Autobahn framing and handshake"),
    ("twisted/internet/defer.py", "Twisted Deferreds and coroutines"),
    ("twisted/internet/epollreactor.py", "Twisted reactor (epoll, dispatch)"),
    ("twisted/internet/posixbase.py", "Twisted reactor (epoll, dispatch)"),
    ("twisted/internet/base.py", "Twisted reactor (epoll, dispatch)"),
    ("twisted/python/log.py", "Twisted per-event log context"),
    ("twisted/python/context.py", "Twisted per-event log context"),
    ("twisted/logger/", "Twisted logging"),
    ("twisted/python/threadpool.py", "threads (pool hand-off, GIL)"),
    ("twisted/_threads/", "threads (pool hand-off, GIL)"),
    ("threading.py", "threads (pool hand-off, GIL)"),
    ("queue.py", "threads (pool hand-off, GIL)"),
    ("twisted/", "Twisted transport and other"),
    ("json/", "JSON encode/decode"),
    ("sqlalchemy/", "SQLAlchemy and the database driver"),
    ("sqlite3/", "SQLAlchemy and the database driver"),
    ("psycopg", "SQLAlchemy and the database driver"),
    ("bcrypt", "bcrypt"),
]


def _layer(raw_frame: str) -> str:
    for needle, layer in LAYERS:
        if needle in raw_frame:
            return layer
    return "other (standard library, etc.)"


def _module(frame: str) -> str:
    place = frame.partition(" (")[2].rstrip(")")
    return place or frame


def parse(path: Path) -> dict[str, list[tuple[list[str], int]]]:
    """Stacks per thread name (root first), with their sample counts.

    The last element of each stack is the leaf's layer (see :data:`LAYERS`).
    """
    threads: dict[str, list[tuple[list[str], int]]] = {}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        head = frames[0]
        thread = head.split(": ", 1)[1] if ": " in head else head
        thread = re.sub(r"-\d+$", "", thread)  # pool threads: one name per pool
        layer = _layer(frames[-1]) if len(frames) > 1 else "idle"
        threads.setdefault(thread, []).append(
            ([_frame(f) for f in frames[1:]] + [layer], int(count)))
    return threads


def summary(path: Path, top: int = 12) -> str:
    threads = parse(path)
    if not threads:
        return f"### {path.stem}\n\n(no samples)\n"
    total = sum(n for stacks in threads.values() for _, n in stacks)
    out = [f"### {path.stem}", "",
           f"{total} samples; by thread: " + ", ".join(
               f"{name} {sum(n for _, n in stacks) / total:.0%}"
               for name, stacks in sorted(threads.items(), key=lambda kv: -sum(n for _, n in kv[1]))),
           ""]
    # The reactor's thread is what answers everyone; report it when it is there.
    main = "MainThread" if "MainThread" in threads else max(
        threads, key=lambda name: sum(n for _, n in threads[name]))
    stacks = threads[main]
    samples = sum(n for _, n in stacks)
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    for stack, n in stacks:
        frames, layer = stack[:-1], stack[-1]
        layers[layer] += n
        if not frames:
            continue
        own[frames[-1]] += n
        modules[_module(frames[-1])] += n
        for frame in set(frames):
            inclusive[frame] += n
    out += [f"Thread {main} ({samples} samples). Self time by layer:", "",
            "| self % | layer |", "|---|---|"]
    out += [f"| {n / samples:.1%} | {layer} |" for layer, n in layers.most_common()]
    out += ["", "Self time by function (where the CPU is):", "",
            "| self % | function |", "|---|---|"]
    out += [f"| {n / samples:.1%} | `{frame}` |" for frame, n in own.most_common(top)]
    out += ["", "Self time by file:", "", "| self % | file |", "|---|---|"]
    out += [f"| {n / samples:.1%} | `{module}` |" for module, n in modules.most_common(top)]
    out += ["", "Inclusive time (the function and everything it calls):", "",
            "| incl. % | function |", "|---|---|"]
    out += [f"| {n / samples:.1%} | `{frame}` |" for frame, n in inclusive.most_common(top + 8)]
    return "\n".join(out) + "\n"


def report_dir(directory: Path) -> str:
    files = sorted(directory.glob("*.txt"))
    if not files:
        return "## Profiles\n\n(no profile was recorded; is py-spy installed?)\n"
    return "## Profiles\n\n" + "\n".join(summary(path) for path in files)


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    for path in paths:
        print(report_dir(path) if path.is_dir() else summary(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
