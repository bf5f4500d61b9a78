"""The periodic account check: what it costs must follow what happened, not who is online.

Every ``[chat] account_check_interval`` it saves the delivery cursors of
users online and looks for disabled accounts. A user who was sent nothing
since the last check has nothing a crash could make them miss or see twice,
so their cursor is left as it is; and the backstop for disabled accounts
reads a bounded slice of the users online each time, in turn. Otherwise a
server holding tens of thousands of idle users rewrote every one of their
cursors every five seconds, holding the GIL the reactor needs.
"""

from __future__ import annotations

from typing import Any

from chateau import catchup as catchup_module
from tests.inprocess import InProcessChat


def run_check(chat: InProcessChat) -> None:
    done = chat.catch_up.check_accounts()
    if done is not None:
        chat.wait(done)


def arguments_of(monkeypatch: Any, owner: Any, name: str) -> list[Any]:
    """The first argument of every call of ``owner.name`` from now on (copied as a list)."""
    calls: list[Any] = []
    real = getattr(owner, name)

    def spy(argument: Any) -> Any:
        calls.append(list(argument) if not isinstance(argument, str) else argument)
        return real(argument)

    monkeypatch.setattr(owner, name, spy)
    return calls


def saved_rows(chat: InProcessChat, monkeypatch: Any) -> list[list[tuple[str, Any, int]]]:
    """Every call of save_cursor_rows from now on, with its rows."""
    return arguments_of(monkeypatch, chat.store.cursors, "save_cursor_rows")


def test_only_users_sent_something_since_the_last_check_have_their_cursor_saved(
    chat: InProcessChat, monkeypatch: Any,
) -> None:
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    idle = [chat.sign_in(f"idle{n}") for n in range(5)]
    run_check(chat)  # after the sign-ins: everyone is even
    calls = saved_rows(chat, monkeypatch)

    ack = chat.request(alice, {"type": "MessageRequest", "recipient": "bob", "content": "hi"})
    assert ack["type"] == "MessageSendResponse"
    bob.take()
    run_check(chat)
    assert [sorted({row[0] for row in rows}) for rows in calls] == [["alice", "bob"]]
    assert all(row[2] == ack["id"] for row in calls[0])
    assert chat.wait(chat.store.cursors.delivery_cursors("bob"))[None] == ack["id"]

    # Nothing sent to anyone since: nothing to save.
    run_check(chat)
    assert len(calls) == 1
    # The idle users' cursors were saved once, at the first check; the message
    # could not have been missed by them, so their older cursor loses nothing.
    for connection in idle:
        chat.disconnect(connection)
    chat.disconnect(alice)
    chat.disconnect(bob)
    assert chat.wait(chat.store.cursors.delivery_cursors("idle0"))[None] <= ack["id"]


def test_a_failed_save_is_tried_again_at_the_next_check(
    chat: InProcessChat, monkeypatch: Any,
) -> None:
    alice = chat.sign_in("alice")
    chat.sign_in("bob")
    run_check(chat)
    ack = chat.request(alice, {"type": "MessageRequest", "recipient": "bob", "content": "hi"})
    cursors = chat.store.cursors
    real = cursors.save_cursor_rows
    from twisted.internet.defer import fail

    monkeypatch.setattr(cursors, "save_cursor_rows", lambda rows: fail(RuntimeError("down")))
    run_check(chat)
    calls = saved_rows(chat, monkeypatch)
    monkeypatch.setattr(cursors, "save_cursor_rows", lambda rows: (calls.append(rows), real(rows))[1])
    run_check(chat)
    assert sorted({row[0] for row in calls[-1]}) == ["alice", "bob"]
    assert chat.wait(cursors.delivery_cursors("bob"))[None] == ack["id"]


def test_the_disabled_backstop_reads_a_bounded_slice_in_turn(
    chat: InProcessChat, monkeypatch: Any,
) -> None:
    monkeypatch.setattr(catchup_module, "DISABLED_CHECK_SLICE", 3)
    users = [f"user{n}" for n in range(7)]
    for name in users:
        chat.sign_in(name)
    asked = arguments_of(monkeypatch, chat.store.accounts, "disabled_among")
    for _ in range(3):
        run_check(chat)
    assert all(len(names) <= 3 for names in asked)
    assert sorted({name for names in asked for name in names}) == users


