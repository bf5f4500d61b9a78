"""``chateau-client`` as people and scripts run it, against a real server.

``--send`` runs as a plain subprocess; the interactive mode runs on a
pseudo-terminal (pexpect), with two users chatting through it.
"""

from __future__ import annotations

import json
import re

import pexpect
import pytest

from tests.clientsupport import (  # noqa: F401  (chateau is a fixture)
    ChateauProcess,
    chateau,
    finish,
    frames,
    make_certificates,
    register,
    run_cli,
    spawn,
)


# -- --send --------------------------------------------------------------------


def test_send_file_with_an_array_prints_every_frame_as_json_lines(chateau, tmp_path):
    script = tmp_path / "hello.json"
    script.write_text(json.dumps([
        register("alice", msg_id=1),
        {"type": "ClientListRequest", "msg_id": 2},
    ]))
    result = run_cli(chateau.url, "--send", str(script), "--wait", "0.5")
    assert result.returncode == 0, result.stderr
    received = frames(result.stdout)
    assert [f["type"] for f in received] == ["RegisterResponse", "ClientListResponse"]
    assert received[0]["username"] == "alice" and received[0]["msg_id"] == 1
    assert received[1] == {"type": "ClientListResponse", "status": 200, "clients": [], "msg_id": 2}
    assert result.stderr == ""


def test_send_reads_json_lines_and_single_objects_in_order(chateau, tmp_path):
    first = tmp_path / "one.json"
    first.write_text(json.dumps(register("bob", msg_id="a"), indent=2))
    lines = "\n".join(json.dumps({"type": "ClientListRequest", "msg_id": n}) for n in (1, 2))
    result = run_cli(chateau.url, "--send", str(first), "-", "--wait", "0.5",
                     input=lines + "\n\n")
    assert result.returncode == 0, result.stderr
    assert [f.get("msg_id") for f in frames(result.stdout)] == ["a", 1, 2]


def test_send_with_user_signs_in_first_and_delivers(chateau, tmp_path):
    message = tmp_path / "msg.json"
    message.write_text(json.dumps(
        {"type": "GroupMessageRequest", "recipient": "carol", "content": "from a script"}))
    run_cli(chateau.url, "--send", "-", input=json.dumps(register("carol")), password=None)
    result = run_cli(chateau.url, "--user", "Dave", "--send", str(message), "--wait", "0.5",
                     password="pw")
    assert result.returncode == 0, result.stderr
    received = frames(result.stdout)
    assert received[0]["type"] == "RegisterResponse" and received[0]["username"] == "dave"
    assert received[1]["type"] == "MessageSendResponse" and isinstance(received[1]["id"], int)


def test_send_strict_fails_on_error_response(chateau, tmp_path):
    script = json.dumps({"type": "ClientListRequest", "msg_id": 9})
    lenient = run_cli(chateau.url, "--send", "-", "--wait", "0.3", input=script)
    assert lenient.returncode == 0
    (error,) = frames(lenient.stdout)
    assert error["type"] == "ErrorResponse" and error["msg_id"] == 9
    assert "not signed in" in error["detail"]

    strict = run_cli(chateau.url, "--send", "-", "--wait", "0.3", "--strict", input=script)
    assert strict.returncode == 4
    assert frames(strict.stdout)[0]["type"] == "ErrorResponse"

    fine = run_cli(chateau.url, "--send", "-", "--wait", "0.3", "--strict",
                   input=json.dumps(register("erin")))
    assert fine.returncode == 0, fine.stdout


def test_send_raw_values_and_oversized_frames(chateau):
    # Non-object JSON goes out as it is; the server's answer is printed.
    result = run_cli(chateau.url, "--send", "-", "--wait", "0.3", input='[[1, 2], "text"]')
    assert [f["status"] for f in frames(result.stdout)] == [400, 400]
    big = json.dumps({"type": "ClientListRequest", "pad": "x" * 70000})
    result = run_cli(chateau.url, "--send", "-", "--wait", "0.5", "--strict", input=big)
    assert result.returncode == 4
    assert "closed the connection: 1009" in result.stderr


