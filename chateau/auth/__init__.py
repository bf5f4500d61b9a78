"""Sign-in: one twisted.cred Portal per method, chosen by the request.

``Portal.registerChecker`` keeps a single checker per credentials interface,
so local and directory sign-in cannot share one portal. :class:`Authenticator`
holds a portal per enabled method and picks it from the request's ``auth``
flag (``false`` local, ``true`` directory). It also bounds how many sign-ins
may be in flight: past the bound the answer is a quick 503, never a queue
that turns into minutes of latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.logger import Logger
from zope.interface import Interface, implementer

from chateau.auth.passwords import password_problem
from chateau.errors import (
    BAD_REQUEST,
    CONFLICT,
    FORBIDDEN,
    NOT_AUTHENTICATED,
    TOO_MANY_REQUESTS,
    UNAVAILABLE,
    WRONG_PASSWORD,
    ChateauError,
)
from chateau.limits import AddressRates, SignInThrottle
from chateau.names import USERNAME_RULE, check_username
from chateau.store.records import iso_timestamp

LOCAL = "local"
DIRECTORY = "ldap"


class IAccount(Interface):
    """A signed-in user, as the realm hands it out."""


@dataclass(frozen=True)
class Account:
    username: str
    method: str
    display_name: str | None = None
    # The renames this sign-in made, (old, new, rename id) in order: the
    # account's own (its directory uid changed), or another's whose uid it
    # was given. The node acts on them before signing the user on.
    renames: tuple[tuple[str, str, str], ...] = ()


@implementer(IUsernamePassword)
class SignInCredentials(UsernamePassword):
    """A username and password, with where they came from and an invite code.

    *address* is the client's (for the per-address sign-up rate); *invite*
    the code of a RegisterRequest, which may create an account when
    ``[auth] registration = invite``.
    """

    def __init__(
        self, username: str, password: str, address: str = "?", invite: str | None = None
    ) -> None:
        super().__init__(username, password)
        self.address = address
        self.invite = invite


class LoginFailed(UnauthorizedLogin):
    """Sign-in refused, with a detail that is safe to show the client.

    *status* is the reply's: 301 for a refused sign-in, 409 when a new
    account's name is confusable with an existing one.
    """

    def __init__(self, detail: str, status: int = NOT_AUTHENTICATED) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


def held_refusal(name: str, held_until: int) -> str:
    """What a sign-in or registration of a held name is told (a renamed user's old name)."""
    return (
        f"authentication failed: the name {name!r} is reserved until "
        f"{iso_timestamp(held_until)} after a rename; please tell the server administrator"
    )


@dataclass(frozen=True)
class Identity:
    """What a checker returns as avatar id: the canonical name and its source."""

    username: str
    method: str
    display_name: str | None = None
    renames: tuple[tuple[str, str, str], ...] = ()


@implementer(IRealm)
class ChateauRealm:
    """Turns a checked identity into an :class:`Account`."""

    def requestAvatar(self, avatarId: Identity, mind: Any, *interfaces: Any) -> Any:
        if IAccount not in interfaces:
            raise NotImplementedError("Chateau only hands out IAccount avatars")
        account = Account(
            avatarId.username, avatarId.method, avatarId.display_name, avatarId.renames
        )
        return IAccount, account, lambda: None


class Authenticator:
    """Dispatches sign-ins to the portal of the method the client asked for."""

    _log = Logger()

    def __init__(
        self,
        checkers: Mapping[str, ICredentialsChecker],
        max_pending: int,
        realm: IRealm | None = None,
        throttle: SignInThrottle | None = None,
        successes: AddressRates | None = None,
    ) -> None:
        self._throttle = throttle
        # Successful sign-ins per address: a stolen list of passwords is
        # tried mostly with right ones, which the failure throttle never sees.
        self._successes = successes
        realm = realm or ChateauRealm()
        self._checkers = dict(checkers)
        self._portals = {name: Portal(realm, [checker]) for name, checker in checkers.items()}
        self._max_pending = max_pending
        self._pending = 0

    @property
    def pending(self) -> int:
        return self._pending

    def methods(self) -> list[str]:
        return sorted(self._portals)

    async def sign_in(
        self, username: str, password: str, directory: bool, address: str = "?",
        invite: str | None = None,
    ) -> Account:
        """Check the credentials with the chosen method; raise ChateauError if refused.

        *address* is the client's, for the throttles; *invite* a code that
        may create the account (``[auth] registration = invite``).
        """
        method = DIRECTORY if directory else LOCAL
        portal = self._portals.get(method)
        if portal is None:
            if directory:
                raise ChateauError(
                    NOT_AUTHENTICATED,
                    "directory sign-in (auth: true) is not configured on this server",
                )
            raise ChateauError(
                NOT_AUTHENTICATED,
                "local sign-in (auth: false) is disabled on this server; "
                "sign in with your directory account (auth: true)",
            )
        # Refused before the throttle and any checker. bcrypt's length limit is
        # the local checker's, checked after the name like its other refusals.
        problem = password_problem(password)
        if problem is not None:
            raise ChateauError(NOT_AUTHENTICATED, f"authentication failed: {problem.reason}")
        # An invalid name is refused before the throttle, with the checkers'
        # own answer: only valid canonical names (at most 32 characters) are
        # ever kept in its tables.
        key = check_username(username)
        if key is None:
            detail = f"authentication failed: {USERNAME_RULE}"
            self._log.info(
                "sign-in refused for {username} ({method}) from {address}: {detail}",
                username="(an invalid username)", method=method, address=address,
                detail=detail,
            )
            raise ChateauError(NOT_AUTHENTICATED, detail)
        self._check_throttle(address, key)
        if self._successes is not None:
            wait = self._successes.wait(address)
            if wait:
                raise ChateauError(
                    TOO_MANY_REQUESTS,
                    f"too many sign-ins from your address: wait {math.ceil(wait)} s "
                    "before trying again",
                    retry_after=round(wait, 3),
                )
        self._check_pending()
        self._pending += 1
        try:
            _iface, account, _logout = await portal.login(
                SignInCredentials(username, password, address, invite), None, IAccount
            )
        except LoginFailed as failure:
            # Only a valid name is logged: what fails the name rules may well be
            # a password typed into the wrong field.
            self._log.info(
                "sign-in refused for {username} ({method}) from {address}: {detail}",
                username=key,
                method=method, address=address, detail=failure.detail,
            )
            # A name refused as confusable, or a banned account's right
            # password, is no password guess: not counted.
            if self._throttle is not None and failure.status not in (CONFLICT, FORBIDDEN):
                self._throttle.failed(address, key)
            raise ChateauError(failure.status, failure.detail) from None
        except UnauthorizedLogin:
            if self._throttle is not None:
                self._throttle.failed(address, key)
            raise ChateauError(NOT_AUTHENTICATED, "authentication failed") from None
        finally:
            self._pending -= 1
        if self._throttle is not None:
            self._throttle.succeeded(address, key)
        if self._successes is not None:
            self._successes.take(address)
        self._log.info(
            "{username} signed in ({method})", username=account.username, method=method
        )
        return account


    def _check_throttle(self, address: str, key: str) -> None:
        if self._throttle is not None:
            wait = self._throttle.retry_after(address, key)
            if wait:
                raise ChateauError(
                    TOO_MANY_REQUESTS,
                    f"too many failed sign-ins: wait {math.ceil(wait)} s before trying again",
                    retry_after=round(wait, 3),
                )

    def _check_pending(self) -> None:
        if self._pending >= self._max_pending:
            raise ChateauError(
                UNAVAILABLE, "server busy: too many sign-ins in progress, retry shortly"
            )

    async def change_password(
        self, username: str, old_password: str, new_password: str, address: str = "?"
    ) -> str:
        """Check a local account's *old_password*; the bcrypt hash of *new_password*.

        The old password is checked as a sign-in of *username* from
        *address* is: the same throttle key, its failures counted and its
        delays applied (429), the same bound on checks in flight (503), on
        the hashing pool. The new one follows the password rule
        (chateau.auth.passwords: 400 when refused). The caller stores the hash.
        """
        checker = self._checkers.get(LOCAL)
        portal = self._portals.get(LOCAL)
        if checker is None or portal is None or not hasattr(checker, "hash_password"):
            raise ChateauError(
                BAD_REQUEST, "local accounts are switched off on this server: "
                "there is no password to change here"
            )
        problem = password_problem(new_password, local=True)
        if problem is not None:
            raise ChateauError(BAD_REQUEST, f"the new password is refused: {problem.reason}")
        wrong = "authentication failed: the old password is wrong"
        # An empty old password is refused as a sign-in would refuse it:
        # before the throttle, and never counted as a guess.
        if password_problem(old_password, local=True) is not None:
            raise ChateauError(WRONG_PASSWORD, wrong)
        self._check_throttle(address, username)
        self._check_pending()
        self._pending += 1
        try:
            try:
                await portal.login(
                    SignInCredentials(username, old_password, address), None, IAccount
                )
            except LoginFailed as failure:
                if self._throttle is not None and failure.status not in (CONFLICT, FORBIDDEN):
                    self._throttle.failed(address, username)
                self._log.info(
                    "password change refused for {username} from {address}: {detail}",
                    username=username, address=address, detail=failure.detail,
                )
                if failure.status == NOT_AUTHENTICATED:
                    raise ChateauError(WRONG_PASSWORD, wrong) from None
                raise ChateauError(failure.status, failure.detail) from None
            except UnauthorizedLogin:
                if self._throttle is not None:
                    self._throttle.failed(address, username)
                raise ChateauError(WRONG_PASSWORD, wrong) from None
            hashed: str = await checker.hash_password(new_password)
        finally:
            self._pending -= 1
        if self._throttle is not None:
            self._throttle.succeeded(address, username)
        return hashed
