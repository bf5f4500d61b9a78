"""Directory sign-in against a real OpenLDAP slapd (see tests/slapd.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import bcrypt
import pytest
import pytest_twisted
from twisted.internet import endpoints, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from chateau.auth.directory import Directory, DirectoryRefused, DirectoryUnavailable
from chateau.config import load_config
from chateau.errors import ConfigError
from chateau.names import USERNAME_RULE
from tests import slapd as openldap
from tests.deferreds import inline, sleep
from tests.processes import free_port
from tests.slapd import GROUP_OF_NAMES, GROUP_OF_UNIQUE_NAMES, PEOPLE, POSIX_GROUP
from tests.timing import collector_paused

# The session-scoped fixture: a real OpenLDAP slapd for this module.
slapd = openldap.slapd

ROOT = Path(__file__).resolve().parent.parent


# -- helpers -------------------------------------------------------------------

def directory_request(username: str, password: str) -> dict[str, Any]:
    return {"type": "RegisterRequest", "username": username, "password": password,
            "auth": True}


def local_request(username: str, password: str) -> dict[str, Any]:
    return {"type": "RegisterRequest", "username": username, "password": password,
            "auth": False}


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite, unless a test asks for both databases (the naming rule does).

    Directory behaviour does not depend on the database; running all of it
    twice would only double the time.
    """
    if getattr(request, "param", "sqlite") == "sqlite":
        return f"sqlite:///{tmp_path / 'chateau.sqlite3'}"
    return request.getfixturevalue("postgres").new_database()


both_databases = pytest.mark.parametrize(
    "database_url", ["sqlite", "postgresql"], indirect=True
)


@pytest.fixture
def start(slapd, server_factory, config_factory):
    """Start a server with directory sign-in; keyword arguments override [ldap]."""

    async def start(methods: str = "local,ldap", **ldap: str):
        # These tests fail sign-ins on purpose, many times from one address:
        # the guessing throttle (tested in test_limits) is set out of the way.
        config = config_factory(
            auth={"methods": methods}, ldap=slapd.settings(**ldap),
            limits={"signin_free_failures": "1000"},
        )
        return await server_factory(config)

    return start


