"""Usernames and chatnames: one namespace, one canonical form.

Names are normalised with NFKC and case folding, so ``Alice``, ``ALICE`` and
a full-width ``Ａｌｉｃｅ`` are one name. The canonical form is what everybody
sees on the wire. Users and groups share the namespace, so a group can never
capture someone's direct messages.
"""

from __future__ import annotations

import re
import unicodedata

MAX_USERNAME_LENGTH = 32
MAX_CHATNAME_LENGTH = 64

# \w is Unicode-aware: letters and digits of any script, and underscore.
# None of LDAP's filter or DN metacharacters (* ( ) \ NUL , = + < > ; ")
# can pass.
_USERNAME = re.compile(r"[\w.\-]+")
_CHATNAME = re.compile(r"[\w.\-]+(?: [\w.\-]+)*")

# Random pairs get generated names starting with this character, which no
# user or group name can contain.
RANDOM_PREFIX = "~"


def canonical(name: str) -> str:
    return unicodedata.normalize("NFKC", name).casefold()


def check_username(raw: str) -> str | None:
    """The canonical username, or None when *raw* can never be one."""
    name = canonical(raw)
    if 0 < len(name) <= MAX_USERNAME_LENGTH and _USERNAME.fullmatch(name):
        return name
    return None


def check_chatname(raw: str) -> str | None:
    """The canonical group name, or None when *raw* can never be one."""
    name = canonical(raw)
    if 0 < len(name) <= MAX_CHATNAME_LENGTH and _CHATNAME.fullmatch(name):
        return name
    return None


USERNAME_RULE = (
    f"a username is 1 to {MAX_USERNAME_LENGTH} letters, digits, '.', '_' or '-'"
)
CHATNAME_RULE = (
    f"a chatname is 1 to {MAX_CHATNAME_LENGTH} letters, digits, '.', '_', '-' "
    "or single inner spaces"
)
