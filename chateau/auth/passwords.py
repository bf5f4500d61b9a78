"""What a password may be: the one rule, for every place one is typed or set.

Sign-in (both methods), ``chateau-admin user add|passwd``, ``chateau-admin
ldap-check`` and the directory client all ask :func:`password_problem`, so a
password the server would refuse is refused everywhere, for the same reason.
Callers word the refusal for their audience; what is refused is decided here.
"""

from __future__ import annotations

from enum import Enum

# bcrypt only ever reads the first 72 bytes of a password. Longer ones are
# refused outright rather than silently truncated.
MAX_PASSWORD_BYTES = 72


class PasswordProblem(Enum):
    """Why a password is refused; the value is a reason safe to show anyone."""

    # Empty or whitespace only. An LDAP bind with an empty password is an
    # unauthenticated bind, which some directories answer with success.
    EMPTY = "empty password"
    # PostgreSQL cannot store NUL, and no client sends one on purpose.
    NUL = "a password cannot contain NUL"
    # Only for local accounts, whose passwords are bcrypt hashes.
    TOO_LONG = f"passwords are limited to {MAX_PASSWORD_BYTES} bytes (UTF-8)"

    @property
    def reason(self) -> str:
        return self.value


def password_problem(password: str, local: bool = False) -> PasswordProblem | None:
    """What is wrong with *password*, or None when it may be used.

    *local*: the password is (to be) bcrypt-hashed for a local account, so
    bcrypt's length limit applies; a directory checks its own passwords.
    """
    if not password.strip():
        return PasswordProblem.EMPTY
    if "\x00" in password:
        return PasswordProblem.NUL
    if local and len(password.encode()) > MAX_PASSWORD_BYTES:
        return PasswordProblem.TOO_LONG
    return None
