"""Names: PRECIS canonical forms (RFC 8265), and no name that looks like another.

Unit tests of chateau.names, then the rules over the real server (SQLite and
PostgreSQL), the race on the store, and the migration that gives existing
names their skeletons on a database that already holds a confusable pair.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import unicodedata
from pathlib import Path

import bcrypt
from alembic import command
from sqlalchemy import select, text
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from chateau import names
from chateau.store import migrate
from chateau.store.accounts import create_user_txn
from chateau.store.engine import in_transaction, make_engine
from chateau.store.tables import SKELETON_LENGTH, name_collisions
from chateau.store.tables import names as names_table
from tests.conftest import start_server
from tests.deferreds import inline
from tests.processes import checkout_env

CYRILLIC_ALICE = "\u0430lice"  # а (U+0430) then "lice"


# -- canonical forms -------------------------------------------------------------

def test_precis_maps_width_and_case_and_refuses_what_the_profile_disallows():
    assert names.check_username("\uff21lice") == "alice"  # full-width Ａ
    assert names.check_username("\uff21\uff2c\uff29\uff23\uff25") == "alice"
    assert names.check_username("ALICE") == "alice"
    assert names.check_username("Stra\u00dfe") == "strasse"  # case folding, as always
    assert names.check_username("e\u0301mile") == "\u00e9mile"  # NFC
    assert names.check_new_username("a b") is None  # no spaces in a username
    assert names.check_new_username("ali*ce") is None  # the server's own character rule
    assert names.check_new_username("x" * 33) is None
    assert names.check_new_username("\u2178") is None  # ROMAN NUMERAL NINE: compatibility form
    assert names.check_new_chatname("Study  Group") is None
    assert names.check_new_chatname("\uff33tudy Group") == "study group"


def test_the_ascii_fast_path_is_what_the_profile_does():
    profile = names._profile()
    for code in range(0x80):
        for raw in (chr(code), f"Ab{chr(code)}9", chr(code) * 3):
            try:
                expected = profile.enforce(raw)
            except (UnicodeEncodeError, ValueError):
                expected = None
            assert names._precis(raw) == expected, raw


def test_names_of_the_older_nfkc_rule_are_still_found_but_never_taken():
    # "ǅ" (U+01C5) has a compatibility decomposition: PRECIS refuses it, the
    # older NFKC rule made it "dž", which a stored account may have.
    assert names.check_new_username("\u01c5emal") is None
    assert names.check_username("\u01c5emal") == "d\u017eemal"
    assert names.check_username("d\u017eemal") == "d\u017eemal"


def test_every_name_the_older_rule_accepted_keeps_its_canonical_form():
    """Where both rules accept a name they agree, so no stored name changes form
    (where they differ, e.g. "ǰ", the older rule left a combining mark the
    character rule refused)."""
    changed = []
    for char in map(chr, range(sys.maxunicode + 1)):
        if not (char.isalnum() or unicodedata.decomposition(char)
                or unicodedata.category(char).startswith("M")):
            continue  # can be part of no name under either rule
        raw = "a" + char
        new = names.check_new_username(raw)
        old = names.legacy_canonical(raw)
        if new is not None and new != old and names._fits(
            old, names.MAX_USERNAME_LENGTH, names._USERNAME
        ):
            changed.append(raw)
    assert changed == []


def test_skeletons_equal_for_look_alikes_only():
    skeleton = names.skeleton
    assert skeleton(CYRILLIC_ALICE) == skeleton("alice")
    assert skeleton("rnary") == skeleton("mary")
    assert skeleton("p\u0430yp\u0430l") == skeleton("paypal")
    assert skeleton("alice") != skeleton("alicia")
    assert skeleton("team one") != skeleton("team two")


def test_the_skeleton_of_the_longest_name_fits_its_column():
    """A skeleton is made character by character: the longest skeleton of any
    character a name may hold, times the longest name, must fit."""
    longest = max(
        len(names.skeleton(char))
        for char in map(chr, range(sys.maxunicode + 1))
        if (char.isalnum() or char in "._-") and names.check_new_username(char) == char
    )
    assert longest * names.MAX_CHATNAME_LENGTH <= SKELETON_LENGTH


# -- over the real server --------------------------------------------------------

@inline
async def test_a_full_width_registration_signs_in_as_the_canonical_name(server):
    first = await server.client()
    reply = await first.request(
        {"type": "RegisterRequest", "username": "\uff21lice", "password": "pw"})
    assert reply["status"] == 200 and reply["username"] == "alice", reply
    again = await server.client()
    reply = await again.request({"type": "RegisterRequest", "username": "alice", "password": "pw"})
    assert reply["status"] == 200 and reply["username"] == "alice", reply


@inline
async def test_a_username_confusable_with_a_user_or_a_group_is_refused_409(server):
    alice = await server.client("alice")
    await server.client("bob")
    await alice.request(
        {"type": "GroupMessageInitRequest", "recipients": ["bob"], "chatname": "team"})
    for name, existing in ((CYRILLIC_ALICE, "alice"), ("t\u0435am", "team")):
        client = await server.client()
        reply = await client.request({"type": "RegisterRequest", "username": name, "password": "pw"})
        assert reply["type"] == "ErrorResponse" and reply["status"] == 409, reply
        assert f"looks like the existing name {existing!r}" in reply["detail"]
        # The connection stays usable, and nothing was created.
        reply = await client.request({"type": "RegisterRequest", "username": "carol", "password": "pw"})
        assert reply["status"] == 200
    assert await server.service.store.accounts.get_user(CYRILLIC_ALICE) is None
    # alice still signs in.
    back = await server.client()
    assert (await back.request(
        {"type": "RegisterRequest", "username": "Alice", "password": "secret"}))["status"] == 200


@inline
async def test_a_group_confusable_with_a_user_or_a_group_is_refused_409(server):
    alice = await server.client("alice")
    await server.client("bob")
    for chatname, existing in ((CYRILLIC_ALICE, "alice"), ("b\u03bfb", "bob")):  # Greek ο
        reply = await alice.request(
            {"type": "GroupMessageInitRequest", "recipients": ["bob"], "chatname": chatname})
        assert reply["type"] == "ErrorResponse" and reply["status"] == 409, reply
        assert f"looks like the existing name {existing!r}" in reply["detail"]
    reply = await alice.request(
        {"type": "GroupMessageInitRequest", "recipients": ["bob"], "chatname": "study group"})
    assert reply["status"] == 200, reply
    reply = await alice.request(
        {"type": "GroupMessageInitRequest", "recipients": ["bob"], "chatname": "study gr\u043eup"})
    assert reply["status"] == 409 and "'study group'" in reply["detail"], reply
    reply = await alice.request(
        {"type": "GroupMessageInitRequest", "recipients": ["bob"], "chatname": "\uff34eam"})
    assert reply["status"] == 200 and reply["chatname"] == "team", reply


def test_two_confusable_names_racing_cannot_both_be_taken(database_url):
    engine = make_engine(database_url)
    try:
        in_transaction(engine, migrate.prepare)
        for round_ in range(5):
            racers = [f"r{round_}alice", f"r{round_}\u0430lice"]
            barrier = threading.Barrier(len(racers))
            results: dict[str, bool] = {}

            def take(name: str) -> None:
                barrier.wait()
                try:
                    results[name] = bool(
                        in_transaction(engine, create_user_txn, name, None, "local", None))
                except Exception:  # the loser of a PostgreSQL race may see the error itself
                    results[name] = False

            threads = [threading.Thread(target=take, args=(name,)) for name in racers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(results.values()) == [False, True], results
    finally:
        engine.dispose()


# -- the migration ---------------------------------------------------------------

def _populate_at_0003(database_url: str) -> None:
    """A database made before skeletons, holding names that look alike."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0003")
            for name, kind, created in (("alice", "user", 1), (CYRILLIC_ALICE, "user", 2),
                                        ("bob", "user", 3), ("rnary", "group", 4),
                                        ("mary", "user", 5)):
                connection.execute(text("INSERT INTO names (name, kind) VALUES (:n, :k)"),
                                   {"n": name, "k": kind})
                if kind == "user":
                    connection.execute(
                        text("INSERT INTO users (username, password_hash, auth_method, "
                             "disabled, created_at, delivered_until) "
                             "VALUES (:n, :h, 'local', false, :c, 0)"),
                        {"n": name, "h": hashed, "c": created})
                else:
                    connection.execute(
                        text("INSERT INTO groups (chatname, creator, created_at) "
                             "VALUES (:n, 'bob', :c)"), {"n": name, "c": created})
                    connection.execute(
                        text("INSERT INTO group_members (chatname, username, notified) "
                             "VALUES (:n, 'bob', true)"), {"n": name})
    finally:
        engine.dispose()


