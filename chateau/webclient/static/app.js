/* Chateau web client: plain JavaScript, no build step.
 *
 * One WebSocket to /ws beside this page. Requests carry a msg_id so their
 * replies can be matched; everything else the server sends is a push. The
 * session key lives in sessionStorage (per tab, kept across reloads), so a
 * reload or a dropped connection resumes without asking for the password.
 * Text from the server is only ever put into the page as text, never HTML.
 */
"use strict";

(() => {
  const SESSION_KEY = "chateau.session";   // {key, username}
  const VIEW_KEY = "chateau.view";         // {current, chats: [...]}
  const ONLINE_REFRESH_MS = 5000;
  const RETRY_FIRST_MS = 1000;
  const SIGNED_OUT = 4001;  // close code: the session key was revoked (docs/protocol.md)
  const BANNED = 4003;      // close code: a server admin banned the account
  const RETRY_MAX_MS = 30000;
  const HISTORY_PAGE = 50;

  const $ = (id) => document.getElementById(id);
  const el = {
    signin: $("signin"), signinForm: $("signin-form"), signinNotice: $("signin-notice"),
    signinError: $("signin-error"), signinButton: $("signin-button"),
    username: $("username"), password: $("password"), directory: $("directory"),
    resuming: $("resuming"),
    chat: $("chat"), status: $("status"), me: $("me"), signout: $("signout"),
    chats: $("chats"), chatsEmpty: $("chats-empty"),
    randomButton: $("random-button"), groupToggle: $("group-toggle"), groupForm: $("group-form"),
    groupName: $("group-name"), groupMembers: $("group-members"),
    online: $("online"), onlineEmpty: $("online-empty"),
    contactsSection: $("contacts-section"), contacts: $("contacts"),
    title: $("conversation-title"), subtitle: $("conversation-subtitle"), leave: $("leave-button"),
    log: $("log"), older: $("older-button"), historyStart: $("history-start"),
    messages: $("messages"), composer: $("composer"), message: $("message"), send: $("send"),
    toast: $("toast"),
    moderationButton: $("moderation-button"), settingsButton: $("settings-button"),
    announcements: $("announcements"), announcementList: $("announcement-list"),
    joinToggle: $("join-toggle"), joinBox: $("join-box"), codeForm: $("code-form"),
    codeInput: $("invite-code-input"), directoryForm: $("directory-form"),
    directoryQuery: $("directory-query"), directoryResults: $("directory-results"),
    infoButton: $("info-button"), blockButton: $("block-button"), reportButton: $("report-button"),
    removedBanner: $("removed-banner"),
    panel: $("group-panel"), panelTitle: $("panel-title"), panelClose: $("panel-close"),
    panelTopic: $("panel-topic"), topicForm: $("topic-form"), topicInput: $("topic-input"),
    panelMembers: $("panel-members"), addForm: $("add-form"), addInput: $("add-input"),
    bansSection: $("bans-section"), panelBans: $("panel-bans"),
    inviteSection: $("invite-section"), inviteForm: $("invite-form"), inviteUses: $("invite-uses"),
    inviteHours: $("invite-hours"), inviteResult: $("invite-result"), inviteCode: $("invite-code"),
    inviteExpiry: $("invite-expiry"),
    settingsSection: $("settings-section"), groupSettingsForm: $("group-settings-form"),
    renameInput: $("rename-input"), joinSelect: $("join-select"),
    visibilitySelect: $("visibility-select"), whoAddSelect: $("who-add-select"),
    whoSendSelect: $("who-send-select"),
    askDialog: $("ask-dialog"), askForm: $("ask-form"), askTitle: $("ask-title"),
    askLabel: $("ask-label"), askInput: $("ask-input"), askCancel: $("ask-cancel"),
    settingsDialog: $("settings-dialog"), settingsForm: $("settings-form"),
    dmSelect: $("dm-select"), presenceSelect: $("presence-select"),
    randomCheck: $("random-check"), receiptsCheck: $("receipts-check"),
    blockedList: $("blocked-list"), settingsClose: $("settings-close"),
    moderationDialog: $("moderation-dialog"), announceForm: $("announce-form"),
    announceInput: $("announce-input"), reportsFilter: $("reports-filter"),
    reportsList: $("reports-list"), moderationClose: $("moderation-close"),
    userbanForm: $("userban-form"), userbanName: $("userban-name"), userbanHours: $("userban-hours"),
    userbanReason: $("userban-reason"), userunbanButton: $("userunban-button"),
  };

  const state = {
    ws: null,
    signedIn: false,
    me: null,
    session: loadJSON(SESSION_KEY),   // survives a reload of this tab
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
  };

  // -- storage ---------------------------------------------------------------

  function loadJSON(key) {
    try { return JSON.parse(sessionStorage.getItem(key) || "null"); } catch (e) { return null; }
  }

  function saveJSON(key, value) {
    try {
      if (value === null) sessionStorage.removeItem(key);
      else sessionStorage.setItem(key, JSON.stringify(value));
    } catch (e) { /* private mode: the session just won't survive a reload */ }
  }

  function saveView() {
    const chats = [...state.chats.values()]
      .filter((chat) => chat.kind !== "random-new" && !chat.left)
      .map((chat) => ({
        id: chat.id, kind: chat.kind, name: chat.name, partner: chat.partner, removed: chat.removed,
      }));
    saveJSON(VIEW_KEY, { current: state.current, chats });
  }

  // -- connection ------------------------------------------------------------

  function socketURL() {
    const url = new URL("ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    url.hash = "";
    return url.href;
  }

  function connect() {
    clearTimeout(state.retryTimer);
    return new Promise((resolve, reject) => {
      let ws;
      try { ws = new WebSocket(socketURL()); } catch (error) { reject(error); return; }
      state.ws = ws;
      let opened = false;
      ws.onopen = () => { opened = true; state.retryMs = RETRY_FIRST_MS; resolve(ws); };
      ws.onmessage = (event) => { if (ws === state.ws) receive(event.data); };
      ws.onclose = (event) => {
        if (!opened) reject(new Error("cannot reach the server"));
        if (ws !== state.ws) return;
        if (event.code === SIGNED_OUT) signedOutByServer();
        else if (event.code === BANNED) bannedByServer(event.reason);
        else connectionLost();
      };
    });
  }

  function isOpen() {
    return state.ws !== null && state.ws.readyState === WebSocket.OPEN;
  }

  function request(message) {
    /* Send a request; resolves with its reply, or {type: "ErrorResponse"} when the connection goes. */
    return new Promise((resolve) => {
      if (!isOpen()) {
        resolve({ type: "ErrorResponse", status: 0, detail: "not connected to the server" });
        return;
      }
      const msgId = state.nextMsgId++;
      state.pending.set(msgId, { resolve });
      state.ws.send(JSON.stringify({ ...message, msg_id: msgId }));
    });
  }

  function connectionLost() {
    const wasSignedIn = state.signedIn;
    state.ws = null;
    state.signedIn = false;
    clearInterval(state.onlineTimer);
    for (const { resolve } of state.pending.values()) {
      resolve({ type: "ErrorResponse", status: 0, detail: "the connection to the server was lost" });
    }
    state.pending.clear();
    for (const chat of state.chats.values()) {
      if (chat.kind === "random" && !chat.left) endRandom(chat, "The random chat ended when the connection dropped.");
    }
    updateComposer();
    if (state.session) {
      setStatus("offline", `Connection lost, reconnecting in ${Math.round(state.retryMs / 1000)} s…`);
      scheduleReconnect();
    } else if (wasSignedIn) {
      showSignIn("The connection was lost. Sign in again to carry on.");
    }
  }

  function signedOutByServer() {
    /* Close code 4001: the session key was revoked; no reconnecting, sign in again. */
    forgetSession();
    connectionLost();
    showSignIn("You were signed out: your password was changed, your account was disabled, " +
      "or you signed in on too many devices. Please sign in again.");
  }

  function bannedByServer(reason) {
    /* Close code 4003: a server admin banned the account; sign-in says until when and why. */
    forgetSession();
    connectionLost();
    showSignIn(`You were signed out: your account has been banned from this server` +
      `${reason ? ` (${reason})` : ""}. Signing in again tells you until when and why.`);
  }

  function scheduleReconnect() {
    clearTimeout(state.retryTimer);
    const delay = state.retryMs * (0.8 + Math.random() * 0.4);
    state.retryMs = Math.min(state.retryMs * 2, RETRY_MAX_MS);
    state.retryTimer = setTimeout(resume, delay);
  }

  async function resume() {
    if (!state.session) return;
    try {
      await connect();
    } catch (error) {
      setStatus("offline", `Server unreachable, trying again in ${Math.round(state.retryMs / 1000)} s…`);
      scheduleReconnect();
      return;
    }
    setStatus("connecting", "Resuming your session…");
    const reply = await request({ type: "ResumeRequest", session_key: state.session.key });
    if (reply.type === "ResumeResponse") {
      signedIn(reply.username || state.session.username, state.session.key, reply.display_name,
        reply.admin);
      return;
    }
    if (reply.status === 0) return;  // dropped again; connectionLost retries
    // The key expired or was revoked, or this server has no sessions.
    forgetSession();
    closeSocket();
    showSignIn(reply.type === "ErrorResponse" && reply.detail
      ? `Your session has ended (${reply.detail}). Please sign in again.`
      : "Your session has ended. Please sign in again.");
  }

  function closeSocket() {
    const ws = state.ws;
    state.ws = null;
    if (ws) ws.close();
  }

  function forgetSession() {
    state.session = null;
    saveJSON(SESSION_KEY, null);
  }

  // -- sign in and out ---------------------------------------------------------

  async function signIn(event) {
    event.preventDefault();
    const username = el.username.value.trim();
    const password = el.password.value;
    if (!username || !password) {
      showSignInError("Enter your username and password.");
      return;
    }
    showSignInError("");
    el.signinButton.disabled = true;
    el.signinButton.textContent = "Signing in…";
    try {
      if (!isOpen()) await connect();
      const reply = await request({
        type: "RegisterRequest", username, password, auth: el.directory.checked,
      });
      if (reply.type === "RegisterResponse") {
        el.password.value = "";
        signedIn(reply.username, reply.session_key || null, reply.display_name, reply.admin);
      } else {
        showSignInError(reply.detail || "The server refused the sign-in.");
      }
    } catch (error) {
      showSignInError("Cannot reach the Chateau server. Check your connection and try again.");
    } finally {
      el.signinButton.disabled = false;
      el.signinButton.textContent = "Sign in";
    }
  }

  function signedIn(username, key, displayName, admin) {
    if (state.me !== null && state.me !== username) {
      state.chats.clear();   // someone else on this tab: their chats are not ours
      state.current = null;
      state.blocked.clear();
      state.announcements = [];
    }
    state.me = username;
    state.signedIn = true;
    state.admin = Boolean(admin);
    el.moderationButton.hidden = !state.admin;
    if (key) {
      state.session = { key, username };
      saveJSON(SESSION_KEY, state.session);
    }
    el.me.textContent = displayName ? `${displayName} (${username})` : username;
    restoreView();
    showChat();
    setStatus("online", "Connected");
    refreshOnline();
    clearInterval(state.onlineTimer);
    state.onlineTimer = setInterval(refreshOnline, ONLINE_REFRESH_MS);
    refreshContacts();
    refreshBlocked(false);
    renderAnnouncements();
    for (const chat of state.chats.values()) {
      chat.historyLoaded = Boolean(chat.removed);  // a removed group's history is closed to us
      chat.info = null;
    }
    if (state.current) openChat(state.current);
    renderChats();
    updateComposer();
  }

  async function signOut() {
    if (state.session && isOpen()) await request({ type: "LogoutRequest" });
    forgetSession();
    saveJSON(VIEW_KEY, null);
    state.signedIn = false;
    state.me = null;
    state.chats.clear();
    state.current = null;
    state.admin = false;
    state.blocked.clear();
    state.announcements = [];
    state.panelOpen = false;
    renderAnnouncements();
    closeDialogs();
    clearInterval(state.onlineTimer);
    closeSocket();
    showSignIn("You have signed out.");
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

  // -- screens ---------------------------------------------------------------

  function showSignIn(notice) {
    closeDialogs();
    el.chat.hidden = true;
    el.resuming.hidden = true;
    el.signin.hidden = false;
    el.signinNotice.hidden = !notice;
    el.signinNotice.textContent = notice || "";
    (el.username.value ? el.password : el.username).focus();
  }

  function showSignInError(text) {
    el.signinError.hidden = !text;
    el.signinError.textContent = text;
  }

  function showChat() {
    el.signin.hidden = true;
    el.resuming.hidden = true;
    el.chat.hidden = false;
  }

  function setStatus(kind, text) {
    el.status.dataset.state = kind;
    el.status.textContent = text;
  }

  let toastTimer = null;
  function showError(text) { say(text, "error"); }
  function showNotice(text) { say(text, "info"); }

  function say(text, kind) {
    /* Errors and notices: inside an open dialog (which covers the page), else the toast. */
    const dialog = document.querySelector("dialog[open]");
    const spot = dialog && dialog.querySelector(".dialog-message");
    if (spot) {
      spot.textContent = text;
      spot.className = `dialog-message ${kind}`;
      spot.setAttribute("role", kind === "error" ? "alert" : "status");
      spot.hidden = false;
      return;
    }
    el.toast.textContent = text;
    el.toast.dataset.kind = kind;
    el.toast.setAttribute("role", kind === "error" ? "alert" : "status");
    el.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.toast.hidden = true; }, 8000);
  }

  function failed(what, reply) {
    showError(`${what}: ${reply.detail || "the server refused it"}`);
  }

  function unsupported(reply) {
    /* This server does not know the request (an older server): the feature is just absent. */
    return reply.status === 400 && /^unknown request type/.test(reply.detail || "");
  }

  // -- chats -----------------------------------------------------------------

  function chatId(kind, name) {
    return kind === "direct" ? `u:${name}` : kind === "random-new" ? "random:new" : `c:${name}`;
  }

  function ensureChat(kind, name) {
    const id = chatId(kind, name);
    let chat = state.chats.get(id);
    if (!chat) {
      chat = {
        id, kind, name, partner: null, members: null, info: null, removed: null,
        messages: [], unread: 0, left: false, ended: false,
        historyLoaded: false, more: false, loadingOlder: false, lastActivity: Date.now(),
      };
      state.chats.set(id, chat);
      saveView();
    }
    return chat;
  }

  function chatTitle(chat) {
    if (chat.kind === "group") return `# ${chat.name}`;
    if (chat.kind === "random") return chat.partner ? `Random: ${chat.partner}` : "Random chat";
    if (chat.kind === "random-new") return "New random chat";
    return chat.name;
  }

  function openChat(id) {
    const chat = state.chats.get(id);
    if (!chat) return;
    state.current = id;
    chat.unread = 0;
    saveView();
    renderChats();
    renderConversation(true);
    updateComposer();
    renderPanel();
    if (!chat.historyLoaded && state.signedIn) loadHistory(chat, false);
    if (chat.kind === "group" && !chat.info && !chat.removed && state.signedIn) loadInfo(chat);
    el.message.focus();
  }

  async function loadInfo(chat) {
    /* The group's topic, settings and members with roles (GroupInfoRequest). */
    const name = chat.name;
    const reply = await request({ type: "GroupInfoRequest", chatname: name });
    if (reply.type === "GroupInfoResponse") {
      if (chat.name !== name || chat.removed) return;  // renamed or removed meanwhile
      chat.info = reply;
      chat.infoError = null;
      chat.members = (reply.members || []).map((member) => member.username);
      fillGroupSettings(chat);
    } else if (unsupported(reply)) {
      const members = await request({ type: "GroupMembersRequest", chatname: name });
      if (members.type !== "GroupMembersResponse") return;  // older servers: a generic subtitle
      chat.members = (members.members || []).map((member) => member.username);
    } else if (reply.status !== 0 && !chat.removed && chat.name === name) {
      chat.infoError = reply.detail || "the server refused it";
      failed(`No group info for # ${name}`, reply);
      if (chat.id === state.current) renderPanel();
      return;
    }
    if (chat.id === state.current) {
      renderConversation(false);
      renderPanel();
    }
  }

  function addMessage(chat, message, { notify = true } = {}) {
    if (message.id != null && chat.messages.some((m) => m.id === message.id)) return;
    chat.messages.push(message);
    chat.messages.sort(compareMessages);
    chat.lastActivity = Date.now();
    if (chat.id !== state.current && notify && !message.own) chat.unread += 1;
    renderChats();
    if (chat.id === state.current) renderConversation(message.own || nearBottom());
    updateTitle();
  }

  function orderOf(message) {
    // Server ids give the order; notes stay where they were added; unsent
    // messages stay at the end in the order they were typed.
    if (message.system) return message.order;  // notes of this page, events it made itself
    return message.id != null ? message.id : Number.MAX_SAFE_INTEGER;
  }

  function compareMessages(a, b) {
    const ka = orderOf(a);
    const kb = orderOf(b);
    return ka !== kb ? ka - kb : a.seq - b.seq;
  }

  function systemNote(chat, text) {
    const ids = chat.messages.filter((m) => m.id != null).map((m) => m.id);
    const order = (ids.length ? Math.max(...ids) : 0) + 0.5;
    addMessage(chat, { id: null, seq: ++state.localSeq, system: true, order, content: text },
      { notify: false });
  }

  // -- group events ------------------------------------------------------------

  const EVENT_WORDS = {
    added: (e) => `${e.by} added ${e.user}`,
    removed: (e) => `${e.by} removed ${e.user}`,
    banned: (e) => `${e.by} banned ${e.user}`,
    unbanned: (e) => `${e.by} unbanned ${e.user}`,
    left: (e) => `${e.user} left`,
    joined: (e) => `${e.user} joined`,
    role: (e) => `${e.by} made ${e.user} ${e.role}`,
    muted: (e) => `${e.by} muted ${e.user} until ${formatTime(e.until) || e.until}`,
    unmuted: (e) => `${e.by} unmuted ${e.user}`,
    renamed: (e) => `${e.by} renamed the group from ${e.old_name} to ${e.new_name}`,
    topic: (e) => (e.topic ? `${e.by} set the topic: ${e.topic}` : `${e.by} cleared the topic`),
    settings: (e) => `${e.by} changed the group's settings` + (e.settings && typeof e.settings === "object"
      ? ` (${Object.entries(e.settings).map(([key, value]) => `${key}: ${value === null ? "default" : value}`).join(", ")})` : ""),
  };

  function eventWords(event, fallback) {
    /* A system event in words ("bob added carol"), as the server words it in history. */
    const words = EVENT_WORDS[event.event];
    const text = words ? words(event) : (fallback || `${event.by}: ${event.event} ${event.user}`);
    return event.reason ? `${text} (${event.reason})` : text;
  }

  function eventKey(event) {
    return `${event.event}|${event.user}|${event.by}`;
  }

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
    saveView();
    renderChats();
    if (chat.id === state.current) {
      renderConversation(false);
      renderPanel();
      updateComposer();
      if (state.signedIn && !chat.removed) loadHistory(chat, false);
    }
    return chat;
  }

  function removedText(removed) {
    const how = removed.banned ? "banned you from" : "removed you from";
    return `${removed.by} ${how} this group${removed.reason ? `: ${removed.reason}` : ""}. ` +
      "It is read-only now.";
  }

  function endRandom(chat, text) {
    chat.ended = true;
    systemNote(chat, text);
    updateComposer();
  }

  async function loadHistory(chat, older) {
    if (!state.historySupported || chat.kind === "random-new" || chat.loadingOlder) return;
    const message = { type: "HistoryRequest", limit: HISTORY_PAGE };
    message[chat.kind === "direct" ? "user" : "chatname"] = chat.name;
    if (older) {
      const ids = chat.messages.filter((m) => m.id != null).map((m) => m.id);
      if (ids.length) message.before = Math.min(...ids);
    }
    chat.loadingOlder = true;
    const log = el.log;
    const fromBottom = log.scrollHeight - log.scrollTop;
    const askedName = chat.name;
    const reply = await request(message);
    chat.loadingOlder = false;
    if (chat.name !== askedName) {  // renamed meanwhile: ask again under the new name
      if (!chat.removed) loadHistory(chat, older);
      return;
    }
    if (reply.type !== "HistoryResponse") {
      if (reply.status === 400) state.historySupported = false;  // a server without history
      else if (reply.status !== 0 && reply.status !== 404) showError(`No history for ${chatTitle(chat)}: ${reply.detail}`);
      chat.historyLoaded = true;
      if (chat.id === state.current) renderConversation(false);
      return;
    }
    chat.historyLoaded = true;
    chat.more = Boolean(reply.more);
    for (const item of reply.messages || []) {
      if (chat.messages.some((m) => m.id === item.id)) continue;
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
        edited: Boolean(item.edited), deleted: Boolean(item.deleted),
      });
    }
    chat.messages.sort(compareMessages);
    if (chat.id === state.current) {
      renderConversation(!older);
      if (older) log.scrollTop = log.scrollHeight - fromBottom;  // keep the reader's place
    }
  }

  // -- sending ---------------------------------------------------------------

  async function sendMessage(event) {
    event.preventDefault();
    const content = el.message.value;
    const chat = state.chats.get(state.current);
    if (!content.trim() || !chat || !state.signedIn) return;
    el.message.value = "";
    autosize();
    const local = {
      id: null, seq: ++state.localSeq, sender: state.me, content, own: true,
      timestamp: new Date().toISOString(), status: "sending",
    };
    addMessage(chat, local);
    if (chat.kind === "random-new") {
      const reply = await request({ type: "RandomMessageRequest", content });
      if (reply.type !== "RandomMessageResponse") {
        failMessage(chat, local, reply);
        return;
      }
      state.chats.delete(chat.id);
      const random = ensureChat("random", reply.chatname);
      random.partner = reply.client;
      random.historyLoaded = true;
      Object.assign(local, { id: reply.id, timestamp: reply.timestamp, status: "sent" });
      systemNote(random, `You are chatting with ${reply.client}, picked at random.`);
      addMessage(random, local);
      saveView();
      openChat(random.id);
      return;
    }
    const reply = await request({ type: "GroupMessageRequest", recipient: chat.name, content });
    if (reply.type !== "MessageSendResponse") {
      failMessage(chat, local, reply);
      return;
    }
    Object.assign(local, { id: reply.id, timestamp: reply.timestamp, status: "sent" });
    chat.messages.sort(compareMessages);
    if (chat.id === state.current) renderConversation(true);
  }

  function failMessage(chat, local, reply) {
    local.status = "failed";
    local.error = reply.detail || "the server refused it";
    if (chat.id === state.current) renderConversation(false);
    showError(`Message not sent: ${local.error}`);
  }

  async function createGroup(event) {
    event.preventDefault();
    const name = el.groupName.value.trim();
    const members = el.groupMembers.value.split(/[\s,]+/).filter(Boolean);
    if (!name || !members.length) {
      showError("A group needs a name and at least one member.");
      return;
    }
    const reply = await request({ type: "GroupMessageInitRequest", recipients: members, chatname: name });
    if (reply.type !== "GroupMessageInitResponse") {
      showError(`Group not created: ${reply.detail}`);
      return;
    }
    const chat = ensureChat("group", reply.chatname);
    chat.members = [state.me, ...members];
    chat.historyLoaded = true;
    systemNote(chat, `You started this group with ${members.join(", ")}.`);
    el.groupName.value = "";
    el.groupMembers.value = "";
    toggleGroupForm(false);
    openChat(chat.id);
  }

  async function leaveChat() {
    const chat = state.chats.get(state.current);
    if (!chat) return;
    if (chat.kind === "random-new" || chat.ended || chat.removed) {
      state.chats.delete(chat.id);
      state.current = null;
      saveView();
      renderChats();
      renderConversation(false);
      updateComposer();
      return;
    }
    const reply = await request({ type: "GroupLeaveRequest", chatname: chat.name });
    if (reply.type !== "GroupLeaveResponse") {
      showError(`Could not leave ${chatTitle(chat)}: ${reply.detail}`);
      return;
    }
    chat.left = true;
    state.chats.delete(chat.id);
    state.current = null;
    saveView();
    renderChats();
    renderConversation(false);
    updateComposer();
  }

  function startRandom() {
    const chat = ensureChat("random-new", "");
    if (!chat.messages.length) {
      systemNote(chat, "Write a first message: it goes to someone online, picked at random.");
    }
    openChat(chat.id);
  }

  function toggleGroupForm(open) {
    const show = open === undefined ? el.groupForm.hidden : open;
    el.groupForm.hidden = !show;
    el.groupToggle.setAttribute("aria-expanded", String(show));
    if (show) el.groupName.focus();
  }

  // -- what the server pushes --------------------------------------------------

  function receive(data) {
    let frame;
    try { frame = JSON.parse(data); } catch (e) { return; }
    if (!frame || typeof frame !== "object") return;
    if (frame.msg_id != null && state.pending.has(frame.msg_id)) {
      const { resolve } = state.pending.get(frame.msg_id);
      state.pending.delete(frame.msg_id);
      resolve(frame);
      return;
    }
    const handler = PUSHES[frame.type];
    if (handler) handler(frame);
    else if (frame.type === "ErrorResponse") showError(frame.detail || "The server reported an error.");
  }

  const PUSHES = {
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
    GroupMessageInitResponse(frame) {
      const chat = ensureChat("group", frame.chatname);
      chat.members = frame.members || null;
      if (chat.removed) {  // back in a group we had been removed from
        chat.removed = null;
        chat.historyLoaded = false;
        saveView();
      }
      chat.info = null;
      if (chat.id === state.current) openChat(chat.id);
      systemNote(chat, `${frame.creator} added you to this group (${(frame.members || []).join(", ")}).`);
      chat.unread += 1;
      renderChats();
    },
    GroupMemberLeftRecv(frame) {
      // Servers that store events also push GroupEventRecv "left": one line for both.
      const chat = state.chats.get(chatId("group", frame.chatname));
      if (!chat) return;
      const event = { event: "left", user: frame.user, by: frame.user };
      const key = eventKey(event);
      if (chat.messages.slice(-10).some((m) => m.event && eventKey(m.event) === key)) return;
      addEvent(chat, event);
    },
    GroupEventRecv(frame) {
      let chat = null;
      if (frame.event === "renamed" && frame.old_name != null) {
        const old = state.chats.get(chatId("group", frame.old_name));
        if (old) chat = renameChat(old, frame.chatname);
      }
      if (!chat) chat = ensureChat("group", frame.chatname);
      const { type, status, chatname, id, timestamp, offline, msg_id: _, ...event } = frame;
      addEvent(chat, event, { id, timestamp, offline: Boolean(offline) });
      chat.info = null;  // roles, members or settings changed: ask again when shown
      if (chat.id === state.current) loadInfo(chat);
    },
    GroupRemovedRecv(frame) {
      const chat = ensureChat("group", frame.chatname);
      chat.removed = { by: frame.by, reason: frame.reason || "", banned: Boolean(frame.banned) };
      chat.info = null;
      chat.historyLoaded = true;
      systemNote(chat, removedText(chat.removed));
      saveView();
      if (chat.id === state.current) {
        renderConversation(false);
        renderPanel();
        updateComposer();
      } else {
        chat.unread += 1;
        renderChats();
      }
    },
    ModerationWarningRecv(frame) {
      state.announcements.push({ ...frame, warning: true, timestamp: new Date().toISOString() });
      renderAnnouncements();
    },
    AnnouncementRecv(frame) {
      if (frame.id != null && state.announcements.some((a) => a.id === frame.id)) return;
      state.announcements.push(frame);
      renderAnnouncements();
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
    PresenceRecv(frame) {
      const others = new Set(state.online);
      if (frame.online && frame.username !== state.me) others.add(frame.username);
      else others.delete(frame.username);
      state.online = [...others].sort();
      renderOnline();
      refreshContacts();
    },
    MessageEdited(frame) { updateMessage(frame, { content: frame.content, edited: true }); },
    MessageDeleted(frame) { updateMessage(frame, { deleted: true }); },
    ContactRequestRecv() { refreshContacts(); },
    ContactAcceptRecv() { refreshContacts(); },
    ContactRemoveRecv() { refreshContacts(); },
    HeartbeatRequest(frame) {
      if (isOpen()) state.ws.send(JSON.stringify({ type: "HeartbeatResponse", payload: frame.payload }));
    },
  };

  function incoming(frame) {
    return {
      id: frame.id, seq: ++state.localSeq, sender: frame.sender, content: frame.content,
      timestamp: frame.timestamp, own: frame.sender === state.me, offline: Boolean(frame.offline),
    };
  }

  function updateMessage(frame, changes) {
    for (const chat of state.chats.values()) {
      const message = chat.messages.find((m) => m.id === frame.id);
      if (message) {
        Object.assign(message, changes);
        if (chat.id === state.current) renderConversation(false);
        return;
      }
    }
  }

  async function refreshOnline() {
    if (!state.signedIn) return;
    const reply = await request({ type: "ClientListRequest" });
    if (reply.type === "ClientListResponse") {
      state.online = [...reply.clients].sort();
      renderOnline();
    }
  }

  async function refreshContacts() {
    if (!state.signedIn) return;
    const reply = await request({ type: "ContactListRequest" });
    if (reply.type !== "ContactListResponse") return;  // a server without contacts
    el.contactsSection.hidden = false;
    const items = (reply.contacts || []).map((contact) => {
      const li = document.createElement("li");
      li.append(personButton(contact.username, contact.online));
      return li;
    });
    for (const item of reply.pending || []) {
      const li = document.createElement("li");
      li.className = "pending";
      const text = document.createElement("span");
      text.textContent = item.direction === "incoming"
        ? `${item.username} asks to be a contact` : `${item.username} (request sent)`;
      li.append(text);
      if (item.direction === "incoming") {
        for (const [label, kind] of [["Accept", "ContactAccept"], ["Deny", "ContactDeny"]]) {
          const button = document.createElement("button");
          button.type = "button";
          button.className = "small";
          button.textContent = label;
          button.setAttribute("aria-label", `${label} ${item.username}`);
          button.addEventListener("click", async () => {
            const answer = await request({ type: kind, username: item.username });
            if (answer.type === "ErrorResponse") showError(answer.detail);
            refreshContacts();
          });
          li.append(button);
        }
      }
      items.push(li);
    }
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "No contacts yet.";
      items.push(li);
    }
    el.contacts.replaceChildren(...items);
  }

  // -- drawing ---------------------------------------------------------------

  function personButton(username, online) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "person";
    button.title = `Message ${username}`;
    const dot = document.createElement("span");
    dot.className = online ? "dot on" : "dot";
    dot.setAttribute("aria-hidden", "true");
    const name = document.createElement("span");
    name.textContent = username;
    button.append(dot, name);
    button.addEventListener("click", () => openChat(ensureChat("direct", username).id));
    return button;
  }

  function renderOnline() {
    el.online.replaceChildren(...state.online.map((username) => {
      const li = document.createElement("li");
      li.append(personButton(username, true));
      return li;
    }));
    el.onlineEmpty.hidden = state.online.length > 0;
  }

  function renderChats() {
    const chats = [...state.chats.values()].sort((a, b) => b.lastActivity - a.lastActivity);
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
        : chat.kind === "direct" ? chat.name.charAt(0).toUpperCase() : "?";
      const name = document.createElement("span");
      name.className = "chat-name";
      name.textContent = chat.kind === "group" ? chat.name : chatTitle(chat);  // the avatar shows the #
      button.append(avatar, name);
      if (chat.unread) {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = String(chat.unread);
        badge.setAttribute("aria-label", `${chat.unread} unread`);
        button.append(badge);
      }
      button.addEventListener("click", () => openChat(chat.id));
      li.append(button);
      return li;
    }));
    el.chatsEmpty.hidden = chats.length > 0;
    updateTitle();
  }

  function updateTitle() {
    const unread = [...state.chats.values()].reduce((sum, chat) => sum + chat.unread, 0);
    document.title = unread ? `(${unread}) Chateau` : "Chateau";
  }

  function nearBottom() {
    const log = el.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  }

  function formatTime(timestamp) {
    const moment = new Date(timestamp);
    if (Number.isNaN(moment.getTime())) return "";
    const time = moment.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    if (moment.toDateString() === new Date().toDateString()) return time;
    return `${moment.toLocaleDateString([], { day: "numeric", month: "short" })} ${time}`;
  }

  function renderConversation(scrollToEnd) {
    const chat = state.chats.get(state.current);
    el.leave.hidden = !chat || chat.kind === "direct";
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
      const time = document.createElement("time");
      time.dateTime = message.timestamp || "";
      time.textContent = formatTime(message.timestamp);
      meta.append(sender, time);
      if (!message.own && message.id != null && !message.deleted) {
        const report = document.createElement("button");
        report.type = "button";
        report.className = "link";
        report.textContent = "Report";
        report.setAttribute("aria-label", `Report message from ${message.sender}`);
        report.addEventListener("click", () => reportMessage(chat, message));
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

  function updateComposer() {
    const chat = state.chats.get(state.current);
    const usable = Boolean(state.signedIn && chat && !chat.ended && !chat.removed);
    el.message.disabled = !usable;
    el.send.disabled = !usable;
    el.message.placeholder = !chat ? "Pick a chat first"
      : chat.ended ? "This random chat has ended"
      : chat.removed ? "You are no longer in this group"
      : !state.signedIn ? "Reconnecting…"
      : `Message ${chatTitle(chat)}`;
  }

  function chatPerson(chat) {
    /* The person a conversation is with, for Block and Report. */
    if (chat.kind === "direct") return chat.name;
    if (chat.kind === "random" && chat.partner) return chat.partner;
    return null;
  }

  function autosize() {
    el.message.style.height = "auto";
    el.message.style.height = `${Math.min(el.message.scrollHeight, 160)}px`;
  }

  // -- asking for a reason, a number of minutes ---------------------------------

  function ask(title, label, { value = "", type = "text", required = false } = {}) {
    /* A small dialog with one field; resolves with its text, or null when cancelled. */
    return new Promise((resolve) => {
      el.askTitle.textContent = title;
      el.askLabel.textContent = label;
      el.askInput.type = type;
      el.askInput.value = value;
      el.askInput.required = required;
      el.askDialog.querySelector(".dialog-message").hidden = true;
      const finish = (answer) => {
        el.askForm.onsubmit = null;
        el.askCancel.onclick = null;
        el.askDialog.onclose = null;
        if (el.askDialog.open) el.askDialog.close();
        resolve(answer);
      };
      el.askForm.onsubmit = (event) => {
        event.preventDefault();
        const answer = el.askInput.value.trim();
        if (required && !answer) {
          showError(`${label}: please fill it in.`);
          return;
        }
        finish(answer);
      };
      el.askCancel.onclick = () => finish(null);
      el.askDialog.onclose = () => finish(null);  // Escape
      el.askDialog.showModal();
      el.askInput.focus();
    });
  }

  function closeDialogs() {
    for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  }

  function openDialog(dialog) {
    const message = dialog.querySelector(".dialog-message");
    if (message) message.hidden = true;
    if (!dialog.open) dialog.showModal();
  }

  // -- the group panel -----------------------------------------------------------

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

  function smallButton(label, ariaLabel, onClick, extra = "") {
    const button = document.createElement("button");
    button.type = "button";
    button.className = `small ${extra}`.trim();
    button.textContent = label;
    if (ariaLabel) button.setAttribute("aria-label", ariaLabel);
    button.addEventListener("click", onClick);
    return button;
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
      for (const part of [el.topicForm, el.addForm, el.bansSection, el.inviteSection, el.settingsSection]) {
        part.hidden = true;
      }
      return;
    }
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
    name.textContent = member.username === state.me ? `${member.username} (you)` : member.username;
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
          () => toggleBlock(member.username)),
        smallButton("Report", `Report ${member.username}`,
          () => reportPerson(member.username, chat.name)),
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
    const reply = await request({ type: "GroupRoleRequest", chatname: chat.name, user, role });
    if (reply.type !== "GroupRoleResponse") {
      failed(`Role of ${user} not changed`, reply);
      loadInfo(chat);  // put the select back to what the server has
      return;
    }
    addEvent(chat, { event: "role", user: reply.user, by: state.me, role: reply.role });
    loadInfo(chat);
  }

  async function removeMember(chat, user, ban) {
    const reason = await ask(ban ? `Ban ${user} from # ${chat.name}` : `Remove ${user} from # ${chat.name}`,
      "Reason (optional)");
    if (reason === null) return;
    const message = { type: "GroupRemoveRequest", chatname: chat.name, user, ban };
    if (reason) message.reason = reason;
    const reply = await request(message);
    if (reply.type !== "GroupRemoveResponse") {
      failed(ban ? `${user} not banned` : `${user} not removed`, reply);
      return;
    }
    const event = { event: reply.banned ? "banned" : "removed", user: reply.user || user, by: state.me };
    if (reason) event.reason = reason;
    addEvent(chat, event);
    loadInfo(chat);
  }

  async function unban(chat, user) {
    const reply = await request({ type: "GroupUnbanRequest", chatname: chat.name, user });
    if (reply.type !== "GroupUnbanResponse") {
      failed(`${user} not unbanned`, reply);
      return;
    }
    addEvent(chat, { event: "unbanned", user: reply.user || user, by: state.me });
    loadInfo(chat);
  }

  async function askMute(chat, user) {
    const answer = await ask(`Mute ${user} in # ${chat.name}`, "Minutes", { value: "60", type: "number", required: true });
    if (answer === null) return;
    const minutes = Number(answer);
    if (!Number.isInteger(minutes) || minutes < 0) {
      showError("Minutes must be a whole number, 0 or more.");
      return;
    }
    mute(chat, user, minutes);
  }

  async function mute(chat, user, minutes) {
    const reply = await request({ type: "GroupMuteRequest", chatname: chat.name, user, minutes });
    if (reply.type !== "GroupMuteResponse") {
      failed(minutes ? `${user} not muted` : `${user} still muted`, reply);
      return;
    }
    addEvent(chat, reply.muted_until
      ? { event: "muted", user: reply.user || user, by: state.me, until: reply.muted_until }
      : { event: "unmuted", user: reply.user || user, by: state.me });
    loadInfo(chat);
  }

  async function addMembers(event) {
    event.preventDefault();
    const chat = currentGroup();
    const users = el.addInput.value.split(/[\s,]+/).filter(Boolean);
    if (!chat || !users.length) return;
    const reply = await request({ type: "GroupAddRequest", chatname: chat.name, users });
    if (reply.type !== "GroupAddResponse") {
      failed("Nobody added", reply);
      return;
    }
    el.addInput.value = "";
    for (const user of reply.added || []) addEvent(chat, { event: "added", user, by: state.me });
    if ((reply.already || []).length) showNotice(`Already members: ${reply.already.join(", ")}`);
    loadInfo(chat);
  }

  async function setTopic(event) {
    event.preventDefault();
    const chat = currentGroup();
    if (!chat) return;
    const topic = el.topicInput.value.trim();
    const reply = await request({ type: "GroupUpdateRequest", chatname: chat.name, topic });
    if (reply.type !== "GroupUpdateResponse") {
      failed("Topic not changed", reply);
      return;
    }
    el.topicInput.value = "";
    if (!chat.info || chat.info.topic !== reply.topic) {  // the same topic again tells nobody
      addEvent(chat, { event: "topic", user: state.me, by: state.me, topic: reply.topic });
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
    Object.assign(message, changed);
    if (Object.keys(message).length === 2) {
      showNotice("Nothing to change.");
      return;
    }
    const oldName = chat.name;
    const reply = await request(message);
    if (reply.type !== "GroupUpdateResponse") {
      failed("Group settings not changed", reply);
      return;
    }
    delete el.groupSettingsForm.dataset.dirty;
    if (reply.chatname && reply.chatname !== oldName) {
      chat = renameChat(chat, reply.chatname);
      addEvent(chat, { event: "renamed", user: state.me, by: state.me, old_name: oldName, new_name: reply.chatname });
    }
    if (Object.keys(changed).length) {
      addEvent(chat, { event: "settings", user: state.me, by: state.me, settings: changed });
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
    const reply = await request(message);
    if (reply.type !== "GroupInviteResponse") {
      failed("No invite code", reply);
      return;
    }
    el.inviteCode.textContent = reply.code;
    el.inviteExpiry.textContent = `valid until ${formatTime(reply.expires) || reply.expires}` +
      (reply.max_uses ? `, ${reply.max_uses} use${reply.max_uses === 1 ? "" : "s"}` : ", any number of uses");
    el.inviteResult.hidden = false;
  }

  // -- joining: invite codes and the public directory -----------------------------------

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
    const reply = await request({ type: "GroupJoinRequest", ...message });
    if (reply.type !== "GroupJoinResponse") {
      failed("Could not join", reply);
      return;
    }
    const chat = ensureChat("group", reply.chatname);
    chat.removed = null;
    chat.info = null;
    chat.historyLoaded = false;
    if (reply.already) showNotice(`You are already in # ${reply.chatname}.`);
    else systemNote(chat, `You joined # ${reply.chatname}.`);
    saveView();
    openChat(chat.id);
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
    const reply = await request(message);
    if (reply.type !== "GroupDirectoryResponse") {
      failed("No group directory", reply);
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
        li.append(smallButton("Open", `Open ${group.chatname}`, () => openChat(chatId("group", group.chatname))));
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

  // -- blocking and reporting -------------------------------------------------------------

  async function refreshBlocked(show) {
    const reply = await request({ type: "BlockListRequest" });
    if (reply.type !== "BlockListResponse") {
      if (show || !(unsupported(reply) || reply.status === 0)) failed("No list of blocked people", reply);
      return;
    }
    state.blocked = new Map((reply.blocked || []).map((entry) => [entry.username, entry.since]));
    renderBlocked();
    renderConversation(false);
    renderPanel();
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
    const reply = await request({ type: blocking ? "BlockRequest" : "UnblockRequest", username });
    if (reply.type !== (blocking ? "BlockResponse" : "UnblockResponse")) {
      failed(blocking ? `${username} not blocked` : `${username} still blocked`, reply);
      return;
    }
    if (blocking) state.blocked.set(username, new Date().toISOString());
    else state.blocked.delete(username);
    rehide(username, blocking);
    showNotice(blocking
      ? `You blocked ${username}: you will not see anything from them.`
      : `You unblocked ${username}.`);
    renderBlocked();
    renderConversation(false);
    renderPanel();
    refreshContacts();
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
        if (chat.id === state.current) loadHistory(chat, false);
      }
    }
  }

  async function report(target, what) {
    const reason = await ask(`Report ${what}`, "Reason", { required: true });
    if (reason === null) return;
    const reply = await request({ type: "ReportRequest", reason, ...target });
    if (reply.type !== "ReportResponse") {
      failed("Report not sent", reply);
      return;
    }
    showNotice(`Report sent (number ${reply.report_id}); the server's moderators will look at it.`);
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
    openDialog(el.settingsDialog);
    renderBlocked();
    const reply = await request({ type: "SettingsRequest" });
    if (reply.type !== "SettingsResponse") failed("No settings", reply);
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
    const reply = await request({
      type: "SettingsRequest", direct_messages: el.dmSelect.value, presence: el.presenceSelect.value,
      random_chat: el.randomCheck.checked, read_receipts: el.receiptsCheck.checked,
    });
    if (reply.type !== "SettingsResponse") {
      failed("Settings not saved", reply);
      return;
    }
    fillSettings(reply);
    showNotice("Settings saved.");
  }

  // -- announcements and moderation (server admins) ---------------------------------------

  function renderAnnouncements() {
    el.announcements.hidden = state.announcements.length === 0;
    el.announcementList.replaceChildren(...state.announcements.map((announcement) => {
      const li = document.createElement("li");
      li.className = announcement.warning ? "announcement warning" : "announcement";
      const head = document.createElement("strong");
      head.textContent = announcement.warning
        ? `A warning from the moderators (report ${announcement.report_id})`
        : `Announcement from ${announcement.by}`;
      const when = document.createElement("span");
      when.className = "when";
      when.textContent = `${formatTime(announcement.timestamp)}${announcement.offline ? " · while you were away" : ""}`;
      const body = document.createElement("span");
      body.className = "announcement-text";
      body.textContent = announcement.warning
        ? (announcement.note || "Please keep to the rules.") : announcement.content;
      const dismiss = smallButton("Dismiss", announcement.warning ? "Dismiss warning" : "Dismiss announcement", () => {
        state.announcements = state.announcements.filter((a) => a !== announcement);
        renderAnnouncements();
      });
      li.append(head, when, body, dismiss);
      return li;
    }));
  }

  async function openModeration() {
    openDialog(el.moderationDialog);
    loadReports(false);
  }

  async function announce(event) {
    event.preventDefault();
    const content = el.announceInput.value.trim();
    if (!content) return;
    const reply = await request({ type: "AnnounceRequest", content });
    if (reply.type !== "AnnounceResponse") {
      failed("Announcement not sent", reply);
      return;
    }
    el.announceInput.value = "";
    showNotice("Announcement sent to everyone.");
  }

  async function banUser(event) {
    event.preventDefault();
    const username = el.userbanName.value.trim();
    if (!username) {
      showError("Name the user to ban.");
      return;
    }
    const message = { type: "UserBanRequest", username, reason: el.userbanReason.value.trim() };
    if (el.userbanHours.value) message.hours = Number(el.userbanHours.value);
    const reply = await request(message);
    if (reply.type !== "UserBanResponse") {
      failed(`${username} not banned`, reply);
      return;
    }
    showNotice(`${reply.username} is banned ${reply.until ? `until ${formatTime(reply.until) || reply.until}` : "until the ban is lifted"}.`);
  }

  async function unbanUser() {
    const username = el.userbanName.value.trim();
    if (!username) {
      showError("Name the user whose ban to lift.");
      return;
    }
    const reply = await request({ type: "UserUnbanRequest", username });
    if (reply.type !== "UserUnbanResponse") {
      failed(`${username}'s ban not lifted`, reply);
      return;
    }
    showNotice(`${reply.username}'s ban is lifted.`);
  }

  function snapshotText(snapshot) {
    /* What the server kept of a report: the message ({message}) and, for a random chat, its
     * last messages ({chat: {chatname, messages}}), as lines "sender: text". */
    if (!snapshot || typeof snapshot !== "object") return snapshot ? String(snapshot) : "";
    const line = (item) => (item.event ? eventWords(item.event, item.content)
      : `${item.sender || "?"}: ${item.content == null ? "(deleted)" : item.content}`);
    const lines = [];
    if (snapshot.message && typeof snapshot.message === "object") {
      lines.push(`Reported message, ${line(snapshot.message)}`);
    }
    if (snapshot.chat && Array.isArray(snapshot.chat.messages) && snapshot.chat.messages.length) {
      lines.push(`Last messages of ${snapshot.chat.chatname}:`,
        ...snapshot.chat.messages.filter((item) => item && typeof item === "object").map(line));
    }
    return lines.join("\n");
  }

  async function loadReports(older) {
    const message = { type: "ReportListRequest", status: el.reportsFilter.value };
    const shown = [...el.reportsList.querySelectorAll("[data-report-id]")].map((li) => Number(li.dataset.reportId));
    if (older && shown.length) message.before = Math.min(...shown);
    const reply = await request(message);
    if (reply.type !== "ReportListResponse") {
      failed("No reports", reply);
      return;
    }
    const items = (reply.reports || []).map(reportItem);
    if (!older) el.reportsList.replaceChildren();
    for (const old of el.reportsList.querySelectorAll(".more, .none")) old.remove();
    el.reportsList.append(...items);
    if (reply.more) {
      const li = document.createElement("li");
      li.className = "more";
      li.append(smallButton("Older reports", null, () => loadReports(true)));
      el.reportsList.append(li);
    } else if (!el.reportsList.querySelector("[data-report-id]")) {
      el.reportsList.append(Object.assign(document.createElement("li"), {
        className: "muted none", textContent: "No reports.",
      }));
    }
  }

  function reportItem(item) {
    const li = document.createElement("li");
    li.className = "report";
    li.dataset.reportId = String(item.report_id);
    const head = document.createElement("div");
    const target = [item.username, item.chatname && `in # ${item.chatname}`,
      item.message_id != null && `message ${item.message_id}`].filter(Boolean).join(", ");
    head.textContent = `Report ${item.report_id}: ${item.reporter} reported ${target || "something"}` +
      ` (${formatTime(item.created) || item.created})`;
    const reason = document.createElement("div");
    reason.className = "reason";
    reason.textContent = `Reason: ${item.reason}`;
    li.append(head, reason);
    const snapshot = snapshotText(item.snapshot);
    if (snapshot) {
      const quote = document.createElement("blockquote");
      quote.textContent = snapshot;
      li.append(quote);
    }
    if (item.status && item.status !== "open") {
      const outcome = document.createElement("div");
      outcome.className = "muted";
      outcome.textContent = `Closed by ${item.resolved_by}: ${item.action}${item.note ? ` (${item.note})` : ""}`;
      li.append(outcome);
      return li;
    }
    const note = document.createElement("input");
    note.setAttribute("aria-label", `Note for report ${item.report_id}`);
    note.placeholder = "Note (optional)";
    const actions = document.createElement("div");
    actions.className = "report-actions";
    const choices = [["Dismiss", "dismiss"], ["Warn", "warn"]];
    if (item.message_id != null) choices.push(["Delete message", "delete_message"]);
    if (item.username) choices.push(["Ban user", "ban_user"]);
    for (const [label, action] of choices) {
      actions.append(smallButton(label, `${label}: report ${item.report_id}`,
        () => resolveReport(item.report_id, action, note.value.trim())));
    }
    li.append(note, actions);
    return li;
  }

  async function resolveReport(reportId, action, note) {
    const reply = await request({ type: "ReportResolveRequest", report_id: reportId, action, note });
    if (reply.type !== "ReportResolveResponse") {
      failed(`Report ${reportId} not closed`, reply);
      return;
    }
    showNotice(`Report ${reportId} closed: ${action}.`);
    loadReports(false);
  }

  // -- wiring ----------------------------------------------------------------

  el.signinForm.addEventListener("submit", signIn);
  el.signout.addEventListener("click", signOut);
  el.composer.addEventListener("submit", sendMessage);
  el.groupForm.addEventListener("submit", createGroup);
  el.groupToggle.addEventListener("click", () => toggleGroupForm());
  el.randomButton.addEventListener("click", startRandom);
  el.leave.addEventListener("click", leaveChat);
  el.older.addEventListener("click", () => {
    const chat = state.chats.get(state.current);
    if (chat) loadHistory(chat, true);
  });
  el.log.addEventListener("scroll", () => {
    const chat = state.chats.get(state.current);
    if (chat && chat.more && el.log.scrollTop < 40) loadHistory(chat, true);
  });
  el.message.addEventListener("input", autosize);
  el.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      el.composer.requestSubmit();
    }
  });
  el.toast.addEventListener("click", () => { el.toast.hidden = true; });
  el.joinToggle.addEventListener("click", () => toggleJoinBox());
  el.codeForm.addEventListener("submit", joinWithCode);
  el.directoryForm.addEventListener("submit", searchDirectory);
  el.infoButton.addEventListener("click", () => togglePanel());
  el.panelClose.addEventListener("click", () => togglePanel(false));
  el.topicForm.addEventListener("submit", setTopic);
  el.addForm.addEventListener("submit", addMembers);
  el.inviteForm.addEventListener("submit", createInvite);
  el.groupSettingsForm.addEventListener("submit", saveGroupSettings);
  for (const kind of ["input", "change"]) {
    el.groupSettingsForm.addEventListener(kind, () => { el.groupSettingsForm.dataset.dirty = "1"; });
  }
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
  el.moderationButton.addEventListener("click", openModeration);
  el.moderationClose.addEventListener("click", () => el.moderationDialog.close());
  el.announceForm.addEventListener("submit", announce);
  el.userbanForm.addEventListener("submit", banUser);
  el.userunbanButton.addEventListener("click", unbanUser);
  el.reportsFilter.addEventListener("change", () => loadReports(false));
  window.addEventListener("online", () => { if (state.session && !state.ws) resume(); });

  if (state.session) {
    el.resuming.hidden = false;
    resume();
  } else {
    showSignIn("");
  }
})();
