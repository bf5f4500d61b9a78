"""The one password rule (chateau.auth.passwords), without sockets or threads."""

from __future__ import annotations

import pytest

from chateau.auth.directory import Directory, DirectoryRefused
from chateau.auth.passwords import MAX_PASSWORD_BYTES, PasswordProblem, password_problem
from chateau.config import load_config


@pytest.mark.parametrize("password, local, problem", [
    ("pw", False, None),
    ("pw", True, None),
    (" correct horse ", True, None),
    ("", False, PasswordProblem.EMPTY),
    (" \t\n", True, PasswordProblem.EMPTY),
    ("p\x00w", False, PasswordProblem.NUL),
    ("\x00", True, PasswordProblem.NUL),
    ("a" * MAX_PASSWORD_BYTES, True, None),
    ("a" * (MAX_PASSWORD_BYTES + 1), True, PasswordProblem.TOO_LONG),
    ("é" * (MAX_PASSWORD_BYTES // 2 + 1), True, PasswordProblem.TOO_LONG),  # bytes, not letters
    ("a" * (MAX_PASSWORD_BYTES + 1), False, None),  # a directory checks its own
])
def test_the_rule(password, local, problem):
    assert password_problem(password, local=local) is problem


def test_the_reasons_are_the_wire_details():
    # Callers send "authentication failed: " + reason; test_protocol and
    # test_ldap look for these words.
    assert PasswordProblem.EMPTY.reason == "empty password"
    assert PasswordProblem.TOO_LONG.reason == "passwords are limited to 72 bytes (UTF-8)"


def test_the_directory_client_applies_the_rule_before_connecting():
    settings = load_config(None, {
        ("auth", "methods"): "ldap",
        ("ldap", "url"): "ldaps://localhost:1",
        ("ldap", "base_dn"): "ou=people,dc=example,dc=org",
        ("ldap", "timeout"): "1",
    }).ldap
    with pytest.raises(DirectoryRefused, match="cannot contain NUL"):
        Directory(settings).authenticate("alice", "p\x00w")
