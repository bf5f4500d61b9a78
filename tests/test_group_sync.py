"""Directory groups become chat groups: the group sync against a real slapd.

Each test makes its own organizational unit in the shared slapd
(tests/slapd.py) and points ``[ldap] sync_base`` at it, so tests never see
each other's groups. The sync runs every half second here; members are
told over real sockets, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from twisted.internet import threads
from twisted.logger import formatEvent, globalLogPublisher

from chateau.auth.directory import Directory
from chateau.config import load_config
from chateau.store.records import now_millis
from tests import slapd as openldap
from tests.deferreds import inline, sleep
from tests.redis import RedisServer
from tests.slapd import SUFFIX, user_dn
from tests.test_cluster import Cluster
from tests.wsclient import Client, connect

slapd = openldap.slapd

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = "0.5"
REFUSAL = "the membership of {!r} follows the campus directory; change it there"


def new_unit(slapd: openldap.Slapd) -> str:
    """A fresh organizational unit for this test's groups."""
    name = f"sync-{uuid.uuid4().hex[:8]}"
    dn = f"ou={name},{SUFFIX}"
    slapd.add(dn, "organizationalUnit", ou=name)
    return dn


def add_group(slapd: openldap.Slapd, unit: str, cn: str, *uids: str) -> str:
    dn = f"cn={cn},{unit}"
    slapd.add(dn, "groupOfNames", cn=cn, member=[user_dn(uid) for uid in uids])
    return dn


@pytest.fixture
def log_events() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)


def logged(events: list[dict[str, Any]]) -> str:
    return "\n".join(formatEvent(event) for event in events)


@pytest.fixture
def start(slapd, server_factory, config_factory):
    """A server with directory sign-in syncing *unit*'s groups (keywords: more [ldap])."""

    async def start(unit: str = "", **ldap: str):
        settings = {"sync_base": unit, "sync_interval": INTERVAL, **ldap}
        config = config_factory(
            auth={"methods": "local,ldap"}, ldap=slapd.settings(**settings),
            limits={"signin_free_failures": "1000"},
        )
        return await server_factory(config)

    return start


PASSWORDS = {name.lower(): password for name, (password, _) in openldap.PEOPLE_ENTRIES.items()}


async def sign_in(running, username: str) -> Client:
    client = await running.client()
    reply = await client.request({"type": "RegisterRequest", "username": username,
                                  "password": PASSWORDS[username], "auth": True})
    assert reply["status"] == 200, reply
    client.username = reply["username"]
    return client


async def ask(client: Client, message: dict[str, Any]) -> dict[str, Any]:
    """The reply to *message*, passing over pushes that arrive before it."""
    msg_id = message.get("msg_id", "ask")
    client.send({**message, "msg_id": msg_id})
    while True:
        frame = await client.recv()
        if frame.get("msg_id") == msg_id:
            return frame


async def next_of(client: Client, type: str, timeout: float = 8.0, **fields: Any) -> dict:
    """The next frame of *type* with these *fields* (others passed over, and kept)."""
    passed = []
    try:
        while True:
            frame = await client.recv(timeout)
            if frame.get("type") == type and all(
                    frame.get(key) == value for key, value in fields.items()):
                return frame
            passed.append(frame)
    except Exception:
        raise AssertionError(f"no {type} {fields} in {passed}") from None


async def until_members(running, chatname: str, *names: str) -> None:
    """Wait until the group *chatname* has exactly *names* as members (a sync or two)."""
    for _ in range(160):
        group = running.service.registry.group(chatname)
        if group is not None and group.members == set(names):
            return
        await sleep(0.05)
    raise AssertionError(f"{chatname}: {group and group.members} != {names}")


async def audit_actions(running, chatname: str) -> list[tuple[str, str]]:
    entries = await running.service.store.audit.entries(100)
    return sorted((e.action, (e.detail or {}).get("user", "")) for e in entries
                  if e.target == chatname and e.actor == "directory")


# -- the sync in a running server ---------------------------------------------------

