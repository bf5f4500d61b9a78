/* Chateau web client: what has been read, and the conversation list's counts.
 *
 * At sign-in the list comes from the server (ConversationsRequest, paged):
 * each conversation's activity, last message, unread and mention counts,
 * this user's read marker and, in a direct chat, how far the other person
 * has read (peer_read). A conversation that is open while the page is
 * visible is read up to its newest message (ReadRequest); the user's other
 * devices clear their badges on the ReadRecv that follows, and the other
 * side of a direct chat shows "Seen" under the last message it has read.
 * A message that mentions the user (or @all) is announced even when its
 * conversation is not open.
 */

import { chatId, conversationKey, isMentioned } from "./state.js";
import { unsupported } from "./connection.js";
import { chatTitle, personName } from "./words.js";

const PAGE = 100;
const MAX_PAGES = 20;   // 2,000 conversations: enough for a sidebar

export function createReading(app) {
  const { state } = app;

  // -- the list from the server ------------------------------------------------

  async function loadConversations() {
    if (!state.conversationsSupported) return;
    let before = null;
    for (let page = 0; page < MAX_PAGES; page += 1) {
      const request = { type: "ConversationsRequest", limit: PAGE };
      if (before !== null) request.before = before;
      const reply = await app.conn.request(request);
      if (reply.type !== "ConversationsResponse") {
        // An older server, or one that keeps no messages (501): the list stays this page's.
        if (unsupported(reply) || reply.status === 501) state.conversationsSupported = false;
        else if (reply.status !== 0) app.dialogs.failed("Could not load your conversations", reply);
        break;
      }
      const conversations = reply.conversations || [];
      for (const conversation of conversations) apply(conversation);
      app.chats.renderChats();
      if (!reply.more || !conversations.length) break;
      before = conversations[conversations.length - 1].activity;
    }
    const current = state.chats.get(state.current);
    if (current) {
      app.conversation.renderConversation(app.conversation.nearBottom());  // peer_read: "Seen"
      markRead(current);
    }
  }

  function apply(conversation) {
    const kind = conversation.chatname != null ? "group" : "direct";
    const name = conversation.chatname != null ? conversation.chatname : conversation.user;
    if (name == null) return;
    const chat = app.chats.ensureChat(kind, name);
    chat.removed = null;
    chat.activity = Math.max(chat.activity, Number(conversation.activity) || 0);
    chat.read = Math.max(chat.read, Number(conversation.read) || 0);
    chat.unread = Number(conversation.unread) || 0;
    chat.mentions = Number(conversation.mentions) || 0;
    if (conversation.peer_read != null) chat.peerRead = Math.max(chat.peerRead, conversation.peer_read);
    if (conversation.members != null) chat.memberCount = conversation.members;
    const last = conversation.last_message;
    if (last && (!chat.lastMessage || chat.lastMessage.id == null || last.id >= chat.lastMessage.id)) {
      chat.lastMessage = {
        id: last.id, sender: last.sender, content: last.content, timestamp: last.timestamp,
        deleted: Boolean(last.deleted), hidden: Boolean(last.hidden), own: last.sender === state.me,
        event: last.event || null, mentions: last.mentions || null,
      };
      if (last.event && typeof last.event === "object") chat.lastMessage.content = last.content || "";
    }
  }

  // -- reading ---------------------------------------------------------------------

  function showing(chat) {
    /* The conversation is on screen: open, and the page visible. */
    return chat.id === state.current && document.visibilityState === "visible";
  }

  function newestId(chat) {
    let newest = chat.newer ? 0 : chat.activity;
    for (const message of chat.messages) {
      if (message.id != null && !message.system && message.id > newest) newest = message.id;
    }
    return newest;
  }

  async function markRead(chat) {
    /* An open, visible conversation is read up to its newest message: badges clear here
     * at once, on the user's other devices through the server's ReadRecv. */
    if (!chat || !showing(chat) || !state.signedIn) return;
    if (chat.kind !== "group" && chat.kind !== "direct") return;
    const newest = newestId(chat);
    const hadBadge = chat.unread || chat.mentions;
    if (!chat.newer) {
      chat.unread = 0;
      chat.mentions = 0;
    }
    if (hadBadge) app.chats.renderChats();
    if (!state.readSupported || chat.removed || newest <= chat.read || newest <= chat.readAsked) return;
    chat.readAsked = newest;
    const reply = await app.conn.request({ type: "ReadRequest", ...conversationKey(chat), id: newest });
    if (reply.type === "ReadResponse") {
      chat.read = Math.max(chat.read, Number(reply.id) || 0);
    } else {
      chat.readAsked = 0;
      if (unsupported(reply) || reply.status === 501) state.readSupported = false;
      // 403/404 (left the group meanwhile, an erased account): nothing to read there.
    }
  }

  function readElsewhere(chat, id) {
    /* The user read up to id on another device: what is left unread here. */
    chat.read = Math.max(chat.read, id);
    if (id >= chat.activity) {
      chat.unread = 0;
      chat.mentions = 0;
    } else if (chat.historyLoaded && !chat.newer) {
      const left = chat.messages.filter((m) => m.id != null && m.id > chat.read && !m.own
        && !m.system && !m.event && !m.hidden && !m.deleted);
      chat.unread = Math.min(chat.unread, left.length);
      chat.mentions = Math.min(chat.mentions, left.filter((m) => isMentioned(m, state.me)).length);
    }
    app.chats.renderChats();
  }

  function notifyMention(chat, message) {
    /* A mention is announced wherever the user is in the page (muting never hides it). */
    app.dialogs.showNotice(`${personName(message.sender)} mentioned you in ${chatTitle(chat)}`);
  }

  const pushes = {
    ReadRecv(frame) {
      const id = Number(frame.id) || 0;
      if (frame.username === state.me) {
        const chat = state.chats.get(frame.chatname != null
          ? chatId("group", frame.chatname) : chatId("direct", frame.user));
        if (chat) readElsewhere(chat, id);
        return;
      }
      if (frame.user != null) {  // the other side of a direct chat read our messages
        const chat = state.chats.get(chatId("direct", frame.user));
        if (!chat || id <= chat.peerRead) return;
        chat.peerRead = id;
        if (chat.id === state.current) app.conversation.renderConversation(app.conversation.nearBottom());
      }
      // A group member's receipt: the page shows no per-member receipts in groups.
    },
  };

  function wire() {
    document.addEventListener("visibilitychange", () => {
      const chat = state.chats.get(state.current);
      if (chat) markRead(chat);
    });
  }

  return { loadConversations, markRead, showing, notifyMention, pushes, wire };
}
