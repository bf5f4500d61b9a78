"""Words for catching up: ``/unread``, ``/search`` and ``/sync``, and ``unread_total``.

These replies list entries from many conversations at once, each naming its
own (``chatname`` for a group, ``user`` for a direct chat), so the label is
made from the entry itself. Everything from the server is cleaned (text.py)
before it is shown; matched words and mentions of you carry the marks of
text.py, which the session renders for its terminal.
"""

from __future__ import annotations

from typing import Any, Callable

from chateau.client import events
from chateau.client.text import clean, format_time, marked, message_line, quoted, strong

Request = dict[str, Any]
Label = Callable[[str], str]

# ConversationsResponse counts stop at this many per conversation ("100 or more").
UNREAD_CAP = 100
# unread_total stops at this many over all conversations ("1000 or more").
UNREAD_TOTAL_CAP = 1000
PREVIEW_CHARACTERS = 40
CONVERSATIONS_PAGE = 200
SEARCH_PAGE = 20
SYNC_PAGE = 500
MENTION_NOTE = "mentions you"


def entry_label(entry: dict[str, Any]) -> str:
    """``#club`` for a group's entry, ``@bob`` for a direct chat's."""
    if isinstance(entry.get("chatname"), str):
        return "#" + clean(entry["chatname"])
    if isinstance(entry.get("user"), str):
        return "@" + clean(entry["user"])
    return "?"


def count(value: Any) -> str:
    """An unread or mentions count; the server's cap (100) reads "99+"."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return "0"
    return "99+" if value >= UNREAD_CAP else str(value)


def preview(content: Any) -> str:
    """The start of a message on one line, "…" where cut."""
    text = " ".join(str(content or "").split())
    if len(text) > PREVIEW_CHARACTERS:
        text = text[:PREVIEW_CHARACTERS - 1].rstrip() + "…"
    return clean(text)


def mentions_me(entry: dict[str, Any], me: str) -> bool:
    mentions = entry.get("mentions")
    return isinstance(mentions, list) and (me in mentions or "@all" in mentions)


# -- unread_total at sign-in ----------------------------------------------------


def unread_total_line(reply: dict[str, Any]) -> str | None:
    """``* 12 unread messages: /unread lists them``, or None when nothing is unread."""
    total = reply.get("unread_total")
    if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
        return None
    plural = "s" if total != 1 else ""
    shown = "999+" if total >= UNREAD_TOTAL_CAP else str(total)
    return f"* {shown} unread message{plural}: /unread lists them"


# -- /unread -----------------------------------------------------------------------


def last_message_words(last: Any) -> str:
    """The last message of a conversation: ``bob: lunch at one?``, ``bob (deleted)``."""
    if not isinstance(last, dict):
        return "no messages"
    if last.get("hidden"):
        return "a message from someone you blocked"
    sender = clean(str(last.get("sender", "?")))
    if isinstance(last.get("event"), dict):
        return events.event_words(last["event"], "", last.get("content"))
    if last.get("deleted"):
        return f"{sender}: (deleted)"
    return f"{sender}: {preview(last.get('content'))}"


def conversation_line(conversation: dict[str, Any]) -> str:
    """``  #club  3 unread, 1 mention  14:02 bob: chapter 3?``"""
    counts = f"{count(conversation.get('unread'))} unread"
    mentions = conversation.get("mentions")
    if isinstance(mentions, int) and mentions > 0:
        counts += f", {count(mentions)} mention{'s' if mentions != 1 else ''}"
    last = conversation.get("last_message")
    when = format_time(last.get("timestamp")) if isinstance(last, dict) else "--:--"
    line = f"  {entry_label(conversation)}  {counts}  {when} {last_message_words(last)}"
    return strong(line) if isinstance(mentions, int) and mentions > 0 else line