@inline
async def test_a_directory_group_becomes_a_chat_group_and_follows_the_directory(
    start, slapd,
):
    unit = new_unit(slapd)
    dn = add_group(slapd, unit, "Math101", "alice", "Carol", "dave")
    running = await start(unit, sync_prefix="course-")
    alice = await sign_in(running, "alice")
    carol = await sign_in(running, "carol")
    # Made at the next sync with those who have accounts; dave has none yet.
    await until_members(running, "course-math101", "alice", "carol")
    created = await next_of(alice, "GroupMessageInitResponse", status=201,
                            chatname="course-math101")
    assert created["creator"] == "directory", created
    await next_of(carol, "GroupMessageInitResponse", chatname="course-math101")
    info = await ask(alice, {"type": "GroupInfoRequest", "chatname": "course-math101"})
    assert info["directory"] is True and info["creator"] == "directory", info
    assert {m["username"]: m["role"] for m in info["members"]} == {
        "alice": "member", "carol": "member"}

    # dave signs in for the first time: he joins at the next sync.
    dave = await sign_in(running, "dave")
    await next_of(dave, "GroupMessageInitResponse", status=201, chatname="course-math101",
                  members=["alice", "carol", "dave"])
    await next_of(alice, "GroupEventRecv", event="added", user="dave", by="directory")

    # Added in the directory: a member within one interval.
    grace = await sign_in(running, "grace")
    slapd.add_members(dn, "member", user_dn("grace"))
    await next_of(grace, "GroupMessageInitResponse", status=201, chatname="course-math101")
    await next_of(alice, "GroupEventRecv", event="added", user="grace", by="directory")

    # Removed in the directory: told, and gone.
    slapd.remove_members(dn, "member", user_dn("Carol"))
    removed = await next_of(carol, "GroupRemovedRecv", chatname="course-math101")
    assert (removed["by"], removed["reason"], removed["banned"]) == ("directory", "", False)
    await next_of(alice, "GroupEventRecv", event="removed", user="carol", by="directory")
    refused = await ask(carol, {"type": "GroupMessageRequest", "recipient": "course-math101",
                                "content": "still here?"})
    assert refused["status"] == 403, refused

    # The chat works as in any group.
    sent = await ask(alice, {"type": "GroupMessageRequest", "recipient": "course-math101",
                             "content": "hello class"})
    assert sent["type"] == "MessageSendResponse", sent
    await next_of(dave, "GroupMessageRecv", content="hello class")

    actions = await audit_actions(running, "course-math101")
    assert ("group_sync_create", "") in actions
    assert ("group_sync_add", "dave") in actions and ("group_sync_add", "grace") in actions
    assert ("group_sync_remove", "carol") in actions


@inline
async def test_the_membership_of_a_synced_group_cannot_be_changed_by_hand(start, slapd):
    unit = new_unit(slapd)
    dn = add_group(slapd, unit, "physics", "alice", "dave")
    running = await start(unit)
    alice = await sign_in(running, "alice")
    dave = await sign_in(running, "dave")
    grace = await sign_in(running, "grace")
    await until_members(running, "physics", "alice", "dave")
    refusal = REFUSAL.format("physics")
    # A server admin, who acts as an owner everywhere, is refused too.
    assert await running.service.store.accounts.set_admin("alice", True)
    for client, request in (
        (alice, {"type": "GroupAddRequest", "chatname": "physics", "users": ["grace"]}),
        (alice, {"type": "GroupRemoveRequest", "chatname": "physics", "user": "dave"}),
        (alice, {"type": "GroupRemoveRequest", "chatname": "physics", "user": "dave",
                 "ban": True, "reason": "no"}),
        (alice, {"type": "GroupInviteRequest", "chatname": "physics"}),
        (dave, {"type": "GroupLeaveRequest", "chatname": "physics"}),
        (grace, {"type": "GroupJoinRequest", "chatname": "physics"}),
    ):
        reply = await ask(client, request)
        assert (reply["type"], reply["status"], reply["detail"]) == (
            "ErrorResponse", 403, refusal), (request, reply)
    info = await ask(dave, {"type": "GroupInfoRequest", "chatname": "physics"})
    assert sorted(m["username"] for m in info["members"]) == ["alice", "dave"]
    # Roles and mutes still work, for server admins (who act as owners).
    role = await ask(alice, {"type": "GroupRoleRequest", "chatname": "physics",
                             "user": "dave", "role": "admin"})
    assert role["status"] == 200, role
    muted = await ask(alice, {"type": "GroupMuteRequest", "chatname": "physics",
                              "user": "dave", "minutes": 5})
    assert muted["status"] == 200, muted
    # Renamed, it is still the directory group's (found by its DN), and stays one group.
    renamed = await ask(alice, {"type": "GroupUpdateRequest", "chatname": "physics",
                                "name": "physics-2026"})
    assert renamed["status"] == 200, renamed
    slapd.add_members(dn, "member", user_dn("grace"))
    await next_of(grace, "GroupMessageInitResponse", status=201, chatname="physics-2026")
    info = await ask(grace, {"type": "GroupInfoRequest", "chatname": "physics-2026"})
    assert info["directory"] is True, info
    assert running.service.registry.group("physics") is None
    # An ordinary group says directory: false.
    made = await ask(alice, {"type": "GroupMessageInitRequest", "chatname": "club",
                             "recipients": ["dave"]})
    assert made["status"] == 200, made
    info = await ask(alice, {"type": "GroupInfoRequest", "chatname": "club"})
    assert info["directory"] is False


