"""Errors that become an ``ErrorResponse`` on the wire.

Handlers raise :class:`ChateauError`; the dispatcher turns it into
``{"type": "ErrorResponse", "status": ..., "detail": ...}`` and echoes the
request's ``msg_id``. Anything else that escapes a handler is a bug: it is
logged and answered with 500 so the connection keeps working.
"""

from __future__ import annotations

# Status codes used on the wire. They follow the original Chateau where it
# had one (301 for "not signed in / authentication failed", 302 for "already
# signed in") and HTTP otherwise.
BAD_REQUEST = 400
NOT_AUTHENTICATED = 301
ALREADY_SIGNED_IN = 302
# A signed-in user gave their password again (PasswordChangeRequest,
# AccountDeleteRequest) and it was wrong: the session itself is fine, so not 301.
WRONG_PASSWORD = 401
FORBIDDEN = 403
NOT_FOUND = 404
CONFLICT = 409
TOO_LARGE = 413
TOO_MANY_REQUESTS = 429
INTERNAL_ERROR = 500
NOT_IMPLEMENTED = 501
UNAVAILABLE = 503


class ChateauError(Exception):
    """A request failed in a way the client should be told about."""

    def __init__(self, status: int, detail: str, **extra: object) -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail
        # More fields for the ErrorResponse, such as retry_after.
        self.extra = extra

    def __str__(self) -> str:
        return f"{self.status}: {self.detail}"


class BadRequest(ChateauError):
    """The request was malformed: not JSON, wrong shape, missing field."""

    def __init__(self, detail: str) -> None:
        super().__init__(BAD_REQUEST, detail)


class ConfigError(Exception):
    """A configuration value is wrong; the message names the key."""
