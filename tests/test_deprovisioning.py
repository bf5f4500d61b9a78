"""Deprovisioning's rules: claims in the database, verdicts, and the re-check loop.

The storage rules run on SQLite and PostgreSQL (the ``database_url``
fixture); the loop runs on a ``task.Clock`` with a stand-in for the directory
lookup. tests/test_deprovisioning_ldap.py drives the same over real sockets
against the real slapd, and across two clustered nodes.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import pytest
from sqlalchemy import select, text, update
from twisted.internet.defer import Deferred, fail, succeed

from chateau.auth.directory import (
    ACCOUNT_DISABLED,
    ACCOUNT_MISSING,
    ACCOUNT_NOT_IN_GROUP,
    ACCOUNT_OK,
    AccountStatus,
    DirectoryUnavailable,
)
from chateau.config import load_config
from chateau.deprovisioning import Deprovisioner
from chateau.metrics import Metrics
from chateau.store import Store, migrate
from chateau.store.accounts import create_session_txn, create_user_txn, get_user_txn
from chateau.store.audit import entries_txn
from chateau.store.deprovisioning import (
    claim_due_txn,
    claim_one_txn,
    deprovision_txn,
    deprovisioned_txn,
    release_txn,
    signed_in_txn,
)
from chateau.store.engine import in_transaction, make_engine
from chateau.store.tables import sessions, users
from tests.inprocess import InlinePool, SyncClock

HOUR = 3600 * 1000


@pytest.fixture
def engine(database_url: str) -> Iterator[Any]:
    engine = make_engine(database_url)
    in_transaction(engine, migrate.prepare)
    yield engine
    engine.dispose()


def add_account(engine: Any, name: str, method: str = "ldap", keys: int = 1) -> None:
    assert in_transaction(engine, create_user_txn, name, None, method, None)
    for number in range(keys):
        in_transaction(engine, create_session_txn, name, f"{name}-key-{number}", 86400)


def checked_at(engine: Any, name: str) -> int | None:
    def txn(connection: Any) -> int | None:
        return connection.execute(
            select(users.c.directory_checked_at).where(users.c.username == name)
        ).scalar()

    return in_transaction(engine, txn)


def set_checked(engine: Any, name: str, stamp: int | None) -> None:
    def txn(connection: Any) -> None:
        connection.execute(
            update(users).where(users.c.username == name).values(directory_checked_at=stamp)
        )

    in_transaction(engine, txn)


def key_count(engine: Any, name: str) -> int:
    def txn(connection: Any) -> int:
        return len(connection.execute(
            select(sessions.c.key_hash).where(sessions.c.username == name)
        ).all())

    return in_transaction(engine, txn)


# -- storage rules (SQLite and PostgreSQL) ---------------------------------------

def test_only_due_directory_accounts_with_live_keys_or_online_are_claimed(engine):
    now = int(time.time() * 1000)
    add_account(engine, "alice")
    add_account(engine, "bob")
    add_account(engine, "carol", keys=0)  # no key, not online: nothing to shut
    add_account(engine, "dora", keys=0)  # no key, but connected to this node
    add_account(engine, "local", method="local")
    add_account(engine, "fresh")
    set_checked(engine, "fresh", now - 10)  # checked a moment ago
    claims = in_transaction(engine, claim_due_txn, now, now - HOUR, ["dora", "local"], 100)
    assert [c.username for c in claims] == ["alice", "bob", "dora"]
    assert all(c.previous is None and c.claimed_at == now for c in claims)
    assert checked_at(engine, "alice") == now and checked_at(engine, "carol") is None
    # Claimed means checked for this interval: nobody claims them again.
    assert in_transaction(engine, claim_due_txn, now + 1, now - HOUR, ["dora"], 100) == []
    # A batch is bounded, in name order.
    set_checked(engine, "alice", None)
    set_checked(engine, "bob", None)
    claims = in_transaction(engine, claim_due_txn, now, now - HOUR, [], 1)
    assert [c.username for c in claims] == ["alice"]


def test_a_deprovisioned_account_is_never_claimed_again(engine):
    now = int(time.time() * 1000)
    add_account(engine, "alice")
    assert in_transaction(engine, deprovision_txn, "alice", "missing", now, {}) == 1
    assert in_transaction(engine, claim_due_txn, now, now + 1, ["alice"], 100) == []
    assert in_transaction(engine, claim_one_txn, "alice", now, now + 1) is not None  # resume


def test_two_nodes_claiming_at_once_never_claim_the_same_account(engine):
    now = int(time.time() * 1000)
    names = [f"user{number:02}" for number in range(40)]
    for name in names:
        add_account(engine, name)
    start = threading.Barrier(4)
    claimed: list[list[str]] = []

    def node() -> None:
        start.wait()
        claims = in_transaction(engine, claim_due_txn, now, now - HOUR, names, 100)
        claimed.append([claim.username for claim in claims])

    threads = [threading.Thread(target=node) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    everything = [name for claims in claimed for name in claims]
    assert sorted(everything) == names, claimed  # each exactly once


def test_a_released_claim_is_due_again_unless_a_sign_in_stamped_it(engine):
    now = int(time.time() * 1000)
    add_account(engine, "alice")
    add_account(engine, "bob")
    set_checked(engine, "bob", now - 2 * HOUR)
    claims = in_transaction(engine, claim_due_txn, now, now - HOUR, [], 100)
    assert {c.username: c.previous for c in claims} == {"alice": None, "bob": now - 2 * HOUR}
    assert in_transaction(engine, signed_in_txn, "alice", now + 5) is False
    assert in_transaction(engine, release_txn, claims) == 1  # bob only
    assert checked_at(engine, "alice") == now + 5
    assert checked_at(engine, "bob") == now - 2 * HOUR
    again = in_transaction(engine, claim_due_txn, now + 10, now - HOUR, [], 100)
    assert [c.username for c in again] == ["bob"]


def test_deprovision_revokes_every_key_marks_and_audits_once(engine):
    now = int(time.time() * 1000)
    add_account(engine, "alice", keys=3)
    add_account(engine, "zed", method="local")
    before = in_transaction(engine, get_user_txn, "alice")
    assert in_transaction(engine, deprovision_txn, "alice", "disabled", now,
                          {"via": "recheck"}) == 3
    assert key_count(engine, "alice") == 0

    def revoked_at(connection: Any) -> int:
        return connection.execute(
            select(users.c.revoked_at).where(users.c.username == "alice")
        ).scalar()

    assert in_transaction(engine, revoked_at) > 0  # every node's SignOut closes them
    assert in_transaction(engine, deprovisioned_txn)["alice"].reason == "disabled"
    # A second verdict (another node, a resume) revokes again but audits once.
    assert in_transaction(engine, deprovision_txn, "alice", "missing", now + 1, {}) == 0
    entries = in_transaction(engine, entries_txn, 10, "alice")
    assert [(e.actor, e.action, e.reason) for e in entries] == [
        ("directory", "deprovision", "disabled")]
    assert entries[0].detail == {"via": "recheck", "sessions": 3}
    assert in_transaction(engine, deprovisioned_txn)["alice"].at == now
    # Local accounts are never the directory's to shut.
    assert in_transaction(engine, deprovision_txn, "zed", "missing", now, {}) is None
    assert before.auth_method == "ldap"


def test_a_successful_sign_in_reprovisions(engine):
    now = int(time.time() * 1000)
    add_account(engine, "alice")
    in_transaction(engine, deprovision_txn, "alice", "not_in_group", now, {})
    assert in_transaction(engine, signed_in_txn, "alice", now + 50) is True
    assert in_transaction(engine, deprovisioned_txn) == {}
    assert checked_at(engine, "alice") == now + 50
    assert in_transaction(engine, signed_in_txn, "alice", now + 60) is False
    actions = [(e.action, e.detail) for e in in_transaction(engine, entries_txn, 10, "alice")]
    assert actions[0] == ("reprovision", {"was": "not_in_group", "since": now})


def test_user_list_shows_deprovisioned_accounts(engine, tmp_path, database_url):
    from tests.test_revocation import run_admin

    add_account(engine, "alice")
    add_account(engine, "bob")
    in_transaction(engine, deprovision_txn, "alice", "missing",
                   int(time.mktime((2026, 12, 1, 12, 0, 0, 0, 0, 0)) * 1000
                       - time.timezone * 1000), {})
    config = tmp_path / "admin.ini"
    config.write_text(f"[database]\nurl = {database_url}\n")
    result = run_admin(config, "user", "list")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "deprovisioned (missing) since 2026-12-01T12:00:00.000Z" in lines["alice"]
    assert "deprovisioned" not in lines["bob"] and "active" in lines["bob"]


def test_upgrading_to_0015_keeps_accounts_and_starts_with_nothing_checked(database_url):
    from alembic import command

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0013")
            connection.execute(text(
                "INSERT INTO names (name, kind, skeleton) VALUES ('alice', 'user', 'alice'), "
                "('zed', 'user', 'zed')"
            ))
            connection.execute(text(
                "INSERT INTO users (username, auth_method, disabled, created_at) VALUES "
                "('alice', 'ldap', false, 1), ('zed', 'local', false, 1)"
            ))
            connection.execute(text(
                "INSERT INTO sessions (key_hash, username, created_at, expires_at) VALUES "
                "('k1', 'alice', 1, 9999999999999)"
            ))
        with engine.begin() as connection:
            migrate.upgrade(connection)
            assert migrate.current_revision(connection) == migrate.head_revision()
        now = int(time.time() * 1000)
        claims = in_transaction(engine, claim_due_txn, now, now - HOUR, ["zed"], 100)
        assert [c.username for c in claims] == ["alice"]
        assert in_transaction(engine, deprovisioned_txn) == {}
    finally:
        engine.dispose()


# -- the loop, on a task.Clock ------------------------------------------------------

class FakeDirectory:
    """What Directory.account_status would say, per account; or unreachable."""

    def __init__(self) -> None:
        self.answers: dict[str, AccountStatus] = {}
        self.reachable = True
        self.asked: list[tuple[str, str | None]] = []

    def lookup(self, username: str, directory_id: str | None) -> Deferred[AccountStatus]:
        self.asked.append((username, directory_id))
        if not self.reachable:
            return fail(DirectoryUnavailable("unreachable", "ldaps://ldap: connection refused"))
        return succeed(self.answers.get(username, AccountStatus(ACCOUNT_OK, username)))


@pytest.fixture
def loop(engine) -> Iterator[Any]:
    clock = SyncClock()
    clock.advance(time.time())
    store = Store(clock, engine, InlinePool("chateau-db"))
    directory = FakeDirectory()
    metrics = Metrics()
    online: list[str] = []
    config = load_config(None, {
        ("auth", "methods"): "ldap", ("ldap", "url"): "ldaps://ldap.example.org",
        ("ldap", "base_dn"): "dc=example,dc=org", ("ldap", "recheck_interval"): "100",
    })
    deprovisioner = Deprovisioner(config.ldap, store, directory.lookup, metrics,
                                  lambda: list(online), clock)
    deprovisioner.start()

    class Loop:
        pass

    state = Loop()
    state.clock, state.store, state.directory, state.metrics = clock, store, directory, metrics
    state.online, state.deprovisioner, state.engine = online, deprovisioner, engine
    yield state
    deprovisioner.stop()


def counted(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("chateau_directory_checks_total",
                                             {"result": result}) or 0.0


def test_each_account_is_checked_once_an_interval_and_failures_are_deprovisioned(loop):
    add_account(loop.engine, "alice")
    add_account(loop.engine, "bob")
    add_account(loop.engine, "carol")
    add_account(loop.engine, "dave")
    signed_in = int(loop.clock.seconds() * 1000)
    in_transaction(loop.engine, signed_in_txn, "dave", signed_in)  # just signed in
    loop.clock.advance(10)  # the first look: a tenth of the interval
    assert sorted(name for name, _ in loop.directory.asked) == ["alice", "bob", "carol"]
    assert counted(loop.metrics, "ok") == 3
    loop.directory.asked.clear()
    loop.clock.advance(10)
    assert loop.directory.asked == []  # checked for this interval
    loop.directory.answers["bob"] = AccountStatus(ACCOUNT_MISSING)
    loop.directory.answers["carol"] = AccountStatus(ACCOUNT_NOT_IN_GROUP, "carol", "uid=carol")
    loop.directory.answers["dave"] = AccountStatus(ACCOUNT_DISABLED, "dave", "uid=dave")
    for _ in range(9):  # to 110 s: one interval after alice, bob and carol's check
        loop.clock.advance(10)
    # Within one interval of their last check, every account was checked again.
    assert sorted(name for name, _ in loop.directory.asked) == ["alice", "bob", "carol", "dave"]
    gone = in_transaction(loop.engine, deprovisioned_txn)
    assert {name: mark.reason for name, mark in gone.items()} == {
        "bob": "missing", "carol": "not_in_group", "dave": "disabled"}
    assert key_count(loop.engine, "bob") == 0 and key_count(loop.engine, "alice") == 1
    assert counted(loop.metrics, "failed") == 3
    audit = in_transaction(loop.engine, entries_txn, 10, "carol")
    assert audit[0].action == "deprovision" and audit[0].detail["dn"] == "uid=carol"


def test_an_unreachable_directory_signs_nobody_out_and_the_next_look_catches_up(loop):
    for name in ("alice", "bob", "carol"):
        add_account(loop.engine, name)
    loop.directory.answers["bob"] = AccountStatus(ACCOUNT_MISSING)
    loop.directory.reachable = False
    loop.clock.advance(10)
    # The first failure stops the look; its claim and the others are given back.
    assert len(loop.directory.asked) == 1
    assert counted(loop.metrics, "unavailable") == 1
    assert in_transaction(loop.engine, deprovisioned_txn) == {}
    assert all(checked_at(loop.engine, name) is None for name in ("alice", "bob", "carol"))
    assert key_count(loop.engine, "bob") == 1
    loop.directory.reachable = True
    loop.clock.advance(10)
    assert list(in_transaction(loop.engine, deprovisioned_txn)) == ["bob"]
    assert counted(loop.metrics, "ok") == 2 and counted(loop.metrics, "failed") == 1


def test_a_renamed_entry_is_not_deprovisioned(loop):
    add_account(loop.engine, "alice")

    def bind(connection: Any) -> None:
        connection.execute(
            update(users).where(users.c.username == "alice").values(directory_id="1234-abcd")
        )

    in_transaction(loop.engine, bind)
    loop.directory.answers["alice"] = AccountStatus(ACCOUNT_OK, "Alicia", "uid=Alicia")
    loop.clock.advance(10)
    assert loop.directory.asked == [("alice", "1234-abcd")]  # found by its stable id
    assert in_transaction(loop.engine, deprovisioned_txn) == {}
    assert key_count(loop.engine, "alice") == 1


def test_a_connection_here_without_a_live_key_is_checked_too(loop):
    add_account(loop.engine, "alice", keys=0)
    loop.online.append("alice")
    loop.directory.answers["alice"] = AccountStatus(ACCOUNT_MISSING)
    loop.clock.advance(10)
    assert list(in_transaction(loop.engine, deprovisioned_txn)) == ["alice"]


def test_resume_checks_only_after_an_interval(loop):
    add_account(loop.engine, "alice")
    now = int(loop.clock.seconds() * 1000)
    in_transaction(loop.engine, signed_in_txn, "alice", now)
    loop.directory.answers["alice"] = AccountStatus(ACCOUNT_MISSING)
    allowed: list[bool] = []
    Deferred.fromCoroutine(loop.deprovisioner.recheck_on_resume("alice")).addCallback(
        allowed.append)
    assert allowed == [True] and loop.directory.asked == []
    loop.deprovisioner.stop()  # only the resume looks now
    loop.clock.advance(101)
    Deferred.fromCoroutine(loop.deprovisioner.recheck_on_resume("alice")).addCallback(
        allowed.append)
    assert allowed == [True, False] and loop.directory.asked == [("alice", None)]
    assert list(in_transaction(loop.engine, deprovisioned_txn)) == ["alice"]
    # Unreachable: the resume goes on.
    add_account(loop.engine, "bob")
    loop.directory.reachable = False
    Deferred.fromCoroutine(loop.deprovisioner.recheck_on_resume("bob")).addCallback(
        allowed.append)
    assert allowed[-1] is True and checked_at(loop.engine, "bob") is None
