"""What every load-generator scenario is built from: the client, measuring, fan-out runs.

A :class:`Client` is one picows connection; :class:`FanOut` drives one
group's messages and times when each reached its last member; a
:class:`Window` measures the CPU of this process and of a server over one
measured run; :class:`Scenario` is the base of every scenario, S1–S5 in
:mod:`bench.loadgen` and S6 in :mod:`bench.split_loadgen`, which both import
from here (never the other way round).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

TEXT = WSMsgType.TEXT
CLOSE = WSMsgType.CLOSE
GROUP_RECV = b'{"type":"GroupMessageRecv"'
DIRECT_RECV = b'{"type":"MessageRecv"'
SEND_RESPONSE = b'{"type":"MessageSendResponse"'
CONTENT = b'"content":"'
PASSWORD = "bench-password"
perf = time.perf_counter


class BenchError(Exception):
    """A scenario could not be set up; the run reports it instead of figures."""


def log(text: str) -> None:
    print(f"[loadgen {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def emit(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


class Client(WSListener):
    """One connection. ``fast`` sees each text frame first and may claim it;
    frames it leaves go to ``inbox`` for the slow, JSON-parsing setup code."""

    def __init__(self) -> None:
        self.transport: WSTransport | None = None
        self.fast: Callable[[bytes], bool] | None = None
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed = False
        self.username = ""

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == TEXT:
            data = frame.get_payload_as_bytes()
            fast = self.fast
            if fast is None or not fast(data):
                self.inbox.put_nowait(data)
        elif kind == CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True

    def send(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.send(TEXT, payload)

    async def expect(self, types: set[str], timeout: float) -> dict[str, Any]:
        """The next frame of one of *types*, or an ErrorResponse; others are dropped."""
        deadline = perf() + timeout
        while True:
            remaining = deadline - perf()
            if remaining <= 0:
                raise BenchError(f"{self.username}: no {sorted(types)} within {timeout}s")
            try:
                raw = await asyncio.wait_for(self.inbox.get(), remaining)
            except asyncio.TimeoutError:
                continue
            message = json.loads(raw)
            if message.get("type") in types or message.get("type") == "ErrorResponse":
                return message

    def drop_inbox(self) -> list[bytes]:
        dropped = []
        while not self.inbox.empty():
            dropped.append(self.inbox.get_nowait())
        return dropped

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.send_close()
            self.transport.disconnect()


@dataclass
class Target:
    """One server under test, as the spec names it."""

    name: str
    kind: str  # "chateau", "autobahn" or "websockets"
    url: str
    pid: int
    options: dict[str, Any] = field(default_factory=dict)

    def process(self) -> psutil.Process:
        return psutil.Process(self.pid)


class Window:
    """CPU use of this process and of the server over one measured interval."""

    def __init__(self, target: Target) -> None:
        self._server = target.process()
        self.started = perf()
        self._own = time.process_time()
        times = self._server.cpu_times()
        self._server_cpu = times.user + times.system
        self._main_cpu = self._main_thread_cpu()

    def _main_thread_cpu(self) -> float:
        """CPU seconds of the server's main (reactor) thread."""
        for thread in self._server.threads():
            if thread.id == self._server.pid:
                return thread.user_time + thread.system_time
        return 0.0

    def close(self, end: float | None = None) -> dict[str, float]:
        now = perf()
        elapsed = max(now - self.started, 1e-9)
        times = self._server.cpu_times()
        server_s = times.user + times.system - self._server_cpu
        main_s = self._main_thread_cpu() - self._main_cpu
        return {
            # The reactor thread's share; the rest is worker threads (the
            # message writer, bcrypt).
            "server_main_cpu_s": round(main_s, 3),
            "loadgen_cpu": round((time.process_time() - self._own) / elapsed, 3),
            "server_cpu": round(server_s / elapsed, 3),
            "server_cpu_s": round(server_s, 3),
            "window_s": round((end or now) - self.started, 3),
        }


