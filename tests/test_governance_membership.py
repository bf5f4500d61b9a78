"""Group membership in-process: add, remove and ban, unban, mute, invite codes, joins.

The rules through the real handlers (tests/inprocess.py: the real registry,
a real SQLite store, no sockets), including the permission table of
docs/protocol.md driven cell by cell for every action a handler of this
part asks it about. The wire, PostgreSQL and two clustered nodes are in
tests/test_governance_membership_sockets.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import update

from chateau import permissions as p
from chateau.cluster_sync import load_groups
from chateau.registry import Registry
from chateau.store.tables import group_invites, groups
from tests.inprocess import FakeConnection, InProcessChat, make_test_config
from tests.test_permissions import GROUP_ACTIONS, MEMBER_ACTIONS


def ask(chat: InProcessChat, who: FakeConnection, kind: str, **fields: Any) -> dict[str, Any]:
    return chat.request(who, {"type": kind, **fields})


def make_group(chat: InProcessChat, creator: FakeConnection, chatname: str, *members: str) -> None:
    reply = ask(chat, creator, "GroupMessageInitRequest", recipients=list(members),
                chatname=chatname)
    assert reply["status"] == 200, reply


def settle(chat: InProcessChat, chatname: str, **settings: str) -> None:
    """Change a group's settings in the database and the registry.

    (GroupUpdateRequest does this over the protocol; here the settings only
    set the scene.)
    """
    with chat.engine.begin() as connection:
        connection.execute(update(groups).where(groups.c.chatname == chatname).values(**settings))
    group = chat.registry.group(chatname)
    if "who_can_send" in settings and group is not None:
        group.who_can_send = settings["who_can_send"]


def events(pushes: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(m["event"], m["user"], m["by"]) for m in pushes if m["type"] == "GroupEventRecv"]


def send(chat: InProcessChat, who: FakeConnection, chatname: str, content: str = "hi") -> dict:
    return ask(chat, who, "GroupMessageRequest", recipient=chatname, content=content)


# -- add -----------------------------------------------------------------------

def test_added_users_get_the_201_everywhere_and_members_an_event(chat: InProcessChat) -> None:
    alice, bob, carol = chat.sign_in("alice"), chat.sign_in("bob"), chat.sign_in("carol")
    carol_phone = chat.sign_in("carol")
    chat.disconnect(chat.sign_in("dave"))
    make_group(chat, alice, "club", "bob")
    bob.take()
    reply = ask(chat, alice, "GroupAddRequest", chatname="Club", users=["carol", "Dave", "bob"],
                msg_id=7)
    assert reply == {"type": "GroupAddResponse", "status": 200, "chatname": "club",
                     "added": ["carol", "dave"], "already": ["bob"], "msg_id": 7}
    notice = {"type": "GroupMessageInitResponse", "status": 201, "chatname": "club",
              "creator": "alice", "members": ["alice", "bob", "carol", "dave"]}
    assert carol.take() == [notice] and carol_phone.take() == [notice]
    assert events(bob.take()) == [("added", "carol", "alice"), ("added", "dave", "alice")]
    assert alice.take() == []
    # History says it in words; the new members may read it and send.
    page = ask(chat, carol, "HistoryRequest", chatname="club")
    assert [m["content"] for m in reversed(page["messages"])] == [
        "alice added carol", "alice added dave"]
    assert send(chat, carol, "club")["type"] == "MessageSendResponse"
    # dave was offline: told at his next sign-in, once.
    dave = chat.sign_in("dave")
    assert {**notice, "offline": True} in dave.take()
    chat.disconnect(dave)
    assert not [m for m in chat.sign_in("dave").take() if m["type"] == "GroupMessageInitResponse"]


def test_add_refusals(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    chat.sign_in("carol")
    make_group(chat, alice, "club", "bob")
    assert ask(chat, alice, "GroupAddRequest", chatname="club", users=["nobody"])["status"] == 404
    assert ask(chat, alice, "GroupAddRequest", chatname="nope", users=["carol"])["status"] == 404
    assert ask(chat, alice, "GroupAddRequest", chatname="club", users=[])["status"] == 400
    refused = ask(chat, bob, "GroupAddRequest", chatname="club", users=["carol"])
    assert refused["status"] == 403 and "admins and owners" in refused["detail"]
    assert ask(chat, alice, "GroupAddRequest", chatname="club", users=7)["status"] == 400
    # Nobody was added by a refused request.
    assert chat.registry.group("club").members == {"alice", "bob"}


def test_limits_hold_on_every_path_that_adds(tmp_path: Path) -> None:
    chat = InProcessChat(make_test_config(
        tmp_path, chat={"max_group_members": "3"}, limits={"max_groups_per_user": "2"}))
    chat.start()
    try:
        alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
        carol, dave = chat.sign_in("carol"), chat.sign_in("dave")
        make_group(chat, alice, "club", "bob")
        full = ask(chat, alice, "GroupAddRequest", chatname="club", users=["carol", "dave"])
        assert full["status"] == 413 and "at most 3" in full["detail"]
        assert ask(chat, alice, "GroupAddRequest", chatname="club", users=["carol"])["status"] == 200
        code = ask(chat, alice, "GroupInviteRequest", chatname="club")["code"]
        assert ask(chat, dave, "GroupJoinRequest", code=code)["status"] == 413
        settle(chat, "club", join_rule="open", visibility="public")
        assert ask(chat, dave, "GroupJoinRequest", chatname="club")["status"] == 413
        # bob is in two groups: no path adds him to a third.
        make_group(chat, bob, "second", "dave")
        make_group(chat, dave, "third", "carol")
        busy = ask(chat, dave, "GroupAddRequest", chatname="third", users=["bob"])
        assert busy["status"] == 413 and "'bob' is already in 2 groups" in busy["detail"]
        code = ask(chat, dave, "GroupInviteRequest", chatname="third")["code"]
        assert ask(chat, bob, "GroupJoinRequest", code=code)["status"] == 413
    finally:
        chat.stop()


# -- remove and ban --------------------------------------------------------------

def test_a_removed_member_is_told_and_loses_history_catch_up_and_sending(
    chat: InProcessChat,
) -> None:
    alice, carol = chat.sign_in("alice"), chat.sign_in("carol")
    bob = chat.connect()
    key = ask(chat, bob, "RegisterRequest", username="bob", password="secret")["session_key"]
    make_group(chat, alice, "club", "bob", "carol")
    bob.take(), carol.take()
    assert send(chat, bob, "club", "before")["status"] == 200
    reply = ask(chat, alice, "GroupRemoveRequest", chatname="club", user="bob",
                reason="spam")
    assert reply == {"type": "GroupRemoveResponse", "status": 200, "chatname": "club",
                     "user": "bob", "banned": False, "msg_id": None}
    assert bob.take() == [{"type": "GroupRemovedRecv", "status": 200, "chatname": "club",
                           "by": "alice", "reason": "spam", "banned": False}]
    (pushed,) = [m for m in carol.take() if m["type"] == "GroupEventRecv"]
    assert (pushed["event"], pushed["user"], pushed["by"], pushed["reason"]) == (
        "removed", "bob", "alice", "spam")
    assert send(chat, bob, "club")["status"] == 403
    assert ask(chat, bob, "HistoryRequest", chatname="club")["status"] == 403
    # Offline, bob gets nothing more of the group at catch-up.
    chat.disconnect(bob)
    send(chat, carol, "club", "after")
    again = chat.connect()
    assert ask(chat, again, "ResumeRequest", session_key=key)["status"] == 200
    assert [m for m in again.take() if m.get("chatname") == "club"] == []
    # Not a ban: he may be added again.
    assert ask(chat, alice, "GroupAddRequest", chatname="club", users=["bob"])["added"] == ["bob"]


def test_a_banned_user_comes_back_by_no_path_until_unbanned(chat: InProcessChat) -> None:
    alice, bob, carol = chat.sign_in("alice"), chat.sign_in("bob"), chat.sign_in("carol")
    make_group(chat, alice, "club", "bob", "carol")
    code = ask(chat, alice, "GroupInviteRequest", chatname="club")["code"]
    settle(chat, "club", join_rule="open", visibility="public")
    bob.take(), carol.take()
    reply = ask(chat, alice, "GroupRemoveRequest", chatname="club", user="bob", ban=True)
    assert reply["banned"] is True
    assert bob.take() == [{"type": "GroupRemovedRecv", "status": 200, "chatname": "club",
                           "by": "alice", "reason": "", "banned": True}]
    assert events(carol.take()) == [("banned", "bob", "alice")]
    banned = ask(chat, alice, "GroupAddRequest", chatname="club", users=["bob"])
    assert banned == {"type": "ErrorResponse", "status": 409,
                      "detail": "'bob' is banned from 'club'", "msg_id": None}
    assert ask(chat, bob, "GroupJoinRequest", code=code)["status"] == 403
    assert ask(chat, bob, "GroupJoinRequest", chatname="club")["status"] == 403
    # Admins and owners see the ban; members do not.
    info = ask(chat, alice, "GroupInfoRequest", chatname="club")
    assert [(b["username"], b["by"], b["reason"]) for b in info["bans"]] == [("bob", "alice", "")]
    assert "bans" not in ask(chat, carol, "GroupInfoRequest", chatname="club")
    # Unban: 404 when not banned; then every path works again.
    assert ask(chat, alice, "GroupUnbanRequest", chatname="club", user="carol")["status"] == 404
    assert ask(chat, alice, "GroupUnbanRequest", chatname="club", user="bob") == {
        "type": "GroupUnbanResponse", "status": 200, "chatname": "club", "user": "bob",
        "msg_id": None}
    assert events(carol.take()) == [("unbanned", "bob", "alice")]
    assert ask(chat, bob, "GroupJoinRequest", code=code) == {
        "type": "GroupJoinResponse", "status": 200, "chatname": "club", "msg_id": None}
    # The moderation log has each action, newest first.
    log = [e for e in chat.wait(chat.store.audit.entries()) if not e.action.startswith("sign_in")]
    assert [(e.actor, e.action, e.target, e.detail["chatname"]) for e in log] == [
        ("alice", "group_unban", "bob", "club"), ("alice", "group_ban", "bob", "club")]


def test_remove_refusals_and_banning_a_non_member(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    chat.disconnect(chat.sign_in("eve"))
    make_group(chat, alice, "club", "bob")
    assert ask(chat, alice, "GroupRemoveRequest", chatname="club", user="alice")["status"] == 400
    assert ask(chat, alice, "GroupRemoveRequest", chatname="club", user="eve")["status"] == 404
    assert ask(chat, alice, "GroupRemoveRequest", chatname="club", user="zed",
               ban=True)["status"] == 404
    assert ask(chat, bob, "GroupRemoveRequest", chatname="club", user="alice")["status"] == 403
    assert ask(chat, alice, "GroupRemoveRequest", chatname="club", user="bob",
               reason="x" * 501)["status"] == 400
    # eve left long ago (or never came): a ban still keeps her out.
    bob.take()
    assert ask(chat, alice, "GroupRemoveRequest", chatname="club", user="eve",
               ban=True, reason="troll")["status"] == 200
    assert events(bob.take()) == [("banned", "eve", "alice")]
    assert ask(chat, alice, "GroupAddRequest", chatname="club", users=["eve"])["status"] == 409


# -- mute and who may send -------------------------------------------------------------

def test_a_muted_member_reads_but_cannot_send_until_lifted(chat: InProcessChat) -> None:
    alice, bob, carol = chat.sign_in("alice"), chat.sign_in("bob"), chat.sign_in("carol")
    make_group(chat, alice, "club", "bob", "carol")
    bob.take(), carol.take()
    reply = ask(chat, alice, "GroupMuteRequest", chatname="club", user="bob", minutes=10)
    until = reply.pop("muted_until")
    assert reply == {"type": "GroupMuteResponse", "status": 200, "chatname": "club",
                     "user": "bob", "msg_id": None}
    (pushed,) = carol.take()
    assert (pushed["event"], pushed["user"], pushed["until"]) == ("muted", "bob", until)
    refused = send(chat, bob, "club")
    assert refused == {"type": "ErrorResponse", "status": 403,
                       "detail": f"you are muted in 'club' until {until}", "msg_id": None}
    send(chat, carol, "club", "still heard")
    assert [m["content"] for m in bob.take() if m["type"] == "GroupMessageRecv"] == ["still heard"]
    info = ask(chat, carol, "GroupInfoRequest", chatname="club")
    assert {m["username"]: m["muted"] for m in info["members"]}["bob"] is True
    # Restarted, the server still knows (loaded with the groups).
    fresh = Registry()
    chat.wait(load_groups(chat.store, fresh))
    assert "bob" in fresh.group("club").muted_until
    assert ask(chat, alice, "GroupMuteRequest", chatname="club", user="bob",
               minutes=0)["muted_until"] is None
    assert events(carol.take()) == [("unmuted", "bob", "alice")]
    assert send(chat, bob, "club")["status"] == 200
    for bad in (-1, 525_601):
        assert ask(chat, alice, "GroupMuteRequest", chatname="club", user="bob",
                   minutes=bad)["status"] == 400
    assert ask(chat, alice, "GroupMuteRequest", chatname="club", user="eve",
               minutes=1)["status"] == 404


def test_a_mute_ends_by_itself(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    make_group(chat, alice, "club", "bob")
    ask(chat, alice, "GroupMuteRequest", chatname="club", user="bob", minutes=1)
    chat.registry.group("club").muted_until["bob"] = 1  # long past
    assert send(chat, bob, "club")["status"] == 200


def test_only_admins_send_in_an_announcement_group(chat: InProcessChat) -> None:
    alice, bob, carol = chat.sign_in("alice"), chat.sign_in("bob"), chat.sign_in("carol")
    make_group(chat, alice, "news", "bob", "carol")
    settle(chat, "news", who_can_send="admins")
    assert send(chat, bob, "news") == {"type": "ErrorResponse", "status": 403,
                                       "detail": "only admins send in 'news'", "msg_id": None}
    assert send(chat, alice, "news")["status"] == 200
    assert ask(chat, alice, "GroupRoleRequest", chatname="news", user="bob",
               role="admin")["status"] == 200
    assert send(chat, bob, "news")["status"] == 200
    # Loaded at start-up from the database too.
    fresh = Registry()
    chat.wait(load_groups(chat.store, fresh))
    group = fresh.group("news")
    assert group.who_can_send == "admins" and group.roles == {"alice": "owner", "bob": "admin"}
    # A server admin who is a plain member acts as an owner.
    chat.wait(chat.store.accounts.set_admin("carol", True))
    assert send(chat, carol, "news")["status"] == 200


# -- invite codes and joins ------------------------------------------------------

def test_invite_codes_join_until_used_up_or_expired(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    carol, dave = chat.sign_in("carol"), chat.sign_in("dave")
    carol_phone = chat.sign_in("carol")
    make_group(chat, alice, "club", "bob")
    reply = ask(chat, alice, "GroupInviteRequest", chatname="club", max_uses=1, hours=2)
    code, expires = reply.pop("code"), reply.pop("expires")
    assert reply == {"type": "GroupInviteResponse", "status": 201, "chatname": "club",
                     "max_uses": 1, "msg_id": None}
    assert len(code) >= 16 and expires.endswith("Z")
    with chat.engine.connect() as connection:
        stored = connection.execute(group_invites.select()).one()
    assert stored.code_hash != code and code not in repr(stored)
    bob.take()
    assert ask(chat, carol, "GroupJoinRequest", code=f" {code} ") == {
        "type": "GroupJoinResponse", "status": 200, "chatname": "club", "msg_id": None}
    assert [m["status"] for m in carol_phone.take()] == [201]
    assert carol.take() == []
    assert events(bob.take()) == [("joined", "carol", "carol")]
    assert ask(chat, carol, "GroupJoinRequest", code=code)["status"] == 404  # used up
    unlimited = ask(chat, alice, "GroupInviteRequest", chatname="club")
    assert unlimited["max_uses"] is None
    assert ask(chat, carol, "GroupJoinRequest", code=unlimited["code"])["already"] is True
    with chat.engine.begin() as connection:
        connection.execute(update(group_invites).values(expires_at=1))
    expired = ask(chat, dave, "GroupJoinRequest", code=unlimited["code"])
    assert expired["status"] == 404 and "expired" in expired["detail"]
    assert ask(chat, dave, "GroupJoinRequest", code="nonsense")["status"] == 404
    assert ask(chat, dave, "GroupJoinRequest")["status"] == 400
    assert ask(chat, dave, "GroupJoinRequest", code=code, chatname="club")["status"] == 400
    for bad in ({"max_uses": 0}, {"hours": 0}, {"hours": 8761}):
        assert ask(chat, alice, "GroupInviteRequest", chatname="club", **bad)["status"] == 400
    assert ask(chat, bob, "GroupInviteRequest", chatname="club")["status"] == 403


def test_joining_by_name_only_public_open_groups(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    carol = chat.sign_in("carol")
    make_group(chat, alice, "club", "bob")
    closed = ask(chat, carol, "GroupJoinRequest", chatname="club")
    assert closed["status"] == 403 and "invite code" in closed["detail"]
    settle(chat, "club", join_rule="open")
    assert ask(chat, carol, "GroupJoinRequest", chatname="club")["status"] == 403
    settle(chat, "club", visibility="public")
    assert ask(chat, carol, "GroupJoinRequest", chatname="Club")["status"] == 200
    assert ask(chat, carol, "GroupJoinRequest", chatname="club")["already"] is True
    assert ask(chat, carol, "GroupJoinRequest", chatname="nope")["status"] == 404
    assert "carol" in chat.registry.group("club").members


def test_leaving_stores_and_pushes_a_left_event(chat: InProcessChat) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    make_group(chat, alice, "club", "bob")
    bob.take()
    assert ask(chat, alice, "GroupLeaveRequest", chatname="club")["status"] == 200
    pushed = bob.take()
    assert [m["type"] for m in pushed] == ["GroupMemberLeftRecv", "GroupEventRecv"]
    assert events(pushed) == [("left", "alice", "alice")]
    # bob inherited the group: the registry knows, so he may govern it.
    assert chat.registry.group("club").roles == {"bob": "owner"}
    page = ask(chat, bob, "HistoryRequest", chatname="club")
    assert page["messages"][0]["content"] == "alice left"


def test_a_server_admin_acts_as_an_owner_without_being_a_member(chat: InProcessChat) -> None:
    alice, bob, carol = chat.sign_in("alice"), chat.sign_in("bob"), chat.sign_in("carol")
    root = chat.sign_in("root")
    make_group(chat, alice, "club", "bob", "carol")
    assert ask(chat, root, "GroupRoleRequest", chatname="club", user="bob",
               role="admin")["status"] == 403
    chat.wait(chat.store.accounts.set_admin("root", True))
    assert ask(chat, root, "GroupRoleRequest", chatname="club", user="bob",
               role="owner")["status"] == 200
    assert chat.registry.group("club").roles["bob"] == "owner"
    # As an owner, not above one: owners are not removed, not even by server admins.
    assert ask(chat, root, "GroupRemoveRequest", chatname="club", user="alice")["status"] == 403
    assert ask(chat, root, "GroupRemoveRequest", chatname="club", user="carol",
               ban=True)["status"] == 200
    assert ask(chat, root, "GroupMuteRequest", chatname="club", user="bob",
               minutes=1)["status"] == 403
    assert "bans" in ask(chat, bob, "GroupInfoRequest", chatname="club")


# -- the permission table, cell by cell --------------------------------------------------

ACTORS = ("owner", "admin", "member", None, "server admin")
# The role each actor's user has in the cell's group.
ACTOR_USER = {"owner": "olga", "admin": "adam", "member": "mia", None: "xavier",
              "server admin": "root"}
TARGET_USER = {"owner": "otto", "admin": "ann", "member": "mo"}


def _expected(allowed: dict[Any, bool], actor: Any) -> bool:
    return allowed["owner" if actor == "server admin" else actor]


CELLS = [
    (action, setting, None, actor, _expected(allowed, actor))
    for action, setting, allowed in GROUP_ACTIONS if action != p.UPDATE
    for actor in ACTORS
] + [
    (action, {}, target, actor, _expected(allowed, actor))
    for action, target, allowed in MEMBER_ACTIONS
    for actor in ACTORS
]


@pytest.fixture(scope="module")
def table_chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    chat = InProcessChat(make_test_config(
        tmp_path_factory.mktemp("table"), limits={"groups_created_per_hour": "1000"}))
    chat.start()
    users = {name: chat.sign_in(name)
             for name in [*ACTOR_USER.values(), *TARGET_USER.values(), "newcomer", "banned"]}
    chat.wait(chat.store.accounts.set_admin("root", True))
    yield {"chat": chat, "users": users, "count": [0]}
    chat.stop()


@pytest.mark.parametrize(
    "action,setting,target,actor,expected", CELLS,
    ids=[f"{a}-{s or t or ''}-{r}" for a, s, t, r, _ in CELLS],
)
def test_permission_cell_through_the_handlers(
    table_chat: dict[str, Any], action: str, setting: dict[str, str], target: str | None,
    actor: str | None, expected: bool,
) -> None:
    chat: InProcessChat = table_chat["chat"]
    users: dict[str, FakeConnection] = table_chat["users"]
    table_chat["count"][0] += 1
    chatname = f"cell{table_chat['count'][0]}"
    owner = users["olga"]
    members = ["adam", "mia", "otto", "ann", "mo"]
    if actor == "server admin" and action in (p.SEND, p.MENTION_ALL):
        members.append("root")  # sending needs membership; the admin is a plain member
    make_group(chat, owner, chatname, *members)
    for name, role in (("adam", "admin"), ("otto", "owner"), ("ann", "admin")):
        assert ask(chat, owner, "GroupRoleRequest", chatname=chatname, user=name,
                   role=role)["status"] == 200
    if setting:
        settle(chat, chatname, **setting)
    me = users[ACTOR_USER[actor]]
    if action == p.SEND:
        reply = send(chat, me, chatname)
    elif action == p.MENTION_ALL:
        reply = send(chat, me, chatname, "@all meeting now")
        if expected:
            assert reply["mentions"] == ["@all"], reply
    elif action == p.ADD:
        reply = ask(chat, me, "GroupAddRequest", chatname=chatname, users=["newcomer"])
    elif action == p.INVITE:
        reply = ask(chat, me, "GroupInviteRequest", chatname=chatname)
    elif action == p.UNBAN:
        assert ask(chat, owner, "GroupRemoveRequest", chatname=chatname, user="banned",
                   ban=True)["status"] == 200
        reply = ask(chat, me, "GroupUnbanRequest", chatname=chatname, user="banned")
    elif action == p.ROLE:
        reply = ask(chat, me, "GroupRoleRequest", chatname=chatname, user="mo", role="admin")
    elif action == p.REMOVE:
        reply = ask(chat, me, "GroupRemoveRequest", chatname=chatname, user=TARGET_USER[target])
    elif action == p.MUTE:
        reply = ask(chat, me, "GroupMuteRequest", chatname=chatname, user=TARGET_USER[target],
                    minutes=5)
    else:
        raise AssertionError(action)
    assert reply["status"] in ((200, 201) if expected else (403,)), reply
    group = chat.registry.group(chatname)
    if action == p.REMOVE:
        assert (TARGET_USER[target] not in group.members) is expected
    if action == p.MUTE:
        assert (TARGET_USER[target] in group.muted_until) is expected
    if action == p.ADD:
        assert ("newcomer" in group.members) is expected


def test_every_action_of_this_part_is_driven() -> None:
    assert {cell[0] for cell in CELLS} == set(p.ACTIONS) - {p.UPDATE}


def test_a_ban_that_lands_while_an_add_is_on_its_way_keeps_the_user_out(
    chat: InProcessChat,
) -> None:
    """The ban is checked in the transaction that adds, not before it."""
    from chateau.store.membership import remove_txn

    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    chat.sign_in("carol")
    make_group(chat, alice, "club", "bob")
    chat.db_pool.pause()
    adding = chat.begin(alice, {"type": "GroupAddRequest", "chatname": "club",
                                "users": ["carol"]})
    chat.db_pool.run_next()  # the group's settings; the add's transaction now waits
    assert chat.db_pool.waiting == 1
    with chat.engine.begin() as connection:
        assert remove_txn(connection, "club", "alice", "carol", True, "",
                          frozenset({"member"}))[0] == "banned"
    chat.db_pool.resume()
    reply = chat.finish(adding)
    assert (reply["status"], reply["detail"]) == (409, "'carol' is banned from 'club'")
    assert "carol" not in chat.registry.group("club").members


def test_other_nodes_membership_events_keep_the_registry_current(chat: InProcessChat) -> None:
    """What ClusterSync does with members_added, member_role, member_muted, member_left."""
    from chateau.cluster_sync import ClusterSync

    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    carol = chat.sign_in("carol")
    make_group(chat, alice, "club", "bob")
    sync = ClusterSync(chat.registry, chat.store, chat.delivery, chat.catch_up, chat.backplane)
    group = chat.registry.group("club")
    sync.event({"t": "members_added", "node": "n2", "chatname": "club", "users": ["carol"]})
    assert "carol" in group.members and chat.registry.group_count("carol") == 1
    sync.event({"t": "member_role", "node": "n2", "chatname": "club", "user": "carol",
                "role": "admin"})
    assert group.role_of("carol") == "admin"
    sync.event({"t": "member_muted", "node": "n2", "chatname": "club", "user": "bob",
                "until": 253_402_300_799_999})
    assert send(chat, bob, "club")["status"] == 403
    sync.event({"t": "member_muted", "node": "n2", "chatname": "club", "user": "bob",
                "until": 0})
    assert send(chat, bob, "club")["status"] == 200
    sync.event({"t": "member_left", "node": "n2", "chatname": "club", "user": "carol"})
    assert send(chat, carol, "club")["status"] == 403 and group.role_of("carol") is None
    # Events about groups or members this node does not know change nothing.
    sync.event({"t": "member_role", "node": "n2", "chatname": "nope", "user": "x",
                "role": "owner"})
    sync.event({"t": "members_added", "node": "n2", "chatname": "nope", "users": ["x"]})
    sync.event({"t": "member_muted", "node": "n2", "chatname": "club", "user": "x",
                "until": 5})
    assert chat.registry.group("nope") is None and "x" not in group.muted_until


def test_on_postgresql_an_add_waits_for_a_ban_in_flight_and_then_refuses(postgres: Any) -> None:
    """Two nodes, one database: the group's row lock orders a ban and an add racing."""
    import threading

    from chateau.store import migrate
    from chateau.store.engine import make_engine
    from chateau.store.accounts import create_user_txn
    from chateau.store.groups import create_group_txn
    from chateau.store.membership import add_members_txn, remove_txn

    engine = make_engine(postgres.new_database())
    try:
        with engine.begin() as connection:
            migrate.prepare(connection)
            for name in ("ann", "cat"):
                create_user_txn(connection, name, "x", "local", None)
            create_group_txn(connection, "club", "ann", ["ann"], {"ann"})
        outcome: list[Any] = []
        with engine.begin() as banning:
            assert remove_txn(banning, "club", "ann", "cat", True, "",
                              frozenset({"member"}))[0] == "banned"

            def add() -> None:
                with engine.begin() as adding:
                    outcome.append(add_members_txn(adding, "club", ["cat"], set(), 10, 10))

            racer = threading.Thread(target=add)
            racer.start()
            racer.join(0.5)
            assert racer.is_alive() and not outcome  # waiting for the group's row
        racer.join(10)
        assert (outcome[0].refusal, outcome[0].who) == ("banned", "cat")
    finally:
        engine.dispose()
