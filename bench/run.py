"""Run Chateau's benchmark scenarios against Chateau and the two reference servers.

    python -m bench.run                      # everything, 3 repetitions (8-11 min)
    python -m bench.run --quick              # one shorter repetition of everything
    python -m bench.run --scenarios S1,S2    # pick scenarios
    python -m bench.run --profile --scenarios S1,S2   # also py-spy profiles of Chateau
    python -m bench.run --results bench/RESULTS.md    # and record the report

Servers run pinned to core 0 and the load generator to core 1. Each
scenario starts its servers, runs the load generator once (it interleaves
the targets inside each repetition, so a change in background load hits all
of them alike), and stops every server by pid. Figures are medians over the
repetitions; each Chateau figure is also given as a ratio to the bare
Autobahn server of the same run. Results go to ``bench/out/`` as JSON and
Markdown and are printed at the end; ``--results`` also writes the Markdown
where it is kept (``bench/RESULTS.md``).

The scenarios S1–S5 are here and S6 in :mod:`bench.split`; what they share
(options, targets, running the load generator) is :class:`bench.harness.Harness`.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import re
import resource
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bench import hotspots
from bench.harness import Harness
from bench.processes import (
    ROOT,
    STARTED,
    Postgres,
    ProcessGroup,
    postgres_available,
)
from bench.split import run_s6

SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "S6")
INVALID_LOADGEN_CPU = 0.70

S1_FULL = {"group_sizes": [100, 1000], "messages": {"100": 1200, "1000": 120},
           "in_flight": 4, "content_size": 100, "timeout": 60}
# S6: S1's 1,000-member case with the members split over two clustered nodes.
S6_FULL = {"group_size": 1000, "messages": 120, "in_flight": 4, "content_size": 100,
           "timeout": 60}
PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "repeat": 3,
        "S1": S1_FULL,
        "S2": {"pairs": 100, "sizes": [100, 4096], "round_trips": 50, "timeout": 60},
        # The warm-up users are one group; it chats at group_rate a second
        # before and beside the idle connections (S3').
        "S3": {"connections": 5000, "warmup": 100, "settle": 1.5, "timeout": 180,
               "connect_rate": 700, "group_messages": 600, "group_rate": 30},
        "S4": {"group_size": 1000, "bcrypt_cost": 12, "duration": 7, "chat_rate": 10,
               "drain_timeout": 40, "reference_repeat": 1, "calm": 4},
        "S5": S1_FULL,
        "S6": S6_FULL,
    },
    "quick": {
        "repeat": 1,
        "S1": {**S1_FULL, "messages": {"100": 600, "1000": 60}},
        "S2": {"pairs": 100, "sizes": [100, 4096], "round_trips": 25, "timeout": 60},
        "S3": {"connections": 2000, "warmup": 100, "settle": 1.0, "timeout": 120,
               "connect_rate": 700, "group_messages": 100, "group_rate": 20},
        "S4": {"group_size": 1000, "bcrypt_cost": 12, "duration": 6, "chat_rate": 10,
               "drain_timeout": 40, "calm": 3},
        "S5": {**S1_FULL, "messages": {"100": 600, "1000": 60}},
        "S6": {**S6_FULL, "messages": 60},
    },
    # Tiny sizes for the test suite: behaviour only, the figures mean nothing.
    "smoke": {
        "repeat": 1,
        "S1": {"group_sizes": [5], "messages": {"5": 20}, "in_flight": 4,
               "content_size": 100, "timeout": 20, "pause": 0.02},
        "S2": {"pairs": 3, "sizes": [100, 4096], "round_trips": 5, "timeout": 20, "pause": 0.02},
        "S3": {"connections": 20, "warmup": 5, "settle": 0.1, "timeout": 20,
               "group_messages": 10, "group_rate": 50, "pause": 0.02},
        "S4": {"group_size": 5, "bcrypt_cost": 4, "duration": 0.5, "chat_rate": 10,
               "drain_timeout": 10, "signin_rate": 20, "pause": 0.02, "calm": 0.3},
        "S5": {"group_sizes": [5], "messages": {"5": 20}, "in_flight": 4,
               "content_size": 100, "timeout": 20, "pause": 0.02},
        "S6": {"group_size": 6, "messages": 20, "in_flight": 4, "content_size": 100,
               "timeout": 20, "warm_timeout": 5, "pause": 0.02, "sqlite": True},
    },
}

# What each scenario is judged by: (metric, higher is better).
HEADLINE: dict[str, tuple[str, bool]] = {
    "S1": ("deliveries_per_s", True), "S5": ("deliveries_per_s", True),
    "S2": ("messages_per_s", True), "S3": ("bytes_per_connection", False),
    "S4": ("chat_p99_ms", False), "S6": ("deliveries_per_s", True),
}
REFERENCE = "autobahn"
# S6 compares clustered Chateau with one Chateau process, not with bare Autobahn.
REFERENCES: dict[str, str] = {"S6": "one-node"}
# Server CPU per unit of work: it holds up better than throughput when other
# processes take turns on the server's core. Lower is better.
EFFICIENCY: dict[str, str] = {
    "S1": "server_us_per_delivery", "S5": "server_us_per_delivery", "S2": "server_us_per_msg",
    "S6": "server_us_per_delivery",
}


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Bench(Harness):
    """One invocation of ``python -m bench.run``: the harness and its scenarios."""

    def __init__(self, args: argparse.Namespace) -> None:
        profile = copy.deepcopy(PROFILES[args.size])
        if args.profile:
            # Longer runs give the sampler more to go on.
            for name in ("S1", "S5"):
                profile[name]["messages"] = {
                    size: count * 3 for size, count in profile[name]["messages"].items()}
            profile["S6"]["messages"] *= 3
            profile["S2"]["round_trips"] *= 3
        super().__init__(args, profile)

    # -- scenarios -----------------------------------------------------------

    def s1(self) -> None:
        """Group fan-out, persistence off and on (SQLite)."""
        work = self.dir("s1")
        with ProcessGroup() as group:
            group.add(self.chateau("chateau-ephemeral", work, store_messages=False))
            group.add(self.chateau("chateau-sqlite", work))
            self.references(group, work)
            group.start()
            self.record(self.loadgen("S1", group.servers, self.profile["S1"], self.repeat, 600))

    def s2(self) -> None:
        """Direct messages between pairs, persistence off and on (SQLite)."""
        work = self.dir("s2")
        with ProcessGroup() as group:
            group.add(self.chateau("chateau-ephemeral", work, store_messages=False))
            group.add(self.chateau("chateau-sqlite", work))
            self.references(group, work)
            group.start()
            self.record(self.loadgen("S2", group.servers, self.profile["S2"], self.repeat, 600))

    def s3(self) -> None:
        """Idle connections: fresh servers for every repetition, so RSS starts clean.

        Each size (``--connections``) has its own database, kept between
        repetitions: the first repetition's sign-ins make the accounts
        ("first sign-in"), later ones sign in to them ("resumed")."""
        base = self.profile["S3"]
        sizes = self.args.connections or [base["connections"]]
        for size in sizes:
            db_url = f"sqlite:///{self.dir(f's3-{size}') / 'chateau-idle.sqlite3'}"
            # Chateau's first sign-ins (an account made each) run at about
            # 100 a second on a shared 2-core machine; leave room for them.
            params = {**base, "connections": size, "timeout": max(base["timeout"], size / 25)}
            for rep in range(self.repeat):
                work = self.dir(f"s3-{size}-{rep}")
                params["signin"] = "first" if rep == 0 else "resumed"
                with ProcessGroup() as group:
                    group.add(self.chateau("chateau-sqlite", work, db_url=db_url))
                    self.references(group, work)
                    group.start()
                    self.record(self.loadgen("S3", group.servers, params, 1,
                                             600 + 3 * params["timeout"], rep=rep))

    def s4(self) -> None:
        """Sign-in storm. The accounts and the group are made first on a server with a
        cheap bcrypt cost; the measured server then has the real one, so only the storm's
        new accounts cost a full hash."""
        params = self.profile["S4"]
        cost = params["bcrypt_cost"]
        work = self.dir("s4")
        db_url = f"sqlite:///{work / 'chateau-storm.sqlite3'}"
        with ProcessGroup() as group:
            self.references(group, work, bcrypt_cost=cost)
            group.launch()  # they start while Chateau's accounts are being made
            with ProcessGroup() as preparing:
                preparing.add(self.chateau("chateau-prepare", work, db_url=db_url))
                preparing.start()
                prepared = self.loadgen("S4", preparing.servers, params, 1, 300, phase="prepare")
            if not any(e.get("event") == "prepared" for e in prepared):
                self.failures.append("S4: preparing the accounts and the group failed")
                return
            server = self.chateau("chateau-sqlite", work, db_url=db_url,
                                  auth={"bcrypt_cost": cost})
            server.options["group_exists"] = True
            group.servers.insert(0, server)
            group.start()
            self.record(self.loadgen("S4", group.servers, params, self.repeat, 900))

    def s5(self) -> None:
        """S1 with messages persisted, on SQLite and on PostgreSQL."""
        work = self.dir("s5")
        postgres: Postgres | None = None
        try:
            with ProcessGroup() as group:
                group.add(self.chateau("chateau-sqlite", work))
                self.references(group, work)
                group.launch()  # they start while PostgreSQL does
                if postgres_available():
                    postgres = Postgres(self.server_core).start()
                    group.servers.insert(1, self.chateau("chateau-postgres", work,
                                                         db_url=postgres.new_database()))
                else:
                    self.notes.append("S5: PostgreSQL is not installed; only SQLite was measured")
                group.start()
                self.record(self.loadgen("S5", group.servers, self.profile["S5"], self.repeat, 600))
        finally:
            if postgres is not None:
                postgres.stop()

    def s6(self) -> None:
        """S1's 1,000-member fan-out on one node and split over two clustered nodes."""
        run_s6(self)

    def run(self, scenarios: list[str]) -> None:
        steps: dict[str, Callable[[], None]] = {
            "S1": self.s1, "S2": self.s2, "S3": self.s3, "S4": self.s4, "S5": self.s5,
            "S6": self.s6,
        }
        for name in scenarios:
            log(f"{name} starts (load average {os.getloadavg()[0]:.2f})")
            started = time.monotonic()
            before = os.getloadavg()[0]
            try:
                steps[name]()
            except Exception as exc:  # one broken scenario must not lose the others
                self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
                log(f"{name} failed: {exc}")
            self.load[name] = [round(before, 2), round(os.getloadavg()[0], 2)]
            self.timings[name] = round(time.monotonic() - started, 1)
            log(f"{name} took {self.timings[name]:.0f} s")