def test_the_check_looks_only_at_connections_that_sent_something(
    chat: InProcessChat, monkeypatch: Any,
) -> None:
    """Idle users cost the check nothing: it never asks for their connections."""
    alice, bob = chat.sign_in("alice"), chat.sign_in("bob")
    for n in range(20):
        chat.sign_in(f"idle{n}")
    run_check(chat)
    looked = arguments_of(monkeypatch, chat.catch_up.registry, "connections")
    chat.request(alice, {"type": "MessageRequest", "recipient": "bob", "content": "hi"})
    bob.take()
    run_check(chat)
    assert sorted(looked) == ["alice", "bob"]
    looked.clear()
    run_check(chat)
    assert looked == []


def test_a_user_left_out_while_being_caught_up_is_saved_at_a_later_check(
    chat: InProcessChat, monkeypatch: Any,
) -> None:
    alice = chat.sign_in("alice")
    bob = chat.sign_in("bob")
    run_check(chat)
    ack = chat.request(alice, {"type": "MessageRequest", "recipient": "bob", "content": "hi"})
    bob.take()
    calls = saved_rows(chat, monkeypatch)
    monkeypatch.setattr(chat.catch_up, "busy", lambda: {"bob"})
    run_check(chat)
    assert sorted({row[0] for row in calls[-1]}) == ["alice"]
    monkeypatch.undo()
    calls = saved_rows(chat, monkeypatch)
    run_check(chat)
    assert sorted({row[0] for row in calls[-1]}) == ["bob"]
    assert chat.wait(chat.store.cursors.delivery_cursors("bob"))[None] == ack["id"]


def test_a_signed_off_connection_is_forgotten_by_the_check(chat: InProcessChat) -> None:
    alice = chat.sign_in("alice")
    chat.sign_in("bob")
    chat.request(alice, {"type": "MessageRequest", "recipient": "bob", "content": "hi"})
    chat.disconnect(alice)
    assert alice not in chat.catch_up._sent
    run_check(chat)
    assert all(c.username is not None for c in chat.catch_up._sent)


def test_after_a_burst_of_sign_ins_the_cursors_are_saved_a_bounded_slice_at_a_time(
    chat: InProcessChat, monkeypatch: Any,
) -> None:
    monkeypatch.setattr(catchup_module, "CURSOR_SAVE_SLICE", 3)
    users = [f"user{n}" for n in range(7)]
    for name in users:
        chat.sign_in(name)
    run_check(chat)
    calls = saved_rows(chat, monkeypatch)
    alice = chat.sign_in("alice")
    for name in users:
        chat.request(alice, {"type": "MessageRequest", "recipient": name, "content": "hi"})
    for _ in range(3):
        run_check(chat)
    per_check = [{row[0] for row in rows} for rows in calls]
    assert [len(names) for names in per_check] == [3, 3, 2]
    assert sorted(set().union(*per_check)) == sorted(users + ["alice"])
    run_check(chat)
    assert len(calls) == 3


def test_a_sign_in_that_delivered_nothing_saves_no_cursor(
    chat: InProcessChat, monkeypatch: Any,
) -> None:
    """Everyone resuming at once after a restart is not everyone's cursor rewritten."""
    chat.sign_in("bob")
    calls = saved_rows(chat, monkeypatch)
    for n in range(5):
        chat.sign_in(f"user{n}")
    run_check(chat)
    assert calls == []


def test_a_sign_in_that_pushed_missed_messages_saves_its_cursor(
    chat: InProcessChat, monkeypatch: Any,
) -> None:
    chat.disconnect(chat.sign_in("bob"))
    alice = chat.sign_in("alice")
    ack = chat.request(alice, {"type": "MessageRequest", "recipient": "bob", "content": "hi"})
    assert ack["type"] == "MessageSendResponse"
    run_check(chat)
    calls = saved_rows(chat, monkeypatch)
    bob = chat.sign_in("bob")
    assert [m.get("offline") for m in bob.take() if m["type"] == "MessageRecv"] == [True]
    run_check(chat)
    assert [sorted({row[0] for row in rows}) for rows in calls] == [["bob"]]
    assert chat.wait(chat.store.cursors.delivery_cursors("bob"))[None] == ack["id"]
