"""Deprovisioning over real sockets against the real slapd (tests/slapd.py).

Each test gives the directory a person (and a group) of its own, signs them
in over a WebSocket, changes the directory as its administrator would
(delete, lock, take out of the group, rename) and watches the live
connection and the session key. Servers run on SQLite and PostgreSQL with a
one-second ``[ldap] recheck_interval``; the cluster test runs two ``twistd``
nodes over PostgreSQL and Redis.
"""

from __future__ import annotations

import secrets
import ssl
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from ldap3 import BASE, MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE, Connection, Server, Tls
from twisted.internet import endpoints, reactor
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols.portforward import ProxyFactory

from chateau.auth.directory import (
    ACCOUNT_DISABLED,
    ACCOUNT_MISSING,
    ACCOUNT_NOT_IN_GROUP,
    ACCOUNT_OK,
    Directory,
    DirectoryMisconfigured,
)
from chateau.config import load_config
from chateau.handlers.sessions import DEPROVISIONED_DETAIL
from chateau.store.audit import entries_txn
from chateau.store.engine import in_transaction, make_engine
from tests import slapd as openldap
from tests.deferreds import inline, sleep
from tests.slapd import GROUPS, PEOPLE, SUFFIX, user_dn
from tests.test_cluster import Cluster
from tests.wsclient import connect

slapd = openldap.slapd

SIGNED_OUT = 4001
LOCKED = "(pwdAccountLockedTime=*)"


# -- the directory, as its administrator changes it ---------------------------------

def admin_connection(slapd: Any) -> Connection:
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(slapd.ca_file))
    server = Server("localhost", port=slapd.ldaps_port, use_ssl=True, tls=tls)
    return Connection(server, f"cn=admin,{SUFFIX}", "admin-secret", auto_bind=True)


class People:
    """People and groups this test adds to the shared slapd (removed at the end)."""

    def __init__(self, slapd: Any) -> None:
        self.conn = admin_connection(slapd)
        self.added: list[str] = []

    def _do(self, done: bool) -> None:
        assert done, self.conn.result

    def person(self, uid: str | None = None) -> tuple[str, str]:
        """A new person: (uid, password)."""
        uid = uid or f"dp{secrets.token_hex(4)}"
        password = f"{uid}-pw"
        dn = user_dn(uid)
        self._do(self.conn.add(dn, ["inetOrgPerson"], {
            "uid": uid, "cn": f"Person {uid}", "sn": uid, "userPassword": password}))
        self.added.append(dn)
        return uid, password

    def group(self, *uids: str) -> str:
        dn = f"cn=dg{secrets.token_hex(4)},{GROUPS}"
        self._do(self.conn.add(dn, ["groupOfNames"], {"member": [user_dn(u) for u in uids]}))
        self.added.append(dn)
        return dn

    def delete(self, uid: str) -> None:
        self._do(self.conn.delete(user_dn(uid)))

    def lock(self, uid: str, locked: bool = True) -> None:
        change = (MODIFY_REPLACE, ["000001010000Z"]) if locked else (MODIFY_DELETE, [])
        self._do(self.conn.modify(user_dn(uid), {"pwdAccountLockedTime": [change]}))

    def leave(self, group: str, uid: str) -> None:
        self._do(self.conn.modify(group, {"member": [(MODIFY_DELETE, [user_dn(uid)])]}))

    def join(self, group: str, uid: str) -> None:
        self._do(self.conn.modify(group, {"member": [(MODIFY_ADD, [user_dn(uid)])]}))

    def rename(self, uid: str, new_uid: str) -> None:
        self._do(self.conn.modify_dn(user_dn(uid), f"uid={new_uid}", delete_old_dn=True))
        self.added.append(user_dn(new_uid))

    def entry_uuid(self, uid: str) -> str:
        self.conn.search(user_dn(uid), "(objectClass=*)", BASE, attributes=["entryUUID"])
        return str(self.conn.entries[0].entryUUID.value).lower()

    def close(self) -> None:
        for dn in reversed(self.added):
            self.conn.delete(dn)
        self.conn.unbind()


@pytest.fixture
def people(slapd) -> Iterator[People]:
    directory = People(slapd)
    yield directory
    directory.close()


@pytest.fixture
def start(slapd, server_factory, config_factory):
    """A server signing in against slapd, re-checking every second."""

    async def start(**ldap: str):
        settings = {"recheck_interval": "1", **ldap}
        config = config_factory(
            auth={"methods": "local,ldap"}, ldap=slapd.settings(**settings),
            chat={"revocation_check_interval": "0.1"},
        )
        return await server_factory(config)

    return start


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") == LogLevel.warn:
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


