"""The harness's side of every scenario: options, scratch space, servers, the load generator.

:class:`Harness` holds one invocation's options and what it found: results,
notes, failures. It starts Chateau with the settings below (and the
reference servers) and runs the load generator with a spec. The scenarios
themselves are in :mod:`bench.run` (S1–S5) and :mod:`bench.split` (S6), which
both build on this module, never the other way round.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.processes import (
    ROOT,
    ProcessGroup,
    ServerProcess,
    bare,
    chateau,
    checkout_env,
    pin_prefix,
)

# Chateau as benchmarked: fast sign-up for thousands of users, no pings, and
# the abuse limits lifted, since one client pushing thousands of messages a
# second (and thousands of connections from 127.0.0.1) is the point here.
# The limits are still checked on every request, so their cost is measured.
CHATEAU_BASE = {
    "server": {"auto_ping_interval": 0},
    "auth": {"bcrypt_cost": 4},
    "limits": {"message_rate": 1000000, "message_burst": 1000000,
               "max_connections": 50000, "max_connections_per_address": 50000,
               "handshake_rate": 1000000, "handshake_burst": 1000000,
               "http_request_rate": 1000000, "http_request_burst": 1000000,
               "signups_per_hour_per_address": 1000000,
               "signins_per_minute_per_address": 1000000,
               "max_sessions_per_user": 1000000},
}


def settings(store_messages: bool = True, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """:data:`CHATEAU_BASE` with *sections* on top, messages stored or not."""
    merged = copy.deepcopy(CHATEAU_BASE)
    merged.setdefault("chat", {})["store_messages"] = "true" if store_messages else "false"
    for section, values in sections.items():
        merged.setdefault(section, {}).update(values)
    return merged


def known_keys() -> set[tuple[str, str]] | None:
    """The config keys this checkout of Chateau knows (None: cannot tell)."""
    try:
        from chateau.config import documented_keys

        return set(documented_keys())
    except Exception:
        return None


def supported(config: dict[str, dict[str, Any]], known: set[tuple[str, str]] | None
              ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """*config* without the keys Chateau does not know (which would stop it starting)."""
    if known is None:
        return config, []
    kept: dict[str, dict[str, Any]] = {}
    dropped = []
    for section, values in config.items():
        for key, value in values.items():
            if (section, key) in known:
                kept.setdefault(section, {})[key] = value
            else:
                dropped.append(f"[{section}] {key}")
    return kept, dropped


class Harness:
    """One invocation: its options, its scratch directory, and every result.

    ``profile`` holds every scenario's sizes, by scenario name."""

    def __init__(self, args: argparse.Namespace, profile: dict[str, Any]) -> None:
        self.args = args
        self.profile = profile
        self.repeat: int = args.repeat or self.profile["repeat"]
        pin = not args.no_pin and (os.cpu_count() or 1) >= 2
        self.server_core: int | None = 0 if pin else None
        self.loadgen_core: int | None = 1 if pin else None
        self.scratch = Path(tempfile.mkdtemp(prefix="chateau-bench-"))
        self.results: list[dict[str, Any]] = []
        self.notes: list[str] = []  # worth knowing
        self.failures: list[str] = []  # something did not run as it should
        self.load: dict[str, list[float]] = {}
        self.profile_dir: Path | None = None
        self.timings: dict[str, float] = {}
        if args.profile:
            self.profile_dir = args.out / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
            self.profile_dir.mkdir(parents=True, exist_ok=True)
        self._tag = 0
        self.known = known_keys()
        self.total_s = 0.0

    # -- the load generator ------------------------------------------------

    def loadgen(self, scenario: str, servers: list[ServerProcess], params: dict[str, Any],
                repeat: int, budget: float, **extra: Any) -> list[dict[str, Any]]:
        """Run the load generator once; the events it printed."""
        self._tag += 1000
        spec = {"scenario": scenario, "targets": [s.spec() for s in servers], "params": params,
                "repeat": repeat, "tag": self._tag, "loadgen_core": self.loadgen_core, **extra}
        if self.profile_dir is not None:
            spec["profile_dir"] = str(self.profile_dir)
        path = self.scratch / f"spec-{scenario}-{self._tag}.json"
        path.write_text(json.dumps(spec), encoding="utf-8")
        process = subprocess.Popen(
            [*pin_prefix(self.loadgen_core), sys.executable, "-m", "bench.loadgen", str(path)],
            stdout=subprocess.PIPE, env=checkout_env(), cwd=ROOT, text=True,
        )
        try:
            out, _ = process.communicate(timeout=budget)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
            self.failures.append(f"{scenario}: the load generator hit its {budget:.0f} s limit")
        events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        for event in events:
            if event.get("event") == "error":
                self.failures.append(f"{scenario}: {event['detail']}")
        if process.returncode not in (0, None):
            self.failures.append(f"{scenario}: the load generator exited with {process.returncode}")
        return [e for e in events if e.get("event") in ("result", "prepared")]

    def record(self, events: list[dict[str, Any]]) -> None:
        self.results.extend(e for e in events if e.get("event") == "result")

    def dir(self, name: str) -> Path:
        path = self.scratch / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- targets -----------------------------------------------------------

    def chateau_config(self, name: str, store_messages: bool = True,
                       **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Chateau's settings for target *name*, less what this Chateau does not know
        (said once in the notes)."""
        config, dropped = supported(settings(store_messages, **sections), self.known)
        if dropped:
            note = (f"{name}: this Chateau has no {', '.join(dropped)}; run without it"
                    + (" (so messages WERE stored)" if "[chat] store_messages" in dropped else ""))
            if note not in self.notes:
                self.notes.append(note)
        return config

    def chateau(self, name: str, workdir: Path, store_messages: bool = True,
                db_url: str | None = None, **sections: dict[str, Any]) -> ServerProcess:
        """Chateau on the server core, on its own SQLite file unless *db_url* says otherwise."""
        url = db_url or f"sqlite:///{workdir / (name + '.sqlite3')}"
        config = self.chateau_config(name, store_messages, **sections)
        return chateau(name, workdir, url, config, self.server_core)

    def references(self, group: ProcessGroup, workdir: Path, bcrypt_cost: int = 0) -> None:
        group.add(bare("autobahn", "autobahn", workdir, self.server_core, bcrypt_cost))
        group.add(bare("websockets", "websockets", workdir, self.server_core, bcrypt_cost))
