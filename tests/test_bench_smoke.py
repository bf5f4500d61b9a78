"""The benchmark harness still runs: every scenario at tiny sizes, one repetition.

Behaviour only: which results exist and that they add up. The figures of a
run this small mean nothing, so no timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.processes import ROOT, checkout_env, postgres_available

# The load generator and the reference servers; all in the "test" extra.
NEEDED = ("picows", "uvloop", "websockets", "psutil")
SCENARIOS = ("S1", "S2", "S3", "S4", "S5")
REFERENCES = {"autobahn", "websockets"}
# What each scenario's ratio compares (see bench/run.py), written out here so
# that the test checks the harness instead of repeating its tables.
HEADLINE = {"S1": "deliveries_per_s", "S2": "messages_per_s", "S3": "bytes_per_connection",
            "S4": "chat_p99_ms", "S5": "deliveries_per_s", "S6": "deliveries_per_s"}
RATIO_REFERENCE = {"S6": "one-node"}
RATIO_COLUMN = {"S6": "÷ one node"}


def test_benchmark_dependencies_are_installed() -> None:
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(f"the benchmark needs {', '.join(missing)}: pip install '.[test]'")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(f"the benchmark needs {', '.join(missing)}: pip install '.[test]'")
    out = tmp_path_factory.mktemp("bench")
    completed = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out),
         "--results", str(out / "RESULTS.md")],
        cwd=ROOT, env=checkout_env(), capture_output=True, text=True, timeout=180,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    payload = json.loads((out / "latest.json").read_text())
    payload["markdown"] = (out / "latest.md").read_text()
    payload["recorded"] = (out / "RESULTS.md").read_text()
    payload["stderr"] = completed.stderr
    payload["out"] = out
    return payload


def _rows(run: dict, scenario: str) -> dict[tuple[str, str], dict]:
    return {(r["case"], r["target"]): r for r in run["summary"] if r["scenario"] == scenario}


def test_every_scenario_ran_against_chateau_and_both_references(smoke_run: dict) -> None:
    assert smoke_run["failures"] == []
    for scenario in SCENARIOS:
        targets = {target for _, target in _rows(smoke_run, scenario)}
        assert REFERENCES <= targets, (scenario, targets)
        assert any(t.startswith("chateau") for t in targets), (scenario, targets)
    assert {t for _, t in _rows(smoke_run, "S1")} >= {"chateau-ephemeral", "chateau-sqlite"}
    s5 = {t for _, t in _rows(smoke_run, "S5")}
    assert "chateau-sqlite" in s5
    if postgres_available():
        assert "chateau-postgres" in s5


def test_fan_out_and_direct_messages_arrive_completely(smoke_run: dict) -> None:
    for scenario in ("S1", "S5"):
        for (case, target), row in _rows(smoke_run, scenario).items():
            assert case == "5 members"
            assert row["messages"] == 20 and row["deliveries"] == 20 * 4, (scenario, target, row)
            assert row["deliveries_per_s"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
            assert not row["timed_out"] and row["errors"] == 0, (scenario, target, row)
    s2 = _rows(smoke_run, "S2")
    assert {case for case, _ in s2} == {"100 B", "4096 B"}
    for (case, target), row in s2.items():
        # 3 pairs x 5 round trips, two messages relayed per round trip.
        assert row["round_trips"] == 15 and row["messages"] == 30, (case, target, row)
        assert not row["timed_out"] and row["errors"] == 0, (case, target, row)


def _markdown_rows(markdown: str) -> dict[tuple[str, str, str], dict[str, str]]:
    """The rows of the report's tables, by (scenario, case, target), cells by column."""
    rows: dict[tuple[str, str, str], dict[str, str]] = {}
    scenario, header = None, None
    for line in markdown.splitlines():
        if line.startswith("## "):
            scenario, header = line[3:].split(" ", 1)[0], None
        elif line.startswith("| ") and scenario:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            else:
                rows[(scenario, cells[0], cells[1])] = dict(zip(header, cells))
    return rows


