"""Prometheus metrics of one server, in a registry of its own (no module globals)."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from twisted.internet.defer import Deferred
from twisted.python.threadpool import ThreadPool

from chateau.cluster_events import REASONS as REJECTION_REASONS


def _backlog(pool: ThreadPool) -> Callable[[], float]:
    def depth() -> float:
        team = getattr(pool, "_team", None)
        return float(team.statistics().backloggedWorkCount) if team is not None else 0.0

    return depth


class Metrics:
    """What ``/metrics`` reports; the counters are updated where things happen."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Gauge(
            "chateau_connections", "Open WebSocket connections.", registry=self.registry
        )
        self.online_users = Gauge(
            "chateau_online_users", "Users with at least one connection.", registry=self.registry
        )
        self.signins = Counter(
            "chateau_signins", "Sign-in attempts by method and result.",
            ["method", "result"], registry=self.registry,
        )
        self.messages = Counter(
            "chateau_messages", "Chat messages accepted, by kind.", ["kind"],
            registry=self.registry,
        )
        # One child per kind, looked up once: labels() costs more than inc().
        self.messages_of = {
            kind: self.messages.labels(kind) for kind in ("direct", "group", "random")
        }
        self.errors = Counter(
            "chateau_errors", "ErrorResponses sent, by status.", ["status"],
            registry=self.registry,
        )
        self.http_refusals = Counter(
            "chateau_http_refusals",
            "HTTP requests refused by a [limits] key, by reason (body, head, http_rate, "
            "handshake_rate).", ["reason"], registry=self.registry,
        )
        self.frames_dropped = Counter(
            "chateau_frames_dropped",
            "Frames that could not go out, by reason: closed (the connection was closing; "
            "offline delivery has the messages), hold_overflow (held during a catch-up past "
            "send_buffer; the connection was closed with 1013), slow_reader (the client "
            "stopped reading), unencodable, send_failed.",
            ["reason"], registry=self.registry,
        )
        self.frames_dropped_for = {
            reason: self.frames_dropped.labels(reason)
            for reason in ("closed", "hold_overflow", "slow_reader", "unencodable", "send_failed")
        }
        self.db_seconds = Histogram(
            "chateau_db_call_seconds", "Database calls, from request to result.",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.cluster_connected = Gauge(
            "chateau_cluster_connected",
            "1 while this node's link to the cluster (Redis) is up; 0 otherwise or alone.",
            registry=self.registry,
        )
        self.cluster_events_rejected = Counter(
            "chateau_cluster_events_rejected",
            "Messages from Redis dropped as malformed, by reason (docs/cluster.md).",
            ["reason"], registry=self.registry,
        )
        for reason in REJECTION_REASONS:
            self.cluster_events_rejected.labels(reason)
        self.cluster_refusals = Counter(
            "chateau_cluster_refusals",
            "Times Redis refused this node (authentication, database or TLS).",
            registry=self.registry,
        )
        self.directory_checks = Counter(
            "chateau_directory_checks",
            "Re-checks of directory accounts against the directory (deprovisioning), by "
            "result: ok, failed (the account was deprovisioned), unavailable (the directory "
            "could not answer; nobody was signed out).",
            ["result"], registry=self.registry,
        )
        for result in ("ok", "failed", "unavailable"):
            self.directory_checks.labels(result)
        self.pool_backlog = Gauge(
            "chateau_threadpool_queue_depth", "Jobs waiting for a thread, by pool.",
            ["pool"], registry=self.registry,
        )

    def watch(
        self, connections: Callable[[], int], online: Callable[[], int],
        pools: Iterable[ThreadPool],
    ) -> None:
        self.connections.set_function(lambda: float(connections()))
        self.online_users.set_function(lambda: float(online()))
        for pool in pools:
            self.pool_backlog.labels(pool.name or "pool").set_function(_backlog(pool))

    def time_db_call(self, call: Deferred[Any]) -> Deferred[Any]:
        started = time.monotonic()

        def observe(result: Any) -> Any:
            self.db_seconds.observe(time.monotonic() - started)
            return result

        return call.addBoth(observe)

    def render(self) -> bytes:
        return generate_latest(self.registry)
