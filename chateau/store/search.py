"""Message search: full-text queries over what a user may read, and the index's language.

The index itself is built by migration 0020 and kept up to date on every
insert, edit and deletion: on PostgreSQL by the database (the stored
generated column ``messages.search_vector`` with its GIN index); on SQLite
(the external-content FTS5 table ``messages_fts``) by triggers, except
for the message writer's own batches, which it indexes with one statement
each (:data:`INDEX_RANGE_SQL`, migration 0022): cheaper than the trigger's
FTS5 insert per row. Neither is in
:mod:`chateau.store.tables`: SQLAlchemy's metadata cannot describe an FTS5
table, and the schema test leaves exactly :data:`INDEX_OBJECTS` out of its
comparison.

The query language is PostgreSQL's ``websearch_to_tsquery``: words all
match, ``"a phrase"``, ``-word`` excludes, ``or`` between words. SQLite gets
the same query as an FTS5 expression in which every term is quoted
(:func:`fts5_query`), so no user input is ever FTS5 syntax. A query with no
word to look for (only exclusions, only punctuation) matches nothing.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.store.engine import Runner
from chateau.store.records import iso_timestamp

# What the schema test leaves out of its metadata comparison: the FTS5 table
# and its shadow tables (SQLite), the generated column and its index
# (PostgreSQL). Built by migration 0020 and :func:`ensure_language_txn`.
INDEX_OBJECTS = frozenset({
    "messages_fts", "messages_fts_data", "messages_fts_idx",
    "messages_fts_config", "messages_fts_by_writer", "search_vector",
    "ix_messages_search_vector",
})

# Up to this many conversations in scope, PostgreSQL reads each one newest
# first rather than the whole index of the word (docs/performance.md, Search).
FEW_CHATS = 32
# Words a snippet holds at most (FTS5 allows 64).
SNIPPET_WORDS = 30
# The marks the database puts around matched words; a content holding one
# of them gets its snippet without highlights rather than wrong ones.
_OPEN, _CLOSE = "\x02", "\x03"
ELLIPSIS = "…"
# Only one node rebuilds the index when the language changed.
_LANGUAGE_LOCK = 0x43685372
# The rows the index holds: what people wrote, not deleted.
_INDEXED = "{row}.changes IS NULL AND {row}.event IS NULL AND {row}.content IS NOT NULL"
# The message writer's batch (SQLite): the marker that sets the insert
# trigger aside for its transaction, and the one statement that indexes the
# batch's ids instead (migration 0022, chateau.store.messages).
WRITER_MARK_SQL = "INSERT INTO messages_fts_by_writer (marker) VALUES (1)"
WRITER_UNMARK_SQL = "DELETE FROM messages_fts_by_writer"
INDEX_RANGE_SQL = (
    "INSERT INTO messages_fts (rowid, content) SELECT id, content FROM messages "
    f"WHERE id BETWEEN ? AND ? AND {_INDEXED.format(row='messages')}"
)


class UnknownSearchLanguage(Exception):
    """``[search] language`` names no text search configuration of the PostgreSQL server."""


@dataclass(frozen=True)
class SearchHit:
    """One message found: where, by whom, and the stretch of it that matched."""

    id: int
    chat: str
    recipient: str | None
    sender: str
    created_at: int
    snippet: str
    highlights: list[list[int]]
    mentions: list[str] | None

    def entry(self, viewer: str) -> dict[str, Any]:
        """The SearchResponse entry, the conversation named as *viewer* knows it."""
        if self.recipient is None:
            where = {"chatname": self.chat}
        else:
            where = {"user": self.recipient if self.sender == viewer else self.sender}
        found: dict[str, Any] = {
            "id": self.id, **where, "sender": self.sender,
            "timestamp": iso_timestamp(self.created_at),
            "snippet": self.snippet, "highlights": self.highlights,
        }
        if self.mentions:
            found["mentions"] = self.mentions
        return found


class Search:
    """Full-text search over a user's conversations: each method returns a Deferred."""

    def __init__(self, runner: Runner, language: str = "simple") -> None:
        self._runner = runner
        self._language = language

    def search(
        self, viewer: str, query: str, chat: str | None, before: int | None, limit: int,
    ) -> Deferred[tuple[list[SearchHit], bool]]:
        """Up to *limit* messages *viewer* may read matching *query*, newest first; and whether more exist.

        *chat*: one conversation's stored key (a group's chatname or a
        direct chat's ``@a:b``), else every group the viewer is in now and
        every direct chat of theirs. *before*: only ids below it.
        """
        return self._runner.run(
            search_txn, viewer, query, chat, before, limit, self._language
        )