# -- summaries ---------------------------------------------------------------


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# A section another bench records in the same file (bench.search,
# bench.conversations, bench.rfc6455): ``<!-- bench.NAME -->`` … ``<!-- /bench.NAME -->``.
MARKED_SECTION = re.compile(r"<!-- (bench\.[\w.]+) -->.*?<!-- /\1 -->", re.DOTALL)


SCENARIO_HEADING = re.compile(r"^## (S\d+) ")


def _sections(text: str) -> tuple[str, list[str]]:
    """*text* cut at its ``## `` headings: what comes before the first, and each section."""
    preamble: list[str] = []
    sections: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("## "):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            preamble.append(line)
    return "\n".join(preamble), ["\n".join(lines).rstrip("\n") for lines in sections]


# Sections of bullets, each about one scenario ("- S3' ...", "- S6 ..."),
# which a report merged with earlier ones keeps for the scenarios it keeps.
BULLETED = ("Targets", "Notes")
BULLET_SCENARIO = re.compile(r"^- (S\d+)\W")


def _bullet_of(line: str) -> str:
    """The scenario a bullet line is about ("S3" for "- S3' ..."), or ""."""
    match = BULLET_SCENARIO.match(line)
    return match.group(1) if match else ""


def with_other_sections(report: str, path: Path, ran: list[str] | None = None) -> str:
    """*report*, with what *path* recorded that this run did not measure, kept as it was.

    The sections other benches recorded (bench.search, bench.conversations,
    bench.rfc6455) are measured by other commands and must survive. So must
    the scenarios this run left out (*ran* names the ones it measured): each
    section says when and with which command it was recorded, so the file can
    gather the latest figures of every scenario from runs made for each.
    """
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    kept = [match.group(0) for match in MARKED_SECTION.finditer(old)]
    if ran is not None and old:
        _, old_sections = _sections(MARKED_SECTION.sub("", old))
        earlier = {}
        for section in old_sections:
            match = SCENARIO_HEADING.match(section)
            if match and match.group(1) not in ran:
                earlier[match.group(1)] = section
        if earlier:
            preamble, sections = _sections(report)
            scenarios = {SCENARIO_HEADING.match(s).group(1): s
                         for s in sections if SCENARIO_HEADING.match(s)}
            scenarios.update(earlier)
            rest = [s for s in sections if not SCENARIO_HEADING.match(s)]
            # The verdicts and notes on the scenarios kept go on with them.
            for title in BULLETED:
                lines = [line for section in old_sections if section.startswith(f"## {title}\n")
                         for line in section.splitlines() if _bullet_of(line) in earlier]
                if not lines:
                    continue
                mine = next((i for i, section in enumerate(rest)
                             if section.startswith(f"## {title}\n")), None)
                if mine is None:
                    rest.append(f"## {title}\n")
                    mine = len(rest) - 1
                head, *bullets = [line for line in rest[mine].splitlines() if line.strip()]
                bullets = sorted(bullets + lines, key=lambda line: int(_bullet_of(line)[1:] or 0))
                rest[mine] = head + "\n\n" + "\n".join(bullets)
            order = ["Targets", "Failures", "Notes"]
            rest.sort(key=lambda section: next(
                (i for i, title in enumerate(order) if section.startswith(f"## {title}\n")), -1))
            ordered = [scenarios[name] for name in sorted(scenarios, key=lambda n: int(n[1:]))]
            report = preamble.rstrip("\n") + "\n\n" + "\n\n".join(ordered + rest) + "\n"
    if not kept:
        return report
    return report.rstrip("\n") + "\n\n" + "\n\n".join(kept) + "\n"


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scenario, case, target): medians, the ratio, validity."""
    keys: list[tuple[str, str, str]] = []
    for result in results:
        key = (result["scenario"], result["case"], result["target"])
        if key not in keys:
            keys.append(key)
    rows = []
    for scenario, case, target in keys:
        runs = [r for r in results
                if (r["scenario"], r["case"], r["target"]) == (scenario, case, target)]
        metrics = sorted({k for r in runs for k, v in r.items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool)
                          and k not in ("rep",)})
        row: dict[str, Any] = {"scenario": scenario, "case": case, "target": target,
                               "reps": len(runs)}
        for metric in metrics:
            row[metric] = median([r.get(metric) for r in runs])
        row["loadgen_cpu_max"] = max((r.get("loadgen_cpu") or 0) for r in runs)
        row["invalid"] = row["loadgen_cpu_max"] > INVALID_LOADGEN_CPU
        row["timed_out"] = any(r.get("timed_out") for r in runs)
        row["errors"] = sum(r.get("errors") or 0 for r in runs)
        rows.append(row)
    idle_scaling([r for r in rows if r["scenario"] == "S3"])
    for row in rows:
        metric, _ = HEADLINE[row["scenario"]]
        wanted = REFERENCES.get(row["scenario"], REFERENCE)
        reference = next((r for r in rows if (r["scenario"], r["case"], r["target"])
                          == (row["scenario"], row["case"], wanted)), None)
        if reference and reference.get(metric) and row.get(metric) is not None:
            row["ratio"] = round(row[metric] / reference[metric], 3)
        cost = EFFICIENCY.get(row["scenario"])
        if cost and reference and reference.get(cost) and row.get(cost):
            # bare's CPU per unit ÷ ours: like the throughput ratio, 1.0 is parity.
            row["cpu_ratio"] = round(reference[cost] / row[cost], 3)
        if reference is not None:
            per_run(row, results, wanted, metric, cost)
    return rows


def per_run(row: dict[str, Any], results: list[dict[str, Any]], reference: str,
            metric: str, cost: str | None) -> None:
    """The ratios of each repetition (the reference ran in the same one): their lowest and
    highest, as ``ratio_min``/``ratio_max`` and ``cpu_ratio_min``/``cpu_ratio_max``."""
    def runs(target: str) -> dict[Any, dict[str, Any]]:
        return {r.get("rep"): r for r in results
                if (r["scenario"], r["case"], r["target"]) == (row["scenario"], row["case"], target)}

    ours, theirs = runs(row["target"]), runs(reference)
    pairs = [(ours[rep], theirs[rep]) for rep in ours if rep in theirs]
    ratios = [mine[metric] / other[metric] for mine, other in pairs
              if mine.get(metric) is not None and other.get(metric)]
    if ratios:
        row["ratio_min"], row["ratio_max"] = round(min(ratios), 3), round(max(ratios), 3)
    if cost:
        by_cpu = [other[cost] / mine[cost] for mine, other in pairs
                  if mine.get(cost) and other.get(cost)]
        if by_cpu:
            row["cpu_ratio_min"] = round(min(by_cpu), 3)
            row["cpu_ratio_max"] = round(max(by_cpu), 3)
            row["cpu_ratio_runs"] = f"{min(by_cpu):.2f}–{max(by_cpu):.2f}"


# S3' compares the group's p99 beside each number of idle connections with
# its p99 beside this many (or, when it was not measured, the fewest).
IDLE_BASE = 5000
IDLE_CASE = re.compile(r"(\d+) connections(.*)")


def idle_scaling(rows: list[dict[str, Any]]) -> None:
    """Give each S3 row its group p99 ÷ the same target's at the base size
    (``group_p99_vs_base``; the base in ``base_connections``), sign-ins of
    the same kind (first or resumed) compared with each other."""
    sized = [(int(m.group(1)), m.group(2), row) for row in rows
             if (m := IDLE_CASE.fullmatch(row["case"]))]
    sizes = {size for size, _, _ in sized}
    if not sizes:
        return
    base = IDLE_BASE if IDLE_BASE in sizes else min(sizes)
    for size, kind, row in sized:
        reference = next((r for n, k, r in sized
                          if (n, k, r["target"]) == (base, kind, row["target"])), None)
        row["base_connections"] = base
        if reference and reference.get("group_p99_ms") and row.get("group_p99_ms") is not None:
            row["group_p99_vs_base"] = round(row["group_p99_ms"] / reference["group_p99_ms"], 3)


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, each checked against this run."""
    lines = []

    def check(scenario: str, target: str, text: str, ok: Callable[[dict[str, Any]], bool],
              show: Callable[[dict[str, Any]], str], case: str | None = None) -> None:
        for row in rows:
            if (row["scenario"] == scenario and row["target"] == target
                    and case in (None, row["case"])):
                status = "met" if ok(row) else "NOT met"
                if row["invalid"]:
                    status += " (invalid: load generator over 70%)"
                lines.append(f"- {scenario} {row['case']}, {target}: {text}: {show(row)} → {status}")

    def ratio(row: dict[str, Any]) -> str:
        text = f"{row.get('ratio', float('nan')):.2f}"
        if "cpu_ratio" in row:
            text += f" (by server CPU per unit of work: {row['cpu_ratio']:.2f})"
        return text

    def every_run(row: dict[str, Any]) -> str:
        return (f"lowest of {row['reps']} runs {row.get('ratio_min', float('nan')):.2f} "
                f"(by server CPU {row.get('cpu_ratio_min', float('nan')):.2f}); "
                f"medians {row.get('ratio', float('nan')):.2f} and "
                f"{row.get('cpu_ratio', float('nan')):.2f}")

    def at_least_every_run(floor: float) -> Callable[[dict[str, Any]], bool]:
        return lambda r: min(r.get("ratio_min", 0), r.get("cpu_ratio_min", 0)) >= floor

    # Persisted fan-out: at least bare Autobahn in every run, not just the median.
    for scenario in ("S1", "S5"):
        for target in ("chateau-sqlite", "chateau-postgres"):
            check(scenario, target, "≥ 1.0× bare in every run", at_least_every_run(1.0), every_run)
    # Persisted direct messages: at least websockets, and 1.3× bare as the floor.
    for row in rows:
        if row["scenario"] != "S2" or row["target"] != "chateau-sqlite":
            continue
        other = next((r for r in rows if (r["scenario"], r["case"], r["target"])
                      == ("S2", row["case"], "websockets")), None)
        if (other and other.get("messages_per_s") and other.get("server_us_per_msg")
                and row.get("messages_per_s") and row.get("server_us_per_msg")):
            by_rate = row["messages_per_s"] / other["messages_per_s"]
            by_cpu = other["server_us_per_msg"] / row["server_us_per_msg"]
            status = "met" if min(by_rate, by_cpu) >= 1.0 else "NOT met"
            lines.append(f"- S2 {row['case']}, chateau-sqlite: ≥ 1.0× websockets: "
                         f"{by_rate:.2f} (by server CPU {by_cpu:.2f}) → {status}")
    check("S2", "chateau-sqlite", "≥ 1.3× bare", lambda r: min(r.get("ratio", 0),
          r.get("cpu_ratio", 0)) >= 1.3, ratio)
    check("S3", "chateau-sqlite", "bytes/connection ≤ 1.0× bare",
          lambda r: r.get("ratio", 99) <= 1.0, ratio)
    check("S6", "two-nodes-1core", "CPU per delivery ≤ 1.15× one node",
          lambda r: r.get("server_us_per_delivery") is not None and r.get("cpu_ratio", 0) > 0
          and 1 / r["cpu_ratio"] <= 1.15,
          lambda r: f"{1 / r['cpu_ratio']:.2f}× (runs {1 / r.get('cpu_ratio_max', r['cpu_ratio']):.2f}"
                    f"–{1 / r.get('cpu_ratio_min', r['cpu_ratio']):.2f}×)" if r.get("cpu_ratio") else "–")
    for row in rows:
        # S3': measured short of 50,000 (the open-file cap), against 5,000.
        size = IDLE_CASE.fullmatch(row["case"]) if row["scenario"] == "S3" else None
        if (size and row["target"] == "chateau-sqlite" and row.get("base_connections") == IDLE_BASE
                and int(size.group(1)) > IDLE_BASE and "group_p99_vs_base" in row):
            status = "met" if row["group_p99_vs_base"] <= 1.2 else "NOT met"
            lines.append(f"- S3' {row['case']}, {row['target']}: group p99 ≤ 1.2× at "
                         f"{IDLE_BASE:,} connections: {row['group_p99_vs_base']:.2f} "
                         f"({row['group_p99_ms']} ms) → {status}")
    check("S4", "chateau-sqlite", "chat p99 ≤ 50 ms",
          lambda r: (r.get("chat_p99_ms") or 1e9) <= 50,
          lambda r: f"{r.get('chat_p99_ms')} ms", case="storm")
    return lines


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def flags(row: dict[str, Any]) -> str:
    marks = []
    if row["invalid"]:
        marks.append("INVALID")
    if row["timed_out"]:
        marks.append("timed out")
    if row["errors"]:
        marks.append(f"{row['errors']} errors")
    return ", ".join(marks)


