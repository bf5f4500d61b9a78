"""The table commands of ``chateau-client``: typed line -> request -> words.

Catching up (/unread, /search), governance, safety, server admins' and your
account's commands.

Each command is one row of :data:`COMMANDS`: how it is typed, a parser from
the typed arguments to the request(s) to send (or a :class:`Usage` error
saying what is wrong), what a failure is called, and the words for the
reply. The chat session (session.py) sends the requests and shows the
lines, the same way on a terminal and with piped input; ``/help`` and the
docs are checked against this one table.

Nothing here touches the network: every function is pure, so every
command's parsing and words are tested without a server.

One concern, the table of typed commands, hence its length.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any, Callable

from chateau.client.daily import (
    CONVERSATIONS_PAGE,
    SEARCH_PAGE,
    next_conversations,
    show_search,
    show_unread,
)
from chateau.client.replies import (
    report_target,
    show_add,
    show_announce,
    show_block,
    show_blocked,
    show_groups,
    show_info,
    show_invite,
    show_join,
    show_mute,
    show_password,
    show_profile,
    show_removal,
    show_report,
    show_reports,
    show_resolve,
    show_revoke,
    show_role,
    show_sessions,
    show_settings,
    show_unban,
    show_update,
    show_userban,
    show_userunban,
)
from chateau.client.text import clean, quoted, split_name

Request = dict[str, Any]
Label = Callable[[str], str]

ROLES = ("owner", "admin", "member")
# GroupUpdateRequest's settings and the values each takes.
GROUP_SETTINGS = {
    "join": ("invite", "open"),
    "visibility": ("private", "public"),
    "who_can_add": ("admins", "members"),
    "who_can_send": ("everyone", "admins"),
}
# The group's own retention (days, 0 forever), or "default" for the server's.
RETENTION = "retention_days"
MAX_RETENTION_DAYS = 36500
# SettingsRequest's fields: their values, or None for yes/no ones.
USER_SETTINGS: dict[str, tuple[str, ...] | None] = {
    "direct_messages": ("everyone", "contacts"),
    "presence": ("everyone", "contacts", "nobody"),
    "random_chat": None,
    "read_receipts": None,
}
BOOLEANS = {"on": True, "yes": True, "true": True, "off": False, "no": False, "false": False}
REPORT_TARGETS = {"user": "username", "message": "message_id", "group": "chatname"}
REPORT_LISTS = ("open", "closed", "all")
RESOLVE_ACTIONS = ("dismiss", "warn", "delete_message", "ban_user")
MAX_MUTE_MINUTES = 525600
# /help: where the summaries start, and the width they keep to.
HELP_COLUMN = 28
HELP_WIDTH = 80


class Usage(Exception):
    """The arguments do not fit the command; the text (if any) says what is wrong."""


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    # The typed arguments -> the requests to try in order (the next one only
    # when the server answers 400 or 404 to the one before).
    build: Callable[[str], list[Request]]
    # The request -> "could not ...", to introduce the server's refusal.
    failed: Callable[[Request], str]
    # The request and its reply -> the lines to show.
    show: Callable[[Request, dict[str, Any], Label], list[str]]
    section: str = "groups"
    # A paged reply: the request for the next page (None: the last page was
    # had), and the reply's list that the pages add up to before show().
    next_page: Callable[[Request, dict[str, Any]], Request | None] | None = None
    collect: str = ""


# -- typed arguments ------------------------------------------------------------


def take(rest: str, count: int) -> tuple[list[str], str]:
    """The first *count* words of *rest* (quotes allowed) and what follows them."""
    words = []
    for _ in range(count):
        word, rest = split_name(rest)
        if not word:
            raise Usage()
        words.append(word)
    return words, rest


def all_words(rest: str) -> list[str]:
    """Every word of *rest*, quotes allowed for names with spaces."""
    words = []
    while rest.strip():
        word, rest = split_name(rest)
        words.append(word)
    return words


def text_argument(text: str) -> str:
    """Free text as typed; ``""`` alone stands for the empty text."""
    return "" if text in ('""', "''") else text


def whole_number(text: str, what: str, low: int, high: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        limit = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise Usage(f"{what} must be a whole number {limit}, not {clean(text)!r}")
    return value


def choice(text: str, what: str, choices: tuple[str, ...]) -> str:
    value = text.lower()
    if value not in choices:
        raise Usage(f"{what} must be {' or '.join(choices)}, not {clean(text)!r}")
    return value


# -- catching up ------------------------------------------------------------------


def build_unread(rest: str) -> list[Request]:
    if rest.strip():
        raise Usage()
    return [{"type": "ConversationsRequest", "limit": CONVERSATIONS_PAGE}]


def build_search(rest: str) -> list[Request]:
    """``[--before ID] [#GROUP|@USER] QUERY``; the query is sent as typed (its quotes too)."""
    request: Request = {"type": "SearchRequest"}
    rest = rest.strip()
    if split_name(rest)[0] == "--before":
        (_, before), rest = take(rest, 2)
        request["before"] = whole_number(before, "--before", 1)
    if rest.lstrip("'\"")[:1] in ("#", "@"):
        name, after = split_name(rest)
        if len(name) > 1:
            request["chatname" if name[0] == "#" else "user"] = name[1:]
            rest = after
    if not rest.strip():
        raise Usage("give the words to look for")
    request["query"] = rest.strip()
    request["limit"] = SEARCH_PAGE
    return [request]


# -- group governance -------------------------------------------------------------


def build_info(rest: str) -> list[Request]:
    (group,), extra = take(rest, 1)
    if extra:
        raise Usage()
    return [{"type": "GroupInfoRequest", "chatname": group}]


def build_role(rest: str) -> list[Request]:
    (group, user, role), extra = take(rest, 3)
    if extra:
        raise Usage()
    return [{"type": "GroupRoleRequest", "chatname": group, "user": user,
             "role": choice(role, "ROLE", ROLES)}]


def build_add(rest: str) -> list[Request]:
    words = all_words(rest)
    if len(words) < 2:
        raise Usage()
    return [{"type": "GroupAddRequest", "chatname": words[0], "users": words[1:]}]


def removal(rest: str, ban: bool) -> list[Request]:
    (group, user), reason = take(rest, 2)
    request: Request = {"type": "GroupRemoveRequest", "chatname": group, "user": user, "ban": ban}
    if reason:
        request["reason"] = reason
    return [request]


def build_kick(rest: str) -> list[Request]:
    return removal(rest, ban=False)


def build_ban(rest: str) -> list[Request]:
    return removal(rest, ban=True)


def build_unban(rest: str) -> list[Request]:
    (group, user), extra = take(rest, 2)
    if extra:
        raise Usage()
    return [{"type": "GroupUnbanRequest", "chatname": group, "user": user}]


def build_mute(rest: str) -> list[Request]:
    (group, user, minutes), extra = take(rest, 3)
    if extra:
        raise Usage()
    return [{"type": "GroupMuteRequest", "chatname": group, "user": user,
             "minutes": whole_number(minutes, "MINUTES", 0, MAX_MUTE_MINUTES)}]


def build_unmute(rest: str) -> list[Request]:
    (group, user), extra = take(rest, 2)
    if extra:
        raise Usage()
    return [{"type": "GroupMuteRequest", "chatname": group, "user": user, "minutes": 0}]


def build_topic(rest: str) -> list[Request]:
    (group,), topic = take(rest, 1)
    if not topic:
        raise Usage('give the topic ("" clears it)')
    return [{"type": "GroupUpdateRequest", "chatname": group, "topic": text_argument(topic)}]


def build_rename(rest: str) -> list[Request]:
    (group, name), extra = take(rest, 2)
    if extra:
        raise Usage("put a new name with spaces in quotes")
    return [{"type": "GroupUpdateRequest", "chatname": group, "name": name}]


def build_set(rest: str) -> list[Request]:
    words = all_words(rest)
    if len(words) < 3 or len(words) % 2 == 0:
        raise Usage()
    request: Request = {"type": "GroupUpdateRequest", "chatname": words[0]}
    for key, value in zip(words[1::2], words[2::2]):
        key = key.lower()
        if key == RETENTION:
            request[key] = (None if value.lower() == "default"
                            else whole_number(value, key, 0, MAX_RETENTION_DAYS))
            continue
        if key not in GROUP_SETTINGS:
            raise Usage(f"KEY must be one of {', '.join((*GROUP_SETTINGS, RETENTION))}, "
                        f"not {clean(key)!r}")
        request[key] = choice(value, key, GROUP_SETTINGS[key])
    return [request]


def build_invite(rest: str) -> list[Request]:
    words = all_words(rest)
    if not words or words[0].startswith("--"):
        raise Usage()
    request: Request = {"type": "GroupInviteRequest", "chatname": words[0]}
    options = words[1:]
    if len(options) % 2:
        raise Usage()
    for option, value in zip(options[::2], options[1::2]):
        if option == "--uses":
            request["max_uses"] = whole_number(value, "--uses", 1)
        elif option == "--hours":
            request["hours"] = whole_number(value, "--hours", 1)
        else:
            raise Usage(f"unknown option {clean(option)!r}")
    return [request]


def build_join(rest: str) -> list[Request]:
    (name,), extra = take(rest, 1)
    if extra:
        raise Usage("put a group name with spaces in quotes")
    if name.startswith("#") and len(name) > 1:
        return [{"type": "GroupJoinRequest", "chatname": name[1:]}]
    # A public group by its name first; else the word is an invite code.
    return [{"type": "GroupJoinRequest", "chatname": name},
            {"type": "GroupJoinRequest", "code": name}]


def build_groups(rest: str) -> list[Request]:
    query = rest.strip()
    request: Request = {"type": "GroupDirectoryRequest"}
    if query:
        request["query"] = text_argument(query)
    return [request]


# -- personal safety --------------------------------------------------------------


def one_user(rest: str, kind: str) -> list[Request]:
    (user,), extra = take(rest, 1)
    if extra:
        raise Usage()
    return [{"type": kind, "username": user}]


def build_block(rest: str) -> list[Request]:
    return one_user(rest, "BlockRequest")


def build_unblock(rest: str) -> list[Request]:
    return one_user(rest, "UnblockRequest")


def build_blocked(rest: str) -> list[Request]:
    if rest.strip():
        raise Usage()
    return [{"type": "BlockListRequest"}]


def build_settings(rest: str) -> list[Request]:
    words = all_words(rest)
    if len(words) % 2:
        raise Usage()
    request: Request = {"type": "SettingsRequest"}
    for key, value in zip(words[::2], words[1::2]):
        key = key.lower()
        if key not in USER_SETTINGS:
            raise Usage(f"KEY must be one of {', '.join(USER_SETTINGS)}, not {clean(key)!r}")
        choices = USER_SETTINGS[key]
        if choices is None:
            request[key] = BOOLEANS[choice(value, key, ("on", "off", "yes", "no", "true",
                                                        "false"))]
        else:
            request[key] = choice(value, key, choices)
    return [request]


def build_report(rest: str) -> list[Request]:
    (kind, target), reason = take(rest, 2)
    field = REPORT_TARGETS.get(kind.lower())
    if field is None:
        raise Usage(f"say what you report: {' or '.join(REPORT_TARGETS)}, not {clean(kind)!r}")
    if not reason:
        raise Usage("give a reason")
    value: Any = whole_number(target, "the message ID", 1) if field == "message_id" else target
    return [{"type": "ReportRequest", field: value, "reason": reason}]


# -- server admins ------------------------------------------------------------------


def build_announce(rest: str) -> list[Request]:
    if not rest.strip():
        raise Usage()
    return [{"type": "AnnounceRequest", "content": rest}]


def build_reports(rest: str) -> list[Request]:
    words = all_words(rest)
    request: Request = {"type": "ReportListRequest", "status": "open"}
    if words and not words[0].startswith("--"):
        request["status"] = choice(words.pop(0), "the list", REPORT_LISTS)
    if words[:1] == ["--before"] and len(words) == 2:
        request["before"] = whole_number(words[1], "--before", 1)
    elif words:
        raise Usage()
    return [request]


def build_resolve(rest: str) -> list[Request]:
    (report_id, action), note = take(rest, 2)
    if not note:
        raise Usage("give a NOTE for the record")
    return [{"type": "ReportResolveRequest",
             "report_id": whole_number(report_id, "ID", 1),
             "action": choice(action, "ACTION", RESOLVE_ACTIONS), "note": note}]


def build_userunban(rest: str) -> list[Request]:
    return one_user(rest, "UserUnbanRequest")


def build_userban(rest: str) -> list[Request]:
    (user,), reason = take(rest, 1)
    request: Request = {"type": "UserBanRequest", "username": user}
    first, after = split_name(reason)
    if first.isdigit():
        request["hours"] = whole_number(first, "HOURS", 1)
        reason = after
    if not reason:
        raise Usage("give a REASON (the user is told it when signing in)")
    request["reason"] = reason
    return [request]


# -- your account ----------------------------------------------------------------------

PROFILE_FIELDS = {"name": "display_name", "status": "status_text"}


def build_password(rest: str) -> list[Request]:
    words = all_words(rest)
    if len(words) != 2:
        raise Usage()
    return [{"type": "PasswordChangeRequest", "old_password": words[0],
             "new_password": words[1]}]


def build_sessions(rest: str) -> list[Request]:
    if rest.strip():
        raise Usage()
    return [{"type": "SessionListRequest"}]


def build_revoke(rest: str) -> list[Request]:
    words = all_words(rest)
    if len(words) != 1:
        raise Usage()
    return [{"type": "SessionRevokeRequest", "id": words[0]}]


def build_profile(rest: str) -> list[Request]:
    if not rest.strip():
        return [{"type": "ProfileRequest"}]
    (which,), text = take(rest, 1)
    field = PROFILE_FIELDS.get(which.lower())
    if field is None:
        raise Usage(f"say what you set: name or status, not {clean(which)!r}")
    return [{"type": "ProfileRequest", field: text_argument(text)}]


COMMANDS: tuple[Command, ...] = (
    Command("unread", "/unread", "the conversations with unread messages: how many, how many"
            " mention you, and the last message",
            build_unread, lambda r: "no conversation list", show_unread, section="reading",
            next_page=next_conversations, collect="conversations"),
    Command("search", "/search [#GROUP|@USER] QUERY",
            'messages with all these words, newest first ("a phrase", -word, or);'
            " --before ID for older ones",
            build_search, lambda r: "no search", show_search, section="reading"),
    Command("info", "/info GROUP", "the group's topic, settings and members with their roles",
            build_info, lambda r: f"no information on {quoted(r['chatname'])}", show_info),
    Command("role", "/role GROUP USER ROLE", "make USER owner, admin or member (owners only)",
            build_role, lambda r: "role not changed", show_role),
    Command("add", "/add GROUP USER...", "add people to the group",
            build_add, lambda r: f"nobody added to {quoted(r['chatname'])}", show_add),
    Command("kick", "/kick GROUP USER [reason]", "remove USER from the group",
            build_kick, lambda r: f"could not remove {clean(r['user'])}", show_removal),
    Command("ban", "/ban GROUP USER [reason]", "remove USER and keep them out until unbanned",
            build_ban, lambda r: f"could not ban {clean(r['user'])}", show_removal),
    Command("unban", "/unban GROUP USER", "let USER back into the group",
            build_unban, lambda r: f"could not unban {clean(r['user'])}", show_unban),
    Command("mute", "/mute GROUP USER MINUTES", "USER reads but cannot send for MINUTES (0 lifts)",
            build_mute, lambda r: f"could not mute {clean(r['user'])}", show_mute),
    Command("unmute", "/unmute GROUP USER", "lift USER's mute (the same as /mute ... 0)",
            build_unmute, lambda r: f"could not unmute {clean(r['user'])}", show_mute),
    Command("topic", "/topic GROUP TEXT", 'set the group\'s topic ("" clears it)',
            build_topic, lambda r: "topic not set", show_update),
    Command("rename", "/rename GROUP NEWNAME", "rename the group (history and members stay)",
            build_rename, lambda r: f"{quoted(r['chatname'])} not renamed", show_update),
    Command("set", "/set GROUP KEY VALUE...",
            "change settings: join invite|open, visibility private|public,"
            " who_can_add admins|members, who_can_send everyone|admins,"
            " retention_days DAYS|default (0 keeps forever)",
            build_set, lambda r: "settings not changed", show_update),
    Command("invite", "/invite GROUP [--uses N] [--hours H]",
            "an invite code (unlimited uses and 168 hours unless told)",
            build_invite, lambda r: "no invite code", show_invite),
    Command("join", "/join CODE|GROUP", "join with an invite code, or a public open group",
            build_join, lambda r: f"could not join {quoted(r.get('chatname') or r.get('code'))}",
            show_join),
    Command("groups", "/groups [QUERY]", "the public groups, or those whose name or topic matches",
            build_groups, lambda r: "no group directory", show_groups),
    Command("block", "/block USER", "never see anything from USER again",
            build_block, lambda r: f"could not block {clean(r['username'])}", show_block,
            section="safety"),
    Command("unblock", "/unblock USER", "see USER again",
            build_unblock, lambda r: f"could not unblock {clean(r['username'])}", show_block,
            section="safety"),
    Command("blocked", "/blocked", "the people you have blocked",
            build_blocked, lambda r: "no block list", show_blocked, section="safety"),
    Command("settings", "/settings [KEY VALUE...]",
            "show or change: direct_messages everyone|contacts, presence everyone|contacts|"
            "nobody, random_chat on|off, read_receipts on|off",
            build_settings, lambda r: "settings not changed", show_settings, section="safety"),
    Command("report", "/report user|message|group TARGET REASON",
            "report a person, a message (by ID) or a group to the server's moderators",
            build_report, lambda r: f"report on {report_target(r)} not sent", show_report,
            section="safety"),
    Command("password", "/password OLD NEW",
            "change your password (quote one with spaces); your other sessions are signed out",
            build_password, lambda r: "password not changed", show_password, section="account"),
    Command("sessions", "/sessions", "where you are signed in: each session's ID, client and"
            " address, newest used first",
            build_sessions, lambda r: "no session list", show_sessions, section="account"),
    Command("revoke", "/revoke ID", "sign the session ID (from /sessions) out",
            build_revoke, lambda r: f"session {clean(r['id'])} not signed out", show_revoke,
            section="account"),
    Command("profile", "/profile [name|status TEXT]",
            'show your profile, or set your display name or status ("" clears it)',
            build_profile, lambda r: "profile not changed", show_profile, section="account"),
    Command("announce", "/announce TEXT", "tell everyone on the server, now or at their sign-in",
            build_announce, lambda r: "announcement not sent", show_announce, section="admin"),
    Command("reports", "/reports [open|closed|all] [--before ID]",
            "reports to moderate (open ones by default), newest first; --before ID for older ones",
            build_reports, lambda r: "no reports", show_reports, section="admin"),
    Command("resolve", "/resolve ID ACTION NOTE",
            "close a report: ACTION is dismiss, warn, delete_message or ban_user",
            build_resolve, lambda r: f"report {r['report_id']} not resolved", show_resolve,
            section="admin"),
    Command("userban", "/userban USER [HOURS] REASON",
            "ban USER from the server (until unbanned unless HOURS)",
            build_userban, lambda r: f"could not ban {clean(r['username'])}", show_userban,
            section="admin"),
    Command("userunban", "/userunban USER", "let USER sign in again",
            build_userunban, lambda r: f"could not unban {clean(r['username'])}", show_userunban,
            section="admin"),
)

SECTIONS = {
    "reading": "catching up (and /sync):",
    "groups": "running groups (admins and owners; /info, /join and /groups for everyone):",
    "safety": "your safety:",
    "account": "your account:",
    "admin": "server admins:",
}


def by_name() -> dict[str, Command]:
    return {command.name: command for command in COMMANDS}


def help_text() -> str:
    """The table's part of /help, section by section, within 80 columns."""
    lines = []
    for section, title in SECTIONS.items():
        lines.append(title)
        for command in COMMANDS:
            if command.section != section:
                continue
            summary = textwrap.wrap(command.summary, HELP_WIDTH - HELP_COLUMN)
            if len(command.usage) < HELP_COLUMN - 2:
                lines.append(f"  {command.usage:<{HELP_COLUMN - 2}}{summary[0]}")
                summary = summary[1:]
            else:
                lines.append(f"  {command.usage}")
            lines.extend(" " * HELP_COLUMN + part for part in summary)
    return "\n".join(lines)