@inline
async def test_a_member_offline_is_told_at_the_next_sign_in(start, slapd):
    unit = new_unit(slapd)
    dn = add_group(slapd, unit, "chem", "alice", "dave")
    running = await start(unit)
    alice = await sign_in(running, "alice")
    dave = await sign_in(running, "dave")
    await next_of(dave, "GroupMessageInitResponse", chatname="chem")
    await until_members(running, "chem", "alice", "dave")
    grace = await sign_in(running, "grace")
    await grace.close()
    await dave.close()
    slapd.add_members(dn, "member", user_dn("grace"))
    slapd.remove_members(dn, "member", user_dn("dave"))
    await next_of(alice, "GroupEventRecv", event="removed", user="dave")
    await next_of(alice, "GroupEventRecv", event="added", user="grace")
    grace = await sign_in(running, "grace")
    await next_of(grace, "GroupMessageInitResponse", status=201, chatname="chem",
                  members=["alice", "grace"])
    dave = await sign_in(running, "dave")
    await next_of(dave, "GroupRemovedRecv", chatname="chem", by="directory", banned=False)


@inline
async def test_a_colliding_name_is_skipped_and_logged(start, slapd, log_events):
    unit = new_unit(slapd)
    add_group(slapd, unit, "frank", "alice")  # a user's name
    add_group(slapd, unit, "club", "alice", "dave")  # a group people made
    add_group(slapd, unit, "art", "alice")
    running = await start(unit, sync_interval="3600")
    frank = await sign_in(running, "frank")
    alice = await sign_in(running, "alice")
    await sign_in(running, "dave")
    made = await ask(frank, {"type": "GroupMessageInitRequest", "chatname": "club",
                             "recipients": ["dave"]})
    assert made["status"] == 200, made
    await running.service.group_sync.run()
    await next_of(alice, "GroupMessageInitResponse", chatname="art")
    text = logged(log_events)
    assert "skipped frank" in text and "a user has this name" in text, text
    assert "skipped club" in text and "not synced from the directory" in text, text
    info = await ask(frank, {"type": "GroupInfoRequest", "chatname": "club"})
    assert info["directory"] is False
    assert sorted(m["username"] for m in info["members"]) == ["dave", "frank"]
    assert running.service.registry.group("frank") is None


@inline
async def test_member_uid_groups(start, slapd):
    unit = new_unit(slapd)
    dn = f"cn=lab,{unit}"
    slapd.add(dn, "posixGroup", cn="lab", gidNumber="4000", memberUid=["alice", "ghost"])
    running = await start(unit, sync_filter="(objectClass=posixGroup)",
                          sync_member_attribute="memberUid")
    alice = await sign_in(running, "alice")
    await next_of(alice, "GroupMessageInitResponse", chatname="lab", members=["alice"])
    dave = await sign_in(running, "dave")
    slapd.add_members(dn, "memberUid", "dave")
    await next_of(dave, "GroupMessageInitResponse", chatname="lab", members=["alice", "dave"])
    slapd.remove_members(dn, "memberUid", "alice")
    await next_of(alice, "GroupRemovedRecv", chatname="lab", by="directory")


@inline
async def test_one_node_at_a_time_claims_the_sync(start, slapd):
    """The turn is claimed in the database: once per interval, whoever asks."""
    running = await start(new_unit(slapd), sync_interval="3600")
    store = running.service.store
    assert not await store.group_sync.claim_run("other", 3_000_000)  # the start's run
    assert await store.group_sync.claim_run("other", 0)
    assert not await store.group_sync.claim_run("again", 60_000)


