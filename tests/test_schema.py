"""The schema comes from the packaged Alembic migrations, and start-up guards it."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.engine import Connection

from chateau.store import migrate
from chateau.store.engine import make_engine
from chateau.store.messages import add_messages_txn
from chateau.store.search import INDEX_OBJECTS, search_txn
from chateau.store.tables import messages, metadata


def test_migrations_build_exactly_the_schema_the_code_uses(database_url):
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            migrate.prepare(connection)
            assert migrate.current_revision(connection) == migrate.head_revision()
            # The search index (migration 0020) is dialect-specific DDL that
            # SQLAlchemy's metadata cannot describe (an FTS5 table and its
            # shadow tables, a generated tsvector column and its GIN index):
            # exactly those names are left out; test_search_index_* check them.
            context = MigrationContext.configure(connection, opts={
                "include_object": lambda _obj, name, *_: name not in INDEX_OBJECTS,
            })
            differences = compare_metadata(context, metadata)
        assert differences == []
        with engine.begin() as connection:
            migrate.prepare(connection)  # idempotent on an up-to-date database
    finally:
        engine.dispose()


def test_an_older_schema_is_refused_with_the_upgrade_command(database_url):
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            migrate.prepare(connection)
            connection.execute(text("UPDATE alembic_version SET version_num = '0000'"))
        with engine.begin() as connection:
            with pytest.raises(migrate.SchemaOutOfDate) as info:
                migrate.prepare(connection)
        assert "chateau-admin db upgrade" in str(info.value)
    finally:
        engine.dispose()


def test_a_message_batch_gets_database_ids_in_batch_order_with_its_origin(database_url):
    """The writer's batch INSERT (the DB-API cursor on SQLite) numbers rows in order."""
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            migrate.prepare(connection)
        batch = [("@a:b", "a", f"m{n}", "b" if n % 2 else None) for n in range(25)]
        with engine.begin() as connection:
            first = add_messages_txn(connection, batch[:3], None)
        with engine.begin() as connection:
            stored = add_messages_txn(connection, batch, "node-1")
        ids = [message.id for message in stored]
        assert ids == sorted(ids) and len(set(ids)) == len(batch)
        assert ids[0] > first[-1].id
        with engine.connect() as connection:
            rows = connection.execute(
                select(messages.c.id, messages.c.content, messages.c.recipient,
                       messages.c.origin, messages.c.edited, messages.c.deleted)
                .where(messages.c.id.in_(ids)).order_by(messages.c.id)
            ).all()
        assert [(row.id, row.content, row.recipient) for row in rows] == [
            (message_id, content, recipient)
            for message_id, (_, _, content, recipient) in zip(ids, batch)
        ]
        assert {(row.origin, row.edited, row.deleted) for row in rows} == {("node-1", False, False)}
    finally:
        engine.dispose()


def test_sqlite_connections_use_wal_with_a_long_checkpoint_interval(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'pragmas.sqlite3'}")
    try:
        with engine.connect() as connection:
            def pragma(name: str) -> object:
                return connection.exec_driver_sql(f"PRAGMA {name}").scalar()

            assert pragma("journal_mode") == "wal"
            assert pragma("synchronous") == 1  # NORMAL
            assert pragma("wal_autocheckpoint") == 10000
            assert pragma("journal_size_limit") == 64 * 1024 * 1024
            assert pragma("foreign_keys") == 1
    finally:
        engine.dispose()


def test_upgrading_to_0003_records_the_direct_chats_of_stored_messages(database_url):
    """Offline delivery reads direct messages through direct_chats, so the
    upgrade that adds it must fill it in from the messages already there."""
    from alembic import command
    from sqlalchemy import inspect

    from chateau.store.messages import missed_in_ranges_txn
    from chateau.store.tables import direct_chats

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0002")
            connection.execute(
                text(
                    "INSERT INTO messages (chat, recipient, sender, content, created_at, "
                    "edited, deleted) VALUES "
                    "('@ann:ben', 'ben', 'ann', 'hi ben', 1, false, false), "
                    "('@ann:ben', 'ann', 'ben', 'hi ann', 2, false, false), "
                    "('@ben:cat', 'ben', 'cat', 'from cat', 3, false, false), "
                    "('team', NULL, 'ann', 'to the team', 4, false, false)"
                )
            )
        with engine.begin() as connection:
            migrate.upgrade(connection)
            assert migrate.current_revision(connection) == migrate.head_revision()
            recorded = sorted(tuple(row) for row in connection.execute(select(direct_chats)))
            indexes = {index["name"] for index in inspect(connection).get_indexes("messages")}
            missed, full = missed_in_ranges_txn(connection, "ben", [(None, 0, None)], 10)
            assert not full
        assert recorded == [
            ("ann", "@ann:ben"), ("ben", "@ann:ben"), ("ben", "@ben:cat"), ("cat", "@ben:cat"),
        ]
        assert "ix_messages_recipient_id" not in indexes
        assert [(m.sender, m.content) for m in missed] == [("ann", "hi ben"), ("cat", "from cat")]
    finally:
        engine.dispose()