# -- the query language ---------------------------------------------------------


@dataclass(frozen=True)
class Term:
    text: str
    negated: bool = False


def parse_query(query: str) -> list[list[Term]]:
    """*query* as websearch_to_tsquery reads it: clauses (all must match) of alternatives (``or``).

    Terms with no letter or digit are dropped (they match nothing either
    way); so are negated terms inside an ``or``.
    """
    tokens: list[Term | str] = []
    position, length = 0, len(query)
    while position < length:
        char = query[position]
        if char.isspace():
            position += 1
            continue
        negated = char == "-" and position + 1 < length and not query[position + 1].isspace()
        if negated:
            position += 1
        if query[position] == '"':
            end = query.find('"', position + 1)
            end = length if end < 0 else end
            word, position = query[position + 1:end], end + 1
        else:
            match = re.compile(r'[^\s"]+').match(query, position)
            assert match is not None
            word, position = match.group(), match.end()
        if not negated and word.lower() == "or":
            tokens.append("or")
        elif _has_word(word):
            tokens.append(Term(word, negated))
    clauses: list[list[Term]] = []
    joining = False
    for token in tokens:
        if token == "or":
            joining = bool(clauses)
            continue
        assert isinstance(token, Term)
        if joining and not token.negated and not clauses[-1][0].negated:
            clauses[-1].append(token)
        else:
            clauses.append([token])
        joining = False
    return clauses


def _has_word(word: str) -> bool:
    return any(unicodedata.category(char)[0] in "LN" for char in word)


def has_positive_term(clauses: list[list[Term]]) -> bool:
    return any(not clause[0].negated for clause in clauses)


def fts5_query(clauses: list[list[Term]]) -> str:
    """The FTS5 expression of parsed *clauses*: every term a quoted string (never FTS5 syntax)."""

    def quoted(term: Term) -> str:
        return '"' + term.text.replace('"', '""') + '"'

    wanted = [c for c in clauses if not c[0].negated]
    expression = " AND ".join("(" + " OR ".join(quoted(t) for t in c) + ")" for c in wanted)
    for clause in clauses:
        if clause[0].negated:
            expression = f"({expression}) NOT {quoted(clause[0])}"
    return expression


def tsquery_text(clauses: list[list[Term]]) -> str:
    """The query websearch_to_tsquery is given: the parsed terms written back, quoted.

    Quoting each term keeps characters websearch_to_tsquery would read as
    operators inside a word (a ``-`` or ``or`` within quotes stays a word).
    """

    def written(term: Term) -> str:
        return ("-" if term.negated else "") + '"' + term.text.replace('"', " ") + '"'

    return " ".join(" or ".join(written(t) for t in clause) for clause in clauses)


# -- searching ------------------------------------------------------------------


