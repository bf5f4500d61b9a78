"""chateau-client's governance commands and pushes, without a network.

Every command of the table (chateau/client/commands.py): what a typed line
sends, what bad usage says, and the words for the reply; every new push
(GroupEventRecv, GroupRemovedRecv, AnnouncementRecv) and history entry
(system events, hidden messages); the banned close code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from chateau.client import commands
from chateau.client.replies import moment
from chateau.client.session import EXIT_SIGN_IN, HELP
from chateau.client.text import format_time
from tests.test_client_units import Harness

WHEN = "2024-01-02T03:04:05.000Z"
AT = format_time(WHEN)
DOCS = Path(__file__).resolve().parent.parent / "docs" / "clients.md"


def started(**register: Any) -> Harness:
    h = Harness()
    h.start(**register)
    return h


def sent(h: Harness) -> dict[str, Any]:
    """The last request, without its msg_id."""
    request = dict(h.conn.sent[-1])
    request.pop("msg_id", None)
    return request


# -- what a typed line sends ---------------------------------------------------------

REQUESTS = [
    ("/unread", {"type": "ConversationsRequest", "limit": 200}),
    ("/search picnic", {"type": "SearchRequest", "query": "picnic", "limit": 20}),
    ('/search "picnic blanket" -rain', {"type": "SearchRequest",
                                        "query": '"picnic blanket" -rain', "limit": 20}),
    ("/search #club chapter 3", {"type": "SearchRequest", "chatname": "club",
                                 "query": "chapter 3", "limit": 20}),
    ('/search "#book club" chapter', {"type": "SearchRequest", "chatname": "book club",
                                      "query": "chapter", "limit": 20}),
    ("/search @Bob lunch", {"type": "SearchRequest", "user": "Bob", "query": "lunch",
                            "limit": 20}),
    ("/search --before 41 @bob lunch", {"type": "SearchRequest", "before": 41, "user": "bob",
                                        "query": "lunch", "limit": 20}),
    ("/info club", {"type": "GroupInfoRequest", "chatname": "club"}),
    ('/info "book club"', {"type": "GroupInfoRequest", "chatname": "book club"}),
    ("/role club bob Admin", {"type": "GroupRoleRequest", "chatname": "club", "user": "bob",
                              "role": "admin"}),
    ("/add club carol dave", {"type": "GroupAddRequest", "chatname": "club",
                              "users": ["carol", "dave"]}),
    ('/add "book club" carol', {"type": "GroupAddRequest", "chatname": "book club",
                                "users": ["carol"]}),
    ("/kick club bob", {"type": "GroupRemoveRequest", "chatname": "club", "user": "bob",
                        "ban": False}),
    ("/kick club bob too loud", {"type": "GroupRemoveRequest", "chatname": "club", "user": "bob",
                                 "ban": False, "reason": "too loud"}),
    ("/ban club eve spam, again", {"type": "GroupRemoveRequest", "chatname": "club",
                                   "user": "eve", "ban": True, "reason": "spam, again"}),
    ("/unban club eve", {"type": "GroupUnbanRequest", "chatname": "club", "user": "eve"}),
    ("/mute club bob 30", {"type": "GroupMuteRequest", "chatname": "club", "user": "bob",
                           "minutes": 30}),
    ("/mute club bob 0", {"type": "GroupMuteRequest", "chatname": "club", "user": "bob",
                          "minutes": 0}),
    ("/unmute club bob", {"type": "GroupMuteRequest", "chatname": "club", "user": "bob",
                          "minutes": 0}),
    ("/topic club Chapter 3 on Friday", {"type": "GroupUpdateRequest", "chatname": "club",
                                         "topic": "Chapter 3 on Friday"}),
    ('/topic club ""', {"type": "GroupUpdateRequest", "chatname": "club", "topic": ""}),
    ('/rename club "book club"', {"type": "GroupUpdateRequest", "chatname": "club",
                                  "name": "book club"}),
    ("/set club join open", {"type": "GroupUpdateRequest", "chatname": "club", "join": "open"}),
    ("/set club retention_days 30", {"type": "GroupUpdateRequest", "chatname": "club",
                                     "retention_days": 30}),
    ("/set club retention_days default join open",
     {"type": "GroupUpdateRequest", "chatname": "club", "retention_days": None, "join": "open"}),
    ("/set club visibility public who_can_send admins",
     {"type": "GroupUpdateRequest", "chatname": "club", "visibility": "public",
      "who_can_send": "admins"}),
    ("/set club who_can_add members", {"type": "GroupUpdateRequest", "chatname": "club",
                                       "who_can_add": "members"}),
    ("/invite club", {"type": "GroupInviteRequest", "chatname": "club"}),
    ("/invite club --uses 5 --hours 24", {"type": "GroupInviteRequest", "chatname": "club",
                                          "max_uses": 5, "hours": 24}),
    ("/join #club", {"type": "GroupJoinRequest", "chatname": "club"}),
    ("/join club", {"type": "GroupJoinRequest", "chatname": "club"}),
    ("/groups", {"type": "GroupDirectoryRequest"}),
    ("/groups chess club", {"type": "GroupDirectoryRequest", "query": "chess club"}),
    ("/block mallory", {"type": "BlockRequest", "username": "mallory"}),
    ("/unblock mallory", {"type": "UnblockRequest", "username": "mallory"}),
    ("/blocked", {"type": "BlockListRequest"}),
    ("/settings", {"type": "SettingsRequest"}),
    ("/settings direct_messages contacts presence nobody random_chat off read_receipts on",
     {"type": "SettingsRequest", "direct_messages": "contacts", "presence": "nobody",
      "random_chat": False, "read_receipts": True}),
    ("/report user bob spam", {"type": "ReportRequest", "username": "bob", "reason": "spam"}),
    ("/report message 42 threatens people", {"type": "ReportRequest", "message_id": 42,
                                             "reason": "threatens people"}),
    ('/report group "bad club" hate speech', {"type": "ReportRequest", "chatname": "bad club",
                                              "reason": "hate speech"}),
    ("/announce maintenance at 18:00", {"type": "AnnounceRequest",
                                        "content": "maintenance at 18:00"}),
    ("/reports", {"type": "ReportListRequest", "status": "open"}),
    ("/reports all", {"type": "ReportListRequest", "status": "all"}),
    ("/reports closed --before 12", {"type": "ReportListRequest", "status": "closed",
                                     "before": 12}),
    ("/reports --before 12", {"type": "ReportListRequest", "status": "open", "before": 12}),
    ("/resolve 7 ban_user repeated spam", {"type": "ReportResolveRequest", "report_id": 7,
                                           "action": "ban_user", "note": "repeated spam"}),
    ("/userban bob spamming everyone", {"type": "UserBanRequest", "username": "bob",
                                        "reason": "spamming everyone"}),
    ("/userban bob 24 cool down", {"type": "UserBanRequest", "username": "bob", "hours": 24,
                                   "reason": "cool down"}),
    ("/userunban bob", {"type": "UserUnbanRequest", "username": "bob"}),
    ("/password old new", {"type": "PasswordChangeRequest", "old_password": "old",
                           "new_password": "new"}),
    ('/password "old one" "new one"', {"type": "PasswordChangeRequest",
                                       "old_password": "old one", "new_password": "new one"}),
    ("/sessions", {"type": "SessionListRequest"}),
    ("/revoke 0123456789abcdef", {"type": "SessionRevokeRequest", "id": "0123456789abcdef"}),
    ("/profile", {"type": "ProfileRequest"}),
    ("/profile name Alice Liddell", {"type": "ProfileRequest", "display_name": "Alice Liddell"}),
    ("/profile Status in the lab", {"type": "ProfileRequest", "status_text": "in the lab"}),
    ('/profile status ""', {"type": "ProfileRequest", "status_text": ""}),
]


@pytest.mark.parametrize("line, request_sent", REQUESTS, ids=[r[0] for r in REQUESTS])
def test_each_command_sends_its_request(line, request_sent):
    h = started()
    h.session.handle_line(line)
    assert sent(h) == request_sent
    assert not any(text.startswith("!") for text in h.ui.lines)


def test_every_command_of_the_table_is_exercised_above():
    typed = {line.split()[0][1:] for line, _ in REQUESTS}
    assert typed == set(commands.by_name())


BAD_USAGE = [
    ("/unread now", "! usage: /unread"),
    ("/search", "! /search: give the words to look for (usage: /search [#GROUP|@USER] QUERY)"),
    ("/search #club", "! /search: give the words to look for"
                      " (usage: /search [#GROUP|@USER] QUERY)"),
    ("/search --before x lunch", "! /search: --before must be a whole number of at least 1,"
                                 " not 'x' (usage: /search [#GROUP|@USER] QUERY)"),
    ("/info", "! usage: /info GROUP"),
    ("/info a b", "! usage: /info GROUP"),
    ("/role club bob", "! usage: /role GROUP USER ROLE"),
    ("/role club bob king",
     "! /role: ROLE must be owner or admin or member, not 'king' (usage: /role GROUP USER ROLE)"),
    ("/add club", "! usage: /add GROUP USER..."),
    ("/kick club", "! usage: /kick GROUP USER [reason]"),
    ("/ban", "! usage: /ban GROUP USER [reason]"),
    ("/unban club", "! usage: /unban GROUP USER"),
    ("/mute club bob", "! usage: /mute GROUP USER MINUTES"),
    ("/mute club bob soon", "! /mute: MINUTES must be a whole number from 0 to 525600,"
                            " not 'soon' (usage: /mute GROUP USER MINUTES)"),
    ("/mute club bob 525601", "! /mute: MINUTES must be a whole number from 0 to 525600,"
                              " not '525601' (usage: /mute GROUP USER MINUTES)"),
    ("/unmute club", "! usage: /unmute GROUP USER"),
    ("/topic club", '! /topic: give the topic ("" clears it) (usage: /topic GROUP TEXT)'),
    ("/rename club", "! usage: /rename GROUP NEWNAME"),
    ("/rename club two words", "! /rename: put a new name with spaces in quotes"
                               " (usage: /rename GROUP NEWNAME)"),
    ("/set club join", "! usage: /set GROUP KEY VALUE..."),
    ("/set club colour red", "! /set: KEY must be one of join, visibility, who_can_add,"
                             " who_can_send, retention_days, not 'colour'"
                             " (usage: /set GROUP KEY VALUE...)"),
    ("/set club retention_days -1", "! /set: retention_days must be a whole number from 0 to"
                                    " 36500, not '-1' (usage: /set GROUP KEY VALUE...)"),
    ("/set club join maybe", "! /set: join must be invite or open, not 'maybe'"
                             " (usage: /set GROUP KEY VALUE...)"),
    ("/invite", "! usage: /invite GROUP [--uses N] [--hours H]"),
    ("/invite club --uses", "! usage: /invite GROUP [--uses N] [--hours H]"),
    ("/invite club --uses 0", "! /invite: --uses must be a whole number of at least 1, not '0'"
                              " (usage: /invite GROUP [--uses N] [--hours H])"),
    ("/invite club --days 2", "! /invite: unknown option '--days'"
                              " (usage: /invite GROUP [--uses N] [--hours H])"),
    ("/join", "! usage: /join CODE|GROUP"),
    ("/block", "! usage: /block USER"),
    ("/unblock a b", "! usage: /unblock USER"),
    ("/blocked bob", "! usage: /blocked"),
    ("/settings presence", "! usage: /settings [KEY VALUE...]"),
    ("/settings presence friends", "! /settings: presence must be everyone or contacts or"
                                   " nobody, not 'friends' (usage: /settings [KEY VALUE...])"),
    ("/settings random_chat maybe", "! /settings: random_chat must be on or off or yes or no or"
                                    " true or false, not 'maybe' (usage: /settings [KEY VALUE...])"),
    ("/settings theme dark", "! /settings: KEY must be one of direct_messages, presence,"
                             " random_chat, read_receipts, not 'theme'"
                             " (usage: /settings [KEY VALUE...])"),
    ("/report bob spam", "! /report: say what you report: user or message or group, not 'bob'"
                         " (usage: /report user|message|group TARGET REASON)"),
    ("/report user bob", "! /report: give a reason"
                         " (usage: /report user|message|group TARGET REASON)"),
    ("/report message last spam", "! /report: the message ID must be a whole number of at"
                                  " least 1, not 'last'"
                                  " (usage: /report user|message|group TARGET REASON)"),
    ("/announce", "! usage: /announce TEXT"),
    ("/reports pending", "! /reports: the list must be open or closed or all, not 'pending'"
                         " (usage: /reports [open|closed|all] [--before ID])"),
    ("/reports all --before", "! usage: /reports [open|closed|all] [--before ID]"),
    ("/reports all --before x", "! /reports: --before must be a whole number of at least 1,"
                                " not 'x' (usage: /reports [open|closed|all] [--before ID])"),
    ("/resolve 7 ban_user", "! /resolve: give a NOTE for the record"
                            " (usage: /resolve ID ACTION NOTE)"),
    ("/resolve x warn note", "! /resolve: ID must be a whole number of at least 1, not 'x'"
                             " (usage: /resolve ID ACTION NOTE)"),
    ("/resolve 7 shrug note", "! /resolve: ACTION must be dismiss or warn or delete_message or"
                              " ban_user, not 'shrug' (usage: /resolve ID ACTION NOTE)"),
    ("/userban bob", "! /userban: give a REASON (the user is told it when signing in)"
                     " (usage: /userban USER [HOURS] REASON)"),
    ("/userban bob 12", "! /userban: give a REASON (the user is told it when signing in)"
                        " (usage: /userban USER [HOURS] REASON)"),
    ("/userunban", "! usage: /userunban USER"),
    ("/password onlyone", "! usage: /password OLD NEW"),
    ("/password a b c", "! usage: /password OLD NEW"),
    ("/sessions all", "! usage: /sessions"),
    ("/revoke", "! usage: /revoke ID"),
    ("/revoke a b", "! usage: /revoke ID"),
    ("/profile mood happy", "! /profile: say what you set: name or status, not 'mood'"
                            " (usage: /profile [name|status TEXT])"),
]


@pytest.mark.parametrize("line, message", BAD_USAGE, ids=[b[0] for b in BAD_USAGE])
def test_bad_usage_says_how_and_sends_nothing(line, message):
    h = started()
    before = len(h.conn.sent)
    h.session.handle_line(line)
    assert h.ui.lines[-1] == message
    assert len(h.conn.sent) == before


def test_every_command_has_a_bad_usage_case():
    typed = {line.split()[0][1:] for line, _ in BAD_USAGE}
    assert typed >= set(commands.by_name()) - {"groups"}  # any query will do


# -- the words for each reply ---------------------------------------------------------

REPLIES = [
    ("/unread", {"type": "ConversationsResponse", "more": False, "conversations": [
        {"chatname": "book club", "activity": 90, "unread": 100, "mentions": 2, "read": 3,
         "members": 4, "last_message": {"id": 90, "sender": "bob", "timestamp": WHEN,
                                        "content": "has anyone   started\nchapter three of the"
                                                   " long book yet?", "edited": False,
                                        "deleted": False, "mentions": ["alice"]}},
        {"user": "carol", "activity": 80, "unread": 1, "mentions": 0, "read": 79,
         "last_message": {"id": 80, "sender": "carol", "timestamp": WHEN, "content": "lunch?",
                          "edited": False, "deleted": False}},
        {"user": "dave", "activity": 70, "unread": 0, "mentions": 0, "read": 70,
         "last_message": {"id": 70, "sender": "dave", "timestamp": WHEN, "content": "ok",
                          "edited": False, "deleted": False}},
        {"chatname": "den", "activity": 60, "unread": 2, "mentions": 0, "read": 0,
         "members": 2, "last_message": {"id": 60, "timestamp": WHEN, "hidden": True}},
        {"chatname": "lab", "activity": 50, "unread": 1, "mentions": 0, "read": 0,
         "members": 2, "last_message": {"id": 50, "sender": "erin", "timestamp": WHEN,
                                        "content": None, "edited": False, "deleted": True}}]},
     ["--- unread: 104+ in 4 conversations ---",
      f"  #book club  99+ unread, 2 mentions  {AT} bob: has anyone started chapter three of the…",
      f"  @carol  1 unread  {AT} carol: lunch?",
      f"  #den  2 unread  {AT} a message from someone you blocked",
      f"  #lab  1 unread  {AT} erin: (deleted)"]),
    ("/unread", {"type": "ConversationsResponse", "more": False, "conversations": [
        {"user": "dave", "activity": 70, "unread": 0, "mentions": 0, "read": 70,
         "last_message": None}]},
     ["* nothing unread"]),
    ("/search picnic", {"type": "SearchResponse", "query": "picnic", "more": True, "results": [
        {"id": 981, "user": "bob", "sender": "bob", "timestamp": WHEN,
         "snippet": "bring the picnic blanket", "highlights": [[10, 16]]},
        {"id": 950, "chatname": "book club", "sender": "alice", "timestamp": WHEN,
         "snippet": "…a Picnic, picnics\x1b[2J and more…", "highlights": [[3, 9], [11, 18],
                                                                      [40, 50], "x"]}]},
     ["--- search 'picnic': 2 results ---",
      f"  {AT} [@bob] bob: bring the *picnic* blanket",
      f"  {AT} [#book club] alice: …a *Picnic*, *picnics*^[[2J and more…",
      "  (more: /search --before 950 picnic)"]),
    ('/search "#book club" chapter', {"type": "SearchResponse", "query": "chapter",
                                      "more": False, "results": []},
     ["* no messages in \"#book club\" match 'chapter'"]),
    ("/info club",
     {"type": "GroupInfoResponse", "chatname": "club", "creator": "alice", "created": WHEN,
      "topic": "books", "settings": {"join": "invite", "visibility": "private",
                                     "who_can_add": "admins", "who_can_send": "everyone"},
      "members": [{"username": "alice", "role": "owner", "online": True, "muted": False},
                  {"username": "bob", "role": "member", "online": False, "muted": True,
                   "muted_until": WHEN}],
      "bans": [{"username": "eve", "by": "alice", "reason": "spam", "at": WHEN}]},
     ["--- #club ---", "  topic: books", f"  created by alice on {AT}",
      "  settings: join invite, visibility private, who_can_add admins, who_can_send everyone",
      f"  members (2): alice (owner, online), bob (member, offline, muted until {AT})",
      f"  banned: eve by alice on {AT}: spam"]),
    ("/role club bob admin", {"type": "GroupRoleResponse", "chatname": "club", "user": "bob",
                              "role": "admin"},
     ["* bob is now admin in club"]),
    ("/add club carol dave eve", {"type": "GroupAddResponse", "chatname": "club",
                                  "added": ["carol", "dave"], "already": ["eve"]},
     ["* added carol, dave to club (already members: eve)"]),
    ("/add club eve", {"type": "GroupAddResponse", "chatname": "club", "added": [],
                       "already": ["eve"]},
     ["* nobody new in club (already members: eve)"]),
    ("/kick club bob", {"type": "GroupRemoveResponse", "chatname": "club", "user": "bob",
                        "banned": False},
     ["* removed bob from club"]),
    ("/ban club eve", {"type": "GroupRemoveResponse", "chatname": "club", "user": "eve",
                       "banned": True},
     ["* banned eve from club"]),
    ("/unban club eve", {"type": "GroupUnbanResponse", "chatname": "club", "user": "eve"},
     ["* eve is no longer banned from club"]),
    ("/mute club bob 30", {"type": "GroupMuteResponse", "chatname": "club", "user": "bob",
                           "muted_until": WHEN},
     [f"* muted bob in club until {AT}"]),
    ("/unmute club bob", {"type": "GroupMuteResponse", "chatname": "club", "user": "bob",
                          "muted_until": None},
     ["* bob is not muted in club"]),
    ("/topic club books", {"type": "GroupUpdateResponse", "chatname": "club", "topic": "books",
                           "settings": {"join": "open"}},
     ["* updated club", "  topic: books", "  settings: join open"]),
    ("/rename club readers", {"type": "GroupUpdateResponse", "chatname": "readers", "topic": "",
                              "settings": {"join": "invite"}},
     ["* renamed club to #readers", "  no topic", "  settings: join invite"]),
    ("/set club join open", {"type": "GroupUpdateResponse", "chatname": "club", "topic": "",
                             "settings": {"join": "open", "visibility": "public",
                                          "who_can_add": "admins", "who_can_send": "everyone"}},
     ["* updated club", "  no topic",
      "  settings: join open, visibility public, who_can_add admins, who_can_send everyone"]),
    ("/invite club --uses 1", {"type": "GroupInviteResponse", "status": 201, "chatname": "club",
                               "code": "Xy7kQ2", "max_uses": 1, "expires": WHEN},
     [f"* invite code for club: Xy7kQ2 (up to 1 use, until {AT})",
      "  others join with: /join Xy7kQ2"]),
    ("/invite club", {"type": "GroupInviteResponse", "status": 201, "chatname": "club",
                      "code": "Xy7kQ2", "max_uses": None, "expires": WHEN},
     [f"* invite code for club: Xy7kQ2 (any number of uses, until {AT})",
      "  others join with: /join Xy7kQ2"]),
    ("/join club", {"type": "GroupJoinResponse", "chatname": "club"},
     ["* joined #club; /to club to talk there"]),
    ("/join club", {"type": "GroupJoinResponse", "chatname": "club", "already": True},
     ["* you are already in #club"]),
    ("/groups chess", {"type": "GroupDirectoryResponse", "groups": [
        {"chatname": "chess club", "topic": "Sundays", "members": 12, "join": "open"},
        {"chatname": "chess", "topic": "", "members": 1, "join": "invite"}]},
     ["--- public groups matching 'chess': 2 ---",
      '  "chess club" (12 members, open: /join): Sundays',
      "  chess (1 member, by invitation)"]),
    ("/groups", {"type": "GroupDirectoryResponse", "groups": []}, ["* no public groups"]),
    ("/block mallory", {"type": "BlockResponse", "username": "mallory"},
     ["* blocked mallory"]),
    ("/unblock mallory", {"type": "UnblockResponse", "username": "mallory"},
     ["* unblocked mallory"]),
    ("/blocked", {"type": "BlockListResponse", "blocked": [{"username": "mallory",
                                                            "since": WHEN}]},
     [f"* blocked: mallory (since {AT})"]),
    ("/blocked", {"type": "BlockListResponse", "blocked": []}, ["* you have blocked nobody"]),
    ("/settings", {"type": "SettingsResponse", "direct_messages": "everyone",
                   "presence": "contacts", "random_chat": False, "read_receipts": True},
     ["* settings: direct_messages everyone, presence contacts, random_chat off,"
      " read_receipts on"]),
    ("/report message 42 spam", {"type": "ReportResponse", "status": 201, "report_id": 7},
     ["* report 7 on message 42 sent to the server's moderators"]),
    ("/announce hello all", {"type": "AnnounceResponse", "status": 201, "id": 3},
     ["* announcement 3 sent to everyone"]),
    ("/reports all", {"type": "ReportListResponse", "more": True, "reports": [
        {"report_id": 7, "reporter": "carol", "reason": "spam", "username": "bob",
         "chatname": "club", "message_id": 42, "created": WHEN, "status": "closed",
         "snapshot": {"message": {"id": 42, "chat": "club", "sender": "bob",
                                  "content": "buy now", "timestamp": WHEN, "edited": False}},
         "resolved_by": "admin", "resolved": WHEN, "action": "warn", "note": "first time"}]},
     ["--- reports: 1 ---",
      f"  #7 {AT} carol reported user bob message 42 in club: spam [closed]",
      f"      {AT} bob: buy now",
      f"      resolved by admin on {AT}: warn: first time",
      "  (more: /reports all --before 7)"]),
    ("/reports", {"type": "ReportListResponse", "more": False, "reports": [
        {"report_id": 8, "reporter": "dave", "reason": "rude", "username": "erin",
         "chatname": "~r1", "message_id": None, "created": WHEN, "status": "open",
         "snapshot": {"chat": {"chatname": "~r1", "messages": [
             {"id": 1, "sender": "erin", "content": "go away", "timestamp": WHEN},
             {"id": 2, "sender": "dave", "content": "why?", "timestamp": WHEN}]}},
         "resolved_by": None, "resolved": None, "action": None, "note": None},
        {"report_id": 6, "reporter": "dave", "reason": "spam bot", "username": "zed",
         "chatname": None, "message_id": None, "created": WHEN, "status": "open",
         "snapshot": {}, "resolved_by": None, "resolved": None, "action": None, "note": None}]},
     ["--- open reports: 2 ---",
      f"  #8 {AT} dave reported user erin in ~r1: rude [open]",
      "      the last 2 messages of ~r1:",
      f"        {AT} erin: go away",
      f"        {AT} dave: why?",
      f"  #6 {AT} dave reported user zed: spam bot [open]"]),
    ("/reports", {"type": "ReportListResponse", "reports": [], "more": False},
     ["* no open reports"]),
    ("/resolve 7 dismiss not spam", {"type": "ReportResolveResponse", "report_id": 7,
                                     "action": "dismiss"},
     ["* report 7 resolved: dismiss"]),
    ("/userban bob 2 calm down", {"type": "UserBanResponse", "username": "bob", "until": WHEN},
     [f"* banned bob from the server until {AT}"]),
    ("/userban bob spam", {"type": "UserBanResponse", "username": "bob", "until": None},
     ["* banned bob from the server until unbanned"]),
    ("/userunban bob", {"type": "UserUnbanResponse", "username": "bob"},
     ["* bob may sign in again"]),
    ("/password old new", {"type": "PasswordChangeResponse"},
     ["* password changed; your other sessions were signed out"]),
    ("/sessions", {"type": "SessionListResponse", "sessions": [
        {"id": "aaaa000011112222", "created": WHEN, "last_used": WHEN, "address": "192.0.2.1",
         "client": "chateau-client", "current": True},
        {"id": "bbbb000011112222", "created": WHEN, "last_used": None, "address": None,
         "client": None, "current": False}]},
     ["--- your sessions: 2 ---",
      f"  aaaa000011112222  chateau-client, from 192.0.2.1, last used {moment(WHEN)} (this one)",
      f"  bbbb000011112222  unnamed client, last used {moment(WHEN)}",
      "  (/revoke ID signs one out)"]),
    ("/sessions", {"type": "SessionListResponse", "sessions": []}, ["* no sessions"]),
    ("/revoke aaaa000011112222", {"type": "SessionRevokeResponse", "id": "aaaa000011112222"},
     ["* session aaaa000011112222 signed out"]),
    ("/profile status away", {"type": "ProfileResponse", "username": "alice",
                              "display_name": "Alice L.", "status_text": "away"},
     ['* alice: display name "Alice L.", status "away"']),
    ("/profile", {"type": "ProfileResponse", "username": "alice", "display_name": None,
                  "status_text": None},
     ["* alice: display name not set, status not set"]),
]


@pytest.mark.parametrize("line, reply, shown", REPLIES, ids=[r[0] for r in REPLIES])
def test_each_reply_in_words(line, reply, shown):
    h = started()
    h.session.handle_line(line)
    h.reply(**{"status": 200, **reply})
    assert h.ui.lines[-len(shown):] == shown


def test_every_command_has_its_reply_in_words_above():
    typed = {line.split()[0][1:] for line, _, _ in REPLIES}
    assert typed == set(commands.by_name())


def test_refusals_show_the_servers_detail_and_status():
    h = started()
    h.session.handle_line("/kick club bob")
    h.reply(type="ErrorResponse", status=403,
            detail="only admins and owners of 'club' remove members")
    assert h.ui.lines[-1] == ("! could not remove bob:"
                              " only admins and owners of 'club' remove members (403)")
    h.session.handle_line("/info nowhere")
    h.reply(type="ErrorResponse", status=404, detail="no such group: 'nowhere'")
    assert h.ui.lines[-1] == "! no information on nowhere: no such group: 'nowhere' (404)"
    h.session.connection_closed(h.conn, 1006, None)  # lost before the answer
    h.session.handle_line("/blocked")
    assert h.conn.sent[-1]["type"] == "RegisterRequest"  # queued until signed in again


def test_join_tries_the_group_then_the_invite_code():
    h = started()
    h.session.handle_line("/join Xy7kQ2")
    assert sent(h) == {"type": "GroupJoinRequest", "chatname": "Xy7kQ2"}
    h.reply(type="ErrorResponse", status=404, detail="no such group: 'xy7kq2'")
    assert sent(h) == {"type": "GroupJoinRequest", "code": "Xy7kQ2"}
    h.reply(type="GroupJoinResponse", status=200, chatname="club")
    assert h.ui.lines[-1] == "* joined #club; /to club to talk there"
    assert "club" in h.session.groups

    h.session.handle_line("/join nothing")
    h.reply(type="ErrorResponse", status=404, detail="no such group: 'nothing'")
    h.reply(type="ErrorResponse", status=404,
            detail="no such invite code (or it has expired or been used up)")
    assert h.ui.lines[-1] == ("! could not join nothing: no such group: 'nothing' (404);"
                              " no such invite code (or it has expired or been used up) (404)")

    h.session.handle_line("/join secret")  # a private group: refused, no code tried
    h.reply(type="ErrorResponse", status=403, detail="'secret' is not open to join")
    assert h.ui.lines[-1] == "! could not join secret: 'secret' is not open to join (403)"
    assert sent(h) == {"type": "GroupJoinRequest", "chatname": "secret"}


def test_renaming_follows_the_current_chat():
    h = started()
    h.push(type="GroupMessageInitResponse", status=201, chatname="club", creator="bob",
           members=["alice", "bob"])
    assert h.ui.lines[-1] == ("* you are in #club, started by bob (members: alice, bob);"
                              " /to club to talk there")
    assert h.ui.prompt == "#club> "
    h.session.handle_line("/rename club readers")
    h.reply(type="GroupUpdateResponse", status=200, chatname="readers", topic="",
            settings={"join": "invite"})
    assert h.ui.prompt == "#readers> " and h.ui.lines[-3] == "* renamed club to #readers"
    h.push(type="GroupEventRecv", status=200, chatname="bookworms", event="renamed",
           user="bob", by="bob", old_name="readers", new_name="bookworms", id=5, timestamp=WHEN)
    assert h.ui.lines[-1] == f"{AT} [#bookworms] * bob renamed the group from readers to bookworms"
    assert h.ui.prompt == "#bookworms> " and "readers" not in h.session.groups


def test_ids_on_shows_message_ids_for_reports():
    h = started()
    h.push(type="MessageRecv", status=200, sender="bob", chatname="bob", content="hi", id=41,
           timestamp=WHEN)
    assert h.ui.lines[-1] == f"{AT} [@bob] bob: hi"
    h.session.handle_line("/ids")
    assert h.ui.lines[-1] == "* message IDs are shown, e.g. for /report message ID"
    h.push(type="MessageRecv", status=200, sender="bob", chatname="bob", content="buy now",
           id=42, timestamp=WHEN, offline=True)
    assert h.ui.lines[-1] == f"{AT} [@bob] bob: buy now  (id 42, while you were offline)"
    h.session.handle_line("hello")
    h.reply(type="MessageSendResponse", status=200, id=43, timestamp=WHEN)
    assert h.ui.lines[-1] == f"{AT} [@bob] alice: hello  (id 43)"
    h.session.handle_line("/ids off")
    assert h.ui.lines[-1] == "* message IDs are not shown"
    h.session.handle_line("/ids maybe")
    assert h.ui.lines[-1] == "! usage: /ids [on|off]"


# -- pushes --------------------------------------------------------------------------

EVENTS = [
    ({"event": "added", "user": "carol", "by": "bob"}, "bob added carol"),
    ({"event": "added", "user": "carol", "by": "alice"}, "you added carol"),
    ({"event": "removed", "user": "dave", "by": "bob", "reason": "spam"},
     "bob removed dave: spam"),
    ({"event": "banned", "user": "eve", "by": "bob", "reason": ""}, "bob banned eve"),
    ({"event": "unbanned", "user": "eve", "by": "bob"}, "bob unbanned eve"),
    ({"event": "left", "user": "dave", "by": "dave"}, "dave left"),
    ({"event": "joined", "user": "erin", "by": "erin"}, "erin joined"),
    ({"event": "role", "user": "alice", "by": "bob", "role": "admin"}, "bob made you admin"),
    ({"event": "muted", "user": "dave", "by": "bob", "until": WHEN},
     f"bob muted dave until {AT}"),
    ({"event": "unmuted", "user": "dave", "by": "bob"}, "bob unmuted dave"),
    ({"event": "topic", "user": "bob", "by": "bob", "topic": "chapter 3"},
     "bob set the topic: chapter 3"),
    ({"event": "topic", "user": "bob", "by": "bob", "topic": ""}, "bob cleared the topic"),
    ({"event": "settings", "user": "bob", "by": "bob",
      "settings": {"join": "open", "visibility": "public"}},
     "bob changed the settings: join open, visibility public"),
    ({"event": "frobbed", "user": "dave", "by": "bob"}, "bob: frobbed dave"),
    ({"event": "removed", "user": "\x1b[2Jdave", "by": "bob"}, "bob removed ^[[2Jdave"),
]


@pytest.mark.parametrize("event, words", EVENTS, ids=[e[1] for e in EVENTS])
def test_group_events_are_system_lines(event, words):
    h = started()
    h.push(type="GroupEventRecv", status=200, chatname="club", id=9, timestamp=WHEN, **event)
    assert h.ui.lines[-1] == f"{AT} [#club] * {words}"


def test_events_offline_duplicates_and_departures_told_once():
    h = started()
    h.push(type="GroupEventRecv", status=200, chatname="club", event="added", user="carol",
           by="bob", id=9, timestamp=WHEN, offline=True)
    assert h.ui.lines[-1] == f"{AT} [#club] * bob added carol  (while you were offline)"
    shown = len(h.ui.lines)
    h.push(type="GroupEventRecv", status=200, chatname="club", event="added", user="carol",
           by="bob", id=9, timestamp=WHEN)
    assert len(h.ui.lines) == shown  # the same event id is shown once
    # A departure comes as GroupMemberLeftRecv and as the "left" event: one line.
    h.push(type="GroupMemberLeftRecv", status=200, chatname="club", user="dave")
    h.push(type="GroupEventRecv", status=200, chatname="club", event="left", user="dave",
           by="dave", id=10, timestamp=WHEN)
    h.push(type="GroupEventRecv", status=200, chatname="club", event="left", user="erin",
           by="erin", id=11, timestamp=WHEN)
    h.push(type="GroupMemberLeftRecv", status=200, chatname="club", user="erin")
    assert h.ui.lines[shown:] == ["* dave left #club", f"{AT} [#club] * erin left"]


def test_a_random_chat_ended_by_blocking_the_partner():
    h = started()
    h.push(type="MessageRecv", status=200, sender="bob", chatname="~1", random=True,
           content="hi", id=5, timestamp=WHEN)
    h.push(type="RandomChatEndedRecv", status=200, chatname="~1", user="bob", reason="blocked")
    assert h.ui.lines[-1] == "* the random chat ~bob ended: you blocked bob"
    assert h.session.current is None and not h.session.randoms


def test_removed_from_a_group():
    h = started()
    h.push(type="GroupMessageInitResponse", status=201, chatname="club", creator="bob",
           members=["alice", "bob"])
    h.push(type="GroupRemovedRecv", status=200, chatname="club", by="bob", reason="spam",
           banned=False)
    assert h.ui.lines[-1] == "* you were removed from #club by bob: spam"
    assert h.session.current is None and "club" not in h.session.groups
    assert h.ui.prompt == "> "
    h.push(type="GroupRemovedRecv", status=200, chatname="den", by="carol", reason="",
           banned=True)
    assert h.ui.lines[-1] == "* you were banned from den by carol"


def test_announcements_stand_apart_and_show_once():
    h = started()
    h.push(type="AnnouncementRecv", status=200, id=3, content="maintenance at 18:00\ntonight",
           by="admin", timestamp=WHEN)
    assert h.ui.lines[-2:] == ["!! announcement from admin: maintenance at 18:00",
                               f"   tonight  ({AT})"]
    shown = len(h.ui.lines)
    h.push(type="AnnouncementRecv", status=200, id=3, content="maintenance at 18:00\ntonight",
           by="admin", timestamp=WHEN)
    assert len(h.ui.lines) == shown
    h.push(type="AnnouncementRecv", status=200, id=4, content="welcome", by="root",
           timestamp=WHEN, offline=True)
    assert h.ui.lines[-1] == f"!! announcement from root: welcome  ({AT}, while you were offline)"


def test_history_shows_events_and_hidden_messages():
    h = started()
    h.session.groups.add("club")
    h.session.handle_line("/history club")
    h.reply(type="HistoryResponse", status=200, chatname="club", more=False, messages=[
        {"id": 12, "timestamp": WHEN, "hidden": True},
        {"id": 11, "sender": "bob", "content": "bob added carol", "timestamp": WHEN,
         "edited": False, "deleted": False,
         "event": {"event": "added", "user": "carol", "by": "bob"}},
        {"id": 10, "sender": "bob", "content": "bob did something new", "timestamp": WHEN,
         "edited": False, "deleted": False,
         "event": {"event": "something_new", "user": "carol", "by": "bob"}},
    ])
    assert h.ui.lines[-4:] == [
        f"{AT} [#club] * bob did something new",
        f"{AT} [#club] * bob added carol",
        f"{AT} [#club] (a message from someone you blocked, hidden)",
        "--- start of the conversation ---",
    ]


# -- sign-in and being banned ----------------------------------------------------------


def test_a_server_admin_is_told_so_at_sign_in():
    h = Harness()
    from twisted.internet.defer import Deferred

    Deferred.fromCoroutine(h.session.start())
    h.reply(type="RegisterResponse", status=200, username="alice", admin=True)
    assert h.session.admin and "signed in as alice (a server admin)" in h.ui.lines[-1]


def test_banned_by_the_server_stops_like_signed_out():
    """Close code 4003: banned; exit 3 as for 4001, and no reconnecting."""
    h = started(session_key="k1")
    h.session.connection_closed(h.conn, 4003, "banned")
    assert h.ui.lines[-1].startswith("! the server closed the connection: you are banned")
    assert "(banned)" in h.ui.lines[-1]
    assert h.session.session_key is None
    assert h.session.finished.result == EXIT_SIGN_IN
    assert not any(m["type"] in ("ResumeRequest", "RegisterRequest") for m in h.conn.sent[1:])


# -- /help and the docs ------------------------------------------------------------------


def test_help_and_docs_name_every_command():
    h = started()
    h.session.handle_line("/help")
    shown = "\n".join(h.ui.lines)
    docs = DOCS.read_text(encoding="utf-8").replace("\\|", "|")  # | in a table cell
    for command in commands.COMMANDS:
        assert command.usage in shown
        assert command.usage in HELP
        assert f"`{command.usage}`" in docs, command.usage
        assert re.search(rf"`/{command.name}\b[^`]*`", docs.split("## The web client")[0])
    assert all(len(line) <= 80 for line in commands.help_text().splitlines())


def test_piped_input_is_read_from_the_descriptor_line_by_line():
    """PlainUI reads fd 0 itself (os.read), so an exit while the pipe is open is clean."""
    import os

    from chateau.client.terminal import PlainUI

    read_end, write_end = os.pipe()
    os.write(write_end, "/who\ncafé\r\n\nlast without newline".encode())
    os.close(write_end)
    ui = PlainUI(None, in_fd=read_end)
    try:
        assert list(ui.lines()) == ["/who", "café\r", "", "last without newline"]
    finally:
        os.close(read_end)


def test_a_changed_password_is_the_one_used_to_sign_in_again():
    h = started()
    h.session.handle_line("/password pw brand-new")
    h.reply(type="PasswordChangeResponse", status=200)
    assert h.session.password == "brand-new"
    h.session.connection_closed(h.conn, 1006, None)  # no key: signs in afresh
    assert h.conn.sent[-1]["type"] == "RegisterRequest"
    assert h.conn.sent[-1]["password"] == "brand-new"
    assert not any("brand-new" in line for line in h.ui.lines)
