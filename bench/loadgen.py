"""The load generator: picows on uvloop, one process, every scenario.

picows masks and parses frames in C, so one Python process on one core can
keep thousands of connections busy; the per-frame Python work here is a
prefix check, one ``find`` and a counter, never a JSON parse. Frames carry a
run tag and a sequence number in their content, so a late frame of an
earlier run can never be counted in a later one.

It is started by :mod:`bench.run` as ``python -m bench.loadgen SPEC.json``
and prints one JSON object per line on stdout: ``{"event": "result", ...}``
per measured run. Progress goes to stderr.
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

import bcrypt
import psutil
import uvloop
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


async def connect(url: str, username: str = "") -> Client:
    _, client = await ws_connect(Client, url, websocket_handshake_timeout=20)
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
            client = await connect(url, name)
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


# -- scenarios ------------------------------------------------------------------


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


class GroupFanOut(Scenario):
    """S1 and S5: one sender, groups of the given sizes, ``in_flight`` broadcasts outstanding."""

    async def run(self) -> None:
        sizes: list[int] = self.params["group_sizes"]
        biggest = max(sizes)
        names = [f"m{i:05d}" for i in range(biggest)]
        clients: dict[str, list[Client]] = {}
        for target in self.targets:
            log(f"{target.name}: signing in {biggest} members")
            members = await connect_many(target.url, names)
            clients[target.name] = members
            for size in sizes:
                await create_group(members[0], f"g{size}", names[1:size])
            for member in members:
                member.drop_inbox()
        try:
            for size in sizes:
                case = f"{size} members"
                for rep in range(self.repeat):
                    for target in self.targets:
                        group = clients[target.name][:size]
                        await self.measure(target, case, rep, group, f"g{size}")
        finally:
            for members in clients.values():
                close_all(members)
            await wait_closed([c for members in clients.values() for c in members])

    async def measure(self, target: Target, case: str, rep: int, group: list[Client],
                      chatname: str) -> None:
        size = len(group)
        count = self.params["messages"][str(size)]
        content = self.params.get("content_size", 100)
        warm = FanOut(group[0], group[1:], chatname, max(count // 20, 4), content, self.next_tag())
        await warm.run(self.params["timeout"])
        await asyncio.sleep(self.params.get("pause", 0.2))
        profiler = self.profiler(target, case, rep)
        run = FanOut(group[0], group[1:], chatname, count, content, self.next_tag(),
                     in_flight=self.params["in_flight"])
        window = Window(target)
        finished = await run.run(self.params["timeout"])
        usage = window.close(run.last_done)
        profiler.stop()
        elapsed = max(run.last_done - run.first_sent, 1e-9)
        deliveries = run.completed * (size - 1)
        errors = run.errors()
        self.result(target, case, rep, {
            "deliveries_per_s": round(deliveries / elapsed, 1),
            "server_us_per_delivery": round(usage["server_cpu_s"] * 1e6 / max(deliveries, 1), 3),
            "messages": run.completed, "deliveries": deliveries,
            "p50_ms": ms(percentile(run.latencies, 0.50)),
            "p99_ms": ms(percentile(run.latencies, 0.99)),
            "timed_out": not finished, "errors": len(errors), **usage,
        })
        log(f"{target.name} {case} rep {rep}: {deliveries / elapsed:,.0f} deliveries/s "
            f"(loadgen {usage['loadgen_cpu']:.0%}, server {usage['server_cpu']:.0%})")
        await asyncio.sleep(self.params.get("pause", 0.2))


class DirectMessages(Scenario):
    """S2: pairs bouncing a direct message; each reply is sent when the message lands."""

    async def run(self) -> None:
        pairs: int = self.params["pairs"]
        names = [f"d{i:05d}" for i in range(2 * pairs)]
        clients: dict[str, list[Client]] = {}
        for target in self.targets:
            log(f"{target.name}: signing in {len(names)} users")
            clients[target.name] = await connect_many(target.url, names)
            for client in clients[target.name]:
                client.drop_inbox()
        try:
            for size in self.params["sizes"]:
                case = f"{size} B"
                for rep in range(self.repeat):
                    for target in self.targets:
                        await self.measure(target, case, rep, clients[target.name], size)
        finally:
            for group in clients.values():
                close_all(group)
            await wait_closed([c for group in clients.values() for c in group])

    async def bounce(self, users: list[Client], size: int, rounds: int, timeout: float
                     ) -> tuple[list[float], int, float, float, bool]:
        """Every pair does *rounds* round trips; RTTs, relayed count, start, end, finished."""
        loop = asyncio.get_running_loop()
        tag = b"%04d" % (self.next_tag() % 10000)
        pad = b"y" * max(size - 10, 0)
        rtts: list[float] = []
        state = {"relayed": 0, "pairs_done": 0, "last": 0.0}
        done = loop.create_future()
        npairs = len(users) // 2

        def request(to: str, content: bytes) -> bytes:
            return (b'{"type":"MessageRequest","recipient":"' + to.encode()
                    + b'","content":"' + content + b'"}')

        def make(a: Client, b: Client) -> None:
            sent = [0.0]
            left = [rounds]
            a_head = b'{"type":"MessageRequest","recipient":"' + b.username.encode() + b'","content":"'

            def send_next() -> None:
                left[0] -= 1
                sent[0] = perf()
                a.send(a_head + tag + b"%06d" % left[0] + pad + b'"}')

            def on_a(data: bytes) -> bool:
                if data.startswith(DIRECT_RECV):
                    i = data.find(CONTENT) + 11
                    if data[i:i + 4] == tag:
                        now = perf()
                        rtts.append(now - sent[0])
                        state["relayed"] += 1
                        state["last"] = now
                        if left[0] > 0:
                            send_next()
                        else:
                            state["pairs_done"] += 1
                            if state["pairs_done"] == npairs and not done.done():
                                done.set_result(None)
                    return True
                return data.startswith(SEND_RESPONSE)

            def on_b(data: bytes) -> bool:
                if data.startswith(DIRECT_RECV):
                    i = data.find(CONTENT) + 11
                    if data[i:i + 4] == tag:
                        state["relayed"] += 1
                        b.send(request(a.username, data[i:data.index(b'"', i)]))
                    return True
                return data.startswith(SEND_RESPONSE)

            a.fast, b.fast = on_a, on_b
            starters.append(send_next)

        starters: list[Callable[[], None]] = []
        for index in range(npairs):
            make(users[2 * index], users[2 * index + 1])
        start = perf()
        for starter in starters:
            starter()
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
            finished = True
        except asyncio.TimeoutError:
            finished = False
        for user in users:
            user.fast = lambda data: data.startswith(DIRECT_RECV) or data.startswith(SEND_RESPONSE)
        return rtts, state["relayed"], start, state["last"], finished

    async def measure(self, target: Target, case: str, rep: int, users: list[Client],
                      size: int) -> None:
        timeout = self.params["timeout"]
        await self.bounce(users, size, max(self.params["round_trips"] // 20, 2), timeout)
        await asyncio.sleep(self.params.get("pause", 0.2))
        profiler = self.profiler(target, case, rep)
        window = Window(target)
        rtts, relayed, start, last, finished = await self.bounce(
            users, size, self.params["round_trips"], timeout)
        usage = window.close(last)
        profiler.stop()
        elapsed = max(last - start, 1e-9)
        errors = sum(
            1 for user in users for raw in user.drop_inbox()
            if json.loads(raw).get("type") == "ErrorResponse"
        )
        self.result(target, case, rep, {
            "messages_per_s": round(relayed / elapsed, 1), "messages": relayed,
            "server_us_per_msg": round(usage["server_cpu_s"] * 1e6 / max(relayed, 1), 2),
            "reactor_us_per_msg": round(usage["server_main_cpu_s"] * 1e6 / max(relayed, 1), 2),
            "round_trips": len(rtts),
            "p50_ms": ms(percentile(rtts, 0.50)), "p99_ms": ms(percentile(rtts, 0.99)),
            "timed_out": not finished, "errors": errors, **usage,
        })
        log(f"{target.name} {case} rep {rep}: {relayed / elapsed:,.0f} msgs/s "
            f"(loadgen {usage['loadgen_cpu']:.0%}, server {usage['server_cpu']:.0%})")
        await asyncio.sleep(self.params.get("pause", 0.2))


class IdleConnections(Scenario):
    """S3: RSS growth of a fresh server per signed-in idle connection."""

    async def run(self) -> None:
        count: int = self.params["connections"]
        warm: int = self.params["warmup"]
        rep = int(self.spec.get("rep", 0))
        for target in self.targets:
            process = target.process()
            log(f"{target.name}: {warm} warm-up connections")
            warmups = await connect_many(target.url, [f"w{i:05d}" for i in range(warm)])
            await asyncio.sleep(self.params["settle"])
            before = process.memory_info().rss
            window = Window(target)
            log(f"{target.name}: {count} idle connections")
            idle = await connect_many(target.url, [f"i{i:05d}" for i in range(count)],
                                      timeout=self.params["timeout"],
                                      rate=self.params.get("connect_rate"))
            connected = perf()
            usage = window.close(connected)
            await asyncio.sleep(self.params["settle"])
            after = process.memory_info().rss
            alive = sum(1 for client in idle if not client.closed)
            self.result(target, f"{count} connections", rep, {
                "bytes_per_connection": round((after - before) / count, 1),
                "rss_before_mb": round(before / 2**20, 1), "rss_after_mb": round(after / 2**20, 1),
                "connections": alive, "connect_s": usage["window_s"],
                "loadgen_cpu": usage["loadgen_cpu"], "server_cpu": usage["server_cpu"],
            })
            log(f"{target.name}: {(after - before) / count:,.0f} bytes per connection")
            close_all(idle + warmups)
            await wait_closed(idle + warmups)


class SignInStorm(Scenario):
    """S4: a 1,000-member group chatting at a steady rate while sign-ins arrive
    at twice the rate the machine can hash; the chat's latency is the figure."""

    async def prepare(self) -> None:
        """Create the accounts and the group (on a server with a cheap bcrypt cost)."""
        target = self.targets[0]
        size: int = self.params["group_size"]
        names = [f"c{i:05d}" for i in range(size)]
        members = await connect_many(target.url, names)
        await create_group(members[0], "storm", names[1:])
        close_all(members)
        await wait_closed(members)
        emit({"event": "prepared"})

    async def run(self) -> None:
        size: int = self.params["group_size"]
        names = [f"c{i:05d}" for i in range(size)]
        cost: int = self.params["bcrypt_cost"]
        hash_s = min(self._time_hash(cost) for _ in range(2))
        capacity = (os.cpu_count() or 1) / hash_s
        rate = self.params.get("signin_rate") or 2 * capacity
        log(f"bcrypt cost {cost}: {hash_s * 1000:.0f} ms per hash, the machine hashes "
            f"{capacity:.1f}/s; storm at {rate:.1f}/s")
        clients: dict[str, list[Client]] = {}
        for target in self.targets:
            log(f"{target.name}: signing in {size} members")
            clients[target.name] = await connect_many(target.url, names)
            if not target.options.get("group_exists"):
                await create_group(clients[target.name][0], "storm", names[1:])
            for client in clients[target.name]:
                client.drop_inbox()
        try:
            # Each run ends only when every admitted sign-in has been hashed
            # (~16 s at the default bound), so the reference servers may be
            # given fewer repetitions to keep the whole run short.
            reference_repeat = self.params.get("reference_repeat", self.repeat)
            for rep in range(self.repeat):
                for target in self.targets:
                    if target.kind != "chateau" and rep >= reference_repeat:
                        continue
                    await self.measure(target, rep, clients[target.name], rate, hash_s, capacity)
        finally:
            for members in clients.values():
                close_all(members)
            await wait_closed([c for members in clients.values() for c in members])

    @staticmethod
    def _time_hash(cost: int) -> float:
        start = perf()
        bcrypt.hashpw(b"calibration", bcrypt.gensalt(cost))
        return perf() - start

    async def calm(self, target: Target, rep: int, group: list[Client]) -> None:
        """The same chat with no sign-ins: what the storm is to be compared with."""
        chat_rate: float = self.params["chat_rate"]
        seconds: float = self.params["calm"]
        chat = FanOut(group[0], group[1:], "storm", max(int(chat_rate * seconds), 1), 100,
                      self.next_tag(), rate=chat_rate)
        window = Window(target)
        finished = await chat.run(seconds + 30)
        usage = window.close()
        self.result(target, "calm", rep, {
            "chat_p50_ms": ms(percentile(chat.latencies, 0.50)),
            "chat_p99_ms": ms(percentile(chat.latencies, 0.99)),
            "chat_max_ms": ms(max(chat.latencies, default=None)),
            "chat_messages": chat.completed, "timed_out": not finished,
            "errors": len(chat.errors()), **usage,
        })

    async def measure(self, target: Target, rep: int, group: list[Client], rate: float,
                      hash_s: float, capacity: float) -> None:
        if self.params.get("calm"):
            await self.calm(target, rep, group)
        duration: float = self.params["duration"]
        chat_rate: float = self.params["chat_rate"]
        outcomes: list[tuple[str, float]] = []
        prefix = f"s{self.next_tag():04d}n"

        async def attempt(index: int) -> None:
            start = perf()
            client: Client | None = None
            try:
                client = await connect(target.url)
                client.send(encode({"type": "RegisterRequest", "username": f"{prefix}{index}",
                                    "password": PASSWORD, "auth": False, "hash": True}))
                reply = await client.expect({"RegisterResponse"}, self.params["drain_timeout"])
                if reply["type"] == "RegisterResponse":
                    outcomes.append(("ok", perf() - start))
                elif reply.get("status") == 503:
                    outcomes.append(("busy", perf() - start))
                else:
                    outcomes.append((f"error {reply.get('status')}", perf() - start))
            except (BenchError, OSError, asyncio.TimeoutError) as exc:
                outcomes.append((f"failed: {type(exc).__name__}", perf() - start))
            finally:
                if client is not None:
                    client.close()

        chat = FanOut(group[0], group[1:], "storm", int(chat_rate * (duration + 60)) + 1,
                      100, self.next_tag(), rate=chat_rate)
        profiler = self.profiler(target, "storm", rep)
        window = Window(target)
        chat_task = asyncio.ensure_future(chat.run(duration + self.params["drain_timeout"] + 10))
        attempts: list[asyncio.Future[None]] = []
        start = perf()
        while perf() - start < duration:
            attempts.append(asyncio.ensure_future(attempt(len(attempts))))
            await asyncio.sleep(max(start + len(attempts) / rate - perf(), 0))
        storm_end = perf()
        # The chat goes on while the admitted sign-ins are still hashing.
        await asyncio.wait(attempts, timeout=self.params["drain_timeout"])
        chat.stop_sending()
        finished = await chat_task
        usage = window.close()
        profiler.stop()
        for pending in attempts:
            pending.cancel()
        ok = [t for kind, t in outcomes if kind == "ok"]
        busy = [t for kind, t in outcomes if kind == "busy"]
        other = [kind for kind, _ in outcomes if kind not in ("ok", "busy")]
        self.result(target, "storm", rep, {
            "chat_p50_ms": ms(percentile(chat.latencies, 0.50)),
            "chat_p99_ms": ms(percentile(chat.latencies, 0.99)),
            "chat_max_ms": ms(max(chat.latencies, default=None)),
            "chat_messages": chat.completed,
            "signin_rate": round(rate, 2), "hash_ms": round(hash_s * 1000, 1),
            "machine_hash_capacity": round(capacity, 2),
            "signins_ok": len(ok), "signins_busy": len(busy), "signins_other": len(other),
            "signin_p50_ms": ms(percentile(ok, 0.50)), "signin_p99_ms": ms(percentile(ok, 0.99)),
            "busy_p99_ms": ms(percentile(busy, 0.99)),
            "storm_s": round(storm_end - start, 2), "timed_out": not finished,
            "signin_failures": {kind: other.count(kind) for kind in sorted(set(other))},
            "errors": len(chat.errors()) + len(other), **usage,
        })
        log(f"{target.name} storm rep {rep}: chat p99 {ms(percentile(chat.latencies, 0.99))} ms, "
            f"{len(ok)} signed in, {len(busy)} busy, {len(other)} other "
            f"(loadgen {usage['loadgen_cpu']:.0%})")
        await asyncio.sleep(self.params.get("pause", 0.5))


SCENARIOS: dict[str, type[Scenario]] = {
    "S1": GroupFanOut, "S2": DirectMessages, "S3": IdleConnections, "S4": SignInStorm,
    "S5": GroupFanOut,
}


def scenario_class(name: str) -> type[Scenario]:
    if name == "S6":  # S1 split across cluster nodes: bench/split_loadgen.py
        from bench.split_loadgen import SplitFanOut

        return SplitFanOut
    return SCENARIOS[name]


async def main_async(spec: dict[str, Any]) -> None:
    scenario = scenario_class(spec["scenario"])(spec)
    if spec.get("phase") == "prepare":
        assert isinstance(scenario, SignInStorm)
        await scenario.prepare()
    else:
        await scenario.run()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    with open(args[0], encoding="utf-8") as handle:
        spec = json.load(handle)
    try:
        uvloop.run(main_async(spec))
    except BenchError as exc:
        emit({"event": "error", "detail": str(exc)})
        log(f"failed: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