def test_the_migration_flags_existing_look_alikes_and_renames_nobody(database_url):
    _populate_at_0003(database_url)
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            migrate.upgrade(connection)
            assert migrate.current_revision(connection) == migrate.head_revision()
            shapes = {row.name: row.skeleton for row in connection.execute(
                select(names_table.c.name, names_table.c.skeleton))}
            flagged = [tuple(row) for row in connection.execute(
                select(name_collisions.c.name, name_collisions.c.confusable_with)
                .order_by(name_collisions.c.name))]
    finally:
        engine.dispose()
    # The older of each pair holds the skeleton; the younger keeps its name.
    assert shapes["alice"] == names.skeleton("alice") and shapes[CYRILLIC_ALICE] is None
    assert shapes["rnary"] == names.skeleton("mary") and shapes["mary"] is None
    assert shapes["bob"] == "bob"
    assert flagged == sorted([(CYRILLIC_ALICE, "alice"), ("mary", "rnary")])


@inline
async def test_after_the_migration_every_existing_name_signs_in(config_factory, database_url):
    _populate_at_0003(database_url)
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            migrate.upgrade(connection)
    finally:
        engine.dispose()
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        running = await start_server(config_factory())
    finally:
        globalLogPublisher.removeObserver(events.append)
    try:
        warnings = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
        assert any("chateau-admin names collisions" in line and "'mary' ~ 'rnary'" in line
                   for line in warnings), warnings
        for name in ("alice", CYRILLIC_ALICE, "mary", "bob"):
            client = await running.client()
            reply = await client.request({"type": "RegisterRequest", "username": name, "password": "pw"})
            assert reply["status"] == 200 and reply["username"] == name, reply
        # A third look-alike is refused: the older name still holds the skeleton.
        client = await running.client()
        reply = await client.request(
            {"type": "RegisterRequest", "username": "\u0430l\u0456ce", "password": "pw"})
        assert reply["status"] == 409 and "'alice'" in reply["detail"], reply
    finally:
        await running.close_clients()
        await running.service.stopService()


def test_chateau_admin_names_collisions_lists_the_flagged_names(tmp_path: Path, database_url):
    _populate_at_0003(database_url)
    config = tmp_path / "admin.ini"
    config.write_text(f"[database]\nurl = {database_url}\n")
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            migrate.upgrade(connection)
    finally:
        engine.dispose()
    listing = subprocess.run(
        [sys.executable, "-m", "chateau.admin", "--config", str(config), "names", "collisions"],
        capture_output=True, text=True, timeout=60, env=checkout_env(), stdin=subprocess.DEVNULL,
    )
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert any(line.startswith(CYRILLIC_ALICE) and "looks like 'alice' (user)" in line
               for line in lines), listing.stdout
    assert any(line.startswith("mary") and "user" in line and "'rnary' (group)" in line
               for line in lines), listing.stdout
    assert lines[-1] == "2 confusable name(s)"
