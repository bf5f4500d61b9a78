/* Chateau web client: the user's own safety: blocking, reporting, settings.
 *
 * Block and Unblock (a blocked person's group messages are hidden at once,
 * as history hides them), Report on a person or a message (a reason is asked
 * first), and the settings page: who may message you and see you online,
 * random chats, read receipts, and the people you blocked.
 */

import { unsupported } from "./connection.js";
import { smallButton } from "./dom.js";
import { chatPerson } from "./state.js";
import { formatTime } from "./words.js";

export function createSafety(app) {
  const { state, el } = app;

  async function refreshBlocked(show) {
    const reply = await app.conn.request({ type: "BlockListRequest" });
    if (reply.type !== "BlockListResponse") {
      if (show || !(unsupported(reply) || reply.status === 0)) app.dialogs.failed("No list of blocked people", reply);
      return;
    }
    state.blocked = new Map((reply.blocked || []).map((entry) => [entry.username, entry.since]));
    renderBlocked();
    app.conversation.renderConversation(false);
    app.groups.renderPanel();
  }

  function renderBlocked() {
    const names = [...state.blocked.keys()].sort();
    el.blockedList.replaceChildren(...(names.length ? names.map((username) => {
      const li = document.createElement("li");
      li.className = "blocked";
      const text = document.createElement("span");
      const since = state.blocked.get(username);
      text.textContent = since ? `${username} (since ${formatTime(since) || since})` : username;
      li.append(text, smallButton("Unblock", `Unblock ${username}`, () => toggleBlock(username)));
      return li;
    }) : [Object.assign(document.createElement("li"), { className: "muted", textContent: "Nobody." })]));
  }

  async function toggleBlock(username) {
    const blocking = !state.blocked.has(username);
    const reply = await app.conn.request({ type: blocking ? "BlockRequest" : "UnblockRequest", username });
    if (reply.type !== (blocking ? "BlockResponse" : "UnblockResponse")) {
      app.dialogs.failed(blocking ? `${username} not blocked` : `${username} still blocked`, reply);
      return;
    }
    if (blocking) state.blocked.set(username, new Date().toISOString());
    else state.blocked.delete(username);
    rehide(username, blocking);
    app.dialogs.showNotice(blocking
      ? `You blocked ${username}: you will not see anything from them.`
      : `You unblocked ${username}.`);
    renderBlocked();
    app.conversation.renderConversation(false);
    app.groups.renderPanel();
    app.people.refreshContacts();
  }

  function rehide(username, blocking) {
    /* A blocked person's messages in groups are hidden as history would hide them; after an
     * unblock the groups' history is asked again, which shows them. */
    for (const chat of state.chats.values()) {
      if (chat.kind !== "group") continue;
      if (blocking) {
        chat.messages = chat.messages.map((m) => (m.sender === username && m.id != null && !m.event
          ? { id: m.id, seq: m.seq, hidden: true, timestamp: m.timestamp } : m));
      } else if (chat.messages.some((m) => m.hidden)) {
        chat.messages = chat.messages.filter((m) => !m.hidden);
        chat.historyLoaded = false;
        if (chat.id === state.current) app.chats.loadHistory(chat, false);
      }
    }
  }

  async function report(target, what) {
    const reason = await app.dialogs.ask(`Report ${what}`, "Reason", { required: true });
    if (reason === null) return;
    const reply = await app.conn.request({ type: "ReportRequest", reason, ...target });
    if (reply.type !== "ReportResponse") {
      app.dialogs.failed("Report not sent", reply);
      return;
    }
    app.dialogs.showNotice(`Report sent (number ${reply.report_id}); the server's moderators will look at it.`);
  }

  function reportPerson(username, chatname) {
    const target = { username };
    if (chatname) target.chatname = chatname;
    report(target, username);
  }

  function reportMessage(chat, message) {
    const target = { message_id: message.id };
    if (chat.kind === "group" || chat.kind === "random") target.chatname = chat.name;
    if (message.sender) target.username = message.sender;
    report(target, `this message from ${message.sender}`);
  }

  // -- settings --------------------------------------------------------------------

  async function openSettings() {
    app.dialogs.openDialog(el.settingsDialog);
    renderBlocked();
    const reply = await app.conn.request({ type: "SettingsRequest" });
    if (reply.type !== "SettingsResponse") app.dialogs.failed("No settings", reply);
    else fillSettings(reply);
    refreshBlocked(true);
  }

  function fillSettings(reply) {
    el.dmSelect.value = reply.direct_messages || "everyone";
    el.presenceSelect.value = reply.presence || "everyone";
    el.randomCheck.checked = reply.random_chat !== false;
    el.receiptsCheck.checked = reply.read_receipts !== false;
  }

  async function saveSettings(event) {
    event.preventDefault();
    const reply = await app.conn.request({
      type: "SettingsRequest", direct_messages: el.dmSelect.value, presence: el.presenceSelect.value,
      random_chat: el.randomCheck.checked, read_receipts: el.receiptsCheck.checked,
    });
    if (reply.type !== "SettingsResponse") {
      app.dialogs.failed("Settings not saved", reply);
      return;
    }
    fillSettings(reply);
    app.dialogs.showNotice("Settings saved.");
  }

  function wire() {
    el.blockButton.addEventListener("click", () => {
      const chat = state.chats.get(state.current);
      const person = chat && chatPerson(chat);
      if (person) toggleBlock(person);
    });
    el.reportButton.addEventListener("click", () => {
      const chat = state.chats.get(state.current);
      const person = chat && chatPerson(chat);
      if (person) reportPerson(person, chat.kind === "random" ? chat.name : null);
    });
    el.settingsButton.addEventListener("click", openSettings);
    el.settingsForm.addEventListener("submit", saveSettings);
    el.settingsClose.addEventListener("click", () => el.settingsDialog.close());
  }

  return { refreshBlocked, toggleBlock, reportPerson, reportMessage, wire };
}