def search_txn(
    connection: Connection, viewer: str, query: str, chat: str | None,
    before: int | None, limit: int, language: str,
) -> tuple[list[SearchHit], bool]:
    # NUL cannot reach PostgreSQL; other control characters are no words.
    clauses = parse_query("".join(" " if unicodedata.category(c) == "Cc" else c for c in query))
    if not has_positive_term(clauses):
        return [], False
    params: dict[str, Any] = {
        "viewer": viewer, "chat": chat, "before": before, "limit": limit + 1,
        "open": _OPEN, "close": _CLOSE,
    }
    # One conversation is searched only if it is still the viewer's too.
    scope = (
        ("m.chat = :chat AND " if chat is not None else "")
        + "m.chat IN (SELECT chatname FROM group_members WHERE username = :viewer "
        "UNION ALL SELECT chat FROM direct_chats WHERE username = :viewer)"
    )
    filters = (
        f"m.deleted = {_false(connection)} "
        "AND m.sender NOT IN (SELECT blocked FROM blocks WHERE blocker = :viewer)"
        + ("" if before is None else " AND m.id < :before")
    )
    conditions = f"{scope} AND {filters}"
    if connection.dialect.name == "postgresql":
        params.update(query=tsquery_text(clauses), language=language)
        # psycopg prepares a statement run often; a generic plan cannot see
        # how rare the words are and would walk the whole table by id.
        connection.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        matches = "m.search_vector @@ websearch_to_tsquery(CAST(:language AS regconfig), :query)"
        chats = _viewer_chats(connection, viewer, chat)
        if len(chats) <= FEW_CHATS:
            # Few conversations: each is read newest first through
            # ix_messages_chat_id (or the GIN index, as the planner finds
            # cheaper for that chat). The global query below would walk the
            # whole table's ids to find the rare ones that are the viewer's.
            params["chats"] = chats
            found = (
                "SELECT f.* FROM unnest(CAST(:chats AS text[])) AS c(chat) CROSS JOIN LATERAL ("
                "SELECT m.id, m.chat, m.recipient, m.sender, m.created_at, m.mentions, m.content "
                f"FROM messages m WHERE m.chat = c.chat AND {matches} AND {filters} "
                "ORDER BY m.id DESC LIMIT :limit) f ORDER BY f.id DESC LIMIT :limit"
            )
        else:
            found = (
                "SELECT m.id, m.chat, m.recipient, m.sender, m.created_at, m.mentions, m.content "
                f"FROM messages m WHERE {matches} AND {conditions} ORDER BY m.id DESC LIMIT :limit"
            )
        statement = (
            f"WITH found AS ({found}) "
            "SELECT id, chat, recipient, sender, created_at, mentions, content, "
            "ts_headline(CAST(:language AS regconfig), content, "
            "websearch_to_tsquery(CAST(:language AS regconfig), :query), "
            f"'StartSel=' || :open || ', StopSel=' || :close || ', MaxWords={SNIPPET_WORDS}, "
            "MinWords=12, ShortWord=0, HighlightAll=false') AS marked "
            "FROM found ORDER BY id DESC"
        )
    else:
        params.update(query=fts5_query(clauses))
        statement = (
            "SELECT m.id, m.chat, m.recipient, m.sender, m.created_at, m.mentions, m.content, "
            f"snippet(messages_fts, 0, :open, :close, '{ELLIPSIS}', {SNIPPET_WORDS}) AS marked "
            "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
            f"WHERE messages_fts MATCH :query AND {conditions} "
            "ORDER BY messages_fts.rowid DESC LIMIT :limit"
        )
    rows = connection.execute(text(statement), params).all()
    hits = [
        SearchHit(
            id=int(row.id), chat=row.chat, recipient=row.recipient, sender=row.sender,
            created_at=int(row.created_at),
            mentions=json.loads(row.mentions) if row.mentions else None,
            **_snippet(row.content or "", row.marked or "",
                       connection.dialect.name == "postgresql"),
        )
        for row in rows[:limit]
    ]
    return hits, len(rows) > limit


def _viewer_chats(connection: Connection, viewer: str, chat: str | None) -> list[str]:
    """The viewer's conversations now (of them, *chat* alone when given)."""
    rows = connection.execute(text(
        "SELECT chatname FROM group_members WHERE username = :viewer "
        "UNION ALL SELECT chat FROM direct_chats WHERE username = :viewer"
    ), {"viewer": viewer}).scalars().all()
    return [c for c in rows if chat is None or c == chat]


def _false(connection: Connection) -> str:
    return "false" if connection.dialect.name == "postgresql" else "0"


def _snippet(content: str, marked: str, add_ellipses: bool) -> dict[str, Any]:
    """The plain snippet and its highlights' code-point offsets, from the database's marked one.

    PostgreSQL's ts_headline does not say where it cut: *add_ellipses* puts
    "…" where the stretch does not reach the content's start or end.
    """
    if _OPEN in content or _CLOSE in content:
        plain = marked.replace(_OPEN, "").replace(_CLOSE, "")
        return {"snippet": plain, "highlights": []}
    pieces: list[str] = []
    highlights: list[list[int]] = []
    offset = 0
    start = 0
    for part in re.split(f"([{_OPEN}{_CLOSE}])", marked):
        if part == _OPEN:
            start = offset
        elif part == _CLOSE:
            highlights.append([start, offset])
        else:
            pieces.append(part)
            offset += len(part)
    plain = "".join(pieces)
    if add_ellipses and plain.strip():
        core = plain.strip()
        lead = len(plain) - len(plain.lstrip())
        at = content.find(core)
        head = ELLIPSIS if at > 0 else ""
        tail = ELLIPSIS if at >= 0 and at + len(core) < len(content) else ""
        shift = len(head) - lead
        highlights = [[s + shift, e + shift] for s, e in highlights]
        plain = head + core + tail
    return {"snippet": plain, "highlights": highlights}