def test_send_connection_failure_is_exit_1(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once it is closed
    result = run_cli(f"ws://127.0.0.1:{port}/ws", "--send", "-", input="{}")
    assert result.returncode == 1
    assert "cannot connect" in result.stderr and result.stdout == ""


def test_send_not_a_websocket_is_exit_1(chateau):
    result = run_cli(chateau.url.replace("/ws", "/nothing-here"), "--send", "-", input="{}")
    assert result.returncode == 1
    assert "cannot connect" in result.stderr


@pytest.mark.parametrize("content, message", [
    ('{"type": "ClientListRequest"}\nnot json\n', "2: not JSON"),
    ("", None),
])
def test_send_bad_input_is_exit_2(chateau, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = run_cli(chateau.url, "--send", str(path), "--wait", "0.2")
    if message is None:
        assert result.returncode == 0 and result.stdout == ""  # nothing to send is fine
    else:
        assert result.returncode == 2
        assert message in result.stderr
    missing = run_cli(chateau.url, "--send", str(tmp_path / "missing.json"))
    assert missing.returncode == 2 and "No such file" in missing.stderr
    no_user = run_cli(chateau.url)
    assert no_user.returncode == 2 and "--user" in no_user.stderr


def test_wss_verifies_the_server_with_ca_file(tmp_path):
    ca, cert, key = make_certificates(tmp_path / "pki")
    server = ChateauProcess(tmp_path / "tls-server", tls=(cert, key)).start()
    try:
        script = json.dumps(register("tls-user"))
        trusted = run_cli(server.url, "--ca-file", str(ca), "--send", "-", "--wait", "0.5",
                          "--strict", input=script)
        assert trusted.returncode == 0, trusted.stderr
        assert frames(trusted.stdout)[0]["type"] == "RegisterResponse"

        # Verification is on by default: the private CA is unknown to the system.
        untrusted = run_cli(server.url, "--send", "-", input=script)
        assert untrusted.returncode == 1
        assert "cannot connect" in untrusted.stderr and "TLS" in untrusted.stderr
        assert untrusted.stdout == ""

        bad_ca = tmp_path / "not-a-ca.pem"
        bad_ca.write_text("hello")
        result = run_cli(server.url, "--ca-file", str(bad_ca), "--send", "-", input=script)
        assert result.returncode == 2 and "no PEM certificate" in result.stderr
    finally:
        server.stop()


# -- interactive, on a pseudo-terminal ----------------------------------------------


def test_two_users_chat_interactively(chateau, tmp_path):
    alice = spawn(chateau.url, "alice", tmp_path)
    alice.expect("signed in as alice")
    alice.send("/who\r")
    alice.expect("nobody else is online")
    bob = spawn(chateau.url, "bob", tmp_path)
    bob.expect("signed in as bob")
    bob.send("/who\r")
    bob.expect("online: alice")

    # A group, and the creator talks there at once.
    alice.send('/group "study group" bob\r')
    alice.expect(r"created #study group with bob; now talking there")
    bob.expect(r"you are in #study group, started by alice \(members: alice, bob\)")
    alice.send("hello group\r")
    alice.expect(r"\[#study group\] alice: hello group")
    bob.expect(r"\[#study group\] alice: hello group")

    # Bob's first chat became his current one; a message arriving while he
    # types is printed above his line, and the line comes back intact.
    bob.send("half a thou")
    bob.expect("half a thou")
    alice.send("/msg bob psst\r")
    alice.expect(r"\[bob\] alice: psst|\[@bob\] alice: psst")
    bob.expect(r"\[@alice\] alice: psst")
    bob.expect(r"#study group> half a thou")
    bob.send("ght\r")
    bob.expect(r"\[#study group\] bob: half a thought")
    alice.expect(r"\[#study group\] bob: half a thought")

    # /to switches the current chat; plain text follows it.
    bob.send("/to alice\r")
    bob.expect("now talking in @alice")
    bob.send("just you\r")
    alice.expect(r"\[@bob\] bob: just you")

    # Unicode survives the round trip; escape sequences are shown, not obeyed.
    alice.send("/msg bob café 日本\r")
    bob.expect("alice: café 日本")
    sneaky = {"type": "GroupMessageRequest", "recipient": "bob", "content": "\x1b[2Jgone?"}
    assert run_cli(chateau.url, "--user", "mallory", "--send", "-", password="pw",
                   input=json.dumps(sneaky)).returncode == 0
    bob.expect(re.escape("[@mallory] mallory: ^[[2Jgone?"))

    # A random chat, answered by the partner with /to.
    alice.send("/random anyone there?\r")
    alice.expect(r"random chat with bob \(~bob\): now talking there")
    bob.expect(r"alice started a random chat with you: /to ~alice to answer")
    bob.expect(re.escape("[~alice] alice: anyone there?"))
    bob.send("/to ~alice\r")
    bob.expect("now talking in ~alice")
    bob.send("hi stranger\r")
    alice.expect(re.escape("[~bob] bob: hi stranger"))
    bob.send("/leave\r")
    bob.expect(re.escape("you left ~alice"))
    alice.expect(re.escape("bob left the random chat ~bob"))

    # Errors from the server are shown in words.
    alice.send("/msg nobody-by-this-name hi\r")
    alice.expect(r"message to nobody-by-this-name not sent: no such user or group")
    alice.send("/bogus\r")
    alice.expect("unknown command /bogus")

    assert finish(alice) == 0
    bob.send("/who\r")
    bob.expect("nobody else is online")
    assert finish(bob, "\x04") == 0  # Ctrl-D on an empty line


def test_password_prompt_and_refused_sign_in(chateau, tmp_path):
    first = run_cli(chateau.url, "--send", "-", input=json.dumps(register("frank", "right")))
    assert first.returncode == 0
    child = spawn(chateau.url, "frank", tmp_path, None)
    child.expect("Password for frank: ")
    child.sendline("wrong")
    child.expect("sign-in failed: .*wrong username or password")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3

    child = spawn(chateau.url, "frank", tmp_path, None)
    child.expect("Password for frank: ")
    child.sendline("right")
    child.expect("signed in as frank")
    assert finish(child) == 0


def test_piped_input_runs_commands_without_a_terminal(chateau):
    run_cli(chateau.url, "--send", "-", input=json.dumps(register("gina")))
    result = run_cli(chateau.url, "--user", "hank", password="pw",
                     input="/msg gina one\n/msg gina two\n/who\n")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("* signed in as hank")
    assert any(line.endswith("hank: one") for line in lines)
    assert any(line.endswith("hank: two") for line in lines)
    assert "* nobody else is online" in lines
    assert "\x1b" not in result.stdout  # no terminal control codes when piped


def test_connection_refused_interactive_is_exit_1(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_cli(f"ws://127.0.0.1:{port}/ws", "--user", "ivy", password="pw", input="")
    assert result.returncode == 1
    assert "cannot connect" in result.stdout
