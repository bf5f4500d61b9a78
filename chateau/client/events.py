"""Words for what happens to groups and the server, as the chat session shows it.

A group's system events (``GroupEventRecv``, and history entries with an
``event`` field), being removed from a group (``GroupRemovedRecv``), server
announcements (``AnnouncementRecv``) and messages hidden because their sender
is blocked. The words are made here from the fields, not taken from the
server's ``content``, so that the person reading is "you" ("bob made you
admin") and times are local; the server's words are the fallback for an
event this client does not know.
"""

from __future__ import annotations

from typing import Any, Callable

from chateau.client.text import clean, format_time

# event -> its words; {user} and {by} are names, or "you".
EVENT_WORDS = {
    "added": "{by} added {user}",
    "removed": "{by} removed {user}",
    "banned": "{by} banned {user}",
    "unbanned": "{by} unbanned {user}",
    "left": "{user} left",
    "joined": "{user} joined",
    "role": "{by} made {user} {role}",
    "muted": "{by} muted {user} until {until}",
    "unmuted": "{by} unmuted {user}",
    "renamed": "{by} renamed the group from {old_name} to {new_name}",
    "topic": "{by} set the topic: {topic}",
    "settings": "{by} changed the settings: {settings}",
}

Label = Callable[[str], str]


def settings_words(settings: Any) -> str:
    """``join open, visibility public``: a group's settings (or some of them) in a line.

    A null value (``retention_days``: the server's) reads "default".
    """
    if not isinstance(settings, dict) or not settings:
        return "nothing"
    return ", ".join(
        f"{clean(str(key))} {'default' if value is None else clean(str(value))}"
        for key, value in settings.items()
    )


def event_words(event: dict[str, Any], me: str, fallback: Any = None) -> str:
    """One event in words, from its fields: "bob added carol", "you left".

    *fallback* is the server's own words (a history entry's ``content``),
    used for an event this client does not know.
    """
    kind = str(event.get("event", ""))
    fields = {key: clean(str(value)) for key, value in event.items()}
    for who in ("user", "by"):
        name = str(event.get(who, "?"))
        fields[who] = "you" if name == me else clean(name)
    fields["until"] = format_time(event.get("until"))
    fields["settings"] = settings_words(event.get("settings"))
    template = EVENT_WORDS.get(kind)
    if kind == "topic" and not event.get("topic"):
        template = "{by} cleared the topic"
    if template is None:
        if isinstance(fallback, str) and fallback:
            return clean(fallback)
        template = "{by}: " + clean(kind) + " {user}"
    try:
        words = template.format_map(fields)
    except (KeyError, ValueError):
        words = f"{fields['by']}: {clean(kind)} {fields['user']}"
    reason = event.get("reason")
    return f"{words}: {clean(str(reason))}" if reason else words


def event_line(when: str, label: str, words: str, note: str = "") -> str:
    """A system line among a chat's messages: ``14:02 [#club] * bob added carol``."""
    suffix = f"  ({note})" if note else ""
    return f"{when} [{label}] * {words}{suffix}"


def group_event_line(frame: dict[str, Any], me: str, label: Label) -> str:
    """A ``GroupEventRecv`` push as a system line."""
    note = "while you were offline" if frame.get("offline") else ""
    return event_line(
        format_time(frame.get("timestamp")), label(str(frame.get("chatname"))),
        event_words(frame, me), note,
    )


def removed_line(frame: dict[str, Any], label: Label) -> str:
    """``GroupRemovedRecv``: "* you were removed from #club by bob: reason"."""
    how = "banned" if frame.get("banned") else "removed"
    line = (f"* you were {how} from {label(str(frame.get('chatname')))}"
            f" by {clean(str(frame.get('by', 'someone')))}")
    reason = frame.get("reason")
    return f"{line}: {clean(str(reason))}" if reason else line


def announcement_line(frame: dict[str, Any]) -> str:
    """``AnnouncementRecv``, set apart from chat: "!! announcement from admin: ..."."""
    body = clean(str(frame.get("content", ""))).replace("\n", "\n   ")
    notes = [format_time(frame.get("timestamp"))]
    if frame.get("offline"):
        notes.append("while you were offline")
    return (f"!! announcement from {clean(str(frame.get('by', 'the server')))}: {body}"
            f"  ({', '.join(notes)})")


def hidden_line(when: str, label: str) -> str:
    """A history entry withheld because its sender is blocked (no sender, no content)."""
    return f"{when} [{label}] (a message from someone you blocked, hidden)"