def test_ratios_and_validity_follow_from_the_results(smoke_run: dict) -> None:
    """Each row's figures come from its runs: the load generator's busiest run
    decides validity (over 70% of its core: INVALID), and the ratio is the
    headline figure over the reference's in the same scenario and case. The
    report's tables show the same."""
    table = _markdown_rows(smoke_run["markdown"])
    rows = {(r["scenario"], r["case"], r["target"]): r for r in smoke_run["summary"]}
    for key, row in rows.items():
        scenario, case, target = key
        runs = [r for r in smoke_run["results"]
                if (r["scenario"], r["case"], r["target"]) == key]
        assert len(runs) == row["reps"] >= 1, (key, row)
        busiest = max(r["loadgen_cpu"] for r in runs)
        assert row["loadgen_cpu_max"] == busiest, (key, row)
        assert row["invalid"] == (busiest > 0.70), (key, row)
        if scenario in ("S1", "S2", "S5"):  # thousands of frames a second: never idle
            assert busiest > 0, (key, row)
        metric = HEADLINE[scenario]
        reference = rows[(scenario, case, RATIO_REFERENCE.get(scenario, "autobahn"))]
        assert row["ratio"] == round(row[metric] / reference[metric], 3), (key, row, reference)
        shown = table[key]
        assert shown[RATIO_COLUMN.get(scenario, "÷ bare")] == f"{row['ratio']:,.2f}", (key, shown)
        assert shown["loadgen CPU (max)"] == f"{busiest:.0%}", (key, shown)
        assert ("INVALID" in shown["flags"]) == row["invalid"], (key, shown)
    assert set(table) == set(rows)
    for header in ("S1 group fan-out", "S2 direct messages", "S3 idle", "S4 sign-in storm",
                   "S5 group fan-out", "Targets", "÷ bare", "loadgen CPU"):
        assert header in smoke_run["markdown"], header


def test_results_records_the_report_with_its_command_and_date(smoke_run: dict) -> None:
    """``--results`` writes the report itself (how bench/RESULTS.md is made)."""
    assert smoke_run["recorded"] == smoke_run["markdown"]
    title, _, command = smoke_run["recorded"].splitlines()[:3]
    assert title == f"# Chateau benchmark, {smoke_run['machine']['date']}"
    assert command.startswith("- command: `python -m bench.run --smoke ") and "--results" in command


def test_a_saved_run_is_reported_again_as_it_was(smoke_run: dict, tmp_path: Path) -> None:
    """``--report`` rebuilds a run's report from its JSON (after the tables or verdicts change)."""
    again = tmp_path / "RESULTS.md"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.run", "--report", str(smoke_run["out"] / "latest.json"),
         "--results", str(again)],
        cwd=ROOT, env=checkout_env(), capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert again.read_text() == smoke_run["markdown"]


def test_per_run_ratios_and_the_verdicts_on_them() -> None:
    """S1/S5 must hold in every run: the lowest repetition's ratio is what is judged."""
    from bench.run import summarise, verdicts

    def result(target: str, rep: int, rate: float, cost: float) -> dict:
        return {"scenario": "S1", "case": "100 members", "target": target, "rep": rep,
                "deliveries_per_s": rate, "server_us_per_delivery": cost, "loadgen_cpu": 0.3}

    results = [result("chateau-sqlite", 0, 120.0, 4.0), result("autobahn", 0, 100.0, 5.0),
               result("chateau-sqlite", 1, 90.0, 5.5), result("autobahn", 1, 100.0, 5.0),
               result("chateau-sqlite", 2, 130.0, 3.0), result("autobahn", 2, 100.0, 5.0)]
    rows = {r["target"]: r for r in summarise(results)}
    ours = rows["chateau-sqlite"]
    assert (ours["ratio_min"], ours["ratio_max"]) == (0.9, 1.3)
    assert (ours["cpu_ratio_min"], ours["cpu_ratio_max"]) == (0.909, 1.667)
    assert ours["cpu_ratio_runs"] == "0.91–1.67"
    line, = [v for v in verdicts(list(rows.values())) if v.startswith("- S1 100 members, chateau-sqlite")]
    assert line.endswith("→ NOT met") and "lowest of 3 runs 0.90" in line


