/* Chateau web client: starting and joining groups.
 *
 * New group (a name and members), joining with an invite code, and the
 * public group directory (GroupDirectoryRequest) with Join for open groups.
 */

import { smallButton } from "./dom.js";
import { chatId } from "./state.js";
import { saveView } from "./storage.js";

export function createJoining(app) {
  const { state, el } = app;

  async function createGroup(event) {
    event.preventDefault();
    const name = el.groupName.value.trim();
    const members = el.groupMembers.value.split(/[\s,]+/).filter(Boolean);
    if (!name || !members.length) {
      app.dialogs.showError("A group needs a name and at least one member.");
      return;
    }
    const reply = await app.conn.request({ type: "GroupMessageInitRequest", recipients: members, chatname: name });
    if (reply.type !== "GroupMessageInitResponse") {
      app.dialogs.showError(`Group not created: ${reply.detail}`);
      return;
    }
    const chat = app.chats.ensureChat("group", reply.chatname);
    chat.members = [state.me, ...members];
    chat.historyLoaded = true;
    app.chats.systemNote(chat, `You started this group with ${members.join(", ")}.`);
    el.groupName.value = "";
    el.groupMembers.value = "";
    toggleGroupForm(false);
    app.chats.openChat(chat.id);
  }

  function toggleGroupForm(open) {
    const show = open === undefined ? el.groupForm.hidden : open;
    el.groupForm.hidden = !show;
    el.groupToggle.setAttribute("aria-expanded", String(show));
    if (show) el.groupName.focus();
  }

  function toggleJoinBox(open) {
    const show = open === undefined ? el.joinBox.hidden : open;
    el.joinBox.hidden = !show;
    el.joinToggle.setAttribute("aria-expanded", String(show));
    if (show) {
      el.codeInput.focus();
      searchDirectory();
    }
  }

  async function joinGroup(message) {
    const reply = await app.conn.request({ type: "GroupJoinRequest", ...message });
    if (reply.type !== "GroupJoinResponse") {
      app.dialogs.failed("Could not join", reply);
      return;
    }
    const chat = app.chats.ensureChat("group", reply.chatname);
    chat.removed = null;
    chat.info = null;
    chat.historyLoaded = false;
    if (reply.already) app.dialogs.showNotice(`You are already in # ${reply.chatname}.`);
    else app.chats.systemNote(chat, `You joined # ${reply.chatname}.`);
    saveView(state);
    app.chats.openChat(chat.id);
  }

  async function joinWithCode(event) {
    event.preventDefault();
    const code = el.codeInput.value.trim();
    if (!code) return;
    await joinGroup({ code });
    el.codeInput.value = "";
  }

  async function searchDirectory(event) {
    if (event) event.preventDefault();
    const message = { type: "GroupDirectoryRequest" };
    const query = el.directoryQuery.value.trim();
    if (query) message.query = query;
    const reply = await app.conn.request(message);
    if (reply.type !== "GroupDirectoryResponse") {
      app.dialogs.failed("No group directory", reply);
      return;
    }
    const groups = reply.groups || [];
    el.directoryResults.replaceChildren(...(groups.length ? groups.map((group) => {
      const li = document.createElement("li");
      li.className = "directory-entry";
      const name = document.createElement("strong");
      name.textContent = group.chatname;
      const about = document.createElement("span");
      about.className = "muted";
      about.textContent = `${group.members} member${group.members === 1 ? "" : "s"}` +
        (group.topic ? ` · ${group.topic}` : "");
      li.append(name, about);
      if (state.chats.has(chatId("group", group.chatname)) && !state.chats.get(chatId("group", group.chatname)).removed) {
        li.append(smallButton("Open", `Open ${group.chatname}`, () => app.chats.openChat(chatId("group", group.chatname))));
      } else if (group.join === "open") {
        li.append(smallButton("Join", `Join ${group.chatname}`, () => joinGroup({ chatname: group.chatname })));
      } else {
        const note = document.createElement("span");
        note.className = "muted";
        note.textContent = "invite only";
        li.append(note);
      }
      return li;
    }) : [Object.assign(document.createElement("li"), {
      className: "muted", textContent: query ? "No public group matches." : "No public groups yet.",
    })]));
  }

  function wire() {
    el.groupForm.addEventListener("submit", createGroup);
    el.groupToggle.addEventListener("click", () => toggleGroupForm());
    el.joinToggle.addEventListener("click", () => toggleJoinBox());
    el.codeForm.addEventListener("submit", joinWithCode);
    el.directoryForm.addEventListener("submit", searchDirectory);
  }

  return { wire };
}
