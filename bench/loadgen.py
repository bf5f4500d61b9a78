"""The load generator: picows on uvloop, one process, every scenario.

picows masks and parses frames in C, so one Python process on one core can
keep thousands of connections busy; the per-frame Python work here is a
prefix check, one ``find`` and a counter, never a JSON parse. Frames carry a
run tag and a sequence number in their content, so a late frame of an
earlier run can never be counted in a later one.

It is started by :mod:`bench.run` as ``python -m bench.loadgen SPEC.json``
and prints one JSON object per line on stdout: ``{"event": "result", ...}``
per measured run. Progress goes to stderr.

Scenarios S1–S5 are here and S6 in :mod:`bench.split_loadgen`; what they are
built from (the client, fan-out runs, CPU windows, the :class:`Scenario`
base) is in :mod:`bench.loadgen_base`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any, Callable

import bcrypt
import uvloop

from bench.loadgen_base import (
    CONTENT,
    DIRECT_RECV,
    PASSWORD,
    SEND_RESPONSE,
    BenchError,
    Client,
    FanOut,
    Scenario,
    Target,
    Window,
    close_all,
    connect,
    connect_many,
    create_group,
    emit,
    encode,
    log,
    ms,
    percentile,
    perf,
    wait_closed,
)
from bench.split_loadgen import SplitFanOut

# -- scenarios ------------------------------------------------------------------


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
    """S3: RSS growth of a fresh server per signed-in idle connection, and
    whether idle connections slow a group's chat (S3').

    The warm-up users form one group, which chats at a steady modest rate
    twice: before the idle connections are opened and once they are all
    connected and the RSS "after" sample is taken, so the chat adds nothing
    to the memory figure. The idle users are in no group and receive nothing.
    ``signin`` says whether Chateau's accounts were made by these sign-ins
    (``first``: a fresh database) or existed (``resumed``); it names the case."""

    async def run(self) -> None:
        count: int = self.params["connections"]
        warm: int = self.params["warmup"]
        rep = int(self.spec.get("rep", 0))
        for target in self.targets:
            process = target.process()
            log(f"{target.name}: {warm} warm-up connections")
            names = [f"w{i:05d}" for i in range(warm)]
            warmups = await connect_many(target.url, names)
            # A name of its own per repetition: Chateau's database (and so
            # the group of an earlier repetition) is kept between them.
            chatname = f"idle-group-{rep}"
            await create_group(warmups[0], chatname, names[1:])
            for client in warmups:
                client.drop_inbox()
            idle_free, free_ok, free_errors = await self.chat(warmups, chatname)
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
            beside_idle, beside_ok, beside_errors = await self.chat(warmups, chatname)
            signin = self.params.get("signin")
            case = f"{count} connections" + (f", {signin} sign-in" if signin else "")
            self.result(target, case, rep, {
                "bytes_per_connection": round((after - before) / count, 1),
                "rss_before_mb": round(before / 2**20, 1), "rss_after_mb": round(after / 2**20, 1),
                "connections": alive, "connect_s": usage["window_s"],
                "loadgen_cpu": usage["loadgen_cpu"], "server_cpu": usage["server_cpu"],
                "group_size": warm,
                "idle_free_p50_ms": ms(percentile(idle_free.latencies, 0.50)),
                "idle_free_p99_ms": ms(percentile(idle_free.latencies, 0.99)),
                "group_p50_ms": ms(percentile(beside_idle.latencies, 0.50)),
                "group_p99_ms": ms(percentile(beside_idle.latencies, 0.99)),
                "group_messages": beside_idle.completed,
                "idle_free_messages": idle_free.completed,
                "timed_out": not (free_ok and beside_ok), "errors": free_errors + beside_errors,
            })
            log(f"{target.name}: {(after - before) / count:,.0f} bytes per connection; "
                f"group p99 {ms(percentile(idle_free.latencies, 0.99))} ms without the idle "
                f"connections, {ms(percentile(beside_idle.latencies, 0.99))} ms beside them")
            close_all(idle + warmups)
            await wait_closed(idle + warmups)

    async def chat(self, group: list[Client], chatname: str) -> tuple[FanOut, bool, int]:
        """One sender, the rest of *group* receiving, ``group_messages`` at
        ``group_rate`` a second (open loop: a latency, not a throughput), after
        a few unmeasured ones so that first-message costs are not in it.
        The measured run, whether everything arrived in time, and the errors."""
        rate: float = self.params["group_rate"]
        count: int = self.params["group_messages"]
        content = self.params.get("content_size", 100)
        warm = FanOut(group[0], group[1:], chatname, max(count // 10, 4), content,
                      self.next_tag(), rate=rate)
        warm_ok = await warm.run(self.params["timeout"])
        errors = len(warm.errors())
        await asyncio.sleep(self.params.get("pause", 0.2))
        run = FanOut(group[0], group[1:], chatname, count, content, self.next_tag(), rate=rate)
        finished = await run.run(count / rate + 30)
        return run, warm_ok and finished, errors + len(run.errors())


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
    "S5": GroupFanOut, "S6": SplitFanOut,  # S6: S1 split across cluster nodes
}


async def main_async(spec: dict[str, Any]) -> None:
    scenario = SCENARIOS[spec["scenario"]](spec)
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
