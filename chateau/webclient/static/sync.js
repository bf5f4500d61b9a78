/* Chateau web client: catching up after a reconnect.
 *
 * When a session resumes, SyncRequest (from this session key's own position
 * on the server) brings everything since: messages, group events, edits and
 * deletions, page by page while `more`. Each lands in its conversation and
 * in the list, once (messages are matched by id). The last page names the
 * groups the user is in now; a group missing from it was left or lost while
 * the page was away, and becomes read-only.
 */

import { chatId } from "./state.js";
import { unsupported } from "./connection.js";

const PAGE = 200;
const MAX_PAGES = 50;   // then ConversationsRequest's counts stand for the rest

export function createSync(app) {
  const { state } = app;

  async function catchUp() {
    if (!state.syncSupported) return;
    let since = null;
    for (let page = 0; page < MAX_PAGES; page += 1) {
      const request = { type: "SyncRequest", limit: PAGE };
      if (since !== null) request.since = since;
      const reply = await app.conn.request(request);
      if (reply.type !== "SyncResponse") {
        if (unsupported(reply) || reply.status === 501) state.syncSupported = false;
        else if (reply.status !== 0) app.dialogs.failed("Could not catch up", reply);
        return;
      }
      for (const entry of reply.messages || []) apply(entry);
      if (!reply.more) {
        if (Array.isArray(reply.groups)) groupsNow(reply.groups);
        break;
      }
      if (reply.until === since) break;
      since = reply.until;
    }
    app.chats.renderChats();
    const chat = state.chats.get(state.current);
    if (chat) {
      app.conversation.renderConversation(app.conversation.nearBottom());
      app.reading.markRead(chat);
    }
  }

  function chatOf(entry) {
    if (entry.chatname != null) return app.chats.ensureChat("group", entry.chatname);
    if (entry.user != null) return app.chats.ensureChat("direct", entry.user);
    return null;
  }

  function apply(entry) {
    if (entry.change) {
      if (entry.change === "edited" && entry.content == null) return;  // deleted since: comes next
      const changes = entry.change === "deleted" ? { deleted: true }
        : { content: entry.content, edited: true, mentions: entry.mentions || null };
      app.chats.updateMessage({ id: entry.message }, changes);
      return;
    }
    if (entry.event && typeof entry.event === "object") {
      app.pushes.GroupEventRecv({
        type: "GroupEventRecv", ...entry.event, chatname: entry.chatname, id: entry.id,
        timestamp: entry.timestamp, offline: true,
      });
      return;
    }
    const chat = chatOf(entry);
    if (!chat) return;
    if (entry.hidden) {
      app.chats.addMessage(chat, { id: entry.id, seq: ++state.localSeq, hidden: true,
        timestamp: entry.timestamp }, { notify: false });
      return;
    }
    app.chats.addMessage(chat, {
      id: entry.id, seq: ++state.localSeq, sender: entry.sender, content: entry.content,
      timestamp: entry.timestamp, own: entry.sender === state.me, offline: true,
      edited: Boolean(entry.edited), deleted: Boolean(entry.deleted), mentions: entry.mentions || null,
    });
  }

  function groupsNow(names) {
    const member = new Set(names.map((name) => chatId("group", name)));
    for (const chat of state.chats.values()) {
      if (chat.kind === "group" && !chat.removed && !member.has(chat.id)) {
        chat.removed = { by: null, reason: "", banned: false };
        chat.historyLoaded = true;
      }
    }
    if (state.current) {
      app.conversation.updateComposer();
      app.groups.renderPanel();
    }
  }

  return { catchUp, pushes: {} };
}