def show_unread(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    conversations = [
        c for c in reply.get("conversations", [])
        if isinstance(c, dict) and isinstance(c.get("unread"), int) and c["unread"] > 0
    ]
    if not conversations:
        return ["* nothing unread"]
    total = sum(min(c["unread"], UNREAD_CAP) for c in conversations)
    shown = f"{total}+" if any(c["unread"] >= UNREAD_CAP for c in conversations) else str(total)
    plural = "s" if len(conversations) != 1 else ""
    return [f"--- unread: {shown} in {len(conversations)} conversation{plural} ---",
            *(conversation_line(c) for c in conversations)]


def next_conversations(request: Request, reply: dict[str, Any]) -> Request | None:
    """ConversationsRequest's next page: ``before`` the last conversation's activity."""
    conversations = [c for c in reply.get("conversations", []) if isinstance(c, dict)]
    if not reply.get("more") or not conversations:
        return None
    activity = conversations[-1].get("activity")
    if not isinstance(activity, int) or activity <= 0:
        return None
    before = request.get("before")
    if isinstance(before, int) and activity >= before:
        return None  # no progress: stop rather than ask for the same page again
    return {**request, "before": activity}


# -- /search ----------------------------------------------------------------------


def search_scope(request: Request) -> str:
    """How the search's conversation is typed: ``#club``, ``@bob``, or nothing."""
    if "chatname" in request:
        return quoted("#" + str(request["chatname"]))
    if "user" in request:
        return quoted("@" + str(request["user"]))
    return ""


def search_result_line(result: dict[str, Any]) -> str:
    """``14:02 [#club] bob: … the *picnic* blanket …`` with the matched words marked."""
    snippet = result.get("snippet")
    text = marked(snippet, result.get("highlights")) if isinstance(snippet, str) else ""
    when = format_time(result.get("timestamp"))
    sender = clean(str(result.get("sender", "?")))
    body = text.replace("\n", " ")
    return f"  {when} [{entry_label(result)}] {sender}: {body}"


def show_search(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    results = [r for r in reply.get("results", []) if isinstance(r, dict)]
    scope = search_scope(request)
    where = f" in {scope}" if scope else ""
    query = clean(str(request["query"]))
    if not results:
        older = "older " if "before" in request else ""
        return [f"* no {older}messages{where} match {query!r}"]
    plural = "s" if len(results) != 1 else ""
    lines = [f"--- search {query!r}{where}: {len(results)} result{plural} ---"]
    lines += [search_result_line(r) for r in results]
    ids = [r["id"] for r in results if isinstance(r.get("id"), int)]
    if reply.get("more") and ids:
        again = " ".join(part for part in ("/search --before", str(min(ids)), scope) if part)
        lines.append(f"  (more: {again} {query})")
    return lines


# -- /sync ---------------------------------------------------------------------------


def sync_line(entry: dict[str, Any], me: str, note: str = "") -> str:
    """One SyncResponse entry as the live push of the same thing is shown."""
    label = entry_label(entry)
    when = format_time(entry.get("timestamp"))
    if entry.get("hidden"):
        return events.hidden_line(when, label)
    change = entry.get("change")
    if change == "edited":
        return (f"* {clean(str(entry.get('sender', '?')))} edited a message in {label}:"
                f" {clean(str(entry.get('content') or ''))}")
    if change == "deleted":
        return f"* a message in {label} was deleted"
    if isinstance(entry.get("event"), dict):
        words = events.event_words(entry["event"], me, entry.get("content"))
        return events.event_line(when, label, words, note)
    content = "" if entry.get("deleted") else str(entry.get("content") or "")
    if entry.get("deleted"):
        note = f"deleted, {note}" if note else "deleted"
    if mentions_me(entry, me):
        note = f"{MENTION_NOTE}, {note}" if note else MENTION_NOTE
        return strong(message_line(when, label, str(entry.get("sender", "?")), content, note))
    return message_line(when, label, str(entry.get("sender", "?")), content, note)


def sync_summary(shown: int, already: int) -> str:
    """``* in sync: 5 new`` (and how many of them were already on the screen)."""
    news = f"{shown} new" if shown else "nothing new"
    extra = f" ({already} more already shown)" if already else ""
    return f"* in sync: {news}{extra}"