def test_idle_connections_and_sign_in_storm(smoke_run: dict) -> None:
    table = _markdown_rows(smoke_run["markdown"])
    for (case, target), row in _rows(smoke_run, "S3").items():
        assert row["connections"] == 20, (target, row)
        assert row["rss_after_mb"] > 0
        # The warm-up users' group chatted before and beside the idle
        # connections, every message reaching every other member.
        assert row["group_size"] == 5, (target, row)
        assert row["idle_free_messages"] == 10 and row["group_messages"] == 10, (target, row)
        assert row["idle_free_p99_ms"] >= row["idle_free_p50_ms"] > 0, (target, row)
        assert row["group_p99_ms"] >= row["group_p50_ms"] > 0, (target, row)
        assert not row["timed_out"] and row["errors"] == 0, (target, row)
        # One size measured: it is its own base.
        assert row["base_connections"] == 20 and row["group_p99_vs_base"] == 1.0, (target, row)
        shown = table[("S3", case, target)]
        assert shown["group p99 ms"] == f"{row['group_p99_ms']:,.2f}", shown
        assert shown["group p99 ms no idle"] == f"{row['idle_free_p99_ms']:,.2f}", shown
        assert shown["group p99 ÷ at 20"] == "1.00", shown
    s4 = _rows(smoke_run, "S4")
    assert {case for case, _ in s4} == {"calm", "storm"}
    for (case, target), row in s4.items():
        assert row["chat_messages"] > 0 and row["chat_p99_ms"] is not None, (target, row)
        if case == "calm":
            continue
        # Every sign-in of the storm is answered: signed in or "busy".
        assert row["signins_ok"] > 0 and row["signins_other"] == 0, (target, row)
        assert not row["timed_out"], (target, row)


def test_every_server_was_stopped(smoke_run: dict) -> None:
    """The harness stops what it starts: none of the run's processes is left."""
    import psutil

    assert len(smoke_run["processes"]) >= 10
    for started in smoke_run["processes"]:
        try:
            alive = psutil.Process(started["pid"]).cmdline() == started["argv"]
        except psutil.NoSuchProcess:
            alive = False
        assert not alive, started


