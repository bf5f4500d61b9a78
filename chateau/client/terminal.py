"""Terminal front ends for :class:`~chateau.client.session.ChatSession`.

:class:`TerminalUI` puts a terminal into raw mode and edits the input line
itself (:class:`LineEditor`), so that a message arriving while someone types
is printed above the line being typed, which is then drawn again intact.
:class:`PlainUI` is for input that is not a terminal (a pipe, a file): it
reads lines and prints lines.

Both read their input through the reactor or a thread and never block it.
"""

from __future__ import annotations

import codecs
import os
import select
import sys
import termios
import threading
import unicodedata
from typing import Any, Callable, Iterator

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

# Line-editing events returned by LineEditor.feed.
LINE = "line"
EOF = "eof"
INTERRUPT = "interrupt"
CLEAR = "clear"

HISTORY_SIZE = 500


def char_width(char: str) -> int:
    """Columns *char* takes on a terminal: 0 for combining marks, 2 for wide ones."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def text_width(text: str) -> int:
    return sum(char_width(char) for char in text)


class LineEditor:
    """The line being typed, edited key by key; knows nothing of terminals.

    It understands the usual keys: arrows, Home/End, Delete, Backspace,
    Ctrl-A/E/B/F/K/U/W/P/N/L, Alt-B/F, and Up/Down for earlier lines.
    """

    def __init__(self) -> None:
        self.chars: list[str] = []
        self.cursor = 0
        self.history: list[str] = []
        self._history_pos: int | None = None
        self._draft: list[str] = []
        self._escape: str | None = None
        self._after_cr = False

    @property
    def text(self) -> str:
        return "".join(self.chars)

    def feed(self, data: str) -> list[tuple[str, str]]:
        """Apply typed characters; the events (a finished line, EOF...) in order."""
        events: list[tuple[str, str]] = []
        for char in data:
            event = self._key(char)
            if event is not None:
                events.append(event)
        return events

    # -- keys ---------------------------------------------------------------

    def _key(self, char: str) -> tuple[str, str] | None:
        if self._escape is not None:
            return self._escape_key(char)
        after_cr, self._after_cr = self._after_cr, char == "\r"
        if char == "\n" and after_cr:
            return None  # the second half of a CR LF pair
        if char in ("\r", "\n"):
            return self._submit()
        if char == "\x1b":
            self._escape = ""
            return None
        if char in ("\x7f", "\x08"):
            self._backspace()
        elif char == "\x01":
            self.cursor = 0
        elif char == "\x05":
            self.cursor = len(self.chars)
        elif char == "\x02":
            self._move(-1)
        elif char == "\x06":
            self._move(1)
        elif char == "\x04":
            if not self.chars:
                return (EOF, "")
            self._delete()
        elif char == "\x03":
            return (INTERRUPT, "")
        elif char == "\x0b":
            del self.chars[self.cursor:]
        elif char == "\x15":
            del self.chars[:self.cursor]
            self.cursor = 0
        elif char == "\x17":
            self._delete_word_back()
        elif char == "\x10":
            self._history_step(-1)
        elif char == "\x0e":
            self._history_step(1)
        elif char == "\x0c":
            return (CLEAR, "")
        elif char == "\t":
            self._insert(" ")
        elif unicodedata.category(char) != "Cc":
            self._insert(char)
        return None

    def _escape_key(self, char: str) -> tuple[str, str] | None:
        sequence = self._escape + char
        if sequence == "\x1b":
            self._escape = ""  # ESC ESC: start again
            return None
        if sequence in ("[", "O"):
            self._escape = sequence
            return None
        if sequence[0] == "[" and len(sequence) > 1:
            if not "\x40" <= char <= "\x7e" or (char == "[" and len(sequence) == 2):
                self._escape = sequence  # parameters still coming
                return None
            self._escape = None
            self._csi(sequence[1:-1], char)
            return None
        self._escape = None
        if sequence[0] == "O":
            self._csi("", char)
        elif char in ("b", "B"):
            self._word_left()
        elif char in ("f", "F"):
            self._word_right()
        elif char in ("\x7f", "\x08"):
            self._delete_word_back()
        return None

    def _csi(self, params: str, final: str) -> None:
        ctrl = params.endswith(";5") or params.endswith(";3")
        if final == "A":
            self._history_step(-1)
        elif final == "B":
            self._history_step(1)
        elif final == "C":
            self._word_right() if ctrl else self._move(1)
        elif final == "D":
            self._word_left() if ctrl else self._move(-1)
        elif final == "H":
            self.cursor = 0
        elif final == "F":
            self.cursor = len(self.chars)
        elif final == "~":
            key = params.split(";")[0]
            if key in ("1", "7"):
                self.cursor = 0
            elif key in ("4", "8"):
                self.cursor = len(self.chars)
            elif key == "3":
                self._delete()

    # -- edits --------------------------------------------------------------

    def _submit(self) -> tuple[str, str]:
        line = self.text
        if line.strip() and (not self.history or self.history[-1] != line):
            self.history.append(line)
            del self.history[:-HISTORY_SIZE]
        self.chars, self.cursor = [], 0
        self._history_pos = None
        return (LINE, line)

    def _insert(self, char: str) -> None:
        self.chars.insert(self.cursor, char)
        self.cursor += 1

    def _backspace(self) -> None:
        if self.cursor > 0:
            self.cursor -= 1
            del self.chars[self.cursor]

    def _delete(self) -> None:
        if self.cursor < len(self.chars):
            del self.chars[self.cursor]

    def _move(self, step: int) -> None:
        self.cursor = max(0, min(len(self.chars), self.cursor + step))

    def _word_left(self) -> None:
        while self.cursor > 0 and self.chars[self.cursor - 1].isspace():
            self.cursor -= 1
        while self.cursor > 0 and not self.chars[self.cursor - 1].isspace():
            self.cursor -= 1

    def _word_right(self) -> None:
        end = len(self.chars)
        while self.cursor < end and self.chars[self.cursor].isspace():
            self.cursor += 1
        while self.cursor < end and not self.chars[self.cursor].isspace():
            self.cursor += 1

    def _delete_word_back(self) -> None:
        end = self.cursor
        self._word_left()
        del self.chars[self.cursor:end]

    def _history_step(self, step: int) -> None:
        if not self.history:
            return
        if self._history_pos is None:
            if step > 0:
                return
            self._draft = list(self.chars)
            position = len(self.history) - 1
        else:
            position = self._history_pos + step
        if position < 0:
            return
        if position >= len(self.history):
            self._history_pos = None
            self.chars = list(self._draft)
        else:
            self._history_pos = position
            self.chars = list(self.history[position])
        self.cursor = len(self.chars)


def fit_line(
    prompt: str, text: str, cursor: int, columns: int, scroll: int
) -> tuple[str, int, int]:
    """What of prompt + text fits in *columns*, keeping the cursor in view.

    Returns the visible string, the cursor's column in it, and the new
    scroll offset (the index of the first visible character of *text*).
    """
    room = max(columns - 1 - text_width(prompt), 8)
    if text_width(text) <= room:
        return prompt + text, text_width(prompt) + text_width(text[:cursor]), 0
    scroll = min(scroll, cursor)
    while text_width(text[scroll:cursor]) > room - 1:
        scroll += 1
    visible, width = [], 0
    for char in text[scroll:]:
        width += char_width(char)
        if width > room:
            break
        visible.append(char)
    return prompt + "".join(visible), text_width(prompt) + text_width(text[scroll:cursor]), scroll


def write_all(fd: int, data: bytes) -> None:
    """Write everything, even to a descriptor someone made non-blocking."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        except OSError:
            return  # the terminal went away; nothing more can be shown
        view = view[written:]


