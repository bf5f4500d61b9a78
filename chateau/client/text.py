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


# Marks around text to set apart: a search's matched words (EMPHASIS) and a
# line that mentions you (STRONG). They are control characters, which clean()
# never lets through from the server, so only this client's own words carry
# them; render() turns them into the terminal's bold/reverse, or into
# ``*word*`` (and nothing, for STRONG) on plain output.
EMPHASIS = ("\x02", "\x03")
STRONG = ("\x0e", "\x0f")
_STYLED = {"\x02": "\x1b[1;7m", "\x03": "\x1b[22;27m", "\x0e": "\x1b[1m", "\x0f": "\x1b[22m"}
_PLAIN = {"\x02": "*", "\x03": "*", "\x0e": "", "\x0f": ""}


def marked(text: str, spans: Any) -> str:
    """*text* cleaned, with EMPHASIS marks around the ``[start, end]`` code-point spans.

    Spans that overlap, run backwards or fall outside the text are left out,
    so a server's odd offsets never garble the line.
    """
    pieces, position = [], 0
    good = sorted(
        (start, end) for start, end in (
            span for span in (spans if isinstance(spans, list) else [])
            if isinstance(span, list) and len(span) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) for n in span)
        ) if 0 <= start < end <= len(text)
    )
    for start, end in good:
        if start < position:
            continue
        pieces += [clean(text[position:start]), EMPHASIS[0], clean(text[start:end]), EMPHASIS[1]]
        position = end
    pieces.append(clean(text[position:]))
    return "".join(pieces)


def strong(text: str) -> str:
    return f"{STRONG[0]}{text}{STRONG[1]}"


def render(text: str, styled: bool) -> str:
    """The marks of marked()/strong() as the terminal shows them (styled) or as plain text."""
    table = _STYLED if styled else _PLAIN
    if not any(mark in text for mark in table):
        return text
    return "".join(table.get(char, char) for char in text)