TABLES: dict[str, tuple[str, list[tuple[str, str, int]]]] = {
    "S1": ("S1 group fan-out (one sender, 4 broadcasts in flight)",
           [("deliveries/s", "deliveries_per_s", 0), ("p50 ms", "p50_ms", 2),
            ("p99 ms", "p99_ms", 2), ("server µs/delivery", "server_us_per_delivery", 2),
            ("÷ bare by CPU", "cpu_ratio", 2),
            ("by CPU, each run", "cpu_ratio_runs", 0)]),
    "S5": ("S5 group fan-out with messages persisted",
           [("deliveries/s", "deliveries_per_s", 0), ("p50 ms", "p50_ms", 2),
            ("p99 ms", "p99_ms", 2), ("server µs/delivery", "server_us_per_delivery", 2),
            ("÷ bare by CPU", "cpu_ratio", 2),
            ("by CPU, each run", "cpu_ratio_runs", 0)]),
    "S2": ("S2 direct messages (pairs bouncing one message)",
           [("msgs/s", "messages_per_s", 0), ("RTT p50 ms", "p50_ms", 2),
            ("RTT p99 ms", "p99_ms", 2), ("server µs/msg", "server_us_per_msg", 1),
            ("of it reactor thread", "reactor_us_per_msg", 1), ("÷ bare by CPU", "cpu_ratio", 2),
            ("by CPU, each run", "cpu_ratio_runs", 0)]),
    "S3": ("S3 idle signed-in connections (group: the warm-up users' group chatting at a steady "
           "rate, p50/p99 until all its other members have a message; no idle: before the idle "
           "connections)",
           [("bytes/conn", "bytes_per_connection", 0), ("RSS before MB", "rss_before_mb", 1),
            ("RSS after MB", "rss_after_mb", 1), ("connected", "connections", 0),
            ("group p50 ms no idle", "idle_free_p50_ms", 2),
            ("group p99 ms no idle", "idle_free_p99_ms", 2),
            ("group p50 ms", "group_p50_ms", 2), ("group p99 ms", "group_p99_ms", 2),
            ("group p99 ÷ at {base}", "group_p99_vs_base", 2)]),
    "S4": ("S4 sign-in storm while a 1,000-member group chats at 10 msg/s (calm: the chat alone)",
           [("chat p50 ms", "chat_p50_ms", 1), ("chat p99 ms", "chat_p99_ms", 1),
            ("chat max ms", "chat_max_ms", 1), ("sign-ins ok", "signins_ok", 0),
            ("busy (503)", "signins_busy", 0), ("sign-in p50 ms", "signin_p50_ms", 0),
            ("sign-in p99 ms", "signin_p99_ms", 0), ("busy p99 ms", "busy_p99_ms", 1),
            ("offered/s", "signin_rate", 1)]),
    "S6": ("S6 S1's 1,000-member fan-out split across two clustered nodes (ratios ÷ one node; "
           "µs are CPU per delivery)",
           [("deliveries/s", "deliveries_per_s", 0), ("p50 ms", "p50_ms", 2),
            ("p99 ms", "p99_ms", 2), ("µs total", "server_us_per_delivery", 2),
            ("µs n1", "n1_us_per_delivery", 2), ("µs n2", "n2_us_per_delivery", 2),
            ("µs redis", "redis_us_per_delivery", 2), ("÷ one node by CPU", "cpu_ratio", 2),
            ("by CPU, each run", "cpu_ratio_runs", 0),
            ("loadgen core busy", "loadgen_core_busy", 2)]),
}
RATIO_LABEL: dict[str, str] = {"S6": "÷ one node"}


