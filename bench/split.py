"""S6, the harness's side: S1's 1,000-member fan-out on one node and split over two.

Targets, all in one load-generator run (they take turns inside each repetition):

- ``one-node``: one Chateau process, clustering off, on the server core (the reference).
- ``one-node-redis``: one Chateau process with ``[cluster]`` on and its own Redis, both on
  the server core: what clustering costs when nothing crosses nodes.
- ``two-nodes-1core``: nodes n1 and n2 and their Redis, all on the server core; members
  split 500/500, the sender on n1. Same server CPU as ``one-node``: the cost of splitting.
- ``two-nodes-2cores``: n1 and Redis on the server core, n2 on the load generator's core
  (they share it). What a second core buys, bounded by the sharing (only when pinning).

Every cluster has its own Redis (pub/sub channels ignore the database number) and its own
database, shared by its nodes: PostgreSQL when installed (as S5), else one SQLite file.
Messages are not stored (``[chat] store_messages = false``).
"""

from __future__ import annotations

from typing import Any

from bench.cluster import ClusterTarget, Redis, cluster_settings, redis_available, wait_joined
from bench.harness import Harness
from bench.processes import Postgres, ProcessGroup, ServerProcess, chateau, postgres_available

DESCRIPTIONS = {
    "one-node": "one process, clustering off, server core",
    "one-node-redis": "one process + its Redis, clustering on, both on the server core",
    "two-nodes-1core": "n1 + n2 + Redis all on the server core (equal server CPU)",
    "two-nodes-2cores": "n1 + Redis on the server core, n2 on the load generator's core",
}


def run_s6(bench: Harness) -> None:
    params = bench.profile["S6"]
    if not redis_available():
        bench.notes.append("S6: redis-server is not installed (apt-get install redis-server); "
                           "S6 was skipped")
        return
    work = bench.dir("s6")
    server_core, loadgen_core = bench.server_core, bench.loadgen_core
    postgres: Postgres | None = None
    redises: list[Redis] = []

    def node(name: str, db_url: str, core: int | None, **sections: dict[str, Any]) -> ServerProcess:
        return chateau(name, work, db_url, bench.chateau_config(name, False, **sections), core)

    def redis(core: int | None) -> Redis:
        started = Redis(work, core).start()
        redises.append(started)
        return started

    try:
        with ProcessGroup() as first, ProcessGroup() as second:
            if postgres_available() and not params.get("sqlite"):
                postgres = Postgres(server_core).start()
                database = f"PostgreSQL (private cluster on core {server_core})"

                def db(name: str) -> str:
                    assert postgres is not None
                    return postgres.new_database()
            else:
                database = "one SQLite file per cluster"

                def db(name: str) -> str:
                    return f"sqlite:///{work / (name + '.sqlite3')}"
            bench.notes.append(f"S6 database: {database}; messages not stored")

            targets: list[Any] = []
            alone = first.add(node("one-node", db("one-node"), server_core))
            targets.append(ClusterTarget("one-node", [("n1", alone)], None,
                                         DESCRIPTIONS["one-node"]))
            r = redis(server_core)
            solo = first.add(node("one-node-redis", db("one-node-redis"), server_core,
                                  **cluster_settings(r, "n1")))
            targets.append(ClusterTarget("one-node-redis", [("n1", solo)], r,
                                         DESCRIPTIONS["one-node-redis"]))
            clusters: list[list[ServerProcess]] = []
            variants = [("two-nodes-1core", server_core)]
            if loadgen_core is not None:
                variants.append(("two-nodes-2cores", loadgen_core))
            for name, n2_core in variants:
                r = redis(server_core)
                url = db(name)
                n1 = first.add(node(f"{name}-n1", url, server_core, **cluster_settings(r, "n1")))
                # n2 starts once n1 has made the schema (two processes must not race at it).
                n2 = second.add(node(f"{name}-n2", url, n2_core, **cluster_settings(r, "n2")))
                clusters.append([n1, n2])
                targets.append(ClusterTarget(name, [("n1", n1), ("n2", n2)], r,
                                             DESCRIPTIONS[name]))
            first.start()
            second.start()
            for nodes in clusters:
                wait_joined(nodes)
            for target in targets:
                note = f"S6 {target.name}: {target.description}"
                if note not in bench.notes:
                    bench.notes.append(note)
            bench.record(bench.loadgen("S6", targets, params, bench.repeat, 900))
    finally:
        for started in redises:
            started.stop()
        if postgres is not None:
            postgres.stop()
