"""RFC 6455 parity: the Autobahn TestSuite against Chateau and against bare Autobahn.

Runs the TestSuite's fuzzing client (``wstest -m fuzzingclient``,
``autobahntestsuite`` 0.8.2, which needs Python 2.7) against Chateau's
``/ws`` (``twistd -n chateau`` from this checkout, its default settings on a
fresh SQLite file, but for :data:`CHATEAU_SETTINGS`) and against the bare Autobahn server of
:mod:`bench.bare_autobahn`, which has Chateau's options (64 KiB frame and
message limit, compression refused, ``failByDrop=False``) and, like Chateau,
answers every message with one text frame. Neither echoes, so the cases that
expect an echo fail on both alike: what is compared is how each case ended,
not whether it passed.

For each case of sections 1-7 and 10 it compares, from the fuzzing client's
reports, ``behavior`` and ``behaviorClose`` and how the connection closed
(``wasClean``, ``closedByMe``, ``droppedByMe``, ``failedByMe``,
``remoteCloseCode``, and whether the client had to drop the TCP connection
itself because the server did not: ``wasServerConnectionDropTimeout``), and
whether one took much longer than the other (``duration``, see
:data:`LINGER_MS`: a timeout waited for), then prints the cases that
differ. Exit status 1 when any does.

    python -m bench.rfc6455                             # about 2-5 minutes
    python -m bench.rfc6455 --cases '7.*'               # only some cases
    python -m bench.rfc6455 --results bench/RESULTS.md  # also record the section

The Python 2.7 virtualenv with the TestSuite is made on first use (from PyPI,
the versions pinned in :data:`WSTEST_REQUIREMENTS`) under
``~/.cache/chateau-wstest`` (``--venv``); it needs a Python 2.7 interpreter
(``--python2``, default: ``python2.7`` on PATH, else pyenv's).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.large import record
from bench.processes import ProcessGroup, bare, chateau

BEGIN, END = "<!-- bench.rfc6455 -->", "<!-- /bench.rfc6455 -->"
# The TestSuite opens a connection per case, several a second, all from
# 127.0.0.1: past the per-address HTTP and handshake rates Chateau would
# answer 429 (its own rule, not RFC 6455's), so those are raised; nothing else.
CHATEAU_SETTINGS = {"limits": {"http_request_rate": 10000, "http_request_burst": 10000,
                               "handshake_rate": 10000, "handshake_burst": 10000}}
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"]
# How a case ended, as the fuzzing client reports it. The first three are in
# its index; the rest in each case's own report.
COMPARED = ("behavior", "behaviorClose", "remoteCloseCode", "wasClean", "closedByMe",
            "droppedByMe", "failedByMe", "wasServerConnectionDropTimeout")
# autobahntestsuite 0.8.2 and the last releases of its dependencies that
# install on Python 2.7 (found to work together; newer ones dropped 2.7).
WSTEST_REQUIREMENTS = [
    "autobahntestsuite==0.8.2", "autobahn==0.10.9", "Twisted==20.3.0", "txaio==2.1.0",
    "zope.interface==5.5.2", "six==1.17.0", "wsaccel==0.6.6", "ujson==2.0.3",
    "attrs==21.4.0", "Automat==22.10.0", "constantly==15.1.0", "hyperlink==21.0.0",
    "idna==2.10", "incremental==22.10.0", "PyHamcrest==1.10.1", "typing==3.10.0.0",
    "klein==20.6.0", "Werkzeug==1.0.1", "Tubes==0.2.1", "enum34==1.1.10",
    "pyOpenSSL==21.0.0", "cryptography==3.3.2", "cffi==1.15.1", "pycparser==2.21",
    "service-identity==21.1.0", "pyasn1==0.5.1", "pyasn1-modules==0.3.0",
    "ipaddress==1.0.23", "Jinja2==2.11.3", "MarkupSafe==1.1.1", "unittest2==1.1.0",
    "traceback2==1.4.0", "linecache2==1.0.0", "argparse==1.4.0",
]
# A case took this much longer on one server (ms, and at least half its
# time): it waited for a timeout the other did not, such as a connection
# the server left open after failing it until the closing handshake timed out.
LINGER_MS = 300
VIRTUALENV = "virtualenv<20.22"  # the last virtualenv that makes Python 2.7 environments


def find_python2(given: str | None) -> str:
    """A Python 2.7 interpreter: *given*, ``python2.7`` on PATH, or pyenv's newest 2.7."""
    candidates = [given] if given else []
    candidates.append(shutil.which("python2.7") or "")
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates.extend(sorted(glob.glob(f"{pyenv_root}/versions/2.7*/bin/python"), reverse=True))
    for candidate in candidates:
        # A pyenv shim exists without answering for a version that is not selected.
        if candidate and Path(candidate).exists() and subprocess.run(
                [candidate, "-c", "import sys; assert sys.version_info[:2] == (2, 7)"],
                capture_output=True).returncode == 0:
            return candidate
    raise SystemExit("no Python 2.7 found: the TestSuite needs one (give it with --python2)")


