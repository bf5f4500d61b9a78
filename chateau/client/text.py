"""Words for people: text made safe for a terminal, times, and typed arguments.

Shared by the chat session (session.py), the command table (commands.py) and
the words for system events (events.py), so every line the client prints is
cleaned the same way.
"""

from __future__ import annotations

import shlex
import unicodedata
from datetime import date, datetime
from typing import Any

# Unicode controls that could rewrite the terminal or reorder what is shown.
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean(text: str) -> str:
    """*text* made safe for a terminal: control characters shown, not obeyed.

    Other people choose message contents and names, and an escape sequence
    in them must not move the cursor, retitle the window or hide text.
    """
    out = []
    for char in text:
        if char == "\n":
            out.append(char)
        elif char == "\t":
            out.append("    ")
        elif unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS:
            code = ord(char)
            out.append(f"^{chr(code + 64)}" if code < 32 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def format_time(timestamp: Any, today: date | None = None) -> str:
    """``HH:MM`` in local time, with the date when it is not today."""
    if not isinstance(timestamp, str):
        return "--:--"
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return clean(timestamp)
    if moment.date() == (today or datetime.now().astimezone().date()):
        return moment.strftime("%H:%M")
    return moment.strftime("%Y-%m-%d %H:%M")


def message_line(when: str, label: str, sender: str, content: str, note: str = "") -> str:
    """One chat message; continuation lines are indented under it."""
    body = clean(content).replace("\n", "\n    ")
    suffix = f"  ({note})" if note else ""
    return f"{when} [{clean(label)}] {clean(sender)}: {body}{suffix}"


def split_name(rest: str) -> tuple[str, str]:
    """The first word of *rest* (quotes allowed, for names with spaces) and the rest."""
    rest = rest.strip()
    if rest[:1] in ("'", '"'):
        quote = rest[0]
        end = rest.find(quote, 1)
        if end > 0:
            return rest[1:end], rest[end + 1:].strip()
    name, _, remainder = rest.partition(" ")
    return name, remainder.strip()


def split_words(rest: str) -> list[str]:
    """Words with shell-style quoting; unbalanced quotes fall back to spaces."""
    try:
        return shlex.split(rest)
    except ValueError:
        return rest.split()


def quoted(name: Any) -> str:
    """A name as it is typed: in quotes when it has a space."""
    text = clean(str(name))
    return f'"{text}"' if " " in text else text
