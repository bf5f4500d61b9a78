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
