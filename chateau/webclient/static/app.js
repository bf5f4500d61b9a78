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
      .map((chat) => ({ id: chat.id, kind: chat.kind, name: chat.name, partner: chat.partner }));
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
      signedIn(reply.username || state.session.username, state.session.key);
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
        signedIn(reply.username, reply.session_key || null, reply.display_name);
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

  function signedIn(username, key, displayName) {
    if (state.me !== null && state.me !== username) {
      state.chats.clear();   // someone else on this tab: their chats are not ours
      state.current = null;
    }
    state.me = username;
    state.signedIn = true;
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
    for (const chat of state.chats.values()) chat.historyLoaded = false;
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
    }
    if (view.current && state.chats.has(view.current)) state.current = view.current;
  }

  // -- screens ---------------------------------------------------------------

  function showSignIn(notice) {
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
  function showError(text) {
    el.toast.textContent = text;
    el.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.toast.hidden = true; }, 8000);
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
        id, kind, name, partner: null, members: null,
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
    if (!chat.historyLoaded && state.signedIn) loadHistory(chat, false);
    if (chat.kind === "group" && !chat.members && state.signedIn) loadMembers(chat);
    el.message.focus();
  }

  async function loadMembers(chat) {
    const reply = await request({ type: "GroupMembersRequest", chatname: chat.name });
    if (reply.type !== "GroupMembersResponse") return;  // older servers: the subtitle stays generic
    chat.members = (reply.members || []).map((member) => member.username);
    if (chat.id === state.current) renderConversation(false);
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
    if (message.system) return message.order;
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
    const reply = await request(message);
    chat.loadingOlder = false;
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
    if (chat.kind === "random-new" || chat.ended) {
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
      systemNote(chat, `${frame.creator} added you to this group (${(frame.members || []).join(", ")}).`);
      chat.unread += 1;
      renderChats();
    },
    GroupMemberLeftRecv(frame) {
      const chat = state.chats.get(chatId("group", frame.chatname));
      if (chat) systemNote(chat, `${frame.user} left the group.`);
    },
    RandomChatEndedRecv(frame) {
      const chat = state.chats.get(chatId("random", frame.chatname));
      if (chat) {
        endRandom(chat, frame.reason === "disconnected"
          ? `${frame.user} disconnected; the random chat has ended.`
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
      ? (chat.members ? `Group: ${chat.members.join(", ")}` : "Group chat")
      : chat.kind === "direct" ? "Direct messages"
      : chat.ended ? "This random chat has ended" : "Random chat";
    el.leave.textContent = chat.kind === "group" ? "Leave group" : "End chat";
    el.older.hidden = !(chat.more && state.historySupported);
    el.older.disabled = chat.loadingOlder;
    el.historyStart.hidden = !(chat.historyLoaded && !chat.more && state.historySupported
      && chat.messages.some((m) => !m.system));
    let previousSender = null;
    el.messages.replaceChildren(...chat.messages.map((message) => {
      const li = document.createElement("li");
      if (message.system) {
        li.className = "system";
        li.textContent = message.content;
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
    const usable = Boolean(state.signedIn && chat && !chat.ended);
    el.message.disabled = !usable;
    el.send.disabled = !usable;
    el.message.placeholder = !chat ? "Pick a chat first"
      : chat.ended ? "This random chat has ended"
      : !state.signedIn ? "Reconnecting…"
      : `Message ${chatTitle(chat)}`;
  }

  function autosize() {
    el.message.style.height = "auto";
    el.message.style.height = `${Math.min(el.message.scrollHeight, 160)}px`;
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
  window.addEventListener("online", () => { if (state.session && !state.ws) resume(); });

  if (state.session) {
    el.resuming.hidden = false;
    resume();
  } else {
    showSignIn("");
  }
})();