# -- the index's language -------------------------------------------------------


def fts5_tokenizer(language: str) -> str:
    """FTS5's tokenizer for *language*: Porter stemming for english, words as written otherwise."""
    base = "unicode61 remove_diacritics 2"
    return f"porter {base}" if language == "english" else base


def index_language_txn(connection: Connection) -> str:
    """What the index was built for: a PostgreSQL configuration, or an FTS5 tokenizer."""
    if connection.dialect.name == "postgresql":
        expression = connection.execute(text(
            "SELECT generation_expression FROM information_schema.columns "
            "WHERE table_name = 'messages' AND column_name = 'search_vector' "
            "AND table_schema = current_schema()"
        )).scalar() or ""
        found = re.search(r"'([^']+)'::regconfig", expression)
        return found.group(1) if found else ""
    sql = connection.execute(text(
        "SELECT sql FROM sqlite_master WHERE name = 'messages_fts'"
    )).scalar() or ""
    found = re.search(r"tokenize\s*=\s*'([^']*)'", sql)
    return found.group(1) if found else ""


def index_writer_batch(cursor: Any, ids: list[int]) -> None:
    """Index the message writer's batch *ids* in one statement, then remove its marker.

    On the writer's DB-API cursor (SQLite), in its transaction, after the
    batch's rows went in with :data:`WRITER_MARK_SQL` in place. The
    transaction holds SQLite's write lock, so no other transaction sees the
    marker, and the batch's ids are the only ones between its first and last.
    """
    if ids:
        cursor.execute(INDEX_RANGE_SQL, (ids[0], ids[-1]))
    cursor.execute(WRITER_UNMARK_SQL)


def ensure_language_txn(connection: Connection, language: str) -> str | None:
    """Rebuild the index if it was built for another language; what it was built for, if rebuilt.

    Raises :class:`UnknownSearchLanguage` on PostgreSQL when *language* is no
    text search configuration. The rebuild reads every message once (the
    table is rewritten on PostgreSQL), under a lock, so only one node of a
    cluster does it.
    """
    if connection.dialect.name == "postgresql":
        known = connection.execute(
            text("SELECT count(*) FROM pg_ts_config WHERE cfgname = :name"), {"name": language}
        ).scalar()
        if not known:
            raise UnknownSearchLanguage(
                f"[search] language = {language}: PostgreSQL has no such text search "
                "configuration (SELECT cfgname FROM pg_ts_config lists them)"
            )
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LANGUAGE_LOCK})
        built = index_language_txn(connection)
        if built == language:
            return None
        connection.execute(text("DROP INDEX IF EXISTS ix_messages_search_vector"))
        connection.execute(text("ALTER TABLE messages DROP COLUMN IF EXISTS search_vector"))
        # The configuration's name is checked above and quoted as a literal.
        literal = language.replace("'", "''")
        connection.execute(text(
            "ALTER TABLE messages ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
            "CASE WHEN changes IS NULL AND event IS NULL "
            f"THEN to_tsvector('{literal}'::regconfig, coalesce(content, '')) END) STORED"
        ))
        connection.execute(text(
            "CREATE INDEX ix_messages_search_vector ON messages USING gin (search_vector)"
        ))
        return built
    tokenizer = fts5_tokenizer(language)
    built = index_language_txn(connection)
    if built == tokenizer:
        return None
    # The triggers (edits, deletions) name the table, not its tokenizer: they carry on.
    connection.execute(text("DROP TABLE IF EXISTS messages_fts"))
    connection.execute(text(
        "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', "
        f"content_rowid='id', columnsize=0, tokenize='{tokenizer}')"
    ))
    connection.execute(text(
        "INSERT INTO messages_fts (rowid, content) SELECT id, content FROM messages "
        f"WHERE {_INDEXED.format(row='messages')}"
    ))
    return built