def ensure_wstest(venv: Path, python2: str) -> Path:
    """``wstest`` of a Python 2.7 virtualenv at *venv*, made and filled on first use."""
    wstest = venv / "bin" / "wstest"
    if wstest.exists():
        return wstest
    bootstrap = venv.parent / (venv.name + "-virtualenv")
    env = {**os.environ, "PYTHONPATH": str(bootstrap), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if subprocess.run([python2, "-m", "virtualenv", "--version"], env=env,
                      capture_output=True).returncode != 0:
        print(f"installing {VIRTUALENV} for {python2} into {bootstrap}", flush=True)
        subprocess.run([python2, "-m", "pip", "install", "-q", "--target", str(bootstrap),
                        VIRTUALENV], env=env, check=True)
    print(f"making the TestSuite's virtualenv at {venv}", flush=True)
    subprocess.run([python2, "-m", "virtualenv", "-q", str(venv)], env=env, check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *WSTEST_REQUIREMENTS],
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}, check=True)
    return wstest


def run_fuzzing_client(wstest: Path, workdir: Path, servers: dict[str, str],
                       cases: list[str]) -> Path:
    """Run every case against every server (agent name -> URL); the reports' directory."""
    outdir = workdir / "reports"
    spec = {
        "options": {"failByDrop": False},
        "outdir": str(outdir),
        "servers": [{"agent": agent, "url": url} for agent, url in servers.items()],
        "cases": cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    spec_path = workdir / "fuzzingclient.json"
    spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    log_path = workdir / "wstest.log"
    with open(log_path, "wb") as log:
        done = subprocess.run([str(wstest), "-m", "fuzzingclient", "-s", str(spec_path)],
                              cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    if done.returncode != 0 or not (outdir / "index.json").exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"wstest failed (exit {done.returncode}):\n{tail}")
    return outdir


def case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def outcomes(outdir: Path, agent: str) -> dict[str, dict[str, Any]]:
    """How each case ended for *agent*: the :data:`COMPARED` fields, by case id."""
    index = json.loads((outdir / "index.json").read_text(encoding="utf-8"))[agent]
    ended = {}
    for case, summary in index.items():
        report = json.loads((outdir / summary["reportfile"]).read_text(encoding="utf-8"))
        ended[case] = {field: summary.get(field, report.get(field)) for field in COMPARED}
        ended[case]["duration"] = summary.get("duration")
    return ended


def compare(left: dict[str, dict[str, Any]], right: dict[str, dict[str, Any]]
            ) -> list[tuple[str, list[str]]]:
    """The cases whose ending differs, with the fields that differ."""
    differing = []
    for case in sorted(set(left) | set(right), key=case_key):
        a, b = left.get(case), right.get(case)
        if a is None or b is None:
            differing.append((case, ["missing"]))
            continue
        fields = [field for field in COMPARED if a[field] != b[field]]
        gap = abs(a["duration"] - b["duration"])
        if gap > LINGER_MS and gap > max(a["duration"], b["duration"]) / 2:
            fields.append("duration")
        if fields:
            differing.append((case, fields))
    return differing


def report(chateau_ended: dict[str, dict[str, Any]], bare_ended: dict[str, dict[str, Any]],
           differing: list[tuple[str, list[str]]], cases: list[str], seconds: float) -> str:
    """The Markdown section: what was run, how many cases differ, and which."""
    lines = [
        BEGIN,
        "## RFC 6455 parity (`python -m bench.rfc6455`)",
        "",
        f"{time.strftime('%Y-%m-%d', time.gmtime())}: the Autobahn TestSuite 0.8.2 fuzzing client, "
        f"cases {', '.join(cases)}, against Chateau's `/ws` and bare Autobahn with Chateau's "
        f"options; {len(set(chateau_ended) | set(bare_ended))} cases compared in {seconds:.0f} s, "
        f"**{len(differing)} differ** (fields: {', '.join(f'`{f}`' for f in COMPARED)}, "
        f"and `duration` when one took over {LINGER_MS} ms and half its time longer).",
        "",
    ]
    if differing:
        lines += ["| case | field | Chateau | bare Autobahn |", "|---|---|---|---|"]
        for case, fields in differing:
            for field in fields:
                ours = chateau_ended.get(case, {}).get(field, "-")
                theirs = bare_ended.get(case, {}).get(field, "-")
                lines.append(f"| {case} | {field} | {ours} | {theirs} |")
        lines.append("")
    totals: dict[tuple[str, str], int] = {}
    for ended in chateau_ended.values():
        key = (ended["behavior"], ended["behaviorClose"])
        totals[key] = totals.get(key, 0) + 1
    lines.append("Chateau's cases by (behavior, behaviorClose): " + ", ".join(
        f"{b}/{c} {n}" for (b, c), n in sorted(totals.items())) + " (FAILED: the case "
        "expected its message echoed; neither server echoes, each answers a message with one "
        "text frame).")
    lines.append(END)
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.rfc6455",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES),
                        help="comma-separated TestSuite case patterns (default: sections 1-7, 10)")
    parser.add_argument("--venv", type=Path,
                        default=Path(os.environ.get("CHATEAU_WSTEST_VENV",
                                                    Path.home() / ".cache" / "chateau-wstest")),
                        help="the TestSuite's Python 2.7 virtualenv (made if missing)")
    parser.add_argument("--python2", default=None, help="the Python 2.7 to make it with")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the reports (and server logs) in this directory")
    parser.add_argument("--results", type=Path, default=None,
                        help="Markdown file whose bench.rfc6455 section is (re)written")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    wstest = ensure_wstest(args.venv, find_python2(args.python2))
    with tempfile.TemporaryDirectory(prefix="chateau-rfc6455-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        with ProcessGroup() as group:
            ours = group.add(chateau("chateau", workdir, f"sqlite:///{workdir / 'chateau.sqlite3'}",
                                     CHATEAU_SETTINGS, None))
            theirs = group.add(bare("autobahn", "autobahn", workdir, None))
            group.start()
            started = time.monotonic()
            outdir = run_fuzzing_client(wstest, workdir,
                                        {"chateau": ours.url, "autobahn": theirs.url}, cases)
            seconds = time.monotonic() - started
        chateau_ended, bare_ended = outcomes(outdir, "chateau"), outcomes(outdir, "autobahn")
    differing = compare(chateau_ended, bare_ended)
    section = report(chateau_ended, bare_ended, differing, cases, seconds)
    print(section)
    if args.results is not None:
        record(args.results, section, BEGIN, END)
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