@implementer(IReadDescriptor)
class _InputReader:
    """Hands whatever arrives on a descriptor to *on_data*; *on_eof* at the end."""

    def __init__(self, fd: int, on_data: Callable[[bytes], None], on_eof: Callable[[], None]):
        self.fd = fd
        self.on_data = on_data
        self.on_eof = on_eof

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> Any:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return None
        except OSError:
            data = b""  # EIO: the terminal hung up
        if not data:
            self.on_eof()
            return ConnectionDone()
        self.on_data(data)
        return None

    def connectionLost(self, reason: Any) -> None:
        pass

    def logPrefix(self) -> str:
        return "stdin"


class TerminalUI:
    """A chat prompt on a terminal, with incoming lines printed above it.

    A person types here, so the session tells others when they type and
    marks what is shown as read (``interactive``), and shows marked text in
    bold (text.render).
    """

    interactive = True

    def __init__(self, reactor: Any, in_fd: int = 0, out_fd: int = 1) -> None:
        self.reactor = reactor
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.editor = LineEditor()
        self.prompt = "> "
        self.session: Any = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._saved_mode: list[Any] | None = None
        self._reader: _InputReader | None = None
        self._scroll = 0
        self._interrupted = False

    # -- UI interface -------------------------------------------------------

    def show(self, text: str) -> None:
        if self._saved_mode is None:
            write_all(self.out_fd, (text + "\n").encode("utf-8", "replace"))
            return
        lines = text.replace("\r", "").split("\n")
        self._write("\r\x1b[K" + "\r\n".join(lines) + "\r\n")
        self._redraw()

    def set_prompt(self, prompt: str) -> None:
        self.prompt = prompt
        if self._saved_mode is not None:
            self._redraw()

    # -- life ---------------------------------------------------------------

    def start(self, session: Any) -> None:
        """Take over the terminal: raw input, and the prompt drawn."""
        self.session = session
        self._saved_mode = termios.tcgetattr(self.in_fd)
        mode = termios.tcgetattr(self.in_fd)
        mode[0] &= ~(termios.ICRNL | termios.INLCR | termios.IXON | termios.ISTRIP | termios.BRKINT)
        mode[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(self.in_fd, termios.TCSADRAIN, mode)
        self._reader = _InputReader(self.in_fd, self._data, self._eof)
        self.reactor.addReader(self._reader)
        self._redraw()

    def stop(self) -> None:
        """Give the terminal back as it was; safe to call twice."""
        if self._reader is not None:
            self.reactor.removeReader(self._reader)
            self._reader = None
        if self._saved_mode is not None:
            self._write("\r\x1b[K")
            termios.tcsetattr(self.in_fd, termios.TCSADRAIN, self._saved_mode)
            self._saved_mode = None

    # -- input --------------------------------------------------------------

    def _data(self, data: bytes) -> None:
        for kind, line in self.editor.feed(self._decoder.decode(data)):
            if kind == LINE:
                self._redraw()
                self.session.handle_line(line)
            elif kind == INTERRUPT and self._interrupted:
                self.session.abort()  # a second Ctrl-C: stop waiting for the server
            elif kind in (EOF, INTERRUPT):
                self._interrupted = True
                self.session.handle_line("/quit")
            elif kind == CLEAR:
                self._write("\x1b[H\x1b[2J")
        self.session.line_edited(self.editor.text)
        self._redraw()

    def _eof(self) -> None:
        self._reader = None
        self.session.handle_line("/quit")

    # -- output -------------------------------------------------------------

    def _columns(self) -> int:
        try:
            return os.get_terminal_size(self.out_fd).columns
        except OSError:
            return 80

    def _redraw(self) -> None:
        visible, column, self._scroll = fit_line(
            self.prompt, self.editor.text, self.editor.cursor, self._columns(), self._scroll
        )
        move = f"\x1b[{column}C" if column else ""
        self._write(f"\r{visible}\x1b[K\r{move}")

    def _write(self, text: str) -> None:
        write_all(self.out_fd, text.encode("utf-8", "replace"))


class PlainUI:
    """Lines in, lines out: for input from a pipe or a file, and dumb terminals.

    Not ``interactive``: a script's lines send no typing and mark nothing read.
    """

    interactive = False

    def __init__(self, reactor: Any, stream: Any = None, out: Any = None,
                 in_fd: int = 0) -> None:
        self.reactor = reactor
        self.stream = stream  # None: read the descriptor *in_fd* itself
        self.in_fd = in_fd
        self.out = out if out is not None else sys.stdout
        self.session: Any = None

    def show(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def set_prompt(self, prompt: str) -> None:
        pass  # nobody is typing, so there is no prompt to show

    def start(self, session: Any) -> None:
        self.session = session
        # A thread, because the reactor cannot poll regular files.
        threading.Thread(target=self._read, name="chateau-client-stdin", daemon=True).start()

    def stop(self) -> None:
        pass

    def _read(self) -> None:
        for line in self.lines():
            self.reactor.callFromThread(self.session.handle_line, line)
        self.reactor.callFromThread(self.session.handle_line, "/quit")

    def lines(self) -> Iterator[str]:
        """The input's lines, as they come.

        Standard input is read with ``os.read``, not through ``sys.stdin``:
        when the session ends while the input is still open (the server
        signed the user out, say), this thread is still waiting in a read,
        and a buffered reader's lock held there would abort the
        interpreter's exit.
        """
        if self.stream is not None:
            for line in self.stream:
                yield line.decode("utf-8", "replace") if isinstance(line, bytes) else line
            return
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        while True:
            try:
                data = os.read(self.in_fd, 65536)
            except OSError:
                data = b""
            if not data:
                break
            pending += decoder.decode(data)
            *complete, pending = pending.split("\n")
            yield from complete
        pending += decoder.decode(b"", final=True)
        if pending:
            yield pending