def test_directory_reads_groups_paged_and_resolves_member_dns(slapd, monkeypatch):
    monkeypatch.setattr("chateau.auth.directory._GROUP_PAGE", 2)  # two pages of groups
    unit = new_unit(slapd)
    outside = f"uid=alice,{unit}"  # a DN outside the people's base
    slapd.add(f"cn=big,{unit}", "groupOfNames", cn="big", member=[
        user_dn("alice"), user_dn("Carol"), f"uid=nobody,{openldap.PEOPLE}", outside,
        f"cn=reader,{SUFFIX}"])
    for number in range(3):
        add_group(slapd, unit, f"g{number}", "dave")
    overrides = {("auth", "methods"): "ldap"}
    overrides.update({("ldap", key): value
                      for key, value in slapd.settings(sync_base=unit).items()})
    found = Directory(load_config(None, overrides).ldap).groups()
    groups = {group.name: group for group in found}
    assert sorted(groups) == ["big", "g0", "g1", "g2"]
    assert groups["big"].members == ("alice", "Carol", "nobody")
    assert groups["big"].unresolved == 2
    assert groups["g1"].members == ("dave",)


# -- chateau-admin ldap-sync ----------------------------------------------------------

def write_config(tmp_path: Path, slapd, database: str, **ldap: str) -> Path:
    lines = ["[auth]", "methods = local,ldap", "[database]", f"url = {database}", "[ldap]"]
    lines += [f"{key} = {value}" for key, value in slapd.settings(**ldap).items()]
    path = tmp_path / "sync.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def ldap_sync(path: Path, *extra: str):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return threads.deferToThread(
        subprocess.run, [sys.executable, "-m", "chateau.admin", "--config", str(path),
                         "ldap-sync", *extra],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )


@inline
async def test_ldap_sync_dry_run_prints_and_changes_nothing_then_applies(
    start, slapd, tmp_path,
):
    unit = new_unit(slapd)
    dn = add_group(slapd, unit, "Bio", "alice", "dave", "grace")
    add_group(slapd, unit, "frank", "alice")
    # The server itself does not sync (sync_base empty): the command does.
    running = await start("")
    alice = await sign_in(running, "alice")
    await sign_in(running, "frank")
    dave = await sign_in(running, "dave")
    await dave.close()
    path = write_config(tmp_path, slapd, running.service.config.database.url,
                        sync_base=unit, sync_prefix="course-")
    result = await ldap_sync(path, "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "+ group course-bio" in lines
    assert "+ course-bio alice" in lines and "+ course-bio dave" in lines
    assert "+ course-bio grace" not in lines  # no account yet
    assert "! skipped course-frank: a user has this name" not in lines  # prefixed: free
    assert "(dry run: nothing changed)" in lines[-1]
    store = running.service.store
    assert await store.groups.group_info("course-bio") is None
    await alice.nothing(0.6)

    result = await ldap_sync(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "+ group course-bio" in result.stdout.splitlines()
    # The running server learns of it through the notice: alice is told now,
    # dave (offline) at his next sign-in.
    await next_of(alice, "GroupMessageInitResponse", status=201, chatname="course-bio",
                  creator="directory", members=["alice", "dave"])
    info = await store.groups.group_info("course-bio")
    assert info.directory_dn == dn
    dave = await sign_in(running, "dave")
    await next_of(dave, "GroupMessageInitResponse", status=201, chatname="course-bio")

    slapd.remove_members(dn, "member", user_dn("dave"))
    result = await ldap_sync(path, "--dry-run")
    assert "- course-bio dave" in result.stdout.splitlines(), result.stdout
    result = await ldap_sync(path)
    assert "- course-bio dave" in result.stdout.splitlines(), result.stdout
    await next_of(dave, "GroupRemovedRecv", chatname="course-bio", by="directory")
    await next_of(alice, "GroupEventRecv", event="removed", user="dave", by="directory")
    # Told once: not again at the next sign-in.
    await dave.close()
    dave = await sign_in(running, "dave")
    frames = await dave.frames_until_heartbeat()
    assert not [f for f in frames if f.get("type") == "GroupRemovedRecv"], frames


@inline
async def test_ldap_sync_lists_collisions(start, slapd, tmp_path):
    unit = new_unit(slapd)
    add_group(slapd, unit, "frank", "alice")
    running = await start("")
    await sign_in(running, "frank")
    await sign_in(running, "alice")
    path = write_config(tmp_path, slapd, running.service.config.database.url, sync_base=unit)
    result = await ldap_sync(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "! skipped frank: a user has this name" in result.stdout.splitlines(), result.stdout
    assert await running.service.store.groups.group_info("frank") is None


def test_ldap_sync_without_sync_base_is_a_usage_error(slapd, tmp_path):
    path = write_config(tmp_path, slapd, f"sqlite:///{tmp_path / 'x.sqlite3'}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "chateau.admin", "--config", str(path), "ldap-sync"],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "sync_base" in result.stderr


# -- two clustered nodes ------------------------------------------------------------

class DirectoryCluster(Cluster):
    """Cluster nodes with directory sign-in and the group sync on."""

    def __init__(self, root: Path, database_url: str, redis_url: str,
                 ldap: dict[str, str]) -> None:
        super().__init__(root, database_url, redis_url)
        self.ldap = ldap

    def config(self, name: str) -> Path:
        path = super().config(name)
        text = path.read_text().replace(
            "[auth]\n", "[auth]\nmethods = local,ldap\n", 1)
        text += "\n[ldap]\n" + "".join(f"{key} = {value}\n" for key, value in self.ldap.items())
        path.write_text(text)
        return path

    async def sign_in(self, node: str, username: str) -> Client:
        client = await connect(self.url(node))
        self.clients.append(client)
        reply = await client.request({"type": "RegisterRequest", "username": username,
                                      "password": PASSWORDS[username], "auth": True})
        assert reply["status"] == 200, reply
        return client


@pytest.fixture
def synced_pair(tmp_path: Path, postgres: Any, redis: RedisServer, slapd) -> Iterator[Any]:
    redis.command("FLUSHALL")
    unit = new_unit(slapd)
    nodes = DirectoryCluster(tmp_path, postgres.new_database(), redis.url,
                             slapd.settings(sync_base=unit, sync_interval=INTERVAL))
    nodes.unit = unit  # type: ignore[attr-defined]
    try:
        nodes.start("n1")
        nodes.start("n2")
        yield nodes
    finally:
        nodes.stop()
        for name, node in nodes.nodes.items():
            assert "Traceback" not in node.output(), f"{name}:\n{node.output()}"


@inline
async def test_a_sync_reaches_members_on_every_node(synced_pair, slapd):
    dn = add_group(slapd, synced_pair.unit, "astro", "alice", "dave")
    alice = await synced_pair.sign_in("n1", "alice")
    dave = await synced_pair.sign_in("n2", "dave")
    await next_of(alice, "GroupMessageInitResponse", status=201, chatname="astro")
    await next_of(dave, "GroupMessageInitResponse", status=201, chatname="astro")

    grace = await synced_pair.sign_in("n2", "grace")
    slapd.add_members(dn, "member", user_dn("grace"))
    await next_of(grace, "GroupMessageInitResponse", status=201, chatname="astro")
    await next_of(alice, "GroupEventRecv", event="added", user="grace", by="directory")
    sent = await ask(alice, {"type": "GroupMessageRequest", "recipient": "astro",
                             "content": "across nodes"})
    assert sent["type"] == "MessageSendResponse", sent
    await next_of(grace, "GroupMessageRecv", content="across nodes")

    slapd.remove_members(dn, "member", user_dn("dave"))
    await next_of(dave, "GroupRemovedRecv", chatname="astro", by="directory")
    await next_of(alice, "GroupEventRecv", event="removed", user="dave", by="directory")
    refused = await ask(dave, {"type": "GroupMessageRequest", "recipient": "astro",
                               "content": "gone?"})
    assert refused["status"] == 403, refused
    left = await ask(grace, {"type": "GroupLeaveRequest", "chatname": "astro"})
    assert left["status"] == 403 and "campus directory" in left["detail"], left
    await synced_pair.close()


def test_plan_names_groups_and_skips_what_cannot_be_a_chat_group():
    from chateau.auth.directory import DirectoryGroup
    from chateau.group_sync import plan

    planned = plan([
        DirectoryGroup("cn=B,ou=x", "Math101", ("Alice", "alice", "bad name", "Carol")),
        DirectoryGroup("cn=A,ou=y", "MATH101", ("dave",)),
        DirectoryGroup("cn=C,ou=x", "@nope", ()),
    ], "course-")
    assert [(g.dn, g.chatname, g.members) for g in planned.groups] == [
        ("cn=A,ou=y", "course-math101", ("dave",))]
    reasons = dict(planned.skipped)
    assert reasons["course-math101"] == "cn=B,ou=x has the same name as cn=A,ou=y"
    assert reasons["course-@nope"].startswith("not a valid group name (cn=C,ou=x)")
    assert planned.present == frozenset({"cn=A,ou=y", "cn=B,ou=x", "cn=C,ou=x"})