def test_the_writer_loop_runs_and_reports_per_message() -> None:
    """``python -m bench.writer`` at tiny sizes: it runs the store's own
    transaction and says what it measured (the figure itself means nothing)."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.writer", "--size", "100", "--batch", "10", "--chats", "5",
         "--messages", "200", "--warm-up", "50", "--rounds", "2", "--core", "-1"],
        cwd=ROOT, env=checkout_env(), capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    line = completed.stdout.strip()
    assert line.startswith("writer, 100 B messages in batches of 10 over 5 direct chats: "), line
    figures = line.split(": ", 1)[1].removesuffix(" us of thread CPU per message").split(", ")
    assert len(figures) == 2 and all(float(figure) > 0 for figure in figures), line


def test_results_keeps_the_sections_other_benches_recorded(tmp_path: Path) -> None:
    """A new report replaces the scenarios' tables but keeps bench.search's (and the others') sections."""
    from bench.run import with_other_sections

    recorded = tmp_path / "RESULTS.md"
    search = "<!-- bench.search -->\n## Search\n\n| a |\n<!-- /bench.search -->"
    rfc = "<!-- bench.rfc6455 -->\n## RFC 6455\n<!-- /bench.rfc6455 -->"
    recorded.write_text(f"# old report\n\n## S1 old table\n\n{search}\n\n{rfc}\n")
    new = with_other_sections("# new report\n\n## S1 new table\n", recorded)
    assert new == f"# new report\n\n## S1 new table\n\n{search}\n\n{rfc}\n"
    assert "old" not in new
    assert with_other_sections("# first\n", tmp_path / "absent.md") == "# first\n"


def test_results_keeps_the_scenarios_this_run_left_out(tmp_path: Path) -> None:
    """A run of some scenarios replaces their tables and keeps the others', in scenario order."""
    from bench.run import with_other_sections

    recorded = tmp_path / "RESULTS.md"
    rfc = "<!-- bench.rfc6455 -->\n## RFC 6455\n<!-- /bench.rfc6455 -->"
    recorded.write_text(
        "# old report\n\n## S1 old fan-out\n\n*Recorded old*\n\n| a |\n\n"
        "## S3 old idle\n\n| b |\n\n### S3 profile\n\nx\n\n## S4 old storm\n\n| c |\n\n"
        f"## Targets\n\n- old verdict\n\n{rfc}\n"
    )
    report = "# new report\n\n- command: x\n\n## S3 new idle\n\n| d |\n\n## Targets\n\n- new verdict\n"
    new = with_other_sections(report, recorded, ["S3"])
    assert new == (
        "# new report\n\n- command: x\n\n"
        "## S1 old fan-out\n\n*Recorded old*\n\n| a |\n\n"
        "## S3 new idle\n\n| d |\n\n"
        "## S4 old storm\n\n| c |\n\n"
        "## Targets\n\n- new verdict\n\n"
        f"{rfc}\n"
    )
    # Every scenario run again: nothing of the old tables is kept.
    assert "old" not in with_other_sections(report, recorded, ["S1", "S3", "S4"]).replace(rfc, "")


def test_results_keeps_the_verdicts_and_notes_of_the_scenarios_kept(tmp_path: Path) -> None:
    from bench.run import with_other_sections

    recorded = tmp_path / "RESULTS.md"
    recorded.write_text(
        "# old\n\n## S1 fan-out\n\n| a |\n\n## S3 idle\n\n| b |\n\n"
        "## Targets\n\n- S1 100 members: old → met\n- S3' 19000: old → NOT met\n\n"
        "## Notes\n\n- S1 note\n- a general note\n"
    )
    report = ("# new\n\n## S3 idle\n\n| c |\n\n## Targets\n\n- S3' 19000: new → met\n\n"
              "## Notes\n\n- processes were pinned\n")
    assert with_other_sections(report, recorded, ["S3"]) == (
        "# new\n\n## S1 fan-out\n\n| a |\n\n## S3 idle\n\n| c |\n\n"
        "## Targets\n\n- S1 100 members: old → met\n- S3' 19000: new → met\n\n"
        "## Notes\n\n- processes were pinned\n- S1 note\n"
    )


def test_verdicts_bear_a_run_too_short_to_measure_cpu() -> None:
    """A smoke-sized run can measure 0 µs of CPU: the verdicts must not divide by it."""
    from bench.run import verdicts

    rows = [{"scenario": "S2", "case": "100 B", "target": target, "reps": 1, "invalid": False,
             "messages_per_s": rate, "server_us_per_msg": cost, "ratio": 1.0}
            for target, rate, cost in (("chateau-sqlite", 10.0, 0.0), ("websockets", 10.0, 5.0),
                                       ("autobahn", 10.0, 0.0))]
    assert not [line for line in verdicts(rows) if "websockets" in line]


def _idle_row(connections: int, target: str, p99: float, kind: str = "first") -> dict:
    return {"scenario": "S3", "case": f"{connections} connections, {kind} sign-in",
            "target": target, "group_p99_ms": p99}


def test_idle_scaling_compares_each_size_with_5000_or_the_fewest() -> None:
    """S3': each size's group p99 ÷ the same target's at 5,000 connections (same
    kind of sign-in), or at the fewest measured when 5,000 was not; the
    verdict is given for Chateau past 5,000 only."""
    from bench.run import idle_scaling, verdicts

    rows = [_idle_row(1000, "chateau-sqlite", 4.0), _idle_row(5000, "chateau-sqlite", 5.0),
            _idle_row(19000, "chateau-sqlite", 6.5), _idle_row(5000, "autobahn", 2.0),
            _idle_row(19000, "autobahn", 2.2), _idle_row(5000, "chateau-sqlite", 10.0, "resumed"),
            _idle_row(19000, "chateau-sqlite", 11.0, "resumed")]
    idle_scaling(rows)
    assert [r["group_p99_vs_base"] for r in rows] == [0.8, 1.0, 1.3, 1.0, 1.1, 1.0, 1.1]
    assert {r["base_connections"] for r in rows} == {5000}
    for row in rows:
        row["invalid"] = False
    lines = [line for line in verdicts(rows) if line.startswith("- S3'")]
    assert lines == [
        "- S3' 19000 connections, first sign-in, chateau-sqlite: group p99 ≤ 1.2× at 5,000 "
        "connections: 1.30 (6.5 ms) → NOT met",
        "- S3' 19000 connections, resumed sign-in, chateau-sqlite: group p99 ≤ 1.2× at 5,000 "
        "connections: 1.10 (11.0 ms) → met",
    ]
    fewer = [_idle_row(1000, "chateau-sqlite", 4.0), _idle_row(2000, "chateau-sqlite", 5.0)]
    idle_scaling(fewer)
    assert [r["group_p99_vs_base"] for r in fewer] == [1.0, 1.25]
    assert {r["base_connections"] for r in fewer} == {1000}