def markdown(bench: Bench, rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    out = [f"# Chateau benchmark, {machine['date']}", "",
           f"- command: `{machine['command']}`",
           f"- machine: {machine['nproc']} cores, {machine['cpu']}, {machine['memory']}",
           f"- pinning: servers on core {bench.server_core}, load generator on core "
           f"{bench.loadgen_core}; repetitions: {bench.repeat} (medians shown)",
           "- load average (1 min) before/after each scenario: "
           + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in bench.load.items()),
           "- seconds per scenario: " + ", ".join(f"{k} {v}" for k, v in bench.timings.items())
           + f"; whole run {bench.total_s:.0f} s",
           f"- versions: {machine['versions']}", ""]
    if bench.profile_dir is not None:
        out += ["**Profiled run**: py-spy shared the load generator's core, so these figures "
                "are perturbed; use them for the profile only.", ""]
    for scenario in SCENARIOS:
        scenario_rows = [r for r in rows if r["scenario"] == scenario]
        if not scenario_rows:
            continue
        title, columns = TABLES[scenario]
        base = next((r["base_connections"] for r in scenario_rows if "base_connections" in r), None)
        columns = [(label.format(base=fmt(base)), key, digits) for label, key, digits in columns]
        load = bench.load.get(scenario)
        out += [f"## {title}", "",
                f"*Recorded {machine['date']} with `{machine['command']}` "
                f"({bench.repeat} repetition{'s' if bench.repeat != 1 else ''}, medians"
                + (f"; load average {load[0]} before, {load[1]} after" if load else "") + ").*",
                "",
                "| case | target | " + " | ".join(c[0] for c in columns)
                + f" | {RATIO_LABEL.get(scenario, '÷ bare')} | loadgen CPU (max) | server CPU | flags |",
                "|" + "---|" * (len(columns) + 6)]
        for row in scenario_rows:
            cells = [fmt(row.get(key), digits) for _, key, digits in columns]
            out.append(
                f"| {row['case']} | {row['target']} | " + " | ".join(cells)
                + f" | {fmt(row.get('ratio'), 2)} | {row['loadgen_cpu_max']:.0%}"
                + f" | {fmt(row.get('server_cpu'), 2)} | {flags(row)} |"
            )
        out.append("")
    checks = verdicts(rows)
    if checks:
        out += ["## Targets", "", *checks, ""]
    if bench.failures:
        out += ["## Failures", "", *[f"- {failure}" for failure in bench.failures], ""]
    if bench.notes:
        out += ["## Notes", "", *[f"- {note}" for note in bench.notes], ""]
    return "\n".join(out)