@pytest.fixture
def log_events() -> Iterator[list[dict[str, Any]]]:
    """Every twisted.logger event emitted during the test."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)


def logged(events: list[dict[str, Any]]) -> str:
    return "\n".join(formatEvent(event) for event in events)


@pytest.fixture
def directory_calls(monkeypatch) -> list[str]:
    """Usernames that reached Directory.authenticate (the LDAP side)."""
    calls: list[str] = []
    original = Directory.authenticate

    def spy(self, username, password, *args, **kwargs):
        calls.append(username)
        return original(self, username, password, *args, **kwargs)

    monkeypatch.setattr(Directory, "authenticate", spy)
    return calls


async def add_local_user(running, username: str, password: str) -> None:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    assert await running.service.store.accounts.create_user(username, hashed, "local")


# -- signing in ----------------------------------------------------------------

@both_databases
@inline
async def test_ldaps_sign_in_returns_username_and_display_name(start):
    running = await start()
    client = await running.client()
    reply = await client.request({**directory_request("alice", "alice-pw"), "msg_id": 3})
    expected = {"type": "RegisterResponse", "status": 200, "username": "alice",
                "display_name": "Alice Liddell", "msg_id": 3}
    assert {key: reply.get(key) for key in expected} == expected, reply
    record = await running.service.store.accounts.get_user("alice")
    assert record.auth_method == "ldap" and record.password_hash is None
    assert record.display_name == "Alice Liddell"


@inline
async def test_starttls_sign_in(start, slapd):
    running = await start(url=slapd.ldap_url, start_tls="true")
    client = await running.client()
    reply = await client.request(directory_request("alice", "alice-pw"))
    assert reply["status"] == 200 and reply["username"] == "alice"


@both_databases
@inline
async def test_login_is_case_insensitive_and_uses_the_directory_uid(start):
    # The directory stores "Carol"; whatever the case typed, the name is "carol".
    running = await start()
    first = await running.client()
    reply = await first.request(directory_request("cAROL", "carol-pw"))
    assert reply["status"] == 200 and reply["username"] == "carol"
    assert reply["display_name"] == "Carol Danvers"
    again = await running.client()
    reply = await again.request(directory_request("CAROL", "carol-pw"))
    assert reply["status"] == 200 and reply["username"] == "carol"
    assert (await running.service.store.accounts.get_user("carol")).auth_method == "ldap"


@inline
async def test_direct_bind_with_a_dn_template(start):
    running = await start(base_dn="", bind_dn="", bind_password="",
                          user_dn_template=f"uid={{username}},{PEOPLE}")
    client = await running.client()
    reply = await client.request(directory_request("Carol", "carol-pw"))
    assert reply["status"] == 200 and reply["username"] == "carol"
    wrong = await running.client()
    reply = await wrong.request(directory_request("carol", "nope"))
    assert reply["status"] == 301 and "wrong username or password" in reply["detail"]


@inline
async def test_anonymous_search(start):
    running = await start(bind_dn="", bind_password="")
    client = await running.client()
    reply = await client.request(directory_request("alice", "alice-pw"))
    assert reply["status"] == 200 and reply["username"] == "alice"


@inline
async def test_wrong_password_and_unknown_user_look_the_same(start):
    running = await start()
    client = await running.client()
    for username, password in (("alice", "not-her-password"), ("nobody", "whatever")):
        reply = await client.request(directory_request(username, password))
        assert reply["type"] == "ErrorResponse" and reply["status"] == 301
        assert reply["detail"] == "authentication failed: wrong username or password"
    assert await running.service.store.accounts.get_user("nobody") is None


@inline
async def test_empty_password_never_reaches_the_directory(start, directory_calls):
    running = await start()
    client = await running.client()
    for password in ("", " ", "\t \n"):
        reply = await client.request(directory_request("alice", password))
        assert reply["status"] == 301 and "empty password" in reply["detail"]
    assert directory_calls == []


def test_directory_refuses_an_empty_password_without_connecting():
    # A closed port: had it tried to connect, this would be "unavailable".
    settings = load_config(None, {
        ("auth", "methods"): "ldap",
        ("ldap", "url"): f"ldaps://localhost:{free_port()}",
        ("ldap", "base_dn"): PEOPLE,
        ("ldap", "timeout"): "1",
    }).ldap
    directory = Directory(settings)
    for password in ("", "   "):
        with pytest.raises(DirectoryRefused, match="empty password"):
            directory.authenticate("alice", password)
    with pytest.raises(DirectoryRefused, match="a username is"):
        directory.authenticate("*", "pw")
    with pytest.raises(DirectoryUnavailable):
        directory.authenticate("alice", "pw")


INJECTIONS = [
    "*", "a*", "*alice", "(uid=*)", "x)(uid=*", "alice)(|(uid=*", "*)(objectClass=*",
    "\\", "a\\2a", "\\2a", "al\x00ice", "alice\x00", "uid=alice,ou=people",
    "alice,ou=people", "a=b", "alice+cn=x", "alice;", '"alice"', "<alice>",
]


@inline
async def test_injection_attempts_are_refused_before_the_directory(start, directory_calls):
    running = await start()
    client = await running.client()
    for name in INJECTIONS:
        reply = await client.request(directory_request(name, "alice-pw"))
        assert reply["status"] == 301, (name, reply)
        assert reply["detail"] == f"authentication failed: {USERNAME_RULE}", (name, reply)
        local = await client.request(local_request(name, "alice-pw"))
        assert local["status"] == 301, (name, local)
    assert directory_calls == []


@inline
async def test_a_search_must_match_exactly_one_entry(start, log_events):
    # A filter that matches everybody must not sign anybody in.
    running = await start(user_filter="(|(uid={username})(objectClass=posixAccount))")
    client = await running.client()
    reply = await client.request(directory_request("alice", "alice-pw"))
    assert reply["status"] == 301 and "misconfigured" in reply["detail"]
    assert "matches more than one entry" in logged(log_events)


# -- groups --------------------------------------------------------------------

@pytest.mark.parametrize(
    "group, allowed, denied",
    [
        (GROUP_OF_NAMES, ["alice", "carol"], ["dave", "grace"]),
        (GROUP_OF_UNIQUE_NAMES, ["alice"], ["grace"]),
        (POSIX_GROUP, ["alice", "grace"], ["dave", "carol"]),
    ],
    ids=["groupOfNames", "groupOfUniqueNames", "posixGroup"],
)
@inline
async def test_required_group(start, group, allowed, denied):
    running = await start(required_group=group)
    for name in allowed:
        client = await running.client()
        reply = await client.request(directory_request(name.upper(), f"{name}-pw"))
        assert reply["status"] == 200 and reply["username"] == name, (name, reply)
    for name in denied:
        client = await running.client()
        reply = await client.request(directory_request(name, f"{name}-pw"))
        assert reply["status"] == 301, (name, reply)
        assert "not in the required group" in reply["detail"]
        assert await running.service.store.accounts.get_user(name) is None


@inline
async def test_required_group_as_the_user_without_a_service_account(start):
    running = await start(bind_dn="", bind_password="", required_group=POSIX_GROUP)
    ok = await running.client()
    assert (await ok.request(directory_request("grace", "grace-pw")))["status"] == 200
    refused = await running.client()
    reply = await refused.request(directory_request("dave", "dave-pw"))
    assert reply["status"] == 301 and "required group" in reply["detail"]


# -- TLS -----------------------------------------------------------------------

@inline
async def test_untrusted_certificate_is_a_logged_tls_failure(start, slapd, log_events):
    running = await start(ca_file=str(slapd.other_ca_file))
    client = await running.client()
    reply = await client.request(directory_request("alice", "alice-pw"))
    assert reply["status"] == 301 and "TLS certificate" in reply["detail"]
    text = logged(log_events)
    assert "TLS failed" in text and "certificate verify failed" in text
    assert "ca_file" in text  # the hint for the administrator


@inline
async def test_untrusted_certificate_over_starttls(start, slapd, log_events):
    running = await start(url=slapd.ldap_url, start_tls="true",
                          ca_file=str(slapd.other_ca_file))
    client = await running.client()
    reply = await client.request(directory_request("alice", "alice-pw"))
    assert reply["status"] == 301 and "TLS certificate" in reply["detail"]
    assert "certificate verify failed" in logged(log_events)


@inline
async def test_wrong_host_name_is_a_logged_tls_failure(start, slapd, log_events):
    # 127.0.0.2 is not a name in the server certificate (localhost, 127.0.0.1).
    running = await start(url=slapd.wrong_host_url)
    client = await running.client()
    reply = await client.request(directory_request("alice", "alice-pw"))
    assert reply["status"] == 301 and "TLS certificate" in reply["detail"]
    text = logged(log_events)
    assert "TLS failed" in text and "mismatch" in text and "127.0.0.2" in text


# -- availability ----------------------------------------------------------------

@inline
async def test_directory_down(start, log_events):
    running = await start(url=f"ldaps://localhost:{free_port()}")
    client = await running.client()
    began = time.monotonic()
    reply = await client.request(directory_request("alice", "alice-pw"))
    assert time.monotonic() - began < 1.0
    assert reply["status"] == 301 and "could not be reached" in reply["detail"]
    assert "Connection refused" in logged(log_events)


@inline
async def test_failover_to_the_next_url(start, slapd):
    running = await start(url=f"ldaps://localhost:{free_port()} {slapd.ldaps_url}")
    client = await running.client()
    reply = await client.request(directory_request("alice", "alice-pw"))
    assert reply["status"] == 200 and reply["username"] == "alice"


class _Silent(Protocol):
    """Accepts the connection and never says a word."""

    def connectionMade(self) -> None:
        self.factory.connections.append(self.transport)


@pytest_twisted.async_yield_fixture
async def silent_server():
    """A TCP server that accepts and stays silent; ``.connections`` are its peers."""
    factory = Factory.forProtocol(_Silent)
    factory.connections = []
    port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    factory.url = f"ldaps://localhost:{port.getHost().port}"
    yield factory
    for transport in factory.connections:
        transport.abortConnection()
    await port.stopListening()


async def hang_ten(running) -> list:
    """Ten clients whose directory sign-ins are now under way."""
    waiting = []
    for number in range(10):
        client = await running.client()
        client.send(directory_request(f"user{number}", "pw"))
        waiting.append(client)
    return waiting


async def assert_all_gave_up(waiting: list, began: float, within: float) -> None:
    for client in waiting:
        reply = await client.recv(timeout=5)
        assert reply["status"] == 301, reply
        assert ("did not answer" in reply["detail"]
                or "could not be reached" in reply["detail"]), reply
    elapsed = time.monotonic() - began
    assert elapsed < within, elapsed


@inline
async def test_hanging_directory_fails_in_time_and_blocks_nobody(start, silent_server):
    # timeout = 1 and one URL: each sign-in gives up after 1 s (2 s at most).
    running = await start(url=silent_server.url, timeout="1", threads="10")
    await add_local_user(running, "watcher", "watch-pw")
    watcher = await running.client("watcher", "watch-pw")
    with collector_paused():
        waiting = await hang_ten(running)
        began = time.monotonic()

        # Meanwhile, everyone else is served at once.
        slowest = 0.0
        while time.monotonic() - began < 0.8:
            sent = time.monotonic()
            reply = await watcher.request({"type": "ClientListRequest"})
            slowest = max(slowest, time.monotonic() - sent)
            assert reply["type"] == "ClientListResponse"
            await sleep(0.05)
    assert len(silent_server.connections) == 10  # all ten are stuck in the handshake
    assert slowest < 0.05, f"a request waited {slowest * 1000:.0f} ms"
    await assert_all_gave_up(waiting, began, within=2.0)


@inline
async def test_sign_ins_queued_for_a_thread_give_up_at_the_deadline(start, silent_server):
    # Two threads for ten sign-ins: those still queued at the 2 s deadline are
    # answered then, and never start talking to the directory afterwards.
    running = await start(url=silent_server.url, timeout="1", threads="2")
    waiting = await hang_ten(running)
    began = time.monotonic()
    await assert_all_gave_up(waiting, began, within=2.8)
    await sleep(1.2)
    assert len(silent_server.connections) <= 6


# -- methods and names ---------------------------------------------------------

@inline
async def test_methods_ldap_refuses_local_sign_in(start):
    running = await start(methods="ldap")
    client = await running.client()
    reply = await client.request(local_request("zoe", "zoe-pw"))
    assert reply["status"] == 301 and "local sign-in (auth: false) is disabled" in reply["detail"]
    assert await running.service.store.accounts.get_user("zoe") is None
    reply = await client.request(directory_request("alice", "alice-pw"))
    assert reply["status"] == 200


@both_databases
@inline
async def test_a_local_account_keeps_its_name_from_the_directory(start, log_events):
    running = await start()
    await add_local_user(running, "erin", "local-pw")
    client = await running.client()
    reply = await client.request(directory_request("erin", "erin-pw"))
    assert reply["status"] == 301 and "belongs to a local account" in reply["detail"]
    warnings = [e for e in log_events if e.get("log_level") == LogLevel.warn]
    assert any("is a local account" in formatEvent(e) for e in warnings)
    record = await running.service.store.accounts.get_user("erin")
    assert record.auth_method == "local"
    # The local owner still signs in.
    owner = await running.client()
    assert (await owner.request(local_request("erin", "local-pw")))["status"] == 200


@both_databases
@inline
async def test_a_directory_name_confusable_with_a_local_one_is_refused_409(start, log_events):
    running = await start()
    await add_local_user(running, "\u0435rin", "local-pw")  # Cyrillic е, then "rin"
    client = await running.client()
    reply = await client.request(directory_request("erin", "erin-pw"))
    assert reply["status"] == 409, reply
    assert "looks like the existing name '\u0435rin'" in reply["detail"]
    warnings = [formatEvent(e) for e in log_events if e.get("log_level") == LogLevel.warn]
    assert any("looks like the existing name" in line for line in warnings), warnings
    assert await running.service.store.accounts.get_user("erin") is None


@inline
async def test_a_directory_user_banned_server_wide_is_refused_with_the_reason(start):
    running = await start()
    first = await running.client()
    assert (await first.request(directory_request("alice", "alice-pw")))["status"] == 200
    store = running.service.store
    assert await store.accounts.ban("cli:ops", "alice", 2**63 - 1, "spam") == 1
    again = await running.client()
    reply = await again.request(directory_request("alice", "alice-pw"))
    assert reply["status"] == 403 and reply["detail"] == "banned until unbanned: spam", reply
    assert await store.accounts.unban("cli:ops", "alice")
    assert (await again.request(directory_request("alice", "alice-pw")))["status"] == 200


@inline
async def test_directory_names_get_the_precis_canonical_form(start):
    running = await start()
    client = await running.client()
    reply = await client.request(directory_request("\uff21LICE", "alice-pw"))  # full-width Ａ
    assert reply["status"] == 200 and reply["username"] == "alice", reply


@both_databases
@inline
async def test_a_directory_account_is_never_a_local_one(start):
    running = await start()
    first = await running.client()
    assert (await first.request(directory_request("frank", "frank-pw")))["status"] == 200
    impostor = await running.client()
    reply = await impostor.request(local_request("frank", "frank-pw"))
    assert reply["status"] == 301 and "is a directory account" in reply["detail"]


@both_databases
@inline
async def test_new_local_names_are_checked_with_the_directory(start):
    running = await start()
    client = await running.client()
    # "dave" exists in the directory but has never signed in here.
    reply = await client.request(local_request("Dave", "mine-now"))
    assert reply["status"] == 301 and "is a directory account" in reply["detail"]
    assert await running.service.store.accounts.get_user("dave") is None
    reply = await client.request(local_request("zoe", "zoe-pw"))
    assert reply["status"] == 200 and reply["username"] == "zoe"


@inline
async def test_new_local_names_fail_closed_without_the_directory(start, log_events):
    running = await start(url=f"ldaps://localhost:{free_port()}")
    await add_local_user(running, "olive", "olive-pw")
    client = await running.client()
    reply = await client.request(local_request("zoe", "zoe-pw"))
    assert reply["status"] == 301 and "could not be asked" in reply["detail"]
    assert await running.service.store.accounts.get_user("zoe") is None
    assert "cannot ask the directory" in logged(log_events)
    # Existing local accounts do not depend on the directory.
    reply = await client.request(local_request("olive", "olive-pw"))
    assert reply["status"] == 200


@both_databases
@inline
async def test_group_names_are_not_given_to_directory_users(start):
    running = await start()
    await add_local_user(running, "owner", "owner-pw")
    await add_local_user(running, "other", "other-pw")
    assert await running.service.store.groups.create_group("grace", "owner", ["owner", "other"])
    client = await running.client()
    reply = await client.request(directory_request("grace", "grace-pw"))
    assert reply["status"] == 301 and "taken by a group" in reply["detail"]


def group_request(chatname: str, *recipients: str) -> dict[str, Any]:
    return {"type": "GroupMessageInitRequest", "chatname": chatname, "recipients": list(recipients)}


@both_databases
@inline
async def test_a_group_cannot_take_a_directory_users_name(start):
    """A directory user who never signed in keeps their name: 409, and they can still sign in."""
    running = await start()
    await add_local_user(running, "owner", "owner-pw")
    await add_local_user(running, "other", "other-pw")
    client = await running.client()
    assert (await client.request(local_request("owner", "owner-pw")))["status"] == 200
    # "dave" exists in the directory but has never signed in here.
    reply = await client.request(group_request("Dave", "other"))
    assert reply["type"] == "ErrorResponse" and reply["status"] == 409, reply
    assert "directory" in reply["detail"]
    assert running.service.registry.group("dave") is None
    reply = await client.request(group_request("dave-fans", "other"))
    assert reply["status"] == 200 and reply["chatname"] == "dave-fans"
    dave = await running.client()
    reply = await dave.request(directory_request("dave", "dave-pw"))
    assert reply["status"] == 200 and reply["username"] == "dave"
    # Once dave has an account, the local rule answers as before.
    reply = await client.request(group_request("dave", "other"))
    assert reply["type"] == "ErrorResponse" and reply["status"] in (301, 409), reply


@inline
async def test_group_creation_fails_closed_without_the_directory(start, log_events):
    running = await start(url=f"ldaps://localhost:{free_port()}")
    await add_local_user(running, "owner", "owner-pw")
    await add_local_user(running, "other", "other-pw")
    client = await running.client()
    assert (await client.request(local_request("owner", "owner-pw")))["status"] == 200
    reply = await client.request(group_request("zoe", "other"))
    assert reply["type"] == "ErrorResponse" and reply["status"] == 503, reply
    assert "directory" in reply["detail"]
    assert running.service.registry.group("zoe") is None
    assert "cannot ask the directory" in logged(log_events)
    # The connection goes on: what needs no directory still works.
    reply = await client.request({"type": "HeartbeatRequest", "payload": "x"})
    assert reply["type"] == "HeartbeatResponse"


# -- logs ----------------------------------------------------------------------

SECRETS = ["alice-pw", "Wr0ng-xyzzy-S3cret", "reader-secret", "zoe-local-S3cret"]


@inline
async def test_passwords_never_appear_in_the_log(start, slapd, log_events):
    running = await start()
    client = await running.client()
    await client.request(directory_request("alice", "Wr0ng-xyzzy-S3cret"))
    await client.request(directory_request("alice", "alice-pw"))
    other = await running.client()
    await other.request(local_request("dave", "zoe-local-S3cret"))
    untrusted = await start(ca_file=str(slapd.other_ca_file))
    tls = await untrusted.client()
    await tls.request(directory_request("alice", "alice-pw"))
    down = await start(url=f"ldaps://localhost:{free_port()}")
    gone = await down.client()
    await gone.request(directory_request("alice", "alice-pw"))
    await gone.request(local_request("zoe", "zoe-local-S3cret"))
    assert log_events
    text = logged(log_events) + "\n".join(repr(event) for event in log_events)
    for secret in SECRETS:
        assert secret not in text, secret


# -- configuration -----------------------------------------------------------------

@pytest.mark.parametrize(
    "ldap, named",
    [
        ({}, "[ldap] url"),
        ({"url": "http://localhost"}, "[ldap] url"),
        ({"url": "ldaps://localhost/dc=example"}, "[ldap] url"),
        ({"url": "ldaps://localhost"}, "[ldap] base_dn"),
        ({"url": "ldaps://localhost", "base_dn": "dc=x",
          "user_dn_template": "uid={username},dc=x"}, "[ldap] user_dn_template"),
        ({"url": "ldaps://localhost", "user_dn_template": "uid=x,dc=x"},
         "[ldap] user_dn_template"),
        ({"url": "ldaps://localhost", "base_dn": "dc=x", "ca_file": "/nonexistent/ca.pem"},
         "[ldap] ca_file"),
        ({"url": "ldap://localhost", "base_dn": "dc=x"}, "[ldap] start_tls"),
        ({"url": "ldaps://localhost", "base_dn": "dc=x", "bind_dn": "cn=r"},
         "[ldap] bind_password"),
        ({"url": "ldaps://localhost", "base_dn": "dc=x", "user_filter": "uid={username}"},
         "[ldap] user_filter"),
        ({"url": "ldaps://localhost", "base_dn": "dc=x", "user_filter": "(uid={username}"},
         "[ldap] user_filter"),
        ({"url": "ldaps://localhost", "base_dn": "dc=x", "user_filter": "(uid=alice)"},
         "[ldap] user_filter"),
        ({"url": "ldaps://localhost", "base_dn": "dc=x", "timeout": "0"}, "[ldap] timeout"),
        ({"url": "ldaps://localhost", "base_dn": "dc=x", "display_name_attribute": "a b"},
         "[ldap] display_name_attribute"),
    ],
)
def test_ldap_config_errors_name_the_key(ldap, named):
    overrides = {("auth", "methods"): "local,ldap"}
    overrides.update({("ldap", key): value for key, value in ldap.items()})
    with pytest.raises(ConfigError) as raised:
        load_config(None, overrides)
    assert str(raised.value).startswith(named), str(raised.value)


def test_ldap_section_is_ignored_when_ldap_is_off():
    config = load_config(None, {("ldap", "url"): "ldaps://localhost"})
    assert config.ldap.url == ("ldaps://localhost",) and config.auth.methods == ("local",)


def test_example_ldap_config_loads(tmp_path):
    text = (ROOT / "conf" / "ldap.example.ini").read_text()
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    path = tmp_path / "ldap.ini"
    path.write_text(text.replace("/etc/ssl/certs/campus-ca.pem", str(ca)))
    config = load_config(str(path))
    assert "ldap" in config.auth.methods
    assert config.ldap.url and config.ldap.base_dn and config.ldap.timeout == 5


# -- chateau-admin ldap-check --------------------------------------------------------

@pytest.fixture
def admin_config(tmp_path, slapd) -> Callable[..., Path]:
    def write(database: str | None = None, **ldap: str) -> Path:
        database = database or f"sqlite:///{tmp_path / 'admin.sqlite3'}"
        lines = ["[auth]", "methods = local,ldap", "[database]", f"url = {database}",
                 "[ldap]"]
        lines += [f"{key} = {value}" for key, value in slapd.settings(**ldap).items()]
        path = tmp_path / "chateau.ini"
        path.write_text("\n".join(lines) + "\n")
        return path

    return write


def run_admin(command: list[str], password: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHATEAU_PASSWORD": password, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=cwd,
                          env=env, stdin=subprocess.DEVNULL)


def test_ldap_check_reports_every_step(admin_config, tmp_path):
    path = admin_config(required_group=GROUP_OF_NAMES)
    result = run_admin([sys.executable, "-m", "chateau.admin", "--config", str(path),
                        "ldap-check", "CAROL"], "carol-pw", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for step in ("connect", "tls", "service-bind", "search", "bind", "group"):
        assert any(line.startswith(step) and "OK" in line for line in lines), (step, lines)
    assert "signs in as 'carol' (Carol Danvers)" in result.stdout
    assert "carol-pw" not in result.stdout + result.stderr


def test_ldap_check_wrong_password_and_tls_failure(admin_config, tmp_path, slapd):
    path = admin_config()
    # The default config file is chateau.ini in the working directory.
    wrong = run_admin([sys.executable, "-m", "chateau.admin", "ldap-check", "alice"],
                      "nope", tmp_path)
    assert wrong.returncode == 1
    assert any(line.startswith("bind") and "FAILED" in line and "invalidCredentials" in line
               for line in wrong.stdout.splitlines()), wrong.stdout
    path = admin_config(ca_file=str(slapd.other_ca_file))
    tls = run_admin([sys.executable, "-m", "chateau.admin", "ldap-check", "alice",
                     "--config", str(path)], "alice-pw", tmp_path)
    assert tls.returncode == 1
    lines = tls.stdout.splitlines()
    assert any(line.startswith("connect") and "OK" in line for line in lines), lines
    assert any(line.startswith("tls") and "FAILED" in line and "certificate verify failed"
               in line for line in lines), lines
    invalid = run_admin([sys.executable, "-m", "chateau.admin", "ldap-check", "a*"],
                        "alice-pw", tmp_path)
    assert invalid.returncode == 1 and "FAILED" in invalid.stdout


@inline
async def test_ldap_check_reports_a_name_clash(start, admin_config, tmp_path):
    running = await start()
    await add_local_user(running, "erin", "local-pw")
    path = admin_config(database=running.service.config.database.url)
    result = run_admin([sys.executable, "-m", "chateau.admin", "--config", str(path),
                        "ldap-check", "erin"], "erin-pw", tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert any(line.startswith("bind") and "OK" in line for line in result.stdout.splitlines())
    assert any(line.startswith("account") and "FAILED" in line and "local account" in line
               for line in result.stdout.splitlines()), result.stdout
    fine = run_admin([sys.executable, "-m", "chateau.admin", "--config", str(path),
                      "ldap-check", "alice"], "alice-pw", tmp_path)
    assert fine.returncode == 0 and "'alice' is free" in fine.stdout, fine.stdout
    await add_local_user(running, "fr\u0430nk", "local-pw")  # Cyrillic а
    alike = run_admin([sys.executable, "-m", "chateau.admin", "--config", str(path),
                       "ldap-check", "frank"], "frank-pw", tmp_path)
    assert alike.returncode == 1, alike.stdout + alike.stderr
    assert any(line.startswith("account") and "FAILED" in line
               and "looks like the existing name 'fr\u0430nk'" in line
               for line in alike.stdout.splitlines()), alike.stdout


def test_ldap_check_config_error_exits_2(tmp_path):
    (tmp_path / "bad.ini").write_text("[ldap]\nurl = http://nope\n")
    result = run_admin([sys.executable, "-m", "chateau.admin", "--config",
                        str(tmp_path / "bad.ini"), "ldap-check", "alice"], "pw", tmp_path)
    assert result.returncode == 2 and "[ldap] url" in result.stderr


def test_installed_chateau_admin_console_script(admin_config, tmp_path):
    script = shutil.which("chateau-admin")
    if script is None:
        pytest.fail("chateau-admin is not installed: run `pip install .` (scripts/test does)")
    path = admin_config()
    result = run_admin([script, "ldap-check", "--config", str(path), "alice"], "alice-pw",
                       tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "signs in as 'alice'" in result.stdout