def test_offline_delivery_reads_each_chat_through_its_index_on_sqlite(tmp_path):
    """A user back after a long absence costs their own chats, not every
    message since: the query seeks ix_messages_chat_id, alone and in a
    cluster (several origin ranges)."""
    from sqlalchemy.dialects import sqlite

    from chateau.store.messages import missed_in_ranges_txn

    engine = make_engine(f"sqlite:///{tmp_path / 'plan.sqlite3'}")
    plans = []

    class Explaining:
        def __init__(self, connection):
            self.connection = connection

        def execute(self, query):
            sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
            plans.append([row[3] for row in self.connection.execute(text("EXPLAIN QUERY PLAN " + sql))])
            return self.connection.execute(text("SELECT 1 WHERE 0"))

    try:
        with engine.begin() as connection:
            migrate.prepare(connection)
            batch = [(f"@u{n % 50}:v{n % 50}", f"v{n % 50}", "x", f"u{n % 50}") for n in range(2000)]
            add_messages_txn(connection, batch)
            for ranges in ([(None, 5, None)], [(None, 5, None), ("node-1", 3, 9)]):
                missed_in_ranges_txn(Explaining(connection), "u1", ranges, 100)
    finally:
        engine.dispose()
    for plan in plans:
        scans = [step for step in plan if "messages" in step and "direct_chats" not in step]
        # The page's ids through the index; then its rows by primary key.
        assert scans == [
            "SEARCH messages USING INTEGER PRIMARY KEY (rowid=?)",
            "SEARCH messages USING INDEX ix_messages_chat_id (chat=? AND id>?)",
        ], plan


def test_upgrading_to_0004_keeps_accounts_and_groups_and_adds_invites(database_url):
    """Existing users get revoked_at 0 (nothing to close); invites work at once."""
    from alembic import command

    from chateau.store.accounts import latest_revocation_txn, revoke_all_sessions_txn
    from chateau.store.invites import (
        consume_invite_txn,
        create_invite_txn,
        hash_invite,
    )
    from chateau.store.groups import creation_times_txn

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0003")
            connection.execute(text(
                "INSERT INTO names (name, kind) VALUES ('ann', 'user'), ('ben', 'user'), "
                "('club', 'group')"
            ))
            connection.execute(text(
                "INSERT INTO users (username, password_hash, auth_method, disabled, created_at, "
                "delivered_until) VALUES ('ann', 'x', 'local', false, 1, 0), "
                "('ben', 'x', 'local', false, 1, 0)"
            ))
            connection.execute(text(
                "INSERT INTO groups (chatname, creator, created_at) VALUES ('club', 'ann', 5)"
            ))
        with engine.begin() as connection:
            migrate.upgrade(connection)
            assert migrate.current_revision(connection) == migrate.head_revision()
            assert latest_revocation_txn(connection) == 0
            assert creation_times_txn(connection, "ann", 0) == [5]
            revoke_all_sessions_txn(connection, "ben")
            assert latest_revocation_txn(connection) > 0
            create_invite_txn(connection, hash_invite("abc"), 1, None)
            assert consume_invite_txn(connection, hash_invite("abc"))
            assert not consume_invite_txn(connection, hash_invite("abc"))
    finally:
        engine.dispose()


