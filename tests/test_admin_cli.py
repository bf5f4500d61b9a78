"""``chateau-admin user|db`` as an operator runs them, against both databases."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import text

from chateau.store import migrate
from chateau.store.engine import make_engine
from chateau.store.tables import metadata
from tests.processes import checkout_env


def admin(tmp_path, database_url, *args, password=None):
    config = tmp_path / "chateau.ini"
    config.write_text(f"[database]\nurl = {database_url}\n[auth]\nbcrypt_cost = 4\n")
    env = checkout_env()
    if password is not None:
        env["CHATEAU_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "chateau.admin", "--config", str(config), *args],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )


def test_user_commands(tmp_path, database_url):
    result = admin(tmp_path, database_url, "user", "add", "Dana", password="pw")
    assert result.returncode == 0, result.stderr
    assert "created local account 'dana'" in result.stdout
    again = admin(tmp_path, database_url, "user", "add", "dana", password="pw")
    assert again.returncode == 1 and "already taken" in again.stderr
    result = admin(tmp_path, database_url, "user", "passwd", "dana", password="new")
    assert result.returncode == 0 and "session key(s) revoked" in result.stdout
    result = admin(tmp_path, database_url, "user", "disable", "dana")
    assert result.returncode == 0 and "disabled" in result.stdout
    listing = admin(tmp_path, database_url, "user", "list")
    assert listing.returncode == 0
    assert "dana" in listing.stdout and "disabled" in listing.stdout
    assert "pw" not in listing.stdout + listing.stderr
    missing = admin(tmp_path, database_url, "user", "disable", "ghost")
    assert missing.returncode == 1 and "no such user" in missing.stderr


def test_db_upgrade_brings_an_old_schema_to_head(tmp_path, database_url):
    engine = make_engine(database_url)
    with engine.begin() as connection:
        migrate.prepare(connection)
        connection.execute(text("DROP TABLE contacts"))
        connection.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    engine.dispose()
    refused = admin(tmp_path, database_url, "user", "list")
    assert refused.returncode == 1 and "chateau-admin db upgrade" in refused.stderr
    # An unknown revision cannot be upgraded from: say so, change nothing.
    failed = admin(tmp_path, database_url, "db", "upgrade")
    assert failed.returncode == 1 and "upgrade failed" in failed.stderr
    engine = make_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM alembic_version"))
        connection.execute(text("DROP TABLE alembic_version"))
        # Every table of the schema (whichever revisions there are), children first.
        metadata.drop_all(connection, checkfirst=True)
        # And the search index, which the metadata does not describe (store/search.py).
        if connection.dialect.name == "sqlite":
            connection.execute(text("DROP TABLE IF EXISTS messages_fts"))
            connection.execute(text("DROP TABLE IF EXISTS messages_fts_by_writer"))
    engine.dispose()
    upgraded = admin(tmp_path, database_url, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "to revision" in upgraded.stdout
    again = admin(tmp_path, database_url, "db", "upgrade")
    assert "up to date" in again.stdout


def test_invite_commands(tmp_path, database_url):
    created = admin(tmp_path, database_url, "invite", "create", "--uses", "3", "--hours", "2")
    assert created.returncode == 0, created.stderr
    code = created.stdout.strip()
    assert len(code) >= 22 and "3 account(s)" in created.stderr
    assert "registration is 'open'" in created.stderr
    listing = admin(tmp_path, database_url, "invite", "list")
    assert listing.returncode == 0 and "3 use(s) left" in listing.stdout
    assert code not in listing.stdout
    assert "1 usable invite(s)" in listing.stdout
    assert admin(tmp_path, database_url, "invite", "revoke", code).returncode == 0
    assert "0 usable invite(s)" in admin(tmp_path, database_url, "invite", "list").stdout
    missing = admin(tmp_path, database_url, "invite", "revoke", code)
    assert missing.returncode == 1 and "no such invite" in missing.stderr
    bad = admin(tmp_path, database_url, "invite", "create", "--uses", "0")
    assert bad.returncode == 1 and "at least 1" in bad.stderr


def _prepared_with(database_url, *work):
    """A prepared database with what *work* (transaction functions) makes."""
    from chateau.store.engine import in_transaction

    engine = make_engine(database_url)
    try:
        in_transaction(engine, migrate.prepare)
        return [in_transaction(engine, txn, *args) for txn, *args in work]
    finally:
        engine.dispose()


def test_moderation_commands(tmp_path, database_url):
    import getpass

    from chateau.store.accounts import create_user_txn, get_user_txn
    from chateau.store.groups import create_group_txn
    from chateau.store.messages import add_messages_txn, get_message_txn
    from chateau.store.audit import entries_txn

    _, _, _, _, stored = _prepared_with(
        database_url,
        (create_user_txn, "alice", None, "local", None),
        (create_user_txn, "bob", None, "local", None),
        (create_user_txn, "carol", None, "local", None),
        (create_group_txn, "club", "alice", ["alice", "bob"], set()),
        (add_messages_txn, [("club", "bob", "rude", None)]),
    )
    message_id = stored[0].id
    actor = "cli:" + getpass.getuser()

    made = admin(tmp_path, database_url, "user", "admin", "Alice")
    assert made.returncode == 0 and "now a server admin" in made.stdout, made.stderr
    assert admin(tmp_path, database_url, "user", "unadmin", "ghost").returncode == 1

    banned = admin(tmp_path, database_url, "user", "ban", "bob", "--hours", "3",
                   "--reason", "spam")
    assert banned.returncode == 0, banned.stderr
    assert "banned 'bob' until 20" in banned.stdout and "4003" in banned.stdout
    no_reason = admin(tmp_path, database_url, "user", "ban", "bob", "--reason", " ")
    assert no_reason.returncode == 1 and "--reason" in no_reason.stderr
    bad_hours = admin(tmp_path, database_url, "user", "ban", "bob", "--hours", "0",
                      "--reason", "x")
    assert bad_hours.returncode == 1 and "--hours" in bad_hours.stderr
    assert admin(tmp_path, database_url, "user", "unban", "bob").returncode == 0
    again = admin(tmp_path, database_url, "user", "unban", "bob")
    assert again.returncode == 1 and "not banned" in again.stderr
    forever = admin(tmp_path, database_url, "user", "ban", "bob", "--reason", "spam")
    assert "until unbanned" in forever.stdout

    shown = admin(tmp_path, database_url, "group", "show", "Club")
    assert shown.returncode == 0, shown.stderr
    assert "alice" in shown.stdout and "owner" in shown.stdout and "2 member(s)" in shown.stdout
    assert "join=invite" in shown.stdout

    deleted = admin(tmp_path, database_url, "message", "delete", str(message_id),
                    "--reason", "rude")
    assert deleted.returncode == 0 and "deleted message" in deleted.stdout, deleted.stderr
    gone = admin(tmp_path, database_url, "message", "delete", str(message_id))
    assert gone.returncode == 1 and "no message" in gone.stderr

    said = admin(tmp_path, database_url, "announce", "maintenance tonight")
    assert said.returncode == 0 and "announcement 1" in said.stdout, said.stderr
    assert admin(tmp_path, database_url, "announce", "x" * 20000).returncode == 1

    added = admin(tmp_path, database_url, "group", "add", "club", "Carol", "bob")
    assert added.returncode == 0 and "added 'carol'" in added.stdout, added.stderr
    assert "already members: 'bob'" in added.stdout
    made = admin(tmp_path, database_url, "group", "role", "club", "bob", "admin")
    assert made.returncode == 0 and "now admin" in made.stdout, made.stderr
    last = admin(tmp_path, database_url, "group", "role", "club", "alice", "member")
    assert last.returncode == 1 and "last owner" in last.stderr
    assert admin(tmp_path, database_url, "group", "role", "club", "bob", "king").returncode == 2
    kicked = admin(tmp_path, database_url, "group", "remove", "club", "carol", "--ban",
                   "--reason", "trolling")
    assert kicked.returncode == 0 and "banned 'carol' from 'club'" in kicked.stdout, kicked.stderr
    back = admin(tmp_path, database_url, "group", "add", "club", "carol")
    assert back.returncode == 1 and "banned from 'club'" in back.stderr
    ghost = admin(tmp_path, database_url, "group", "remove", "club", "ghost")
    assert ghost.returncode == 1 and "no such user" in ghost.stderr
    shown = admin(tmp_path, database_url, "group", "show", "club")
    assert "bob" in shown.stdout and "admin" in shown.stdout and "carol" not in shown.stdout

    removed = admin(tmp_path, database_url, "group", "delete", "club", "--reason", "abuse")
    assert removed.returncode == 0 and "name stays taken" in removed.stdout, removed.stderr
    assert admin(tmp_path, database_url, "group", "show", "club").returncode == 1

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            assert get_user_txn(connection, "alice").is_admin
            assert get_user_txn(connection, "bob").ban_reason == "spam"
            assert get_message_txn(connection, message_id).deleted
            actions = [(e.actor, e.action, e.target) for e in reversed(entries_txn(connection))]
            kept = connection.execute(text("SELECT kind FROM names WHERE name = 'club'")).scalar()
    finally:
        engine.dispose()
    assert kept == "group"
    assert actions == [
        (actor, "user_admin", "alice"), (actor, "user_ban", "bob"),
        (actor, "user_unban", "bob"), (actor, "user_ban", "bob"),
        (actor, "message_delete", "club"), (actor, "announce", "*"),
        (actor, "group_add", "club"), (actor, "group_role", "club"),
        (actor, "group_ban", "carol"), (actor, "group_delete", "club"),
    ]
