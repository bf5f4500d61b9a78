/* Chateau web client: the page's state and the shape of a chat in it.
 *
 * app.js makes the one state object with createState and hands it to every
 * part of the page; no module keeps state of its own at module level. The
 * helpers here only read chats: no page, no socket, no storage.
 */

export const RETRY_FIRST_MS = 1000;

export function createState(session) {
  /* session: the saved {key, username, directory} of this tab, or null. */
  return {
    ws: null,
    signedIn: false,
    me: null,
    session,                          // survives a reload of this tab
    chats: new Map(),                 // id -> chat (see newChat)
    current: null,
    online: [],
    nextMsgId: 1,
    pending: new Map(),               // msg_id -> {resolve}
    historySupported: true,
    retryMs: RETRY_FIRST_MS,
    retryTimer: null,
    onlineTimer: null,
    localSeq: 0,
    admin: false,                     // a server admin (RegisterResponse/ResumeResponse "admin")
    blocked: new Map(),               // username -> since (ISO), from BlockListRequest
    panelOpen: false,                 // the group panel beside the conversation
    announcements: [],                // AnnouncementRecv frames not yet dismissed
    toastTimer: null,                 // hides the notice above the message box
    sessionId: null,                  // this tab's session's public id (RegisterResponse/ResumeResponse)
    profile: null,                    // {display_name, status_text} as the Account dialog last read them
    conversationsSupported: true,     // ConversationsRequest (an older server answers "unknown request type")
    readSupported: true,              // ReadRequest
    typingSupported: true,            // TypingRequest
    syncSupported: true,              // SyncRequest
    typingSent: null,                 // {chatId, at}: the last TypingRequest true this page sent
    search: null,                     // {query, results, more, busy}: the search box's last answer
  };
}

export function chatId(kind, name) {
  return kind === "direct" ? `u:${name}` : kind === "random-new" ? "random:new" : `c:${name}`;
}

export function newChat(id, kind, name) {
  return {
    id, kind, name, partner: null, members: null, info: null, removed: null,
    messages: [], unread: 0, left: false, ended: false,
    historyLoaded: false, more: false, loadingOlder: false, lastActivity: Date.now(),
    activity: 0,          // the id of its newest message or event (ConversationsRequest, then pushes)
    lastMessage: null,    // the newest message, for the list's preview
    mentions: 0,          // unread messages that mention this user (or @all)
    read: 0,              // this user's read marker (ReadRequest/ReadRecv)
    readAsked: 0,         // the highest id this page asked ReadRequest for
    peerRead: 0,          // a direct chat: the other person's marker (peer_read, their ReadRecv)
    memberCount: null,    // a group's members, as ConversationsRequest counts them
    typing: new Map(),    // username -> timer: who is typing here now (TypingRecv)
    newer: false,         // a window of history (a search hit, a date): newer messages not loaded
    newestLoaded: 0,      // with newer: the last id of the loaded window
    focus: null,          // the id of a message to scroll to and mark (search, jump to date)
  };
}

export function chatPerson(chat) {
  /* The person a conversation is with, for Block and Report (an erased account is nobody). */
  if (chat.kind === "direct") return chat.name === "(deleted user)" ? null : chat.name;
  if (chat.kind === "random" && chat.partner) return chat.partner;
  return null;
}

function orderOf(message) {
  // Server ids give the order; notes stay where they were added; unsent
  // messages stay at the end in the order they were typed.
  if (message.system) return message.order;  // notes of this page, events it made itself
  return message.id != null ? message.id : Number.MAX_SAFE_INTEGER;
}

export function compareMessages(a, b) {
  const ka = orderOf(a);
  const kb = orderOf(b);
  return ka !== kb ? ka - kb : a.seq - b.seq;
}

export function isMentioned(message, me) {
  /* A message naming this user, or @all (mentions: the server's list). */
  return Boolean(message && !message.own && Array.isArray(message.mentions)
    && (message.mentions.includes(me) || message.mentions.includes("@all")));
}

/* ConversationsResponse's counts stop at this many per conversation. */
export const UNREAD_CAP = 100;

export function badgeText(count) {
  /* The server counts unread up to 100 per conversation ("100 or more"): 99+ from there. */
  return count >= UNREAD_CAP ? "99+" : String(count);
}

export function conversationKey(chat) {
  /* The field naming a conversation in requests: {chatname} or {user}. */
  return chat.kind === "direct" ? { user: chat.name } : { chatname: chat.name };
}