def test_upgrading_to_0006_makes_creators_owners_and_keeps_an_owner_everywhere(database_url):
    """The creator owns the group; where the creator left, the first member by name does."""
    from alembic import command

    from chateau.store.groups import group_info_txn
    from chateau.store.operators import (
        add_group_members_txn,
        remove_group_member_as_operator_txn,
    )

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0005")
            connection.execute(text(
                "INSERT INTO names (name, kind) VALUES ('ann', 'user'), ('ben', 'user'), "
                "('cat', 'user'), ('club', 'group'), ('left', 'group')"
            ))
            connection.execute(text(
                "INSERT INTO users (username, password_hash, auth_method, disabled, created_at, "
                "delivered_until) VALUES ('ann', 'x', 'local', false, 1, 0), "
                "('ben', 'x', 'local', false, 1, 0), ('cat', 'x', 'local', false, 1, 0)"
            ))
            connection.execute(text(
                "INSERT INTO groups (chatname, creator, created_at) VALUES ('club', 'ann', 5), "
                "('left', 'ann', 7)"
            ))
            connection.execute(text(
                "INSERT INTO group_members (chatname, username, notified) VALUES "
                "('club', 'ann', true), ('club', 'ben', true), ('left', 'cat', true), "
                "('left', 'ben', false)"
            ))
        with engine.begin() as connection:
            migrate.upgrade(connection)
            assert migrate.current_revision(connection) == migrate.head_revision()
            club = group_info_txn(connection, "club")
            left = group_info_txn(connection, "left")
        assert [(m.username, m.role, m.joined_at) for m in club.members] == [
            ("ann", "owner", 5), ("ben", "member", 5)]
        assert [(m.username, m.role) for m in left.members] == [("ben", "owner"), ("cat", "member")]
        assert (club.topic, club.join_rule, club.visibility, club.who_can_add,
                club.who_can_send) == ("", "invite", "private", "admins", "everyone")
    finally:
        engine.dispose()


def test_the_audit_log_keeps_every_action_newest_first(database_url):
    from chateau.store.engine import in_transaction
    from chateau.store.audit import entries_txn, record_txn

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            migrate.prepare(connection)
        first = in_transaction(engine, record_txn, "alice", "group_ban", "club", "spam",
                               {"user": "eve"})
        second = in_transaction(engine, record_txn, "root", "user_ban", "eve")
        assert second > first
        entries = in_transaction(engine, entries_txn, 10)
        assert [(e.actor, e.action, e.target, e.reason, e.detail) for e in entries] == [
            ("root", "user_ban", "eve", "", {}), ("alice", "group_ban", "club", "spam", {"user": "eve"})]
        assert [e.action for e in in_transaction(engine, entries_txn, 10, "club")] == ["group_ban"]
    finally:
        engine.dispose()


def test_upgrading_to_0008_keeps_groups_and_their_invite_codes_work(database_url):
    """A populated 0007 database gains group_invites; a code joins, and a ban still holds."""
    from alembic import command

    from chateau.store.membership import (
        create_invite_txn,
        hash_group_invite,
        join_by_code_txn,
        remove_txn,
    )

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0007")
            connection.execute(text(
                "INSERT INTO names (name, kind) VALUES ('ann', 'user'), ('ben', 'user'), "
                "('cat', 'user'), ('club', 'group')"
            ))
            connection.execute(text(
                "INSERT INTO users (username, password_hash, auth_method, disabled, created_at, "
                "delivered_until) VALUES ('ann', 'x', 'local', false, 1, 0), "
                "('ben', 'x', 'local', false, 1, 0), ('cat', 'x', 'local', false, 1, 0)"
            ))
            connection.execute(text(
                "INSERT INTO groups (chatname, creator, created_at) VALUES ('club', 'ann', 5)"
            ))
            connection.execute(text(
                "INSERT INTO group_members (chatname, username, notified, role, joined_at) "
                "VALUES ('club', 'ann', true, 'owner', 5)"
            ))
        with engine.begin() as connection:
            migrate.upgrade(connection)
            assert migrate.current_revision(connection) == migrate.head_revision()
            create_invite_txn(connection, hash_group_invite("abc"), "club", "ann", 2,
                              2 ** 62)
            assert remove_txn(connection, "club", "ann", "cat", True, "",
                              frozenset({"member"}))[0] == "banned"
        with engine.begin() as connection:
            joined = join_by_code_txn(connection, hash_group_invite("abc"), "ben", False,
                                      10, 10)
            assert joined.added == ("ben",) and joined.members == ("ann", "ben")
            refused = join_by_code_txn(connection, hash_group_invite("abc"), "cat", False,
                                       10, 10)
            assert (refused.refusal, refused.who) == ("banned", "cat")
            uses = connection.execute(text("SELECT uses FROM group_invites")).scalar()
            assert uses == 1  # the refused join took no use
    finally:
        engine.dispose()