class Profiler:
    """py-spy recording the server for the length of one measured run."""

    def __init__(self, target: Target, path: str | None) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        if path is None:
            return
        if shutil.which("py-spy") is None:
            log("py-spy is not installed (pip install py-spy): no profile")
            return
        self._process = subprocess.Popen(
            ["py-spy", "record", "--pid", str(target.pid), "--rate", "250", "--format", "raw",
             "--threads", "--nonblocking", "--output", path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # let it attach before the load starts

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


# -- connecting and signing in ------------------------------------------------


# Connections per loopback source address: one address has ~28,000 client
# ports (net.ipv4.ip_local_port_range), so past this many the load generator
# connects from 127.0.0.2, 127.0.0.3... (all of 127.0.0.0/8 is loopback).
PER_SOURCE = 10000


def source_address(index: int, count: int) -> tuple[str, int] | None:
    """The address connection *index* of *count* binds to (None: the kernel's choice)."""
    if count <= PER_SOURCE:
        return None
    return (f"127.0.0.{2 + index // PER_SOURCE}", 0)


async def connect(url: str, username: str = "",
                  local_addr: tuple[str, int] | None = None) -> Client:
    extra: dict[str, Any] = {"local_addr": local_addr} if local_addr else {}
    _, client = await ws_connect(Client, url, websocket_handshake_timeout=20, **extra)
    client.username = username
    return client


async def sign_in(client: Client, username: str, timeout: float = 60.0,
                  **extra: Any) -> dict[str, Any]:
    """Sign in, retrying while the server answers "busy" (503)."""
    request = encode({"type": "RegisterRequest", "username": username, "password": PASSWORD,
                      "auth": False, **extra})
    deadline = perf() + timeout
    while True:
        client.send(request)
        reply = await client.expect({"RegisterResponse"}, max(deadline - perf(), 0.1))
        if reply["type"] == "RegisterResponse":
            return reply
        if reply.get("status") != 503 or perf() > deadline:
            raise BenchError(f"sign-in of {username} failed: {reply}")
        await asyncio.sleep(0.05)


async def connect_many(url: str, usernames: list[str], concurrency: int = 32,
                       timeout: float = 120.0, rate: float | None = None) -> list[Client]:
    """Connect and sign in every name, a bounded number at a time (and at most
    *rate* a second, to keep this process's CPU use down)."""
    gate = asyncio.Semaphore(concurrency)
    start = perf()

    async def one(index: int, name: str) -> Client:
        if rate:
            await asyncio.sleep(max(start + index / rate - perf(), 0))
        async with gate:
            client = await connect(url, name, source_address(index, len(usernames)))
            await sign_in(client, name)
            return client

    tasks = [asyncio.ensure_future(one(i, name)) for i, name in enumerate(usernames)]
    try:
        return list(await asyncio.wait_for(asyncio.gather(*tasks), timeout))
    except BaseException:
        for task in tasks:
            task.cancel()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is None:
                task.result().close()
        raise


async def create_group(creator: Client, chatname: str, members: list[str]) -> None:
    creator.send(encode({"type": "GroupMessageInitRequest", "chatname": chatname,
                         "recipients": members}))
    reply = await creator.expect({"GroupMessageInitResponse"}, 60)
    if reply.get("status") != 200:
        raise BenchError(f"creating group {chatname} failed: {reply}")


def close_all(clients: list[Client]) -> None:
    for client in clients:
        client.close()


async def wait_closed(clients: list[Client], timeout: float = 10.0) -> None:
    deadline = perf() + timeout
    while perf() < deadline and not all(c.closed for c in clients):
        await asyncio.sleep(0.05)


def discard(prefix: bytes) -> Callable[[bytes], bool]:
    """A fast handler that swallows frames of one kind (stale ones between runs)."""
    return lambda data: data.startswith(prefix)


# -- group fan-out (S1, S5; the chat load of S4) ----------------------------


class FanOut:
    """One sender, a group, a fixed number of messages; when each reached its last member.

    The sender keeps ``in_flight`` broadcasts outstanding (closed loop), or,
    with ``rate``, sends on a fixed schedule (open loop) regardless of
    replies. A message is done when every receiving member has it.
    """

    def __init__(self, sender: Client, members: list[Client], chatname: str, count: int,
                 size: int, tag: int, in_flight: int = 4, rate: float | None = None) -> None:
        self.sender, self.members, self.chatname = sender, members, chatname
        self.count, self.in_flight, self.rate = count, in_flight, rate
        self.tag = b"%04d" % (tag % 10000)
        self.remaining = [len(members)] * count
        self.sent_at = [0.0] * count
        self.latencies: list[float] = []
        self.next = 0
        self.completed = 0
        self.first_sent = 0.0
        self.last_done = 0.0
        self.acks = 0
        self.done = asyncio.get_running_loop().create_future()
        self._head = b'{"type":"MessageRequest","recipient":"' + chatname.encode() + b'","content":"'
        self._pad = b"x" * max(size - 10, 0)

    def _send_next(self) -> None:
        k = self.next
        self.next = k + 1
        self.sent_at[k] = perf()
        self.sender.send(self._head + self.tag + b"%06d" % k + self._pad + b'"}')

    def _on_member(self, data: bytes) -> bool:
        if not data.startswith(GROUP_RECV):
            return False
        i = data.find(CONTENT) + 11
        if data[i:i + 4] != self.tag:
            return True  # a straggler of an earlier run
        k = int(data[i + 4:i + 10])
        left = self.remaining[k] - 1
        self.remaining[k] = left
        if left == 0:
            now = perf()
            self.latencies.append(now - self.sent_at[k])
            self.completed += 1
            self.last_done = now
            if self.rate is None and self.next < self.count:
                self._send_next()
            if self.completed == self.count and not self.done.done():
                self.done.set_result(None)
        return True

    def _on_sender(self, data: bytes) -> bool:
        if data.startswith(SEND_RESPONSE):
            self.acks += 1
            return True
        return False

    async def run(self, timeout: float) -> bool:
        """Send everything; False when the time limit ran out first."""
        for member in self.members:
            member.fast = self._on_member
        self.sender.fast = self._on_sender
        self.first_sent = perf()
        try:
            if self.rate is None:
                for _ in range(min(self.in_flight, self.count)):
                    self._send_next()
                await asyncio.wait_for(asyncio.shield(self.done), timeout)
            else:
                await self._paced(timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            swallow = discard(GROUP_RECV)
            for member in self.members:
                member.fast = swallow
            self.sender.fast = discard(SEND_RESPONSE)

    async def _paced(self, timeout: float) -> None:
        assert self.rate is not None
        start = perf()
        while self.next < self.count:
            due = start + self.next / self.rate
            delay = due - perf()
            if delay > 0:
                await asyncio.sleep(delay)
            self._send_next()
        await asyncio.wait_for(asyncio.shield(self.done), max(timeout - (perf() - start), 0.1))

    def stop_sending(self) -> None:
        """End an open-loop run early: only what was sent counts."""
        self.count = self.next
        if self.completed >= self.count and not self.done.done():
            self.done.set_result(None)

    def errors(self) -> list[dict[str, Any]]:
        found = []
        for raw in self.sender.drop_inbox():
            message = json.loads(raw)
            if message.get("type") == "ErrorResponse":
                found.append(message)
        return found


# -- the base of every scenario ---------------------------------------------------


class Scenario:
    """Set up every target, then run the measured repetitions target after target."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.params: dict[str, Any] = spec["params"]
        self.targets = [Target(**t) for t in spec["targets"]]
        self.repeat: int = spec["repeat"]
        self.profile_dir: str | None = spec.get("profile_dir")
        self.tag = int(spec.get("tag", 0))

    def next_tag(self) -> int:
        self.tag += 1
        return self.tag

    def result(self, target: Target, case: str, rep: int, figures: dict[str, Any]) -> None:
        emit({"event": "result", "scenario": self.spec["scenario"], "case": case,
              "target": target.name, "rep": rep, **figures})

    def profiler(self, target: Target, case: str, rep: int) -> Profiler:
        if self.profile_dir is None or target.kind not in ("chateau", "autobahn") or rep != 0:
            return Profiler(target, None)
        safe = case.replace(" ", "_").replace("/", "_")
        path = os.path.join(self.profile_dir, f"{self.spec['scenario']}-{target.name}-{safe}.txt")
        log(f"profiling {target.name} {case} into {path}")
        return Profiler(target, path)
