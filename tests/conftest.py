"""Shared fixtures: an in-process Chateau on a free loopback port, and clients."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor

from chateau.config import Config, load_config
from chateau.service import Chateau
from tests.inprocess import InProcessChat, make_test_config
from tests.postgres import PostgresServer
from tests.redis import RedisServer
from tests.wsclient import Client, connect


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what imports and collection built, before the first test.

    Full collections then walk only what the tests make, which keeps this
    process's collector pauses short (see ``tests.timing``).
    """
    gc.collect()
    gc.freeze()


def make_config(tmp_path: Path, **sections: dict[str, str]) -> Config:
    """A config for tests: SQLite in *tmp_path*, port 0, cheap bcrypt."""
    overrides = {
        ("server", "listen"): "tcp:0:interface=127.0.0.1",
        ("database", "url"): f"sqlite:///{tmp_path / 'chateau.sqlite3'}",
        ("auth", "bcrypt_cost"): "4",
        # Every test client comes from 127.0.0.1: the per-address sign-up and
        # sign-in rates are set by the tests of those rules themselves.
        ("limits", "signups_per_hour_per_address"): "100000",
        ("limits", "signins_per_minute_per_address"): "100000",
    }
    for section, values in sections.items():
        for key, value in values.items():
            overrides[(section, key)] = value
    return load_config(None, overrides)


class RunningServer:
    def __init__(self, service: Chateau) -> None:
        self.service = service
        port = service.ports[0].getHost().port
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.http_url = f"http://127.0.0.1:{port}/"
        self.clients: list[Client] = []

    async def client(self, username: str | None = None, password: str = "secret") -> Client:
        client = await connect(self.url)
        self.clients.append(client)
        if username is not None:
            await client.register(username, password)
        return client

    async def close_clients(self) -> None:
        for client in self.clients:
            await client.close()


async def start_server(config: Config) -> RunningServer:
    service = Chateau(config, reactor)
    service.startService()
    await service.ready
    return RunningServer(service)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One private PostgreSQL server for the whole run (never skipped)."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    """One private Redis server for the whole run (skipped without it, failed under CI)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each database test runs twice: on SQLite and on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chateau.sqlite3'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def config_factory(tmp_path: Path, database_url: str) -> Callable[..., Config]:
    def factory(**sections: dict[str, str]) -> Config:
        sections.setdefault("database", {}).setdefault("url", database_url)
        return make_config(tmp_path, **sections)

    return factory


@pytest_twisted.async_yield_fixture
async def server(config_factory: Callable[..., Config]) -> AsyncIterator[RunningServer]:
    running = await start_server(config_factory())
    yield running
    await running.close_clients()
    await running.service.stopService()


@pytest_twisted.async_yield_fixture
async def server_factory() -> AsyncIterator[Callable[[Config], Awaitable[RunningServer]]]:
    """Start servers with custom configs; all are stopped at the end."""
    started: list[RunningServer] = []

    async def start(config: Config) -> RunningServer:
        running = await start_server(config)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.close_clients()
        await running.service.stopService()


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[InProcessChat]:
    """A chat server in-process (tests/inprocess.py): the real handlers on a SQLite store."""
    running = InProcessChat(make_test_config(tmp_path))
    running.start()
    yield running
    running.stop()