def test_upgrading_to_0010_keeps_everything_and_starts_with_no_blocks_and_defaults(database_url):
    """Blocks, settings and random-chat avoidance start empty; the data already there stays,
    and the reports already made keep their reporters apart from whom they reported."""
    from alembic import command

    from chateau.safety import DEFAULT_SETTINGS
    from chateau.store.messages import history_txn
    from chateau.store.safety import (
        all_settings_txn, block_txn, change_settings_txn, safety_state_txn, settings_txn,
    )

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0009")
            connection.execute(text(
                "INSERT INTO names (name, kind) VALUES ('ann', 'user'), ('ben', 'user'), "
                "('cat', 'user'), ('club', 'group')"
            ))
            connection.execute(text(
                "INSERT INTO users (username, password_hash, auth_method, disabled, created_at, "
                "delivered_until) VALUES ('ann', 'x', 'local', false, 1, 0), "
                "('ben', 'x', 'local', false, 1, 0), ('cat', 'x', 'local', false, 1, 0)"
            ))
            connection.execute(text(
                "INSERT INTO messages (chat, recipient, sender, content, created_at, edited, "
                "deleted) VALUES ('club', NULL, 'ben', 'hello club', 2, false, false)"
            ))
            connection.execute(text(
                "INSERT INTO reports (reporter, reason, username, created_at) "
                "VALUES ('cat', 'spam', 'ben', 3)"
            ))
        with engine.begin() as connection:
            migrate.upgrade(connection)
            assert migrate.current_revision(connection) == migrate.head_revision()
            assert all_settings_txn(connection) == {}
            assert settings_txn(connection, "ann") == DEFAULT_SETTINGS
            assert safety_state_txn(connection, "ben").avoid == {"cat"}
            assert block_txn(connection, "ann", "ben").new
            change_settings_txn(connection, "ann", {"presence": "nobody"})
            records, _ = history_txn(connection, "club", None, 10, viewer="ann")
            assert [r.history_entry().get("hidden") for r in records] == [True]
            records, _ = history_txn(connection, "club", None, 10, viewer="cat")
            assert [r.content for r in records] == ["hello club"]
        with engine.begin() as connection:
            command.downgrade(migrate._alembic_config(connection), "0009")
        with engine.begin() as connection:
            migrate.upgrade(connection)
            assert all_settings_txn(connection) == {}
    finally:
        engine.dispose()


def test_upgrading_to_0011_leaves_nobody_banned_and_gives_old_announcements_to_nobody(
    database_url,
):
    """Accounts from before bans and announcements: not banned, and given no
    announcement made before them (their creation time decides)."""
    from alembic import command

    from chateau.store.accounts import get_user_txn, live_keys_txn
    from chateau.store.announcements import announce_txn, take_pending_txn
    from chateau.store.notices import latest_notice_txn, notices_since_txn

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0010")
            connection.execute(text(
                "INSERT INTO names (name, kind) VALUES ('ann', 'user'), ('ben', 'user')"
            ))
            connection.execute(text(
                "INSERT INTO users (username, password_hash, auth_method, disabled, created_at, "
                "delivered_until) VALUES ('ann', 'x', 'local', false, 1, 0), "
                "('ben', 'x', 'local', false, 99999999999999, 0)"
            ))
            connection.execute(text(
                "INSERT INTO sessions (key_hash, username, created_at, expires_at) "
                "VALUES ('k', 'ann', 1, 99999999999999)"
            ))
        with engine.begin() as connection:
            migrate.upgrade(connection)
            assert migrate.current_revision(connection) == migrate.head_revision()
            ann = get_user_txn(connection, "ann")
            assert (ann.banned_until, ann.ban_reason, ann.ban_refusal()) == (None, None, None)
            assert live_keys_txn(connection, ["k"]) == {"k"}
            assert latest_notice_txn(connection) == (0, 0)
            made = announce_txn(connection, "cli:ops", "hello")
            assert [n.kind for n in notices_since_txn(connection, 0)] == ["announcement"]
            assert [a.id for a in take_pending_txn(connection, "ann")] == [made.id]
            assert take_pending_txn(connection, "ann") == []
            # An account newer than the announcement never gets it.
            assert take_pending_txn(connection, "ben") == []
    finally:
        engine.dispose()


