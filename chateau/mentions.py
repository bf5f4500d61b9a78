"""Who a group message mentions: ``@name`` tokens naming members, and ``@all``.

Pure and without I/O: the send path calls :func:`find_mentions` for every
group message, so it returns at once when the content holds no ``@``, scans
each ``@`` once, and matches each token with one greedy character class
(no pattern that can backtrack). A token is read only where ``@`` starts
the text or follows whitespace or punctuation (not a letter, digit, ``_``
or another ``@``): ``a@b.c`` (an address) and ``@@bob`` mention nobody.

A token is the run of name characters (letters, digits, marks, ``_``, ``.``,
``-``) after the ``@``; ``.``, ``_`` and ``-`` at its end are tried as part
of the name first, then dropped (``@bob.`` at the end of a sentence names
``bob``). It names a user when its canonical form (chateau.names: case,
width and normalisation folded, so ``@BOB`` and a full-width ``@ｂｏｂ`` name
``bob``) is a member of the group; anything else (a look-alike, a
non-member, a name too long to be one) is ignored. ``@all`` in any case
mentions everyone, and appears as :data:`ALL` in the list; who may write it
is the handlers' rule (chateau.permissions.MENTION_ALL).

Direct messages and random chats have no mentions.
"""

from __future__ import annotations

import re
from typing import Container

from chateau.names import MAX_USERNAME_LENGTH, check_username, legacy_canonical

# How @all appears in a message's mentions (no username holds "@").
ALL = "@all"
# The 403 of @all from someone who is not one of the group's admins (nor a
# server admin): the message is not stored.
ALL_REFUSAL = "only the group's admins may mention @all"

# A name's characters: \w (letters, digits, underscore), combining marks
# (a decomposed "é"), "." and "-"; and a mention: "@" not glued to a word
# (after a letter, digit, "_", mark or another "@"), then the longest run of
# them. One fixed-width look-behind and one greedy class, no alternation:
# matching is linear in the content's length.
_MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
_MENTION = re.compile(rf"(?<![\w@{_MARKS}])@([\w.\-{_MARKS}]+)")
_TRAILING = "._-"

# The longest token worth canonicalising: a name has at most
# MAX_USERNAME_LENGTH characters once canonical, and canonicalisation
# shortens a token by composing marks or mapping widths, never fourfold.
_LONGEST_TOKEN = 4 * MAX_USERNAME_LENGTH


def find_mentions(content: str, members: Container[str]) -> list[str]:
    """The members *content* mentions (and :data:`ALL`), sorted and unique; [] for none."""
    if "@" not in content:
        return []
    found: set[str] = set()
    tried: set[str] = set()  # a token repeated is looked at once
    for match in _MENTION.finditer(content):
        token = match.group(1)
        if token in tried:
            continue
        tried.add(token)
        name = _member(token, members)
        if name is not None:
            found.add(name)
    return sorted(found)


def _member(token: str, members: Container[str]) -> str | None:
    """The member (or :data:`ALL`) *token* names, trying it without trailing ``._-`` too."""
    stripped = token.rstrip(_TRAILING)
    for candidate in (token, stripped) if stripped != token else (token,):
        if not candidate or len(candidate) > _LONGEST_TOKEN:
            continue
        # The cheap NFKC fold finds the candidate member; the name rule
        # (PRECIS, chateau.names) then confirms it, so the slower check
        # runs only for tokens that may name someone.
        folded = legacy_canonical(candidate)
        if folded == "all":
            return ALL
        if folded in members and check_username(candidate) == folded:
            return folded
    return None
