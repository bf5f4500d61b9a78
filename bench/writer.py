"""The message writer's database work alone, per message, on SQLite.

Runs the writer's own transaction (:func:`chateau.store.messages.add_messages_txn`
and its commit) in a loop on one thread, with the store's checkpoint every
``CHECKPOINT_EVERY`` messages as the server does, and reports that thread's
CPU time (user and system) per message. No reactor, no network: this is the
part of S2 with persistence that the database itself costs.

    python -m bench.writer --size 4096 --batch 48 --chats 100 --messages 60000

Each message is a direct message in one of ``--chats`` chats, in random
order, like S2's pairs. The first ``--warm-up`` messages are not measured.
The checkpoint is counted on the same thread here; in the server it runs on
the store's pool (on the same core when the server is pinned to one).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from chateau.store.engine import checkpoint_txn, in_transaction, make_engine
from chateau.store.messages import add_messages_txn
from chateau.store.migrate import prepare
from chateau.store.writer import CHECKPOINT_EVERY


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.writer", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="content bytes per message")
    parser.add_argument("--batch", type=int, default=48, help="messages per transaction")
    parser.add_argument("--chats", type=int, default=100, help="direct chats the messages go to")
    parser.add_argument("--messages", type=int, default=60_000, help="messages measured")
    parser.add_argument("--warm-up", type=int, default=20_000, help="messages written first, unmeasured")
    parser.add_argument("--rounds", type=int, default=2, help="fresh databases, one figure each")
    parser.add_argument("--core", type=int, default=1, help="CPU to pin to (-1: none)")
    return parser.parse_args(argv)


def one_round(args: argparse.Namespace, directory: Path, seed: int) -> float:
    """Thread CPU microseconds per message over ``--messages`` on a fresh database."""
    engine = make_engine(f"sqlite:///{directory / f'writer-{seed}.sqlite3'}")
    try:
        with engine.begin() as connection:
            prepare(connection)
        chooser = random.Random(seed)
        content = "m" * args.size
        users = [f"user{n:05d}" for n in range(2 * args.chats)]

        def batch() -> list[tuple[str, str, str, str | None]]:
            items = []
            for _ in range(args.batch):
                pair = chooser.randrange(args.chats)
                sender, recipient = users[2 * pair], users[2 * pair + 1]
                if chooser.random() < 0.5:
                    sender, recipient = recipient, sender
                chat = "@" + ":".join(sorted((sender, recipient)))
                items.append((chat, sender, content, recipient))
            return items

        # As MessageWriter does: a direct chat's rows are written with its first message only.
        recorded: set[str] = set()

        def write(batches: list[list[tuple[str, str, str, str | None]]]) -> None:
            since = 0
            for items in batches:
                new_chats = {item[0] for item in items} - recorded
                in_transaction(engine, add_messages_txn, items, None, new_chats)
                recorded.update(new_chats)
                since += len(items)
                if since >= CHECKPOINT_EVERY:
                    in_transaction(engine, checkpoint_txn)
                    since = 0

        write([batch() for _ in range(args.warm_up // args.batch)])
        # Made beforehand: the measured time is the writer's alone.
        measured = [batch() for _ in range(args.messages // args.batch)]
        count = sum(len(items) for items in measured)
        started = time.thread_time()
        write(measured)
        return (time.thread_time() - started) * 1e6 / count
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.core >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    with tempfile.TemporaryDirectory(prefix="chateau-writer-") as scratch:
        figures = [one_round(args, Path(scratch), seed) for seed in range(args.rounds)]
    shown = ", ".join(f"{figure:.1f}" for figure in figures)
    print(
        f"writer, {args.size} B messages in batches of {args.batch} over {args.chats} direct chats: "
        f"{shown} us of thread CPU per message"
    )


if __name__ == "__main__":
    main()