def test_upgrading_to_0013_keeps_the_moderation_log_as_the_audit_log(database_url):
    """A populated 0012 database keeps every moderation row, readable by user and time."""
    from alembic import command

    from chateau.store.audit import entries_txn, purge_txn, record_txn

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0012")
            connection.execute(text(
                "INSERT INTO moderation_log (at, actor, action, target, reason, detail) VALUES "
                "(10, 'root', 'user_ban', 'eve', 'spam', '{}'), "
                "(20, 'ann', 'group_ban', 'club', '', '{\"user\": \"eve\"}')"
            ))
        with engine.begin() as connection:
            migrate.upgrade(connection)
            assert migrate.current_revision(connection) == migrate.head_revision()
            record_txn(connection, "eve", "sign_in", "eve", "", {"method": "local"},
                       "192.0.2.7")
        with engine.begin() as connection:
            everything = entries_txn(connection, 10)
            assert [(e.actor, e.action, e.address) for e in everything][1:] == [
                ("ann", "group_ban", None), ("root", "user_ban", None)]
            assert everything[0].address == "192.0.2.7"
            assert [e.action for e in entries_txn(connection, 10, user="eve")] == [
                "sign_in", "user_ban"]
            assert [e.action for e in entries_txn(connection, 10, since=15)] == [
                "sign_in", "group_ban"]
            assert purge_txn(connection, 15, 1) == 1
            assert purge_txn(connection, 15, 1) == 0
            assert [e.action for e in entries_txn(connection, 10)] == ["sign_in", "group_ban"]
    finally:
        engine.dispose()


def test_upgrading_to_0016_keeps_groups_ordinary_and_lets_the_sync_take_turns(database_url):
    """A populated 0013 database: its groups stay ordinary; synced groups come beside them."""
    from alembic import command

    from chateau.store.group_sync import claim_run_txn, sync_group_txn, synced_groups_txn
    from chateau.store.groups import group_info_txn
    from chateau.store.operators import (
        add_group_members_txn,
        remove_group_member_as_operator_txn,
    )

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0013")
            connection.execute(text(
                "INSERT INTO names (name, kind, skeleton) VALUES ('ann', 'user', 'ann'), "
                "('bob', 'user', 'bob'), ('club', 'group', 'club')"
            ))
            connection.execute(text(
                "INSERT INTO users (username, password_hash, auth_method, created_at, "
                "disabled) VALUES ('ann', NULL, 'ldap', 1, false), ('bob', 'x', 'local', 1, "
                "false)"
            ))
            connection.execute(text(
                "INSERT INTO groups (chatname, creator, created_at) VALUES ('club', 'ann', 5)"
            ))
            connection.execute(text(
                "INSERT INTO group_members (chatname, username, role) VALUES "
                "('club', 'ann', 'owner'), ('club', 'bob', 'member')"
            ))
        with engine.begin() as connection:
            migrate.upgrade(connection)
            assert migrate.current_revision(connection) == migrate.head_revision()
            assert group_info_txn(connection, "club").directory_dn is None
            assert synced_groups_txn(connection) == {}
            assert claim_run_txn(connection, "n1", 1_000_000, 60_000)
            assert not claim_run_txn(connection, "n2", 1_000_001, 60_000)
            # A directory group of that name is a collision; another is made,
            # with the directory accounts only (bob is a local account).
            skipped = sync_group_txn(connection, "cn=club,ou=g", "club", ["ann"], frozenset(),
                                     set(), 100, 100)
            assert skipped.skipped == "a group not synced from the directory has this name"
            made = sync_group_txn(connection, "cn=lab,ou=g", "lab", ["ann", "bob"],
                                  frozenset(), set(), 100, 100)
            assert made.created and made.members == ("ann",)
            assert synced_groups_txn(connection) == {"cn=lab,ou=g": "lab"}
            # Nor does an operator change its members by hand.
            refused = add_group_members_txn(connection, "cli:ops", "lab", ["ann"], 100, 100)
            assert refused.refusal == "synced"
            assert remove_group_member_as_operator_txn(
                connection, "cli:ops", "lab", "ann", False, "") == ("synced", None, None)
    finally:
        engine.dispose()


