"""The permission table of groups (docs/protocol.md, "Who may do what"), cell by cell.

Each row is one cell of the documented table: the action, the actor's role
(None: not a member), the target's role for actions on a member, the
group's setting that matters, and the answer. Handlers ask
chateau.permissions.may; the socket tests of each request prove that they
do (tests/test_governance*.py).
"""

from __future__ import annotations

import pytest

from chateau import permissions as p

ROLES = ("owner", "admin", "member", None)

# action, setting, {role: allowed}
GROUP_ACTIONS = [
    (p.SEND, {"who_can_send": "everyone"}, {"owner": True, "admin": True, "member": True, None: False}),
    (p.SEND, {"who_can_send": "admins"}, {"owner": True, "admin": True, "member": False, None: False}),
    (p.ADD, {"who_can_add": "admins"}, {"owner": True, "admin": True, "member": False, None: False}),
    (p.ADD, {"who_can_add": "members"}, {"owner": True, "admin": True, "member": True, None: False}),
    (p.INVITE, {"who_can_add": "admins"}, {"owner": True, "admin": True, "member": False, None: False}),
    (p.INVITE, {"who_can_add": "members"}, {"owner": True, "admin": True, "member": True, None: False}),
    (p.UPDATE, {}, {"owner": True, "admin": True, "member": False, None: False}),
    (p.UNBAN, {}, {"owner": True, "admin": True, "member": False, None: False}),
    (p.ROLE, {}, {"owner": True, "admin": False, "member": False, None: False}),
    (p.MENTION_ALL, {}, {"owner": True, "admin": True, "member": False, None: False}),
]

# action, target role, {actor role: allowed}
MEMBER_ACTIONS = [
    (action, target, allowed)
    for action in (p.REMOVE, p.MUTE)
    for target, allowed in (
        ("owner", {"owner": False, "admin": False, "member": False, None: False}),
        ("admin", {"owner": True, "admin": False, "member": False, None: False}),
        ("member", {"owner": True, "admin": True, "member": False, None: False}),
    )
]


@pytest.mark.parametrize(
    "action,setting,role,expected",
    [(a, s, r, allowed[r]) for a, s, allowed in GROUP_ACTIONS for r in ROLES],
)
def test_group_action_cell(action, setting, role, expected) -> None:
    assert p.may(action, role, **setting) is expected


@pytest.mark.parametrize(
    "action,target,role,expected",
    [(a, t, r, allowed[r]) for a, t, allowed in MEMBER_ACTIONS for r in ROLES],
)
def test_member_action_cell(action, target, role, expected) -> None:
    assert p.may(action, role, target=target) is expected


def test_every_action_is_in_the_table() -> None:
    assert {a for a, _, _ in GROUP_ACTIONS} | {a for a, _, _ in MEMBER_ACTIONS} == set(p.ACTIONS)


def test_a_server_admin_acts_as_an_owner_member_or_not() -> None:
    assert p.effective_role(None, True) == "owner"
    assert p.effective_role("member", True) == "owner"
    assert p.effective_role("member", False) == "member"
    assert p.effective_role(None, False) is None


def test_an_unknown_action_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        p.may("fly", "owner")
