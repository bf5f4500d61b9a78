"""Usernames and chatnames: one namespace, one canonical form, no look-alikes.

A name is made canonical by the IETF PRECIS profile for usernames (RFC 8265,
through the ``precis-i18n`` library), in its case-folded form
(``UsernameCaseMapped:CaseFold``): full-width and half-width letters are
mapped to their ordinary forms, case is folded, the result is in NFC, and
characters the profile disallows (spaces, symbols with compatibility forms,
unassigned code points, bad right-to-left mixes) are refused. So ``Alice``,
``ALICE`` and a full-width ``Ａｌｉｃｅ`` are one name. Case folding (not the
``toLowerCase`` RFC 8265 prefers) is the rule the server always had, so
``Straße`` and ``strasse`` stay one name and every stored name keeps its form.
On top of the profile the server keeps its own character rule (letters,
digits, ``.``, ``_``, ``-``; a chatname also single inner spaces, each
space-separated part enforced by the profile as RFC 8265 section 3.5 says)
and its length limits, counted on the canonical form.

Names made before the PRECIS rule were canonicalised with NFKC and case
folding. Where both rules accept a name they give the same form, so no
stored name changes; :func:`check_username` and :func:`check_chatname` (for
finding a name) fall back to the older rule when the profile refuses the
input, so every existing name is still found; :func:`check_new_username` and
:func:`check_new_chatname` (for taking a name) apply the profile alone.

Users and groups share the namespace, so a group can never capture someone's
direct messages. Within it, a new name is refused when it is *confusable*
with an existing one: their UTS #39 skeletons (:func:`skeleton`) are equal.
The store keeps every name's skeleton in an indexed column.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from types import MappingProxyType
from typing import Mapping

from precis_i18n import get_profile

MAX_USERNAME_LENGTH = 32
MAX_CHATNAME_LENGTH = 64

# The PRECIS profile every name part goes through (RFC 8265 section 3.3,
# with Unicode Default Case Folding as the case-mapping rule).
PRECIS_PROFILE = "UsernameCaseMapped:CaseFold"

# \w is Unicode-aware: letters and digits of any script, and underscore.
# None of LDAP's filter or DN metacharacters (* ( ) \ NUL , = + < > ; ")
# can pass.
_USERNAME = re.compile(r"[\w.\-]+")
_CHATNAME = re.compile(r"[\w.\-]+(?: [\w.\-]+)*")

# Random pairs get generated names starting with this character, which no
# user or group name can contain.
RANDOM_PREFIX = "~"

# The sender (and direct-message recipient) of what an erased account wrote
# (chateau.store.erasure): parentheses and the space pass neither the
# username nor the chatname rule, so no account or group can ever be called
# this, now or later. Clients show it as "deleted user".
DELETED_USER = "(deleted user)"

# The directional marks the confusables data carries around right-to-left
# characters (they come from the comments of Unicode's confusables.txt).
_DIRECTION_MARKS = str.maketrans("", "", "\u200e\u200f")


@functools.cache
def _profile():  # type: ignore[no-untyped-def]
    return get_profile(PRECIS_PROFILE)


def legacy_canonical(name: str) -> str:
    """The canonical form names had before the PRECIS rule: NFKC, case folded."""
    return unicodedata.normalize("NFKC", name).casefold()


def _precis(part: str) -> str | None:
    """*part* through the profile, or None when the profile refuses it."""
    if part.isascii() and part.isprintable() and part and " " not in part:
        # What the profile does to printable ASCII (all of it allowed), a
        # hundred times faster: every lookup of a name passes here.
        return part.lower()
    try:
        return str(_profile().enforce(part))
    except (UnicodeEncodeError, ValueError):
        return None


def _fits(name: str, limit: int, rule: re.Pattern[str]) -> bool:
    return 0 < len(name) <= limit and rule.fullmatch(name) is not None


def check_new_username(raw: str) -> str | None:
    """The canonical form of a username that may be taken, or None."""
    name = _precis(raw)
    if name is not None and _fits(name, MAX_USERNAME_LENGTH, _USERNAME):
        return name
    return None


def check_new_chatname(raw: str) -> str | None:
    """The canonical form of a group name that may be taken, or None.

    Each space-separated part goes through the profile (which allows no
    spaces); the parts keep their single spaces.
    """
    parts = [_precis(part) for part in raw.split(" ")]
    if any(part is None for part in parts):
        return None
    name = " ".join(parts)  # type: ignore[arg-type]
    return name if _fits(name, MAX_CHATNAME_LENGTH, _CHATNAME) else None


def check_username(raw: str) -> str | None:
    """The canonical username *raw* names, or None when it can never be one.

    For finding a user: a name the profile refuses may still be one made
    under the older NFKC rule.
    """
    name = check_new_username(raw)
    if name is not None:
        return name
    old = legacy_canonical(raw)
    return old if _fits(old, MAX_USERNAME_LENGTH, _USERNAME) else None


def check_chatname(raw: str) -> str | None:
    """The canonical group name *raw* names, or None (older names found too)."""
    name = check_new_chatname(raw)
    if name is not None:
        return name
    old = legacy_canonical(raw)
    return old if _fits(old, MAX_CHATNAME_LENGTH, _CHATNAME) else None


def canonical(name: str) -> str:
    """The canonical form of *name*, for looking up what may exist.

    Input no rule accepts comes back in the older NFKC form: it names
    nothing, and the caller's lookup says so.
    """
    return check_chatname(name) or legacy_canonical(name)


@functools.cache
def _prototypes() -> Mapping[str, str]:
    """Each confusable character's prototype, from confusable-homoglyphs' data.

    That data is Unicode's confusables.txt (each source character mapped to
    its prototype) recorded in both directions, so every prototype is the
    centre of a star of the characters that look like it. A star of two
    single characters does not say which is the prototype; the smaller
    stands for both, which gives the same equivalence classes.
    """
    from confusable_homoglyphs.confusables import confusables_data

    graph: dict[str, set[str]] = {}
    for char, homoglyphs in confusables_data.items():
        graph.setdefault(char.translate(_DIRECTION_MARKS), set()).update(
            entry["c"].translate(_DIRECTION_MARKS) for entry in homoglyphs
        )
    prototypes: dict[str, str] = {}
    for char, neighbours in graph.items():
        if len(char) != 1 or len(neighbours) != 1:
            continue  # a prototype (the centre of its star)
        (other,) = neighbours
        if len(other) > 1 or len(graph.get(other, ())) > 1:
            prototypes[char] = other
        elif other < char:
            prototypes[char] = other
    return MappingProxyType(prototypes)


def skeleton(name: str) -> str:
    """The UTS #39 skeleton of *name*: equal skeletons mean the names look alike.

    NFD, each character replaced by its prototype, NFD again; repeated until
    nothing changes, since a prototype of several characters may hold
    characters that have their own.
    """
    prototypes = _prototypes()
    current = unicodedata.normalize("NFD", name)
    for _ in range(4):
        mapped = unicodedata.normalize(
            "NFD", "".join(prototypes.get(char, char) for char in current)
        )
        if mapped == current:
            break
        current = mapped
    return current


USERNAME_RULE = (
    f"a username is 1 to {MAX_USERNAME_LENGTH} letters, digits, '.', '_' or '-' "
    "(PRECIS UsernameCaseMapped, RFC 8265)"
)
CHATNAME_RULE = (
    f"a chatname is 1 to {MAX_CHATNAME_LENGTH} letters, digits, '.', '_', '-' "
    "or single inner spaces (PRECIS UsernameCaseMapped, RFC 8265)"
)
