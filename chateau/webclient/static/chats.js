/* Chateau web client: the chats and their messages.
 *
 * Each chat (direct, group, random) keeps its messages in order: server ids
 * give the order, notes of this page stay where they were added. History is
 * asked for page by page (HistoryRequest); group events become system lines;
 * a renamed group's conversation moves to its new name. A window of history
 * can start anywhere (a search hit, a date: HistoryRequest after/after_time)
 * and grow both ways. Also the chat list in the sidebar, sorted by activity,
 * with unread and mention badges and the last message, and the pushes that
 * bring messages.
 */

import {
  UNREAD_CAP, badgeText, chatId, compareMessages, conversationKey, isMentioned, newChat,
} from "./state.js";
import { VIEW_KEY, loadJSON, saveView } from "./storage.js";
import { DELETED_USER, chatTitle, eventKey, eventWords, previewText } from "./words.js";

const HISTORY_PAGE = 50;

export function createChats(app) {
  const { state, el } = app;

  function ensureChat(kind, name) {
    const id = chatId(kind, name);
    let chat = state.chats.get(id);
    if (!chat) {
      chat = newChat(id, kind, name);
      state.chats.set(id, chat);
      saveView(state);
    }
    return chat;
  }

  function restoreView() {
    const view = loadJSON(VIEW_KEY);
    if (!view || state.chats.size) return;
    for (const saved of view.chats || []) {
      if (saved.kind === "random") continue;  // random chats end with the connection
      const chat = ensureChat(saved.kind, saved.name);
      chat.partner = saved.partner || null;
      chat.removed = saved.removed || null;
    }
    if (view.current && state.chats.has(view.current)) state.current = view.current;
  }

  function openChat(id) {
    const chat = state.chats.get(id);
    if (!chat) return;
    if (state.current !== id) app.typing.leftChat();
    state.current = id;
    chat.focus = null;
    saveView(state);
    renderChats();
    app.conversation.renderConversation(true);
    app.conversation.updateComposer();
    app.groups.renderPanel();
    if (!chat.historyLoaded && state.signedIn) loadHistory(chat, false);
    app.reading.markRead(chat);
    if (chat.kind === "group" && !chat.info && !chat.removed && state.signedIn) app.groups.loadInfo(chat);
    el.message.focus();
  }

  function addMessage(chat, message, { notify = true } = {}) {
    if (message.id != null && chat.messages.some((m) => m.id === message.id)) return;
    if (chat.newer && message.id != null && !message.own) {
      // A window of older history is shown: the message waits for "Load newer messages".
      noteActivity(chat, message, notify);
      renderChats();
      return;
    }
    chat.messages.push(message);
    chat.messages.sort(compareMessages);
    chat.lastActivity = Date.now();
    noteActivity(chat, message, notify);
    if (message.sender && !message.system) app.typing.stopped(chat, message.sender);
    renderChats();
    if (chat.id === state.current) {
      app.conversation.renderConversation(message.own || app.conversation.nearBottom());
      app.reading.markRead(chat);
    }
    updateTitle();
  }

  function noteActivity(chat, message, notify) {
    /* The list's side of a new message: activity, preview, unread and mention badges. A
     * message at or below the activity the server last reported is already counted. */
    if (message.system && message.id == null) return;
    const fresh = message.id == null || message.id > chat.activity;
    if (message.id != null && message.id > chat.activity) chat.activity = message.id;
    if (!message.system && fresh) chat.lastMessage = message;
    if (!fresh || !notify || message.own || message.event || message.hidden) return;
    if (message.id != null && message.id <= chat.read) return;
    if (app.reading.showing(chat)) return;
    chat.unread += 1;
    if (isMentioned(message, state.me)) {
      chat.mentions += 1;
      app.reading.notifyMention(chat, message);
    }
  }

  function systemNote(chat, text) {
    const ids = chat.messages.filter((m) => m.id != null).map((m) => m.id);
    const order = (ids.length ? Math.max(...ids) : 0) + 0.5;
    addMessage(chat, { id: null, seq: ++state.localSeq, system: true, order, content: text },
      { notify: false });
  }

  // -- group events ------------------------------------------------------------

  function addEvent(chat, event, { id = null, timestamp = null, offline = false, content = null } = {}) {
    /* A system line in the conversation. Events this page caused itself come back
     * (in history, or pushed to other tabs) with their id: the local line gives way. */
    const words = eventWords(event, content);
    if (id == null) {
      const ids = chat.messages.filter((m) => m.id != null).map((m) => m.id);
      const order = (ids.length ? Math.max(...ids) : 0) + 0.5;
      addMessage(chat, {
        id: null, seq: ++state.localSeq, system: true, order, content: words,
        event: { ...event }, key: eventKey(event), timestamp: new Date().toISOString(),
      }, { notify: false });
      return;
    }
    dropLocalEvent(chat, eventKey(event));
    addMessage(chat, {
      id, seq: ++state.localSeq, content: words, event: { ...event }, timestamp, offline,
    }, { notify: !offline });
  }

  function dropLocalEvent(chat, key) {
    const index = chat.messages.findIndex((m) => m.system && m.key === key);
    if (index >= 0) chat.messages.splice(index, 1);
  }

  function renameChat(chat, newName) {
    /* A group renamed: the conversation moves to its new name. At catch-up the messages
     * already came under the new name (then the event): the two conversations become one. */
    const oldId = chat.id;
    const newId = chatId("group", newName);
    if (oldId === newId) return chat;
    state.chats.delete(oldId);
    const already = state.chats.get(newId);
    if (already) {
      for (const message of chat.messages) {
        if (message.id == null || !already.messages.some((m) => m.id === message.id)) {
          already.messages.push(message);
        }
      }
      already.messages.sort(compareMessages);
      already.unread += chat.unread;
      already.removed = null;
      chat = already;
    }
    chat.id = newId;
    chat.name = newName;
    if (chat.info) chat.info.chatname = newName;
    state.chats.set(newId, chat);
    if (state.current === oldId) state.current = newId;
    if (!chat.removed) chat.historyLoaded = false;  // asked under the old name, maybe too late
    saveView(state);
    renderChats();
    if (chat.id === state.current) {
      app.conversation.renderConversation(false);
      app.groups.renderPanel();
      app.conversation.updateComposer();
      if (state.signedIn && !chat.removed) loadHistory(chat, false);
    }
    return chat;
  }

  function endRandom(chat, text) {
    chat.ended = true;
    systemNote(chat, text);
    app.conversation.updateComposer();
  }

  // -- history -------------------------------------------------------------------

  async function loadHistory(chat, older) {
    if (!state.historySupported || chat.kind === "random-new" || chat.loadingOlder) return;
    const message = { type: "HistoryRequest", limit: HISTORY_PAGE, ...conversationKey(chat) };
    if (older) {
      const ids = chat.messages.filter((m) => m.id != null).map((m) => m.id);
      if (ids.length) message.before = Math.min(...ids);
    }
    chat.loadingOlder = true;
    const log = el.log;
    const fromBottom = log.scrollHeight - log.scrollTop;
    const askedName = chat.name;
    const reply = await app.conn.request(message);
    chat.loadingOlder = false;
    if (chat.name !== askedName) {  // renamed meanwhile: ask again under the new name
      if (!chat.removed) loadHistory(chat, older);
      return;
    }
    if (reply.type !== "HistoryResponse") {
      if (reply.status === 400) state.historySupported = false;  // a server without history
      else if (reply.status !== 0 && reply.status !== 404) {
        app.dialogs.showError(`No history for ${chatTitle(chat)}: ${reply.detail}`);
      }
      chat.historyLoaded = true;
      if (chat.id === state.current) app.conversation.renderConversation(false);
      return;
    }
    chat.historyLoaded = true;
    chat.more = Boolean(reply.more);
    takeHistory(chat, reply.messages || []);
    if (chat.id === state.current) {
      app.conversation.renderConversation(!older);
      if (older) log.scrollTop = log.scrollHeight - fromBottom;  // keep the reader's place
      app.reading.markRead(chat);
    }
    renderChats();
  }

  function takeHistory(chat, items) {
    /* History entries into the chat's messages, in order, each once. */
    for (const item of items) {
      if (chat.messages.some((m) => m.id === item.id)) continue;
      if (item.id > chat.activity) chat.activity = item.id;
      if (item.hidden) {
        chat.messages.push({ id: item.id, seq: ++state.localSeq, hidden: true, timestamp: item.timestamp });
        continue;
      }
      if (item.event && typeof item.event === "object") {
        dropLocalEvent(chat, eventKey(item.event));
        chat.messages.push({
          id: item.id, seq: ++state.localSeq, event: item.event, timestamp: item.timestamp,
          content: eventWords(item.event, item.content),
        });
        continue;
      }
      chat.messages.push({
        id: item.id, seq: ++state.localSeq, sender: item.sender, content: item.content,
        timestamp: item.timestamp, own: item.sender === state.me,
        edited: Boolean(item.edited), deleted: Boolean(item.deleted), mentions: item.mentions || null,
      });
    }
    chat.messages.sort(compareMessages);
    const newest = chat.messages.filter((m) => m.id != null && !m.system).at(-1);
    if (newest && !chat.newer && (!chat.lastMessage || chat.lastMessage.id == null
        || newest.id >= chat.lastMessage.id)) chat.lastMessage = newest;
  }

  // -- a window of history: from a search hit or a date ----------------------------

  async function openAt(chat, where, focusId = null) {
    /* Open the conversation at a point of its history: {after: id} or {after_time: ISO}.
     * The page after it is shown (oldest first), the message focused; older and newer
     * pages load on demand. */
    const loaded = chat.historyLoaded;
    chat.historyLoaded = true;  // this page, not the latest one
    if (state.current !== chat.id) openChat(chat.id);
    const reply = await app.conn.request({
      type: "HistoryRequest", limit: HISTORY_PAGE, ...conversationKey(chat), ...where,
    });
    if (reply.type !== "HistoryResponse") {
      app.dialogs.failed(`No history for ${chatTitle(chat)}`, reply);
      if (!loaded) loadHistory(chat, false);
      return;
    }
    const items = reply.messages || [];
    if (!items.length) {
      app.dialogs.showNotice("No messages after that moment: these are the latest.");
      if (chat.newer) chat.messages = chat.messages.filter((m) => m.id == null && m.status);
      chat.newer = false;
      chat.focus = null;
      loadHistory(chat, false);  // the latest page
      return;
    }
    chat.messages = chat.messages.filter((m) => m.id == null && m.status);  // keep unsent ones
    chat.historyLoaded = true;
    chat.more = true;  // whatever came before the moment: "Load older messages" asks
    chat.newer = Boolean(reply.more);
    chat.newestLoaded = items[items.length - 1].id;
    chat.focus = focusId != null ? focusId : items[0].id;
    takeHistory(chat, items);
    if (chat.id === state.current) {
      app.conversation.renderConversation(false);
      app.conversation.showFocus();
    }
  }

  async function loadNewer(chat) {
    if (!chat.newer || chat.loadingOlder) return;
    chat.loadingOlder = true;
    const reply = await app.conn.request({
      type: "HistoryRequest", limit: HISTORY_PAGE, ...conversationKey(chat), after: chat.newestLoaded,
    });
    chat.loadingOlder = false;
    if (reply.type !== "HistoryResponse") {
      app.dialogs.failed(`No history for ${chatTitle(chat)}`, reply);
      return;
    }
    const items = reply.messages || [];
    chat.newer = Boolean(reply.more) && items.length > 0;
    if (items.length) chat.newestLoaded = items[items.length - 1].id;
    takeHistory(chat, items);
    if (chat.id === state.current) {
      app.conversation.renderConversation(false);
      app.reading.markRead(chat);
    }
  }

  function jumpToDate(event) {
    event.preventDefault();
    const chat = state.chats.get(state.current);
    const value = el.jumpDate.value;  // YYYY-MM-DD, the start of that day here
    if (!chat || !value || !state.signedIn) return;
    const moment = new Date(`${value}T00:00:00`);
    if (Number.isNaN(moment.getTime())) return;
    openAt(chat, { after_time: moment.toISOString() });
  }

  // -- messages the server pushes --------------------------------------------------

  function incoming(frame) {
    return {
      id: frame.id, seq: ++state.localSeq, sender: frame.sender, content: frame.content,
      timestamp: frame.timestamp, own: frame.sender === state.me, offline: Boolean(frame.offline),
      mentions: frame.mentions || null,
    };
  }

  function updateMessage(frame, changes) {
    for (const chat of state.chats.values()) {
      const message = chat.messages.find((m) => m.id === frame.id)
        || (chat.lastMessage && chat.lastMessage.id === frame.id ? chat.lastMessage : null);
      if (message) {
        Object.assign(message, changes);
        if (chat.id === state.current) app.conversation.renderConversation(false);
        renderChats();
        return;
      }
    }
  }

  const pushes = {
    MessageRecv(frame) {
      let chat;
      if (frame.random) {
        chat = ensureChat("random", frame.chatname);
        if (!chat.partner) {
          chat.partner = frame.sender;
          chat.historyLoaded = true;
          systemNote(chat, `${frame.sender} started a random chat with you.`);
        }
      } else {
        chat = ensureChat("direct", frame.sender);
      }
      addMessage(chat, incoming(frame));
    },
    GroupMessageRecv(frame) {
      const kind = String(frame.chatname).startsWith("~") ? "random" : "group";
      addMessage(ensureChat(kind, frame.chatname), incoming(frame));
    },
    RandomChatEndedRecv(frame) {
      const chat = state.chats.get(chatId("random", frame.chatname));
      if (chat) {
        endRandom(chat, frame.reason === "disconnected"
          ? `${frame.user} disconnected; the random chat has ended.`
          : frame.reason === "blocked" ? `You blocked ${frame.user}; the random chat has ended.`
          : `${frame.user} left; the random chat has ended.`);
      }
    },
    MessageEdited(frame) {
      updateMessage(frame, { content: frame.content, edited: true, mentions: frame.mentions || null });
    },
    MessageDeleted(frame) { updateMessage(frame, { deleted: true }); },
  };

  // -- the chat list -----------------------------------------------------------------

  function byActivity(a, b) {
    /* Newest activity first; a chat opened here with nothing in it yet stays on top. */
    if (!a.activity !== !b.activity) return a.activity ? 1 : -1;
    if (a.activity !== b.activity) return b.activity - a.activity;
    return b.lastActivity - a.lastActivity;
  }

  function renderChats() {
    const chats = [...state.chats.values()].sort(byActivity);
    el.chats.replaceChildren(...chats.map((chat) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = `chat-item ${chat.kind}`;
      if (chat.id === state.current) button.setAttribute("aria-current", "true");
      const avatar = document.createElement("span");
      avatar.className = "avatar";
      avatar.setAttribute("aria-hidden", "true");
      avatar.textContent = chat.kind === "group" ? "#"
        : chat.kind === "direct" && chat.name !== DELETED_USER ? chat.name.charAt(0).toUpperCase() : "?";
      const name = document.createElement("span");
      name.className = "chat-name";
      name.textContent = chat.kind === "group" ? chat.name : chatTitle(chat);  // the avatar shows the #
      const text = document.createElement("span");
      text.className = "chat-text";
      text.append(name);
      const preview = chat.lastMessage ? previewText(chat.lastMessage, chat, state.me) : "";
      if (preview) {
        const line = document.createElement("span");
        line.className = "chat-preview";
        line.textContent = preview;
        line.setAttribute("aria-hidden", "true");
        text.append(line);
        button.title = preview;
      }
      button.append(avatar, text);
      let label = chat.kind === "group" ? chat.name : chatTitle(chat);
      if (chat.mentions) {
        const at = document.createElement("span");
        at.className = "badge mention-badge";
        at.textContent = `@${chat.mentions > 1 ? badgeText(chat.mentions) : ""}`;
        at.setAttribute("aria-hidden", "true");
        button.append(at);
      }
      if (chat.unread) {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = badgeText(chat.unread);
        badge.setAttribute("aria-hidden", "true");
        button.append(badge);
        label += ` ${badgeText(chat.unread)} unread`;
        if (chat.mentions) label += `, ${badgeText(chat.mentions)} mentioning you`;
      }
      button.setAttribute("aria-label", label);
      button.dataset.chat = chat.id;
      button.addEventListener("click", () => openChat(chat.id));
      li.append(button);
      return li;
    }));
    el.chatsEmpty.hidden = chats.length > 0;
    updateTitle();
  }

  function updateTitle() {
    /* The sum of the list's counts; "+" when one of them is capped ("100 or more"). */
    const chats = [...state.chats.values()];
    const unread = chats.reduce((sum, chat) => sum + Math.min(chat.unread, UNREAD_CAP), 0);
    const capped = chats.some((chat) => chat.unread >= UNREAD_CAP);
    const shown = unread > 999 ? "999+" : `${unread}${capped ? "+" : ""}`;
    document.title = unread ? `(${shown}) Chateau` : "Chateau";
  }

  function wire() {
    el.older.addEventListener("click", () => {
      const chat = state.chats.get(state.current);
      if (chat) loadHistory(chat, true);
    });
    el.newer.addEventListener("click", () => {
      const chat = state.chats.get(state.current);
      if (chat) loadNewer(chat);
    });
    el.log.addEventListener("scroll", () => {
      const chat = state.chats.get(state.current);
      if (chat && chat.more && el.log.scrollTop < 40) loadHistory(chat, true);
      if (chat && chat.newer && app.conversation.nearBottom()) loadNewer(chat);
    });
    el.jumpForm.addEventListener("submit", jumpToDate);
  }

  return {
    ensureChat, restoreView, openChat, addMessage, systemNote, addEvent, renameChat,
    endRandom, loadHistory, openAt, takeHistory, updateMessage, renderChats, updateTitle, pushes, wire,
  };
}
