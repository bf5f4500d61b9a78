"""The load generator's side of S6: S1's 1,000-member fan-out, members split across nodes.

A target's ``options["nodes"]`` lists its nodes (URL, pid, core); without it
the target is a single server. Members are split into contiguous blocks, one
per node, so the sender (member 0) is on the first node; the group is created
there with every member. CPU is measured per node and for the cluster's Redis.
Run by :mod:`bench.loadgen` for ``"scenario": "S6"``; built, like S1–S5, from
:mod:`bench.loadgen_base`.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Any

import psutil

from bench.loadgen_base import (
    Client,
    FanOut,
    Profiler,
    Scenario,
    Target,
    close_all,
    connect_many,
    create_group,
    log,
    ms,
    percentile,
    perf,
    wait_closed,
)


def nodes_of(target: Target) -> list[dict[str, Any]]:
    return target.options.get("nodes") or [
        {"node": "n1", "url": target.url, "pid": target.pid, "core": None}]


class Meter:
    """CPU time of several processes and of this one over one measured interval."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._processes = {label: psutil.Process(pid) for label, pid in pids.items()}
        self.started = perf()
        self._own = time.process_time()
        self._before = {label: self._cpu(p) for label, p in self._processes.items()}
        self._switches = {label: p.num_ctx_switches() for label, p in self._processes.items()}

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    def close(self) -> dict[str, float]:
        elapsed = max(perf() - self.started, 1e-9)
        used = {label: self._cpu(p) - self._before[label] for label, p in self._processes.items()}
        figures = {"loadgen_cpu": round((time.process_time() - self._own) / elapsed, 3),
                   "wall_s": round(elapsed, 3)}
        for label, seconds in used.items():
            figures[f"{label}_cpu_s"] = round(seconds, 3)
            figures[f"{label}_cpu"] = round(seconds / elapsed, 3)
            switches = self._processes[label].num_ctx_switches()
            # Voluntary context switches: how often the process ran out of work and slept
            # (each a reactor turn that found nothing more to do).
            figures[f"{label}_sleeps"] = switches.voluntary - self._switches[label].voluntary
            # Involuntary ones: how often another process on its core took the core from
            # it (each switch costs the caches it warmed).
            figures[f"{label}_preempted"] = (switches.involuntary
                                             - self._switches[label].involuntary)
        return figures


class SplitFanOut(Scenario):
    """S6: the same 1,000-member group on one node and split over several."""

    async def run(self) -> None:
        size: int = self.params["group_size"]
        names = [f"m{i:05d}" for i in range(size)]
        clients: dict[str, list[Client]] = {}
        try:
            for target in self.targets:
                nodes = nodes_of(target)
                block = math.ceil(size / len(nodes))
                members: list[Client] = []
                for index, node in enumerate(nodes):
                    chunk = names[index * block:(index + 1) * block]
                    log(f"{target.name}: signing in {len(chunk)} members on {node['node']}")
                    members += await connect_many(node["url"], chunk)
                clients[target.name] = members
                await create_group(members[0], "g", names[1:])
                for member in members:
                    member.drop_inbox()
            for rep in range(self.repeat):
                for target in self.targets:
                    await self.measure(target, rep, clients[target.name])
        finally:
            for members in clients.values():
                close_all(members)
            await wait_closed([c for members in clients.values() for c in members])

    async def warm_up(self, target: Target, group: list[Client]) -> None:
        """Until a short run reaches everyone (a node may not yet know of the others' users)."""
        count = max(self.params["messages"] // 20, 4)
        for attempt in range(5):
            warm = FanOut(group[0], group[1:], "g", count, self.params.get("content_size", 100),
                          self.next_tag())
            if await warm.run(self.params.get("warm_timeout", 10)):
                return
            log(f"{target.name}: warm-up {attempt} did not reach every member; again")
            await asyncio.sleep(1)
        log(f"{target.name}: warm-up never reached every member")

    async def measure(self, target: Target, rep: int, group: list[Client]) -> None:
        nodes = nodes_of(target)
        await self.warm_up(target, group)
        await asyncio.sleep(self.params.get("pause", 0.2))
        pids = {node["node"]: node["pid"] for node in nodes}
        redis_pid = target.options.get("redis_pid")
        if redis_pid:
            pids["redis"] = redis_pid
        profilers = []
        if self.profile_dir is not None and rep == 0:
            for node in nodes:
                path = os.path.join(self.profile_dir, f"S6-{target.name}-{node['node']}.txt")
                log(f"profiling {target.name} {node['node']} into {path}")
                profilers.append(Profiler(Target(f"{target.name}-{node['node']}", "chateau",
                                                 node["url"], node["pid"]), path))
        count = self.params["messages"]
        run = FanOut(group[0], group[1:], "g", count, self.params.get("content_size", 100),
                     self.next_tag(), in_flight=self.params["in_flight"])
        meter = Meter(pids)
        finished = await run.run(self.params["timeout"])
        usage = meter.close()
        for profiler in profilers:
            profiler.stop()
        elapsed = max(run.last_done - run.first_sent, 1e-9)
        deliveries = run.completed * (len(group) - 1)
        per = max(deliveries, 1)
        figures: dict[str, Any] = {
            "deliveries_per_s": round(deliveries / elapsed, 1),
            "messages": run.completed, "deliveries": deliveries,
            "p50_ms": ms(percentile(run.latencies, 0.50)),
            "p99_ms": ms(percentile(run.latencies, 0.99)),
            "timed_out": not finished, "errors": len(run.errors()), "nodes": len(nodes),
        }
        total_s = 0.0
        for label in pids:
            seconds = usage[f"{label}_cpu_s"]
            total_s += seconds
            figures[f"{label}_us_per_delivery"] = round(seconds * 1e6 / per, 3)
        figures["server_us_per_delivery"] = round(total_s * 1e6 / per, 3)
        for label in pids:
            figures[f"{label}_sleeps_per_msg"] = round(
                usage[f"{label}_sleeps"] / max(run.completed, 1), 2)
            figures[f"{label}_preempted_per_msg"] = round(
                usage[f"{label}_preempted"] / max(run.completed, 1), 2)
        figures["server_cpu"] = round(total_s / max(usage["wall_s"], 1e-9), 3)
        figures["server_cpu_s"] = round(total_s, 3)
        # What the load generator's core carried: itself plus any node pinned there.
        loadgen_core = self.spec.get("loadgen_core")
        shared = [n["node"] for n in nodes if loadgen_core is not None and n.get("core") == loadgen_core]
        figures["loadgen_core_busy"] = round(
            usage["loadgen_cpu"] + sum(usage[f"{label}_cpu"] for label in shared), 3)
        figures.update(usage)
        self.result(target, f"{len(group)} members", rep, figures)
        log(f"{target.name} rep {rep}: {figures['deliveries_per_s']:,.0f} deliveries/s, "
            f"{figures['server_us_per_delivery']:.2f} µs/delivery "
            f"(loadgen {usage['loadgen_cpu']:.0%}, servers {figures['server_cpu']:.0%})")
        await asyncio.sleep(self.params.get("pause", 0.2))