def test_upgrading_to_0017_gives_every_existing_key_an_id_and_keeps_it_working(database_url):
    """Keys made before 0017 still resume, each with a public id of its own, last
    used when it was made; users start with no status text."""
    from alembic import command

    from chateau.store.devices import list_devices_txn, resume_with_key_txn, set_profile_txn
    from chateau.store.records import now_millis

    engine = make_engine(database_url)
    future = now_millis() + 86_400_000
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0013")
            connection.execute(text(
                "INSERT INTO names (name, kind) VALUES ('ann', 'user'), ('ben', 'user')"
            ))
            connection.execute(text(
                "INSERT INTO users (username, password_hash, auth_method, disabled, created_at, "
                "delivered_until, display_name) VALUES ('ann', 'x', 'local', false, 1, 0, 'Ann'), "
                "('ben', 'x', 'ldap', false, 1, 0, NULL)"
            ))
            connection.execute(text(
                "INSERT INTO sessions (key_hash, username, created_at, expires_at) VALUES "
                f"('h1', 'ann', 100, {future}), ('h2', 'ann', 200, {future}), "
                f"('h3', 'ben', 300, {future})"
            ))
        with engine.begin() as connection:
            migrate.upgrade(connection)
            assert migrate.current_revision(connection) == migrate.head_revision()
            rows = list(connection.execute(text(
                "SELECT key_hash, id, last_used_at, address, client_name FROM sessions "
                "ORDER BY key_hash")))
            assert [(r.key_hash, r.last_used_at, r.address, r.client_name) for r in rows] == [
                ("h1", 100, None, None), ("h2", 200, None, None), ("h3", 300, None, None)]
            ids = [r.id for r in rows]
            assert len(set(ids)) == 3 and all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
            assert [d.id for d in list_devices_txn(connection, "ann", "h1")] == [ids[1], ids[0]]
            use = resume_with_key_txn(connection, "h1", "192.0.2.1", "old app")
            assert use.user.username == "ann" and use.session_id == ids[0]
            profile = set_profile_txn(connection, "ann", "Ann", "hi", None)
            assert (profile.display_name, profile.status_text) == ("Ann", "hi")
            # The public id is unique.
            with pytest.raises(Exception):
                with connection.begin_nested():
                    connection.execute(text(
                        "INSERT INTO sessions (key_hash, username, created_at, expires_at, id) "
                        f"VALUES ('h4', 'ben', 1, {future}, '{ids[2]}')"))
    finally:
        engine.dispose()


def test_upgrading_to_0019_starts_every_conversation_read_up_to_what_was_delivered(database_url):
    """Existing users' conversations start read up to their delivered_until, and their
    keys' sync positions there; existing messages mention nobody and change nothing."""
    from alembic import command

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0018")
            connection.execute(text(
                "INSERT INTO names (name, kind) VALUES ('ann', 'user'), ('ben', 'user'), "
                "('club', 'group')"))
            connection.execute(text(
                "INSERT INTO users (username, password_hash, auth_method, disabled, created_at, "
                "delivered_until) VALUES ('ann', 'x', 'local', false, 1, 3), "
                "('ben', 'x', 'local', false, 1, 1)"))
            connection.execute(text(
                "INSERT INTO groups (chatname, creator, created_at) VALUES ('club', 'ann', 1)"))
            connection.execute(text(
                "INSERT INTO group_members (chatname, username) VALUES ('club', 'ann'), "
                "('club', 'ben')"))
            connection.execute(text(
                "INSERT INTO messages (chat, recipient, sender, content, created_at, edited, "
                "deleted) VALUES ('club', NULL, 'ann', 'hi', 10, false, false), "
                "('@ann:ben', 'ben', 'ann', 'yo', 20, false, false), "
                "('club', NULL, 'ben', 'hey', 30, false, false)"))
            connection.execute(text(
                "INSERT INTO direct_chats (username, chat) VALUES ('ann', '@ann:ben'), "
                "('ben', '@ann:ben')"))
            connection.execute(text(
                "INSERT INTO sessions (key_hash, username, created_at, expires_at, id) VALUES "
                "('h1', 'ann', 1, 99999999999999, '0000000000000001'), "
                "('h2', 'ben', 1, 99999999999999, '0000000000000002')"))
        with engine.begin() as connection:
            migrate.upgrade(connection)
            assert migrate.current_revision(connection) == migrate.head_revision()
            markers = sorted(tuple(r) for r in connection.execute(text(
                "SELECT username, chat, last_read_id, updated_at FROM read_markers")))
            assert markers == [("ann", "@ann:ben", 3, 30), ("ann", "club", 3, 30),
                               ("ben", "@ann:ben", 1, 30), ("ben", "club", 1, 30)]
            positions = sorted(tuple(r) for r in connection.execute(text(
                "SELECT key_hash, sync_position FROM sessions")))
            assert positions == [("h1", 3), ("h2", 1)]
            rows = list(connection.execute(text("SELECT mentions, changes FROM messages")))
            assert rows and all(r.mentions is None and r.changes is None for r in rows)
    finally:
        engine.dispose()


