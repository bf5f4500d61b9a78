"""Request type -> handler, and running a request's handler.

:data:`HANDLERS` is the one map from request class to handler (the wire
names, including the ``MessageRequest`` alias, are in
:data:`chateau.messages.REQUEST_TYPES`). :class:`Dispatcher` is all the
protocol layer calls: it runs handlers, says which requests may pipeline,
and signs a closed connection off.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from chateau import messages
from chateau.connection import Connection
from chateau.errors import INTERNAL_ERROR, NOT_AUTHENTICATED, UNAVAILABLE, ChateauError
from chateau.handlers import (
    account, contacts, erasure, group_settings, groups, history, membership, operators, reading,
    reports, safety, search, sending, sessions, sync, typing,
)
from chateau.handlers.context import Handler, Services
from chateau.messages import (
    AccountDeleteRequest,
    AnnounceRequest,
    BlockListRequest,
    BlockRequest,
    GroupAddRequest,
    GroupInviteRequest,
    GroupJoinRequest,
    GroupMuteRequest,
    GroupRemoveRequest,
    GroupUnbanRequest,
    ClientListRequest,
    ContactAccept,
    ContactDeny,
    ContactListRequest,
    ContactRemove,
    ContactRequest,
    ConversationsRequest,
    GroupDirectoryRequest,
    GroupLeaveRequest,
    GroupInfoRequest,
    GroupRoleRequest,
    GroupUpdateRequest,
    GroupMembersRequest,
    GroupMessageInitRequest,
    GroupMessageRequest,
    HeartbeatRequest,
    HistoryRequest,
    SearchRequest,
    LogoutRequest,
    MessageDeleteRequest,
    MessageEditRequest,
    PasswordChangeRequest,
    ProfileRequest,
    RandomMessageRequest,
    ReadRequest,
    RegisterRequest,
    ReportListRequest,
    ReportRequest,
    ReportResolveRequest,
    Request,
    ResumeRequest,
    SessionListRequest,
    SessionRevokeRequest,
    SettingsRequest,
    TypingRequest,
    SyncRequest,
    UnblockRequest,
    UserBanRequest,
    UserUnbanRequest,
)
from chateau.store.errors import StoreUnavailable

HANDLERS: dict[type[Request], Handler] = {
    RegisterRequest: sessions.register,
    ResumeRequest: sessions.resume,
    LogoutRequest: sessions.logout,
    HeartbeatRequest: sessions.heartbeat,
    ClientListRequest: sessions.client_list,
    GroupMessageRequest: sending.send_message,
    RandomMessageRequest: sending.random_message,
    GroupMessageInitRequest: groups.group_init,
    GroupLeaveRequest: groups.group_leave,
    GroupMembersRequest: groups.group_members,
    GroupInfoRequest: groups.group_info,
    GroupRoleRequest: groups.group_role,
    GroupUpdateRequest: group_settings.group_update,
    GroupDirectoryRequest: group_settings.group_directory,
    GroupAddRequest: membership.group_add,
    GroupRemoveRequest: membership.group_remove,
    GroupUnbanRequest: membership.group_unban,
    GroupMuteRequest: membership.group_mute,
    GroupInviteRequest: membership.group_invite,
    GroupJoinRequest: membership.group_join,
    HistoryRequest: history.history,
    TypingRequest: typing.typing,
    SyncRequest: sync.sync,
    SearchRequest: search.search,
    MessageEditRequest: history.message_edit,
    MessageDeleteRequest: history.message_delete,
    ContactRequest: contacts.contact_request,
    ContactAccept: contacts.contact_accept,
    ContactDeny: contacts.contact_deny,
    ContactRemove: contacts.contact_remove,
    ContactListRequest: contacts.contact_list,
    ReportRequest: reports.report,
    ReportListRequest: reports.report_list,
    ReportResolveRequest: reports.report_resolve,
    BlockRequest: safety.block,
    UnblockRequest: safety.unblock,
    BlockListRequest: safety.block_list,
    SettingsRequest: safety.settings,
    AnnounceRequest: operators.announce,
    UserBanRequest: operators.user_ban,
    UserUnbanRequest: operators.user_unban,
    PasswordChangeRequest: account.password_change,
    SessionListRequest: account.session_list,
    SessionRevokeRequest: account.session_revoke,
    ProfileRequest: account.profile,
    AccountDeleteRequest: erasure.account_delete,
    ReadRequest: reading.read,
    ConversationsRequest: reading.conversations,
}


class Dispatcher:
    """Runs each typed request's handler with the server's services."""

    def __init__(
        self, services: Services, handlers: dict[type[Request], Handler] = HANDLERS
    ) -> None:
        self.services = services
        self._handlers = handlers

    def dispatch(self, connection: Connection, request: Request) -> Deferred[dict[str, Any] | None]:
        """Run *request*'s handler; its direct response, or None for no reply.

        A refusal, raised at once or later, comes out as the Deferred's failure.
        """
        if request.needs_user and connection.username is None:
            return fail(
                ChateauError(NOT_AUTHENTICATED, "not signed in: send a RegisterRequest first")
            )
        try:
            result = self._handlers[type(request)](self.services, connection, request)
        except Exception:
            return fail()
        if isinstance(result, Deferred):
            return result
        return Deferred.fromCoroutine(result)

    def pipelines(self, connection: Connection, request: Request) -> bool:
        """Whether *request* may start while the connection's earlier sends commit.

        True only for a message send whose recipient is known without asking
        the database, so that its one wait is the message writer: the writer
        commits in arrival order, and so replies and deliveries keep the
        sender's order.
        """
        return (
            self.services.stores_messages
            and connection.username is not None
            and isinstance(request, GroupMessageRequest)
            and sending.pipelines(self.services, request, connection.username)
        )

    def closed(self, connection: Connection) -> None:
        """A connection went away: sign it off (and end its user's typing if it was their last)."""
        username = connection.username
        self.services.catch_up.sign_off(connection)
        if username is not None:
            self.services.typing.left(username)

    @property
    def last_routed_id(self) -> int:
        """The newest message id routed so far (see chateau.catchup)."""
        return self.services.delivery.last_routed_id


def error_reply(
    failure: Failure, kind: str, username: str | None, log: Logger, msg_id: Any = None
) -> dict[str, Any]:
    """The ErrorResponse for a request (of type *kind*) that failed with *failure*.

    A refusal (ChateauError) says its own status and detail; the database
    being unavailable is 503; anything else is a bug, logged, and 500. The
    WebSocket and the HTTP API (chateau/web_api.py) answer failures alike.
    """
    if failure.check(ChateauError):
        error: ChateauError = failure.value
        reply = messages.error_response(error.status, error.detail, msg_id)
        reply.update(error.extra)
        return reply
    if failure.check(StoreUnavailable):
        log.warn(
            "database unavailable while handling {kind}: {error}",
            kind=kind, error=str(failure.value).splitlines()[0],
        )
        return messages.error_response(
            UNAVAILABLE, "the database is unavailable; nothing was changed, retry shortly",
            msg_id,
        )
    log.failure(
        "unexpected error handling {kind} from {username}",
        failure, kind=kind, username=username,
    )
    return messages.error_response(
        INTERNAL_ERROR, "internal server error; the request was not completed",
        msg_id,
    )
