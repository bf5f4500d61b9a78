/* Chateau web client: the open conversation.
 *
 * Its header (title, subtitle, Leave, Block, Report, Group info, Jump to
 * date), its messages drawn as text (system lines, hidden messages, the
 * state of what is being sent, mentions of the user marked, "Seen" under
 * the last own message the other side of a direct chat has read, a message
 * found by search marked), and the composer: sending, leaving a chat,
 * starting a random chat.
 */

import { chatPerson, compareMessages, isMentioned } from "./state.js";
import { saveView } from "./storage.js";
import { DELETED_USER, chatTitle, formatTime, removedText } from "./words.js";

export function createConversation(app) {
  const { state, el } = app;

  async function sendMessage(event) {
    event.preventDefault();
    const content = el.message.value;
    const chat = state.chats.get(state.current);
    if (!content.trim() || !chat || !state.signedIn) return;
    el.message.value = "";
    autosize();
    app.typing.done();
    const local = {
      id: null, seq: ++state.localSeq, sender: state.me, content, own: true,
      timestamp: new Date().toISOString(), status: "sending",
    };
    app.chats.addMessage(chat, local);
    if (chat.kind === "random-new") {
      const reply = await app.conn.request({ type: "RandomMessageRequest", content });
      if (reply.type !== "RandomMessageResponse") {
        failMessage(chat, local, reply);
        return;
      }
      state.chats.delete(chat.id);
      const random = app.chats.ensureChat("random", reply.chatname);
      random.partner = reply.client;
      random.historyLoaded = true;
      Object.assign(local, { id: reply.id, timestamp: reply.timestamp, status: "sent" });
      app.chats.systemNote(random, `You are chatting with ${reply.client}, picked at random.`);
      app.chats.addMessage(random, local);
      saveView(state);
      app.chats.openChat(random.id);
      return;
    }
    const reply = await app.conn.request({ type: "GroupMessageRequest", recipient: chat.name, content });
    if (reply.type !== "MessageSendResponse") {
      failMessage(chat, local, reply);
      return;
    }
    Object.assign(local, { id: reply.id, timestamp: reply.timestamp, status: "sent",
      mentions: reply.mentions || null });
    if (reply.id > chat.activity) chat.activity = reply.id;
    if (reply.id > chat.read) chat.read = reply.id;  // one's own message is read
    chat.messages.sort(compareMessages);
    if (chat.id === state.current) renderConversation(true);
    app.chats.renderChats();
  }

  function failMessage(chat, local, reply) {
    local.status = "failed";
    local.error = reply.detail || "the server refused it";
    if (chat.id === state.current) renderConversation(false);
    app.dialogs.showError(`Message not sent: ${local.error}`);
  }

  async function leaveChat() {
    const chat = state.chats.get(state.current);
    if (!chat) return;
    if (chat.kind === "random-new" || chat.ended || chat.removed) {
      state.chats.delete(chat.id);
      state.current = null;
      saveView(state);
      app.chats.renderChats();
      renderConversation(false);
      updateComposer();
      return;
    }
    const reply = await app.conn.request({ type: "GroupLeaveRequest", chatname: chat.name });
    if (reply.type !== "GroupLeaveResponse") {
      app.dialogs.showError(`Could not leave ${chatTitle(chat)}: ${reply.detail}`);
      return;
    }
    chat.left = true;
    state.chats.delete(chat.id);
    state.current = null;
    saveView(state);
    app.chats.renderChats();
    renderConversation(false);
    updateComposer();
  }

  function startRandom() {
    const chat = app.chats.ensureChat("random-new", "");
    if (!chat.messages.length) {
      app.chats.systemNote(chat, "Write a first message: it goes to someone online, picked at random.");
    }
    app.chats.openChat(chat.id);
  }

  function renderConversation(scrollToEnd) {
    const chat = state.chats.get(state.current);
    // A synced group's membership follows the campus directory: nobody leaves it by hand.
    el.leave.hidden = !chat || chat.kind === "direct"
      || Boolean(chat.kind === "group" && !chat.removed && chat.info && chat.info.directory);
    el.infoButton.hidden = !chat || chat.kind !== "group" || Boolean(chat.removed);
    const person = chat ? chatPerson(chat) : null;
    el.blockButton.hidden = !person;
    el.reportButton.hidden = !person;
    if (person) {
      const blocked = state.blocked.has(person);
      el.blockButton.textContent = blocked ? "Unblock" : "Block";
      el.blockButton.setAttribute("aria-label", `${blocked ? "Unblock" : "Block"} ${person}`);
      el.reportButton.setAttribute("aria-label", `Report ${person}`);
    }
    el.removedBanner.hidden = !(chat && chat.removed);
    el.jumpForm.hidden = !chat || chat.kind === "random" || chat.kind === "random-new"
      || !state.historySupported;
    el.newer.hidden = !(chat && chat.newer);
    app.typing.render();
    if (chat && chat.removed) el.removedBanner.textContent = removedText(chat.removed);
    if (!chat) {
      el.title.textContent = "Welcome";
      el.subtitle.textContent = "Pick someone online, start a group or a random chat.";
      el.messages.replaceChildren();
      el.older.hidden = true;
      el.historyStart.hidden = true;
      return;
    }
    el.title.textContent = chatTitle(chat);
    el.subtitle.textContent = chat.kind === "group"
      ? (chat.removed ? "You are no longer in this group"
        : chat.info && chat.info.topic ? `Topic: ${chat.info.topic}`
        : chat.members ? `Group: ${chat.members.join(", ")}` : "Group chat")
      : chat.kind === "direct" ? "Direct messages"
      : chat.ended ? "This random chat has ended" : "Random chat";
    el.leave.textContent = chat.removed ? "Close" : chat.kind === "group" ? "Leave group" : "End chat";
    el.older.hidden = !(chat.more && state.historySupported);
    el.older.disabled = chat.loadingOlder;
    el.historyStart.hidden = !(chat.historyLoaded && !chat.more && state.historySupported
      && chat.messages.some((m) => !m.system));
    let previousSender = null;
    const seenId = lastSeen(chat);
    el.messages.replaceChildren(...chat.messages.map((message) => {
      const li = document.createElement("li");
      if (message.system || message.event || message.hidden) {
        li.className = "system";
        if (message.event) {
          li.classList.add("event");
          li.dataset.event = message.event.event || "";
        }
        if (message.hidden) li.classList.add("hidden-message");
        li.textContent = message.hidden ? "message hidden (blocked user)" : message.content;
        previousSender = null;
        return li;
      }
      li.className = message.own ? "message own" : "message";
      if (message.id != null) li.dataset.id = String(message.id);
      if (isMentioned(message, state.me) && !message.deleted) li.classList.add("mention");
      if (message.id != null && message.id === chat.focus) li.classList.add("focus");
      if (message.status === "failed") li.classList.add("failed");
      if (message.status === "sending") li.classList.add("sending");
      const continued = previousSender === message.sender;
      previousSender = message.sender;
      if (continued) li.classList.add("continued");
      const meta = document.createElement("div");
      meta.className = "meta";
      const sender = document.createElement("span");
      sender.className = "sender";
      sender.textContent = message.own ? "You" : message.sender;
      if (!message.own && message.sender === DELETED_USER) {
        sender.textContent = "deleted user";
        sender.classList.add("deleted-user");
        li.classList.add("from-deleted-user");
      }
      const time = document.createElement("time");
      time.dateTime = message.timestamp || "";
      time.textContent = formatTime(message.timestamp);
      meta.append(sender, time);
      if (!message.own && message.id != null && !message.deleted && message.sender !== DELETED_USER) {
        const report = document.createElement("button");
        report.type = "button";
        report.className = "link";
        report.textContent = "Report";
        report.setAttribute("aria-label", `Report message from ${message.sender}`);
        report.addEventListener("click", () => app.safety.reportMessage(chat, message));
        meta.append(report);
      }
      const body = document.createElement("div");
      body.className = "body";
      body.textContent = message.deleted ? "This message was deleted." : message.content;
      if (message.deleted) body.classList.add("deleted");
      li.append(meta, body);
      const notes = [];
      if (message.edited && !message.deleted) notes.push("edited");
      if (message.offline) notes.push("sent while you were away");
      if (message.status === "sending") notes.push("sending…");
      if (message.status === "failed") notes.push(`not sent: ${message.error}`);
      if (seenId !== null && message.id === seenId) {
        notes.push("Seen");
        li.classList.add("seen");
      }
      if (notes.length) {
        const note = document.createElement("div");
        note.className = "note";
        note.textContent = notes.join(" · ");
        li.append(note);
      }
      return li;
    }));
    if (scrollToEnd) el.log.scrollTop = el.log.scrollHeight;
  }

  function lastSeen(chat) {
    /* A direct chat: the id of the last own message the other person has read, or null. */
    if (chat.kind !== "direct" || !chat.peerRead) return null;
    let seen = null;
    for (const message of chat.messages) {
      if (message.own && message.id != null && message.id <= chat.peerRead && !message.system) {
        seen = message.id;
      }
    }
    return seen;
  }

  function showFocus() {
    /* Scroll to the message a search or a date led to. */
    const chat = state.chats.get(state.current);
    if (!chat || chat.focus == null) return;
    const item = el.messages.querySelector(`li[data-id="${Number(chat.focus)}"]`);
    if (item) item.scrollIntoView({ block: "center" });
  }

  function updateComposer() {
    const chat = state.chats.get(state.current);
    const gone = Boolean(chat && chat.kind === "direct" && chat.name === DELETED_USER);
    const usable = Boolean(state.signedIn && chat && !chat.ended && !chat.removed && !gone);
    el.message.disabled = !usable;
    el.send.disabled = !usable;
    el.message.placeholder = !chat ? "Pick a chat first"
      : chat.ended ? "This random chat has ended"
      : chat.removed ? "You are no longer in this group"
      : gone ? "This account was deleted"
      : !state.signedIn ? "Reconnecting…"
      : `Message ${chatTitle(chat)}`;
  }

  function nearBottom() {
    const log = el.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  }

  function autosize() {
    el.message.style.height = "auto";
    el.message.style.height = `${Math.min(el.message.scrollHeight, 160)}px`;
  }

  function wire() {
    el.composer.addEventListener("submit", sendMessage);
    el.randomButton.addEventListener("click", startRandom);
    el.leave.addEventListener("click", leaveChat);
    el.message.addEventListener("input", autosize);
    el.message.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        el.composer.requestSubmit();
      }
    });
  }

  return { renderConversation, updateComposer, nearBottom, showFocus, wire };
}
