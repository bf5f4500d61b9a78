"""``chateau-admin audit`` and ``purge``, and the audit rows of every state-changing
command, against both databases."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys

import pytest
from sqlalchemy import insert, select

from chateau import admin
from chateau.admin_audit import parse_since
from chateau.store import migrate
from chateau.store.audit import entries_txn
from chateau.store.engine import in_transaction, make_engine
from chateau.store.records import iso_timestamp, now_millis
from chateau.store.retention import DAY_MS
from chateau.store.tables import audit_log, messages
from tests.processes import checkout_env

ACTOR = "cli:" + getpass.getuser()


@pytest.fixture
def setup(tmp_path, database_url):
    """(run chateau-admin in this process, the engine) on a prepared database."""
    config = tmp_path / "chateau.ini"
    config.write_text(f"[database]\nurl = {database_url}\n[auth]\nbcrypt_cost = 4\n"
                      "[chat]\nretention_days = 30\naudit_retention_days = 365\n")
    engine = make_engine(database_url)
    in_transaction(engine, migrate.prepare)

    def run(capsys, *args: str, password: str | None = None, monkeypatch=None):
        if password is not None:
            monkeypatch.setenv("CHATEAU_PASSWORD", password)
        status = admin.main(["--config", str(config), *args])
        out, err = capsys.readouterr()
        return status, out, err

    yield run, engine
    engine.dispose()


def audit_rows(engine) -> list[tuple[str, str, str]]:
    return [(e.actor, e.action, e.target)
            for e in reversed(in_transaction(engine, entries_txn, 100))]


def test_every_state_changing_command_is_audited(setup, capsys, monkeypatch):
    run, engine = setup
    assert run(capsys, "user", "add", "dana", password="pw", monkeypatch=monkeypatch)[0] == 0
    assert run(capsys, "user", "passwd", "dana", password="new", monkeypatch=monkeypatch)[0] == 0
    assert run(capsys, "user", "disable", "dana")[0] == 0
    assert run(capsys, "user", "enable", "dana")[0] == 0
    assert run(capsys, "user", "admin", "dana")[0] == 0
    status, code, _ = run(capsys, "invite", "create", "--uses", "2")
    assert status == 0
    assert run(capsys, "invite", "revoke", code.strip())[0] == 0
    # A refused command records nothing.
    assert run(capsys, "user", "disable", "ghost")[0] == 1
    rows = audit_rows(engine)
    assert [(actor, action) for actor, action, _ in rows] == [
        (ACTOR, "user_add"), (ACTOR, "password_reset"), (ACTOR, "user_disable"),
        (ACTOR, "user_enable"), (ACTOR, "user_admin"), (ACTOR, "invite_create"),
        (ACTOR, "invite_revoke")]
    assert rows[5][2] == rows[6][2] and rows[5][2].startswith("invite ")
    # Never a password or an invite code.
    everything = json.dumps([e.__dict__ for e in in_transaction(engine, entries_txn, 100)])
    assert code.strip() not in everything and '"pw"' not in everything


def test_audit_reads_newest_first_with_filters(setup, capsys):
    run, engine = setup
    now = now_millis()
    with engine.begin() as connection:
        for at, actor, action, target, reason, address, detail in (
            (now - 3 * DAY_MS, "cli:ops", "user_ban", "eve", "spam links", None, {"until": 1}),
            (now - 2 * DAY_MS, "eve", "sign_in_failed", "eve", "", "192.0.2.7",
             {"method": "local"}),
            (now - DAY_MS, "ann", "group_remove", "bob", "", None, {"chatname": "club"}),
        ):
            connection.execute(insert(audit_log).values(
                at=at, actor=actor, action=action, target=target, reason=reason,
                address=address, detail=json.dumps(detail)))
    status, out, err = run(capsys, "audit")
    assert status == 0 and "3 entries" in err
    lines = out.splitlines()
    assert [line.split()[2] for line in lines] == ["group_remove", "sign_in_failed", "user_ban"]
    assert lines[2] == (f'{iso_timestamp(now - 3 * DAY_MS)} cli:ops user_ban eve "spam links" '
                        '{"until": 1}')
    assert lines[1].endswith('eve sign_in_failed eve 192.0.2.7 {"method": "local"}')
    # --user: as actor or target, canonicalised.
    _, out, _ = run(capsys, "audit", "--user", "EVE")
    assert [line.split()[2] for line in out.splitlines()] == ["sign_in_failed", "user_ban"]
    # --since: a date (midnight UTC) or a time.
    since = iso_timestamp(now - 2 * DAY_MS - 60_000)[:19]
    _, out, _ = run(capsys, "audit", "--since", since)
    assert [line.split()[2] for line in out.splitlines()] == ["group_remove", "sign_in_failed"]
    _, out, _ = run(capsys, "audit", "--since", "2000-01-01", "--limit", "1", "--json")
    (line,) = out.splitlines()
    entry = json.loads(line)
    assert entry["action"] == "group_remove" and entry["detail"] == {"chatname": "club"}
    assert set(entry) == {"id", "at", "actor", "action", "target", "reason", "address",
                          "detail"}
    assert entry["at"] == iso_timestamp(now - DAY_MS)
    with pytest.raises(SystemExit) as exit_:
        run(capsys, "audit", "--since", "yesterday")
    assert exit_.value.code == 2 and "ISO 8601" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(capsys, "audit", "--limit", "0")


def test_parse_since_takes_dates_times_and_offsets():
    assert parse_since("1970-01-02") == DAY_MS
    assert parse_since("1970-01-01T01:00") == 3_600_000
    assert parse_since("1970-01-01T01:00:00+01:00") == 0
    assert parse_since("1970-01-01T00:00:01Z") == 1000


def test_purge_prints_what_it_removes_and_audits_it(setup, capsys, tmp_path, database_url):
    run, engine = setup
    now = now_millis()
    with engine.begin() as connection:
        for age, chat in ((40, "@ann:ben"), (40, "@ann:ben"), (40, "rnd-1"), (1, "@ann:ben")):
            connection.execute(insert(messages).values(
                chat=chat, recipient=None, sender="ann", content="x",
                created_at=now - age * DAY_MS, edited=False, deleted=False))
        connection.execute(insert(audit_log).values(
            at=now - 400 * DAY_MS, actor="cli:ops", action="announce", target="*", reason="",
            detail="{}"))
    status, out, _ = run(capsys, "purge", "--dry-run")
    assert status == 0, out
    assert "  @ann:ben: 2 message(s)\n  rnd-1: 1 message(s)\n" in out
    assert "would remove 3 message(s) from 2 chat(s) and 1 audit row(s)" in out
    assert len(in_transaction(engine, entries_txn, 10)) == 1
    # The real thing, as an operator runs it.
    done = subprocess.run(
        [sys.executable, "-m", "chateau.admin", "--config", str(tmp_path / "chateau.ini"),
         "purge"],
        capture_output=True, text=True, timeout=60, env=checkout_env(), stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert "removed 3 message(s) from 2 chat(s) and 1 audit row(s)" in done.stdout
    with engine.connect() as connection:
        assert connection.execute(select(messages.c.chat)).scalars().all() == ["@ann:ben"]
    (entry,) = in_transaction(engine, entries_txn, 10)
    assert (entry.actor, entry.action, entry.detail) == (
        ACTOR, "retention_purge", {"removed": 3, "chats": 2, "audit_removed": 1})
    status, out, _ = run(capsys, "purge")
    assert "removed 0 message(s) from 0 chat(s) and 0 audit row(s)" in out
    assert len(in_transaction(engine, entries_txn, 10)) == 1