def machine_info(argv: list[str]) -> dict[str, Any]:
    cpu = "unknown"
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if ":" in line)
        info = {key.strip(): value.strip() for key, value in info.items()}
        cpu = info.get("model name", cpu)
        if "cpu MHz" in info:
            cpu += f" ({float(info['cpu MHz']):.0f} MHz, cache {info.get('cache size', '?')})"
    except (OSError, ValueError):
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    versions = []
    for module in ("twisted", "autobahn", "websockets", "picows", "uvloop"):
        try:
            from importlib.metadata import version

            versions.append(f"{module} {version(module)}")
        except Exception:
            versions.append(f"{module} ?")
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench.run " + " ".join(argv),
        "nproc": os.cpu_count(), "cpu": cpu, "memory": memory,
        "python": platform.python_version(),
        "versions": f"Python {platform.python_version()}, " + ", ".join(versions),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated, from S1,S2,S3,S4,S5,S6 (default: all)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="size", action="store_const", const="quick",
                      help="one repetition with fewer messages")
    size.add_argument("--smoke", dest="size", action="store_const", const="smoke",
                      help="tiny sizes, to check that the harness works (figures mean nothing)")
    parser.set_defaults(size="full")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions per scenario")
    parser.add_argument("--connections", default=None,
                        type=lambda text: [int(n) for n in text.split(",") if n.strip()],
                        help="S3's sizes, comma-separated (default: the profile's, 5000); "
                             "past 10,000 the load generator also connects from 127.0.0.2...")
    parser.add_argument("--profile", action="store_true",
                        help="record Chateau with py-spy during the first repetition")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out",
                        help="where results are written (default bench/out)")
    parser.add_argument("--results", type=Path, default=None, metavar="FILE",
                        help="also write the Markdown report to FILE (the recorded "
                             "figures: bench/RESULTS.md)")
    parser.add_argument("--report", type=Path, default=None, metavar="RESULTS.json",
                        help="run nothing: write the report of a saved run (bench/out/results-"
                             "*.json) again, with this version's tables and verdicts (with "
                             "--results, into FILE as a run would)")
    args = parser.parse_args(argv)
    chosen = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown or not chosen:
        parser.error(f"unknown scenario {unknown[0] if unknown else '(none)'}; "
                     f"choose from {','.join(SCENARIOS)}")
    args.chosen = chosen
    return args


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Recorded:
    """A saved run (``results-*.json``) as :func:`markdown` reads a :class:`Bench`."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.repeat = payload["repeat"]
        self.load = payload["load_average"]
        self.timings = payload["seconds"]
        self.total_s = payload.get("total_s", sum(self.timings.values()))
        self.notes = payload["notes"]
        self.failures = payload["failures"]
        # The harness pins to cores 0 and 1 unless it noted that it did not.
        pinned = "processes were not pinned to cores" not in self.notes
        self.server_core, self.loadgen_core = (0, 1) if pinned else (None, None)
        self.profile_dir = None


def report_again(path: Path, results: Path | None, chosen: list[str]) -> int:
    """Write the report of a saved run again, with this version's summaries and verdicts
    (of the *chosen* scenarios only)."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    payload["results"] = [r for r in payload["results"] if r["scenario"] in chosen]
    rows = summarise(payload["results"])
    report = markdown(Recorded(payload), rows, payload["machine"])  # type: ignore[arg-type]
    if results is not None:
        ran = sorted({r["scenario"] for r in payload["results"]})
        results.write_text(with_other_sections(report, results, ran))
    print(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.report is not None:
        return report_again(args.report, args.results, args.chosen)
    signal.signal(signal.SIGTERM, _terminate)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info(argv)
    bench = Bench(args)
    if bench.server_core is None:
        bench.notes.append("processes were not pinned to cores")
    started = time.monotonic()
    try:
        bench.run(args.chosen)
    finally:
        # As saved, so that --report of the saved run writes the same report.
        bench.total_s = round(time.monotonic() - started, 1)
        rows = summarise(bench.results)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        report = markdown(bench, rows, machine)
        if bench.profile_dir is not None:
            report += "\n" + hotspots.report_dir(bench.profile_dir)
        payload = {"machine": machine, "repeat": bench.repeat, "size": args.size,
                   "load_average": bench.load, "seconds": bench.timings,
                   "total_s": bench.total_s,
                   "notes": bench.notes, "failures": bench.failures, "summary": rows,
                   "results": bench.results,
                   "processes": [{"pid": pid, "argv": argv} for pid, argv in STARTED]}
        (args.out / f"results-{stamp}.json").write_text(json.dumps(payload, indent=1))
        (args.out / f"results-{stamp}.md").write_text(report)
        (args.out / "latest.json").write_text(json.dumps(payload, indent=1))
        (args.out / "latest.md").write_text(report)
        if args.results is not None:
            # A scenario that gave no result (interrupted, failed) keeps what was recorded.
            measured = [name for name in args.chosen
                        if any(r["scenario"] == name for r in bench.results)]
            args.results.write_text(with_other_sections(report, args.results, measured))
        print(report)
        log(f"done in {time.monotonic() - started:.0f} s; results in {args.out}")
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