async def sign_in(running: Any, uid: str, password: str) -> tuple[Any, str]:
    client = await running.client()
    reply = await client.register(uid, password, auth=True)
    return client, reply["session_key"]


async def resume(running: Any, key: str) -> dict[str, Any]:
    client = await running.client()
    return await client.request({"type": "ResumeRequest", "session_key": key})


def audit(running: Any, target: str) -> list[Any]:
    engine = make_engine(running.service.config.database.url)
    try:
        return in_transaction(engine, entries_txn, 20, target)
    finally:
        engine.dispose()


def checks(running: Any, result: str) -> float:
    with urllib.request.urlopen(running.http_url + "metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(f'chateau_directory_checks_total{{result="{result}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no chateau_directory_checks_total for {result} in /metrics")


async def assert_deprovisioned(running: Any, client: Any, key: str, uid: str, reason: str):
    """The live connection closes 4001, the key fails, and the audit log says why."""
    assert await client.closed(timeout=5) == SIGNED_OUT
    reply = await resume(running, key)
    assert reply["status"] == 301 and "invalid, expired or revoked" in reply["detail"], reply
    entries = [e for e in audit(running, uid) if e.action == "deprovision"]
    assert [(e.actor, e.reason) for e in entries] == [("directory", reason)]
    user = await running.service.store.deprovisioning.deprovisioned()
    assert user[uid].reason == reason
    assert await deferToThread(checks, running, "failed") >= 1


# -- the three ways out ----------------------------------------------------------------

@inline
async def test_a_deleted_entry_is_signed_out_everywhere_within_an_interval(start, people):
    uid, password = people.person()
    running = await start()
    client, key = await sign_in(running, uid, password)
    second, _ = await sign_in(running, uid, password)
    bystander, _ = await sign_in(running, "alice", "alice-pw")
    people.delete(uid)
    began = time.monotonic()
    await assert_deprovisioned(running, client, key, uid, ACCOUNT_MISSING)
    assert await second.closed(timeout=1) == SIGNED_OUT
    assert time.monotonic() - began < 2.5  # one interval, a look and a sign-out poll
    assert (await bystander.request({"type": "HeartbeatRequest"}))["status"] == 200
    again = await running.client()
    reply = await again.request({"type": "RegisterRequest", "username": uid,
                                 "password": password, "auth": True})
    assert reply["status"] == 301 and "wrong username or password" in reply["detail"]


@inline
async def test_a_locked_entry_matching_disabled_filter_is_signed_out(start, people):
    uid, password = people.person()
    running = await start(disabled_filter=LOCKED)
    client, key = await sign_in(running, uid, password)
    await sleep(1.2)
    assert (await client.request({"type": "HeartbeatRequest"}))["status"] == 200  # checked: ok
    people.lock(uid)
    await assert_deprovisioned(running, client, key, uid, ACCOUNT_DISABLED)
    # Signing in again is refused while the filter matches (the directory
    # here enforces no password policy on binds: the filter does).
    refused = await running.client()
    reply = await refused.request({"type": "RegisterRequest", "username": uid,
                                   "password": password, "auth": True})
    assert reply["status"] == 301, reply
    assert reply["detail"] == "authentication failed: your directory account is disabled"
    people.lock(uid, False)
    assert (await refused.register(uid, password, auth=True))["username"] == uid
    assert await running.service.store.deprovisioning.deprovisioned() == {}


@inline
async def test_leaving_the_required_group_signs_out_and_coming_back_reprovisions(
    start, people
):
    uid, password = people.person()
    group = people.group(uid, "alice")
    running = await start(required_group=group)
    client, key = await sign_in(running, uid, password)
    people.leave(group, uid)
    await assert_deprovisioned(running, client, key, uid, ACCOUNT_NOT_IN_GROUP)
    refused = await running.client()
    reply = await refused.request({"type": "RegisterRequest", "username": uid,
                                   "password": password, "auth": True})
    assert reply["status"] == 301 and "required group" in reply["detail"]
    people.join(group, uid)
    back, _ = await sign_in(running, uid, password)
    assert await running.service.store.deprovisioning.deprovisioned() == {}
    assert [e.action for e in audit(running, uid) if not e.action.startswith("sign_in")][0] == (
        "reprovision")
    await sleep(1.5)
    assert (await back.request({"type": "HeartbeatRequest"}))["status"] == 200


@inline
async def test_a_renamed_entry_found_by_its_stable_id_is_not_signed_out(start, people):
    uid, password = people.person()
    running = await start()
    client, _ = await sign_in(running, uid, password)
    # What the stable identity's sign-in does: bind the account to entryUUID.
    stable_id = people.entry_uuid(uid)
    engine = make_engine(running.service.config.database.url)
    try:
        from sqlalchemy import update

        from chateau.store.tables import users

        in_transaction(engine, lambda c: c.execute(
            update(users).where(users.c.username == uid).values(directory_id=stable_id)))
    finally:
        engine.dispose()
    people.rename(uid, f"{uid}x")
    await sleep(2.5)
    assert (await client.request({"type": "HeartbeatRequest"}))["status"] == 200
    assert await running.service.store.deprovisioning.deprovisioned() == {}
    # Once gone for good, the same lookup by id says so.
    people.delete(f"{uid}x")
    assert await client.closed(timeout=5) == SIGNED_OUT


# -- resuming ----------------------------------------------------------------------------

@inline
async def test_resume_after_the_interval_checks_the_directory_first(start, people):
    uid, password = people.person()
    kept_uid, kept_password = people.person()
    running = await start()
    running.service.deprovisioner.stop()  # only resumes look at the directory here
    client, key = await sign_in(running, uid, password)
    _, kept_key = await sign_in(running, kept_uid, kept_password)
    await client.close()
    people.delete(uid)
    # Within the interval the key is enough.
    assert (await resume(running, key))["status"] == 200
    await sleep(1.1)
    reply = await resume(running, key)
    assert reply["type"] == "ErrorResponse" and reply["status"] == 301, reply
    assert reply["detail"] == DEPROVISIONED_DETAIL
    assert (await resume(running, key))["detail"].startswith("session key is invalid")
    assert [e.reason for e in audit(running, uid) if e.action == "deprovision"] == ["missing"]
    assert audit(running, uid)[0].detail["via"] == "resume"
    # One still in the directory resumes, and is checked for another interval.
    assert (await resume(running, kept_key))["status"] == 200


# -- the directory unreachable -------------------------------------------------------------

class Relay:
    """A TCP relay to slapd that the test can cut and restore (same port)."""

    def __init__(self, slapd: Any) -> None:
        self.factory = ProxyFactory("127.0.0.1", slapd.ldaps_port)
        self.port: Any = None
        self.number = 0

    async def open(self) -> None:
        endpoint = endpoints.TCP4ServerEndpoint(reactor, self.number, interface="127.0.0.1")
        self.port = await endpoint.listen(self.factory)
        self.number = self.port.getHost().port

    async def cut(self) -> None:
        await self.port.stopListening()

    @property
    def url(self) -> str:
        return f"ldaps://localhost:{self.number}"


@inline
async def test_an_unreachable_directory_signs_nobody_out_and_is_counted(
    start, people, slapd, warnings
):
    relay = Relay(slapd)
    await relay.open()
    uid, password = people.person()
    running = await start(url=relay.url)
    client, key = await sign_in(running, uid, password)
    await relay.cut()
    people.delete(uid)
    await sleep(2.5)
    assert (await client.request({"type": "HeartbeatRequest"}))["status"] == 200
    assert await deferToThread(checks, running, "unavailable") >= 1
    assert await deferToThread(checks, running, "failed") == 0
    assert any("nobody is signed out" in line and uid in line for line in warnings), warnings
    # A resume goes on too.
    assert (await resume(running, key))["status"] == 200
    assert await running.service.store.deprovisioning.deprovisioned() == {}
    # The directory is back: the next look catches up.
    await relay.open()
    assert await client.closed(timeout=5) == SIGNED_OUT
    assert await deferToThread(checks, running, "failed") >= 1


# -- the lookup itself --------------------------------------------------------------------

def directory(slapd: Any, **keys: str) -> Directory:
    overrides = {("auth", "methods"): "ldap"}
    overrides.update({("ldap", key): value for key, value in slapd.settings(**keys).items()})
    return Directory(load_config(None, overrides).ldap)


def test_account_status_by_name_and_by_stable_id(slapd, people):
    uid, _ = people.person()
    group = people.group(uid, "alice")  # groupOfNames needs a member left
    stable_id = people.entry_uuid(uid)
    search = directory(slapd, disabled_filter=LOCKED, required_group=group)
    direct = directory(slapd, base_dn="", user_dn_template=f"uid={{username}},{PEOPLE}",
                       disabled_filter=LOCKED, required_group=group)
    for client in (search, direct):
        for found_by in (None, stable_id):
            status = client.account_status(uid, found_by)
            assert (status.status, status.uid, status.dn) == (ACCOUNT_OK, uid, user_dn(uid))
    people.lock(uid)
    assert search.account_status(uid, stable_id).status == ACCOUNT_DISABLED
    people.lock(uid, False)
    people.leave(group, uid)
    assert direct.account_status(uid).status == ACCOUNT_NOT_IN_GROUP
    people.join(group, uid)
    people.rename(uid, f"{uid}r")
    # No referential integrity overlay here: the group follows by hand, as
    # Active Directory (and OpenLDAP's refint) would do by themselves.
    people.leave(group, uid)
    people.join(group, f"{uid}r")
    renamed = search.account_status(uid, stable_id)
    assert (renamed.status, renamed.uid) == (ACCOUNT_OK, f"{uid}r")
    assert direct.account_status(uid, stable_id).uid == f"{uid}r"
    assert search.account_status(uid).status == ACCOUNT_MISSING
    assert direct.account_status(uid).status == ACCOUNT_MISSING
    people.delete(f"{uid}r")
    assert search.account_status(uid, stable_id).status == ACCOUNT_MISSING


def test_a_lookup_that_cannot_see_people_is_never_missing(slapd):
    # A base that cannot be read (here: does not exist) says nothing of anybody.
    blind = directory(slapd, base_dn=f"ou=nobody,{SUFFIX}")
    with pytest.raises(DirectoryMisconfigured):
        blind.account_status("alice")
    with pytest.raises(DirectoryMisconfigured):
        blind.account_status("alice", "f9917fe8-8464-1041-91f1-5ff9a0db6470")
    template = directory(slapd, base_dn="",
                         user_dn_template=f"uid={{username}},ou=nobody,{SUFFIX}")
    with pytest.raises(DirectoryMisconfigured):
        template.account_status("alice")


# -- two clustered nodes -------------------------------------------------------------------

class DirectoryCluster(Cluster):
    """Cluster nodes that sign in against slapd and re-check every second."""

    def __init__(self, *args: Any, ldap: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ldap = ldap

    def config(self, name: str) -> Path:
        path = super().config(name)
        text = path.read_text().replace(
            "[auth]\n", "[auth]\nmethods = local,ldap\n"
        ).replace("[chat]\n", "[chat]\nrevocation_check_interval = 0.1\n")
        text += "[ldap]\n" + "".join(f"{key} = {value}\n" for key, value in self.ldap.items())
        path.write_text(text)
        return path


@inline
async def test_a_deprovisioned_account_is_signed_out_on_every_node(
    tmp_path, postgres, redis, slapd, people
):
    redis.command("FLUSHALL")
    uid, password = people.person()
    nodes = DirectoryCluster(tmp_path, postgres.new_database(), redis.url,
                             ldap=slapd.settings(recheck_interval="1"))
    try:
        nodes.start("n1")
        nodes.start("n2")
        on_n1 = await connect(nodes.url("n1"))
        nodes.clients.append(on_n1)
        key = (await on_n1.register(uid, password, auth=True))["session_key"]
        on_n2 = await connect(nodes.url("n2"))
        nodes.clients.append(on_n2)
        assert (await on_n2.request({"type": "ResumeRequest", "session_key": key}))[
            "status"] == 200
        people.delete(uid)
        assert await on_n1.closed(timeout=6) == SIGNED_OUT
        assert await on_n2.closed(timeout=2) == SIGNED_OUT
        # One node checked the account, once: one audit row.
        engine = make_engine(nodes.database_url)
        try:
            rows = [e for e in in_transaction(engine, entries_txn, 20, uid)
                    if e.action == "deprovision"]
        finally:
            engine.dispose()
        assert len(rows) == 1 and rows[0].reason == ACCOUNT_MISSING
        again = await connect(nodes.url("n2"))
        nodes.clients.append(again)
        reply = await again.request({"type": "ResumeRequest", "session_key": key})
        assert reply["status"] == 301
        await nodes.close()
    finally:
        nodes.stop()
    for name, node in nodes.nodes.items():
        assert "Traceback" not in node.output(), f"{name}:\n{node.output()}"


def test_ldap_check_reports_a_disabled_entry(slapd, people, tmp_path):
    from tests.test_ldap import run_admin

    uid, password = people.person()
    people.lock(uid)
    path = tmp_path / "chateau.ini"
    lines = ["[auth]", "methods = local,ldap", "[database]",
             f"url = sqlite:///{tmp_path / 'admin.sqlite3'}", "[ldap]"]
    lines += [f"{key} = {value}"
              for key, value in slapd.settings(disabled_filter=LOCKED).items()]
    path.write_text("\n".join(lines) + "\n")
    result = run_admin([sys.executable, "-m", "chateau.admin", "--config", str(path),
                        "ldap-check", uid], password, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert any(line.startswith("enabled") and "FAILED" in line and "disabled_filter" in line
               for line in result.stdout.splitlines()), result.stdout
    people.lock(uid, False)
    result = run_admin([sys.executable, "-m", "chateau.admin", "--config", str(path),
                        "ldap-check", uid], password, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert any(line.startswith("enabled") and "OK" in line
               for line in result.stdout.splitlines()), result.stdout