def add_ann_and_ben_in_club(connection: Connection) -> None:
    """Two local users, ann and ben, both in group club: what the upgrade tests populate."""
    connection.execute(text(
        "INSERT INTO names (name, kind) VALUES ('ann', 'user'), ('ben', 'user'), "
        "('club', 'group')"))
    connection.execute(text(
        "INSERT INTO users (username, password_hash, auth_method, disabled, created_at) "
        "VALUES ('ann', 'x', 'local', false, 1), ('ben', 'x', 'local', false, 1)"))
    connection.execute(text(
        "INSERT INTO groups (chatname, creator, created_at) VALUES ('club', 'ann', 1)"))
    connection.execute(text(
        "INSERT INTO group_members (chatname, username) VALUES ('club', 'ann'), "
        "('club', 'ben')"))


def test_upgrading_to_0020_makes_existing_messages_searchable(database_url):
    """Messages written before the search index existed are found; events and deleted ones not."""
    from alembic import command

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0019")
            add_ann_and_ben_in_club(connection)
            connection.execute(text(
                "INSERT INTO messages (chat, recipient, sender, content, created_at, edited, "
                "deleted, event) VALUES "
                "('club', NULL, 'ann', 'the picnic is on', 10, false, false, NULL), "
                "('@ann:ben', 'ben', 'ann', 'picnic at noon?', 20, false, false, NULL), "
                "('club', NULL, 'ann', 'picnic added ben', 30, false, false, '{\"event\": \"x\"}'), "
                "('club', NULL, 'ben', NULL, 40, false, true, NULL)"))
            connection.execute(text(
                "INSERT INTO direct_chats (username, chat) VALUES ('ann', '@ann:ben'), "
                "('ben', '@ann:ben')"))
        with engine.begin() as connection:
            migrate.upgrade(connection)
            assert migrate.current_revision(connection) == migrate.head_revision()
        with engine.begin() as connection:
            hits, more = search_txn(connection, "ben", "picnic", None, None, 10, "simple")
        assert [(h.id, h.snippet) for h in hits] == [(2, "picnic at noon?"),
                                                     (1, "the picnic is on")]
        assert not more
        # New and edited messages are indexed by the database itself.
        with engine.begin() as connection:
            add_messages_txn(connection, [("club", "ann", "a picnic basket", None)])
            connection.execute(text("UPDATE messages SET content = 'the party is on' WHERE id = 1"))
            hits, _ = search_txn(connection, "ben", "picnic", None, None, 10, "simple")
        assert [h.snippet for h in hits] == ["a picnic basket", "picnic at noon?"]
    finally:
        engine.dispose()


def test_upgrading_to_0021_indexes_the_messages_that_mention_someone(database_url):
    """Existing mentions are in the new partial index, and unread mentions are counted from it."""
    from alembic import command
    from sqlalchemy import inspect

    from chateau.store.reading import conversations_txn

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), "0020")
            add_ann_and_ben_in_club(connection)
            connection.execute(text(
                "INSERT INTO messages (chat, recipient, sender, content, created_at, edited, "
                "deleted, mentions) VALUES "
                "('club', NULL, 'ann', '@ben look', 10, false, false, '[\"ben\"]'), "
                "('club', NULL, 'ann', 'plain', 20, false, false, NULL)"))
        with engine.begin() as connection:
            migrate.upgrade(connection)
            assert migrate.current_revision(connection) == migrate.head_revision()
            indexes = {index["name"]: index for index in inspect(connection).get_indexes("messages")}
            assert indexes["ix_messages_mentioned"]["column_names"] == ["chat", "id"]
            listed, _ = conversations_txn(connection, "ben", 10, None)
        assert [(r.chat, r.unread, r.mentions) for r in listed] == [("club", 2, 1)]
    finally:
        engine.dispose()
