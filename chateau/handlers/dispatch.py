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

from chateau.connection import Connection
from chateau.errors import NOT_AUTHENTICATED, ChateauError
from chateau.handlers import (
    account, contacts, erasure, group_settings, groups, history, membership, operators, reading,
    reports, safety, sending, sessions,
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
    UnblockRequest,
    UserBanRequest,
    UserUnbanRequest,
)

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
        """A connection went away: sign it off."""
        self.services.catch_up.sign_off(connection)

    @property
    def last_routed_id(self) -> int:
        """The newest message id routed so far (see chateau.catchup)."""
        return self.services.delivery.last_routed_id
