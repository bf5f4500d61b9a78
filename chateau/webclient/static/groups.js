/* Chateau web client: the group panel, and what happens to groups.
 *
 * The panel beside a group's conversation shows what GroupInfoRequest
 * answers (topic, settings, members with role, online and muted state, bans)
 * and offers only the controls the permission table allows (the server
 * decides all the same): roles, adding, removing and banning, muting,
 * unbanning, the topic, the group's settings (retention too) and renames,
 * invite codes. A group synced from the campus directory says so and offers
 * no membership controls (adding, removing, banning, inviting, leaving).
 * Members show their display name and status text when they set them.
 * Also the pushes about groups: being added, members leaving, group events,
 * being removed.
 */

import { unsupported } from "./connection.js";
import { smallButton } from "./dom.js";
import { chatId } from "./state.js";
import { saveView } from "./storage.js";
import { eventKey, formatTime, personName, removedText } from "./words.js";

export function createGroups(app) {
  const { state, el } = app;

  async function loadInfo(chat) {
    /* The group's topic, settings and members with roles (GroupInfoRequest). */
    const name = chat.name;
    const reply = await app.conn.request({ type: "GroupInfoRequest", chatname: name });
    if (reply.type === "GroupInfoResponse") {
      if (chat.name !== name || chat.removed) return;  // renamed or removed meanwhile
      chat.info = reply;
      chat.infoError = null;
      chat.members = (reply.members || []).map((member) => member.username);
      fillGroupSettings(chat);
    } else if (unsupported(reply)) {
      const members = await app.conn.request({ type: "GroupMembersRequest", chatname: name });
      if (members.type !== "GroupMembersResponse") return;  // older servers: a generic subtitle
      chat.members = (members.members || []).map((member) => member.username);
    } else if (reply.status !== 0 && !chat.removed && chat.name === name) {
      chat.infoError = reply.detail || "the server refused it";
      app.dialogs.failed(`No group info for # ${name}`, reply);
      if (chat.id === state.current) renderPanel();
      return;
    }
    if (chat.id === state.current) {
      app.conversation.renderConversation(false);
      renderPanel();
    }
  }

  const ROLE_RANK = { member: 0, admin: 1, owner: 2 };
  const ROLE_NAMES = ["owner", "admin", "member"];

  function myRole(chat) {
    /* Our role in the group; a server admin acts as an owner everywhere. */
    if (state.admin) return "owner";
    const me = chat.info && (chat.info.members || []).find((m) => m.username === state.me);
    return me ? me.role : null;
  }

  function may(chat, action, target) {
    /* The permission table of docs/protocol.md (chateau/permissions.py), to offer only
     * the controls the server would allow; the server decides all the same. */
    const role = myRole(chat);
    if (!(role in ROLE_RANK)) return false;
    const rank = ROLE_RANK[role];
    const settings = (chat.info && chat.info.settings) || {};
    const synced = Boolean(chat.info && chat.info.directory);  // membership follows the directory
    if (synced && ["add", "invite", "remove"].includes(action)) return false;
    if (action === "add" || action === "invite") return settings.who_can_add === "members" || rank >= 1;
    if (action === "update" || action === "unban") return rank >= 1;
    if (action === "role") return role === "owner";
    if (action === "remove" || action === "mute") {
      return target in ROLE_RANK && rank >= 1 && ROLE_RANK[target] < rank;
    }
    return false;
  }

  function togglePanel(open) {
    state.panelOpen = open === undefined ? !state.panelOpen : open;
    const chat = state.chats.get(state.current);
    if (state.panelOpen && chat && chat.kind === "group" && !chat.info && !chat.removed) {
      chat.infoError = null;
      loadInfo(chat);
    }
    renderPanel();
  }

  function renderPanel() {
    const chat = state.chats.get(state.current);
    const show = Boolean(state.panelOpen && chat && chat.kind === "group" && !chat.removed);
    el.panel.hidden = !show;
    el.chat.classList.toggle("with-panel", show);
    el.infoButton.setAttribute("aria-expanded", String(show));
    if (!show) return;
    el.panelTitle.textContent = `# ${chat.name}`;
    const info = chat.info;
    if (!info) {
      el.panelTopic.textContent = chat.infoError ? `No group info: ${chat.infoError}` : "Loading…";
      el.panelMembers.replaceChildren();
      for (const part of [el.topicForm, el.addForm, el.bansSection, el.inviteSection, el.settingsSection,
        el.panelDirectory]) {
        part.hidden = true;
      }
      return;
    }
    el.panelDirectory.hidden = !info.directory;
    el.panelTopic.textContent = info.topic || "No topic yet.";
    el.panelTopic.classList.toggle("muted", !info.topic);
    el.topicForm.hidden = !may(chat, "update");
    el.addForm.hidden = !may(chat, "add");
    el.inviteSection.hidden = !may(chat, "invite");
    el.settingsSection.hidden = !may(chat, "update");
    el.panelMembers.replaceChildren(...(info.members || []).map((member) => memberRow(chat, member)));
    const bans = Array.isArray(info.bans) ? info.bans : null;
    el.bansSection.hidden = !bans || !may(chat, "unban");
    if (bans) {
      el.panelBans.replaceChildren(...(bans.length ? bans.map((ban) => {
        const li = document.createElement("li");
        li.className = "ban";
        const text = document.createElement("span");
        text.textContent = `${ban.username}, by ${ban.by}${ban.reason ? `: ${ban.reason}` : ""}`;
        li.append(text, smallButton("Unban", `Unban ${ban.username}`, () => unban(chat, ban.username)));
        return li;
      }) : [Object.assign(document.createElement("li"), { className: "muted", textContent: "Nobody." })]));
    }
  }

  function memberRow(chat, member) {
    const li = document.createElement("li");
    li.className = "member";
    li.dataset.username = member.username;
    const line = document.createElement("div");
    line.className = "member-line";
    const dot = document.createElement("span");
    dot.className = member.online ? "dot on" : "dot";
    dot.title = member.online ? "online" : "offline";
    const name = document.createElement("span");
    name.className = "member-name";
    const who = member.display_name ? `${member.display_name} (${personName(member.username)})`
      : personName(member.username);
    name.textContent = member.username === state.me ? `${who} (you)` : who;
    if (member.status_text) li.title = member.status_text;
    const role = document.createElement("span");
    role.className = `role ${member.role}`;
    role.textContent = member.role;
    line.append(dot, name, role);
    const status = [member.online ? "online" : "offline"];
    if (member.muted) {
      status.push(member.muted_until ? `muted until ${formatTime(member.muted_until)}` : "muted");
    }
    const presence = document.createElement("span");
    presence.className = "member-state muted";
    presence.textContent = status.join(", ");
    li.append(line, presence);
    if (member.status_text) {
      const statusText = document.createElement("span");
      statusText.className = "member-status-text";
      statusText.textContent = member.status_text;
      li.append(statusText);
    }
    const controls = document.createElement("div");
    controls.className = "member-controls";
    if (may(chat, "role")) {
      const select = document.createElement("select");
      select.setAttribute("aria-label", `Role of ${member.username}`);
      for (const value of ROLE_NAMES) {
        const option = document.createElement("option");
        option.value = value;
        option.textContent = value;
        option.selected = value === member.role;
        select.append(option);
      }
      select.addEventListener("change", () => setRole(chat, member.username, select.value));
      controls.append(select);
    }
    if (member.username !== state.me) {
      if (may(chat, "remove", member.role)) {
        controls.append(
          smallButton("Remove", `Remove ${member.username}`, () => removeMember(chat, member.username, false)),
          smallButton("Ban", `Ban ${member.username}`, () => removeMember(chat, member.username, true), "danger"),
        );
      }
      if (may(chat, "mute", member.role)) {
        controls.append(member.muted
          ? smallButton("Unmute", `Unmute ${member.username}`, () => mute(chat, member.username, 0))
          : smallButton("Mute", `Mute ${member.username}`, () => askMute(chat, member.username)));
      }
      const blocked = state.blocked.has(member.username);
      controls.append(
        smallButton(blocked ? "Unblock" : "Block", `${blocked ? "Unblock" : "Block"} ${member.username}`,
          () => app.safety.toggleBlock(member.username)),
        smallButton("Report", `Report ${member.username}`,
          () => app.safety.reportPerson(member.username, chat.name)),
      );
    }
    if (controls.childElementCount) li.append(controls);
    return li;
  }

  function fillGroupSettings(chat) {
    /* The settings form shows what the server has (filled when info arrives, not on every redraw). */
    const info = chat.info;
    if (!info || chat.id !== state.current) return;
    const form = el.groupSettingsForm;
    if (form.dataset.dirty && form.dataset.chat === chat.id) return;  // being edited: keep it
    form.dataset.chat = chat.id;
    delete form.dataset.dirty;
    const settings = info.settings || {};
    el.renameInput.value = info.chatname || chat.name;
    el.retentionInput.value = settings.retention_days == null ? "" : String(settings.retention_days);
    el.joinSelect.value = settings.join || "invite";
    el.visibilitySelect.value = settings.visibility || "private";
    el.whoAddSelect.value = settings.who_can_add || "admins";
    el.whoSendSelect.value = settings.who_can_send || "everyone";
  }

  function currentGroup() {
    const chat = state.chats.get(state.current);
    return chat && chat.kind === "group" ? chat : null;
  }

  async function setRole(chat, user, role) {
    const reply = await app.conn.request({ type: "GroupRoleRequest", chatname: chat.name, user, role });
    if (reply.type !== "GroupRoleResponse") {
      app.dialogs.failed(`Role of ${user} not changed`, reply);
      loadInfo(chat);  // put the select back to what the server has
      return;
    }
    app.chats.addEvent(chat, { event: "role", user: reply.user, by: state.me, role: reply.role });
    loadInfo(chat);
  }

  async function removeMember(chat, user, ban) {
    const reason = await app.dialogs.ask(ban ? `Ban ${user} from # ${chat.name}` : `Remove ${user} from # ${chat.name}`,
      "Reason (optional)");
    if (reason === null) return;
    const message = { type: "GroupRemoveRequest", chatname: chat.name, user, ban };
    if (reason) message.reason = reason;
    const reply = await app.conn.request(message);
    if (reply.type !== "GroupRemoveResponse") {
      app.dialogs.failed(ban ? `${user} not banned` : `${user} not removed`, reply);
      return;
    }
    const event = { event: reply.banned ? "banned" : "removed", user: reply.user || user, by: state.me };
    if (reason) event.reason = reason;
    app.chats.addEvent(chat, event);
    loadInfo(chat);
  }

  async function unban(chat, user) {
    const reply = await app.conn.request({ type: "GroupUnbanRequest", chatname: chat.name, user });
    if (reply.type !== "GroupUnbanResponse") {
      app.dialogs.failed(`${user} not unbanned`, reply);
      return;
    }
    app.chats.addEvent(chat, { event: "unbanned", user: reply.user || user, by: state.me });
    loadInfo(chat);
  }

  async function askMute(chat, user) {
    const answer = await app.dialogs.ask(`Mute ${user} in # ${chat.name}`, "Minutes",
      { value: "60", type: "number", required: true });
    if (answer === null) return;
    const minutes = Number(answer);
    if (!Number.isInteger(minutes) || minutes < 0) {
      app.dialogs.showError("Minutes must be a whole number, 0 or more.");
      return;
    }
    mute(chat, user, minutes);
  }

  async function mute(chat, user, minutes) {
    const reply = await app.conn.request({ type: "GroupMuteRequest", chatname: chat.name, user, minutes });
    if (reply.type !== "GroupMuteResponse") {
      app.dialogs.failed(minutes ? `${user} not muted` : `${user} still muted`, reply);
      return;
    }
    app.chats.addEvent(chat, reply.muted_until
      ? { event: "muted", user: reply.user || user, by: state.me, until: reply.muted_until }
      : { event: "unmuted", user: reply.user || user, by: state.me });
    loadInfo(chat);
  }

  async function addMembers(event) {
    event.preventDefault();
    const chat = currentGroup();
    const users = el.addInput.value.split(/[\s,]+/).filter(Boolean);
    if (!chat || !users.length) return;
    const reply = await app.conn.request({ type: "GroupAddRequest", chatname: chat.name, users });
    if (reply.type !== "GroupAddResponse") {
      app.dialogs.failed("Nobody added", reply);
      return;
    }
    el.addInput.value = "";
    for (const user of reply.added || []) app.chats.addEvent(chat, { event: "added", user, by: state.me });
    if ((reply.already || []).length) app.dialogs.showNotice(`Already members: ${reply.already.join(", ")}`);
    loadInfo(chat);
  }

  async function setTopic(event) {
    event.preventDefault();
    const chat = currentGroup();
    if (!chat) return;
    const topic = el.topicInput.value.trim();
    const reply = await app.conn.request({ type: "GroupUpdateRequest", chatname: chat.name, topic });
    if (reply.type !== "GroupUpdateResponse") {
      app.dialogs.failed("Topic not changed", reply);
      return;
    }
    el.topicInput.value = "";
    if (!chat.info || chat.info.topic !== reply.topic) {  // the same topic again tells nobody
      app.chats.addEvent(chat, { event: "topic", user: state.me, by: state.me, topic: reply.topic });
    }
    loadInfo(chat);
  }

  async function saveGroupSettings(event) {
    event.preventDefault();
    let chat = currentGroup();
    if (!chat || !chat.info) return;
    const before = chat.info.settings || {};
    const message = { type: "GroupUpdateRequest", chatname: chat.name };
    const newName = el.renameInput.value.trim();
    if (newName && newName !== chat.name) message.name = newName;
    const changed = {};
    for (const [key, select] of [["join", el.joinSelect], ["visibility", el.visibilitySelect],
      ["who_can_add", el.whoAddSelect], ["who_can_send", el.whoSendSelect]]) {
      if (select.value !== before[key]) changed[key] = select.value;
    }
    const retention = el.retentionInput.value.trim();
    const days = retention === "" ? null : Number(retention);
    if (days !== null && !(Number.isInteger(days) && days >= 0 && days <= 36500)) {
      app.dialogs.showError("Keep messages for: a whole number of days from 0 (forever) to 36500, " +
        "or empty for the server's default.");
      return;
    }
    if (days !== (before.retention_days == null ? null : before.retention_days)) changed.retention_days = days;
    Object.assign(message, changed);
    if (Object.keys(message).length === 2) {
      app.dialogs.showNotice("Nothing to change.");
      return;
    }
    const oldName = chat.name;
    const reply = await app.conn.request(message);
    if (reply.type !== "GroupUpdateResponse") {
      app.dialogs.failed("Group settings not changed", reply);
      return;
    }
    delete el.groupSettingsForm.dataset.dirty;
    if (reply.chatname && reply.chatname !== oldName) {
      chat = app.chats.renameChat(chat, reply.chatname);
      app.chats.addEvent(chat, { event: "renamed", user: state.me, by: state.me, old_name: oldName, new_name: reply.chatname });
    }
    if (Object.keys(changed).length) {
      app.chats.addEvent(chat, { event: "settings", user: state.me, by: state.me, settings: changed });
    }
    loadInfo(chat);
  }

  async function createInvite(event) {
    event.preventDefault();
    const chat = currentGroup();
    if (!chat) return;
    const message = { type: "GroupInviteRequest", chatname: chat.name };
    if (el.inviteUses.value) message.max_uses = Number(el.inviteUses.value);
    if (el.inviteHours.value) message.hours = Number(el.inviteHours.value);
    const reply = await app.conn.request(message);
    if (reply.type !== "GroupInviteResponse") {
      app.dialogs.failed("No invite code", reply);
      return;
    }
    el.inviteCode.textContent = reply.code;
    el.inviteExpiry.textContent = `valid until ${formatTime(reply.expires) || reply.expires}` +
      (reply.max_uses ? `, ${reply.max_uses} use${reply.max_uses === 1 ? "" : "s"}` : ", any number of uses");
    el.inviteResult.hidden = false;
  }

  const pushes = {
    GroupMessageInitResponse(frame) {
      const chat = app.chats.ensureChat("group", frame.chatname);
      chat.members = frame.members || null;
      if (chat.removed) {  // back in a group we had been removed from
        chat.removed = null;
        chat.historyLoaded = false;
        saveView(state);
      }
      chat.info = null;
      if (chat.id === state.current) app.chats.openChat(chat.id);
      // Being added is a line in the group, not an unread message (as the server counts).
      app.chats.systemNote(chat, `${frame.creator} added you to this group (${(frame.members || []).join(", ")}).`);
      app.chats.renderChats();
    },
    GroupMemberLeftRecv(frame) {
      // Servers that store events also push GroupEventRecv "left": one line for both.
      const chat = state.chats.get(chatId("group", frame.chatname));
      if (!chat) return;
      const event = { event: "left", user: frame.user, by: frame.user };
      const key = eventKey(event);
      if (chat.messages.slice(-10).some((m) => m.event && eventKey(m.event) === key)) return;
      app.chats.addEvent(chat, event);
    },
    GroupEventRecv(frame) {
      let chat = null;
      if (frame.event === "renamed" && frame.old_name != null) {
        const old = state.chats.get(chatId("group", frame.old_name));
        if (old) chat = app.chats.renameChat(old, frame.chatname);
      }
      if (!chat) chat = app.chats.ensureChat("group", frame.chatname);
      const { type, status, chatname, id, timestamp, offline, msg_id: _, ...event } = frame;
      app.chats.addEvent(chat, event, { id, timestamp, offline: Boolean(offline) });
      chat.info = null;  // roles, members or settings changed: ask again when shown
      if (chat.id === state.current) loadInfo(chat);
    },
    GroupRemovedRecv(frame) {
      const chat = app.chats.ensureChat("group", frame.chatname);
      chat.removed = { by: frame.by, reason: frame.reason || "", banned: Boolean(frame.banned) };
      chat.info = null;
      chat.historyLoaded = true;
      app.chats.systemNote(chat, removedText(chat.removed));
      saveView(state);
      if (chat.id === state.current) {
        app.conversation.renderConversation(false);
        renderPanel();
        app.conversation.updateComposer();
      } else {
        chat.unread += 1;
        app.chats.renderChats();
      }
    },
  };

  function wire() {
    el.infoButton.addEventListener("click", () => togglePanel());
    el.panelClose.addEventListener("click", () => togglePanel(false));
    el.topicForm.addEventListener("submit", setTopic);
    el.addForm.addEventListener("submit", addMembers);
    el.inviteForm.addEventListener("submit", createInvite);
    el.groupSettingsForm.addEventListener("submit", saveGroupSettings);
    for (const kind of ["input", "change"]) {
      el.groupSettingsForm.addEventListener(kind, () => { el.groupSettingsForm.dataset.dirty = "1"; });
    }
  }

  return { loadInfo, renderPanel, pushes, wire };
}
