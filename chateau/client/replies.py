"""Words for the replies to ``chateau-client``'s governance commands.

One function per reply, from the request sent and the reply received to the
lines shown; the command table (commands.py) names which one each command
uses. Everything from the server is cleaned (text.py) before it is shown.
"""

from __future__ import annotations

from typing import Any, Callable

from chateau.client.events import settings_words
from chateau.client.text import clean, format_time, quoted

Request = dict[str, Any]
Label = Callable[[str], str]


def moment(timestamp: Any) -> str:
    """``at 14:02`` today, ``on 2024-01-02 14:02`` another day."""
    when = format_time(timestamp)
    return f"at {when}" if len(when) <= 5 else f"on {when}"


def show_info(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    chatname = str(reply.get("chatname", request["chatname"]))
    topic = reply.get("topic")
    lines = [f"--- {label(chatname)} ---",
             f"  topic: {clean(str(topic))}" if topic else "  no topic",
             f"  created by {clean(str(reply.get('creator', '?')))}"
             f" {moment(reply.get('created'))}",
             f"  settings: {settings_words(reply.get('settings'))}"]
    members = [m for m in reply.get("members", []) if isinstance(m, dict)]
    shown = []
    for member in members:
        notes = [clean(str(member.get("role", "member")))]
        notes.append("online" if member.get("online") else "offline")
        if member.get("muted"):
            notes.append(f"muted until {format_time(member.get('muted_until'))}")
        shown.append(f"{clean(str(member.get('username')))} ({', '.join(notes)})")
    lines.append(f"  members ({len(members)}): {', '.join(shown)}")
    bans = [b for b in reply.get("bans", []) or [] if isinstance(b, dict)]
    for ban in bans:
        reason = f": {clean(str(ban['reason']))}" if ban.get("reason") else ""
        lines.append(f"  banned: {clean(str(ban.get('username')))} by"
                     f" {clean(str(ban.get('by', '?')))} {moment(ban.get('at'))}{reason}")
    return lines


def show_add(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    where = label(str(reply.get("chatname", request["chatname"])))
    added = [clean(str(u)) for u in reply.get("added", [])]
    already = [clean(str(u)) for u in reply.get("already", [])]
    line = f"* added {', '.join(added)} to {where}" if added else f"* nobody new in {where}"
    if already:
        line += f" (already members: {', '.join(already)})"
    return [line]


def show_removal(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    how = "banned" if reply.get("banned", request.get("ban")) else "removed"
    user = clean(str(reply.get("user", request["user"])))
    return [f"* {how} {user} from {label(str(reply.get('chatname', request['chatname'])))}"]


def show_mute(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    where = label(str(reply.get("chatname", request["chatname"])))
    user = clean(str(reply.get("user", request["user"])))
    until = reply.get("muted_until")
    if until:
        return [f"* muted {user} in {where} until {format_time(until)}"]
    return [f"* {user} is not muted in {where}"]


def show_update(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    chatname = str(reply.get("chatname", request["chatname"]))
    lines = []
    if "name" in request:
        lines.append(f"* renamed {quoted(request['chatname'])} to {label(chatname)}")
    else:
        lines.append(f"* updated {label(chatname)}")
    topic = reply.get("topic")
    lines.append(f"  topic: {clean(str(topic))}" if topic else "  no topic")
    lines.append(f"  settings: {settings_words(reply.get('settings'))}")
    return lines


def show_invite(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    code = clean(str(reply.get("code")))
    uses = reply.get("max_uses")
    how = f"up to {uses} use{'s' if uses != 1 else ''}" if uses else "any number of uses"
    where = label(str(reply.get("chatname", request["chatname"])))
    return [f"* invite code for {where}: {code} ({how}, until {format_time(reply.get('expires'))})",
            f"  others join with: /join {code}"]


def show_join(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    chatname = str(reply.get("chatname"))
    if reply.get("already"):
        return [f"* you are already in {label(chatname)}"]
    return [f"* joined {label(chatname)}; /to {quoted(chatname)} to talk there"]


def show_groups(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    groups = [g for g in reply.get("groups", []) if isinstance(g, dict)]
    matching = f" matching {clean(request['query'])!r}" if request.get("query") else ""
    if not groups:
        return [f"* no public groups{matching}"]
    lines = [f"--- public groups{matching}: {len(groups)} ---"]
    for group in groups:
        members = group.get("members", 0)
        how = "open: /join" if group.get("join") == "open" else "by invitation"
        topic = f": {clean(str(group['topic']))}" if group.get("topic") else ""
        lines.append(f"  {quoted(group.get('chatname'))} ({members} member"
                     f"{'s' if members != 1 else ''}, {how}){topic}")
    return lines


def show_blocked(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    blocked = [b for b in reply.get("blocked", []) if isinstance(b, dict)]
    if not blocked:
        return ["* you have blocked nobody"]
    return ["* blocked: " + ", ".join(
        f"{clean(str(b.get('username')))} (since {format_time(b.get('since'))})" for b in blocked
    )]


def show_settings(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    shown = []
    for key, value in reply.items():
        if key not in ("type", "status", "msg_id"):
            words = ("on" if value else "off") if isinstance(value, bool) else clean(str(value))
            shown.append(f"{key} {words}")
    return [f"* settings: {', '.join(shown) or 'none'}"]


def report_target(request: Request) -> str:
    if "message_id" in request:
        return f"message {request['message_id']}"
    if "username" in request:
        return clean(str(request["username"]))
    return quoted(request.get("chatname"))


def _snapshot_words(snapshot: Any) -> list[str]:
    """A report's kept copy of what was reported, a line per message.

    The snapshot is ``{message: {...}, chat: {chatname, messages: [...]}}``
    (either part may be missing); a bare message or list is shown too.
    """
    if isinstance(snapshot, dict) and (isinstance(snapshot.get("message"), dict)
                                       or isinstance(snapshot.get("chat"), dict)):
        lines = []
        if isinstance(snapshot.get("message"), dict):
            lines.extend(_snapshot_words(snapshot["message"]))
        chat = snapshot.get("chat")
        if isinstance(chat, dict):
            history = [m for m in chat.get("messages", []) if isinstance(m, dict)]
            lines.append(f"      the last {len(history)} messages of"
                         f" {quoted(chat.get('chatname', '?'))}:")
            lines.extend("  " + line for line in _snapshot_words(history))
        return lines
    items = snapshot if isinstance(snapshot, list) else [snapshot] if snapshot else []
    lines = []
    for item in items:
        if isinstance(item, dict):
            sender = clean(str(item.get("sender", "?")))
            body = clean(str(item.get("content", ""))).replace("\n", " ")
            lines.append(f"      {format_time(item.get('timestamp'))} {sender}: {body}")
        else:
            lines.append(f"      {clean(str(item))}")
    return lines


def show_reports(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    reports = [r for r in reply.get("reports", []) if isinstance(r, dict)]
    which = request.get("status", "open")
    if not reports:
        return [f"* no {'' if which == 'all' else which + ' '}reports"]
    lines = [f"--- {'' if which == 'all' else which + ' '}reports: {len(reports)} ---"]
    for report in reports:
        targets = []
        if report.get("username"):
            targets.append(f"user {clean(str(report['username']))}")
        if report.get("message_id") is not None:
            targets.append(f"message {report['message_id']}")
        if report.get("chatname"):
            targets.append(f"in {quoted(report['chatname'])}")
        lines.append(
            f"  #{report.get('report_id')} {format_time(report.get('created'))}"
            f" {clean(str(report.get('reporter', '?')))} reported {' '.join(targets) or '?'}:"
            f" {clean(str(report.get('reason', '')))} [{clean(str(report.get('status', '?')))}]"
        )
        lines.extend(_snapshot_words(report.get("snapshot")))
        if report.get("resolved_by"):
            note = f": {clean(str(report['note']))}" if report.get("note") else ""
            lines.append(f"      resolved by {clean(str(report['resolved_by']))}"
                         f" {moment(report.get('resolved'))}:"
                         f" {clean(str(report.get('action', '?')))}{note}")
    ids = [r["report_id"] for r in reports if isinstance(r.get("report_id"), int)]
    if reply.get("more") and ids:
        lines.append(f"  (more: /reports {which} --before {min(ids)})")
    return lines


def show_userban(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    user = clean(str(reply.get("username", request["username"])))
    until = reply.get("until")
    return [f"* banned {user} from the server "
            + (f"until {format_time(until)}" if until else "until unbanned")]


def group_label(request: Request, reply: dict[str, Any], label: Label) -> str:
    return label(str(reply.get("chatname", request.get("chatname"))))


def user_name(request: Request, reply: dict[str, Any], field: str = "username") -> str:
    return clean(str(reply.get(field, request.get(field))))


def show_role(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    role = clean(str(reply.get("role", request["role"])))
    return [f"* {user_name(request, reply, 'user')} is now {role} in"
            f" {group_label(request, reply, label)}"]


def show_unban(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    return [f"* {user_name(request, reply, 'user')} is no longer banned from"
            f" {group_label(request, reply, label)}"]


def show_block(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    done = "blocked" if request["type"] == "BlockRequest" else "unblocked"
    return [f"* {done} {user_name(request, reply)}"]


def show_report(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    return [f"* report {reply.get('report_id')} on {report_target(request)}"
            " sent to the server's moderators"]


def show_announce(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    return [f"* announcement {reply.get('id')} sent to everyone"]


def show_resolve(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    action = clean(str(reply.get("action", request["action"])))
    return [f"* report {reply.get('report_id', request['report_id'])} resolved: {action}"]


def show_userunban(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    return [f"* {user_name(request, reply)} may sign in again"]


def show_password(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    return ["* password changed; your other sessions were signed out"]


def show_sessions(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    found = [s for s in reply.get("sessions", []) if isinstance(s, dict)]
    if not found:
        return ["* no sessions"]
    lines = [f"--- your sessions: {len(found)} ---"]
    for session in found:
        notes = [clean(str(session.get("client") or "unnamed client"))]
        if session.get("address"):
            notes.append(f"from {clean(str(session['address']))}")
        used = session.get("last_used") or session.get("created")
        if used:
            notes.append(f"last used {moment(used)}")
        this = " (this one)" if session.get("current") else ""
        lines.append(f"  {clean(str(session.get('id')))}  {', '.join(notes)}{this}")
    lines.append("  (/revoke ID signs one out)")
    return lines


def show_revoke(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    return [f"* session {clean(str(reply.get('id', request['id'])))} signed out"]


def show_profile(request: Request, reply: dict[str, Any], label: Label) -> list[str]:
    name = reply.get("display_name")
    status = reply.get("status_text")
    return [f"* {user_name(request, reply)}: display name "
            + (f'"{clean(str(name))}"' if name else "not set")
            + ", status " + (f'"{clean(str(status))}"' if status else "not set")]
