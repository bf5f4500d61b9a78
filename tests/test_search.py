"""Message search in the store, on SQLite and PostgreSQL: index, scope, query syntax, snippets.

The wire (SearchRequest over real sockets) is in tests/test_search_sockets.py.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from sqlalchemy import text

from chateau.store import migrate
from chateau.store.engine import Engine, in_transaction, make_engine
from chateau.store.messages import add_messages_txn
from chateau.store.search import (
    SearchHit,
    UnknownSearchLanguage,
    ensure_language_txn,
    fts5_query,
    parse_query,
    search_txn,
)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = make_engine(database_url)
    in_transaction(made, migrate.prepare)
    people = ["ann", "ben", "cat", "dan"]
    with made.begin() as connection:
        for name in people:
            connection.execute(text("INSERT INTO names (name, kind) VALUES (:n, 'user')"),
                               {"n": name})
            connection.execute(text(
                "INSERT INTO users (username, password_hash, auth_method, disabled, created_at) "
                "VALUES (:n, 'x', 'local', false, 1)"), {"n": name})
        for group in ("club", "team"):
            connection.execute(text("INSERT INTO names (name, kind) VALUES (:n, 'group')"),
                               {"n": group})
            connection.execute(text(
                "INSERT INTO groups (chatname, creator, created_at) VALUES (:n, 'ann', 1)"),
                {"n": group})
        connection.execute(text(
            "INSERT INTO group_members (chatname, username) VALUES ('club', 'ann'), "
            "('club', 'ben'), ('team', 'ben'), ('team', 'cat')"))
    yield made
    made.dispose()


def add(engine: Engine, chat: str, sender: str, content: str, recipient: str | None = None,
        event: str | None = None) -> int:
    item: tuple[Any, ...] = (chat, sender, content, recipient, event)
    return in_transaction(engine, add_messages_txn, [item])[0].id


def find(engine: Engine, viewer: str, query: str, chat: str | None = None,
         before: int | None = None, limit: int = 20, language: str = "simple",
         ) -> list[SearchHit]:
    hits, _ = in_transaction(engine, search_txn, viewer, query, chat, before, limit, language)
    return hits


def ids(hits: list[SearchHit]) -> list[int]:
    return [hit.id for hit in hits]


def test_words_all_match_newest_first_across_groups_and_direct_chats(engine):
    first = add(engine, "club", "ann", "Lunch at the river on Friday")
    direct = add(engine, "@ann:ben", "ann", "friday lunch?", "ben")
    add(engine, "club", "ben", "Lunch tomorrow")
    team = add(engine, "team", "cat", "lunch on friday at the office")
    assert ids(find(engine, "ben", "lunch friday")) == [team, direct, first]
    assert ids(find(engine, "ann", "FRIDAY Lunch")) == [direct, first]
    hit = find(engine, "ben", "friday", chat="@ann:ben")[0]
    assert hit.entry("ben") == {"id": direct, "user": "ann", "sender": "ann",
                                "timestamp": hit.entry("ben")["timestamp"],
                                "snippet": "friday lunch?", "highlights": [[0, 6]]}
    assert hit.entry("ann")["user"] == "ben"
    assert find(engine, "ben", "friday", chat="club")[0].entry("ben")["chatname"] == "club"


def test_phrases_exclusions_and_or(engine):
    one = add(engine, "club", "ann", "the blue house is big")
    two = add(engine, "club", "ann", "the house is blue")
    three = add(engine, "club", "ann", "a red house")
    assert ids(find(engine, "ann", '"blue house"')) == [one]
    assert ids(find(engine, "ann", "house -blue")) == [three]
    assert ids(find(engine, "ann", "red or big")) == [three, one]
    assert ids(find(engine, "ann", "house blue")) == [two, one]
    # Only exclusions: nothing to look for, nothing found (never every message).
    assert find(engine, "ann", "-blue") == []


def test_scope_is_what_the_user_may_read_now(engine):
    club = add(engine, "club", "ann", "secret plan")
    team = add(engine, "team", "cat", "secret plan")
    add(engine, "@ben:cat", "cat", "secret plan", "ben")
    add(engine, "#random-1", "ann", "secret plan")  # a random chat
    add(engine, "club", "ann", "secret plan added ben", event='{"event": "added"}')
    assert ids(find(engine, "ann", "secret")) == [club]
    assert ids(find(engine, "dan", "secret")) == []
    # Ben leaves the team: its messages are no longer his to search.
    with engine.begin() as connection:
        connection.execute(text(
            "DELETE FROM group_members WHERE chatname = 'team' AND username = 'ben'"))
    assert team not in ids(find(engine, "ben", "secret"))
    assert find(engine, "ben", "secret", chat="team") == []


def test_blocked_senders_and_deleted_messages_and_change_rows_are_left_out(engine):
    by_ann = add(engine, "club", "ann", "pizza tonight")
    by_ben = add(engine, "club", "ben", "pizza again")
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO blocks (blocker, blocked, created_at) VALUES ('ben', 'ann', 1)"))
    assert ids(find(engine, "ben", "pizza")) == [by_ben]
    assert ids(find(engine, "ann", "pizza")) == [by_ben, by_ann]
    with engine.begin() as connection:
        connection.execute(text(
            "UPDATE messages SET content = NULL, deleted = true WHERE id = :id"), {"id": by_ben})
        # A change row carries no words, but mark one with words to be sure.
        connection.execute(text(
            "INSERT INTO messages (chat, sender, content, created_at, edited, deleted, event, "
            "changes) VALUES ('club', 'ben', 'pizza', 5, false, false, "
            "'{\"change\": \"deleted\"}', :id)"), {"id": by_ben})
    assert ids(find(engine, "ann", "pizza")) == [by_ann]


def test_edits_and_deletions_are_reflected_at_once(engine):
    message = add(engine, "club", "ann", "meet at noon")
    assert ids(find(engine, "ben", "noon")) == [message]
    with engine.begin() as connection:
        connection.execute(text("UPDATE messages SET content = 'meet at dusk', edited = true "
                                "WHERE id = :id"), {"id": message})
    assert find(engine, "ben", "noon") == []
    assert ids(find(engine, "ben", "dusk")) == [message]
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM messages WHERE id = :id"), {"id": message})
    assert find(engine, "ben", "dusk") == []
    # The index stays consistent after the deletion: new messages are found.
    again = add(engine, "club", "ann", "dusk again")
    assert ids(find(engine, "ben", "dusk")) == [again]


def test_paging_with_before(engine):
    made = [add(engine, "club", "ann", f"report number {n}") for n in range(5)]
    hits, more = in_transaction(engine, search_txn, "ann", "report", None, None, 2, "simple")
    assert ids(hits) == made[:2:-1][:2] and more
    hits, more = in_transaction(engine, search_txn, "ann", "report", None, hits[-1].id, 2,
                                "simple")
    assert ids(hits) == [made[2], made[1]] and more
    hits, more = in_transaction(engine, search_txn, "ann", "report", None, hits[-1].id, 2,
                                "simple")
    assert ids(hits) == [made[0]] and not more


def test_snippets_are_cut_around_the_match_with_highlight_offsets(engine):
    words = [f"w{n}" for n in range(100)]
    words[60] = "needle"
    add(engine, "club", "ann", " ".join(words))
    hit = find(engine, "ann", "needle")[0]
    assert hit.snippet.startswith("…") and hit.snippet.endswith("…")
    assert len(hit.snippet.split()) <= 32
    assert [hit.snippet[s:e] for s, e in hit.highlights] == ["needle"]
    add(engine, "club", "ann", "Ça va, café? 🎉 café!")
    hit = find(engine, "ann", "CAFÉ")[0]
    assert hit.snippet == "Ça va, café? 🎉 café!"
    assert [hit.snippet[s:e] for s, e in hit.highlights] == ["café", "café"]


def test_stemming_follows_the_language(engine):
    add(engine, "club", "ann", "the meetings were long")
    assert find(engine, "ann", "meeting") == []
    with engine.begin() as connection:
        assert ensure_language_txn(connection, "english") is not None
        assert ensure_language_txn(connection, "english") is None
    hits = find(engine, "ann", "meeting", language="english")
    assert [hit.snippet[s:e] for hit in hits for s, e in hit.highlights] == ["meetings"]
    # Still kept up to date after the rebuild.
    add(engine, "club", "ann", "one more meeting")
    assert len(find(engine, "ann", "meet", language="english")) == 2
    with engine.begin() as connection:
        ensure_language_txn(connection, "simple")
    assert find(engine, "ann", "meeting") != [] and len(find(engine, "ann", "meetings")) == 1


def test_an_unknown_language_is_refused_on_postgresql_and_simple_on_sqlite(engine):
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            with pytest.raises(UnknownSearchLanguage, match="klingon"):
                ensure_language_txn(connection, "klingon")
        else:
            # SQLite stems english only; every other language matches words as written.
            assert ensure_language_txn(connection, "klingon") is None


WEIRD = ['"', "-", "*", "NEAR(", "'", "\\", "🎉", "x" * 256, '"unclosed phrase', "a AND",
         "OR", "or or", "-\"", "(", ")", "^x", "col:umn", "a*", "&|!", "\x00nul", ":",
         "NOT", "a NOT b", '""', "' OR 1=1 --", "%", "_", "−", "ﬁ"]


@pytest.mark.parametrize("query", WEIRD)
def test_any_query_is_literal_text_never_an_error(engine, query):
    add(engine, "club", "ann", "NEAR( not an operator, a AND b or NOT col:umn")
    find(engine, "ann", query)


def test_literal_operator_words_match_as_words(engine):
    message = add(engine, "club", "ann", "NEAR( not an operator, a AND b or NOT col:umn")
    assert ids(find(engine, "ann", "NEAR(")) == [message]
    assert ids(find(engine, "ann", "col:umn")) == [message]
    assert ids(find(engine, "ann", "NOT")) == [message]


def test_the_fts5_translation_quotes_every_term():
    assert fts5_query(parse_query('a "b c" -d e or f')) == \
        '(("a") AND ("b c") AND ("e" OR "f")) NOT "d"'
    assert fts5_query(parse_query('say "hi""')) == '("say") AND ("hi")'
    assert parse_query("*** - ''") == []


def test_the_many_conversations_query_keeps_the_same_rules(engine, monkeypatch):
    """PostgreSQL reads a viewer's few conversations one by one, many through the word's
    index (store.search.FEW_CHATS): the rules hold both ways."""
    monkeypatch.setattr("chateau.store.search.FEW_CHATS", 0)
    test_scope_is_what_the_user_may_read_now(engine)
    test_blocked_senders_and_deleted_messages_and_change_rows_are_left_out(engine)
    test_paging_with_before(engine)
    test_phrases_exclusions_and_or(engine)


def test_a_writer_batch_and_a_row_inserted_otherwise_are_both_indexed_and_edited_alike(engine):
    """The writer indexes its batch itself (migration 0022); any other insert, the trigger.

    Both end up in the index exactly once, so an edit or deletion of either
    (which the triggers reflect) leaves the index sound.
    """
    batch = in_transaction(engine, add_messages_txn, [
        ("club", "ann", "kiwi one", None), ("club", "ben", "kiwi two", None),
        ("team", "ben", "kiwi three", None, '{"kind": "joined"}'),  # a group event: not indexed
    ])
    with engine.begin() as connection:
        other = connection.execute(text(
            "INSERT INTO messages (chat, sender, content, created_at, edited, deleted) "
            "VALUES ('club', 'ann', 'kiwi four', 5, false, false) RETURNING id")).scalar()
        if connection.dialect.name == "sqlite":
            # The writer's marker never outlives its transaction.
            assert connection.execute(text("SELECT count(*) FROM messages_fts_by_writer")
                                      ).scalar() == 0
            # The three messages are in the index (the event is not).
            connection.execute(text(
                "CREATE VIRTUAL TABLE temp.words USING fts5vocab(main, messages_fts, instance)"))
            assert connection.execute(text(
                "SELECT count(*) FROM temp.words WHERE term = 'kiwi'")).scalar() == 3
    assert ids(find(engine, "ben", "kiwi")) == [other, batch[1].id, batch[0].id]
    with engine.begin() as connection:
        connection.execute(text("UPDATE messages SET content = 'plum' WHERE id IN (:a, :b)"),
                           {"a": batch[0].id, "b": other})
        connection.execute(text("DELETE FROM messages WHERE id = :id"), {"id": batch[1].id})
    assert ids(find(engine, "ben", "kiwi")) == []
    assert ids(find(engine, "ben", "plum")) == [other, batch[0].id]
