/* Chateau web client: signing in and out, and keeping the session.
 *
 * The session key from sign-in lives in sessionStorage (per tab, kept across
 * reloads), so a reload or a dropped connection resumes (ResumeRequest)
 * without asking for the password; a lost connection is retried 1, 2, 4 ...
 * up to 30 seconds apart. Close codes 4001 (signed out), 4003 (banned) and
 * 4005 (account deleted) forget the key and show the sign-in form. Sign-in
 * and resume name this client ("Web: Chrome on Linux") for the user's list
 * of devices. Also the screens: sign-in, resuming, chat, and the connection
 * status in the top bar.
 */

import { RETRY_FIRST_MS } from "./state.js";
import { SESSION_KEY, VIEW_KEY, saveJSON } from "./storage.js";
import { clientName } from "./words.js";

const SIGNED_OUT = 4001;  // close code: the session key was revoked (docs/protocol.md)
const BANNED = 4003;      // close code: a server admin banned the account
const DELETED = 4005;     // close code: the account was erased
const RETRY_MAX_MS = 30000;

export function createSession(app) {
  const { state, el } = app;

  // -- the connection's life ---------------------------------------------------

  function connect() {
    clearTimeout(state.retryTimer);
    return app.conn.connect();
  }

  function opened() {
    state.retryMs = RETRY_FIRST_MS;
  }

  function closed(event) {
    if (event.code === SIGNED_OUT) signedOutByServer();
    else if (event.code === BANNED) bannedByServer(event.reason);
    else if (event.code === DELETED) deletedByServer();
    else connectionLost();
  }

  function connectionLost() {
    const wasSignedIn = state.signedIn;
    app.conn.lost();
    state.signedIn = false;
    app.people.stop();
    for (const chat of state.chats.values()) {
      if (chat.kind === "random" && !chat.left) {
        app.chats.endRandom(chat, "The random chat ended when the connection dropped.");
      }
    }
    app.conversation.updateComposer();
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
    showSignIn("You were signed out: this device was signed out from another one, your password " +
      "was changed, your account was disabled, or you signed in on too many devices. " +
      "Please sign in again.");
  }

  function bannedByServer(reason) {
    /* Close code 4003: a server admin banned the account; sign-in says until when and why. */
    forgetSession();
    connectionLost();
    showSignIn(`You were signed out: your account has been banned from this server` +
      `${reason ? ` (${reason})` : ""}. Signing in again tells you until when and why.`);
  }

  function deletedByServer() {
    /* Close code 4005: the account was erased (here or on another device); nothing to resume. */
    forgetSession();
    saveJSON(VIEW_KEY, null);
    connectionLost();
    clearAccount();
    showSignIn("Your account was deleted. Its name cannot be used to sign in any more.");
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
    const reply = await app.conn.request({
      type: "ResumeRequest", session_key: state.session.key, client: clientName(navigator.userAgent),
    });
    if (reply.type === "ResumeResponse") {
      signedIn(reply.username || state.session.username, state.session.key, reply.display_name,
        reply.admin, state.session.directory, reply.session_id, true, reply.unread_total);
      return;
    }
    if (reply.status === 0) return;  // dropped again; connectionLost retries
    // The key expired or was revoked, or this server has no sessions.
    forgetSession();
    app.conn.close();
    showSignIn(reply.type === "ErrorResponse" && reply.detail
      ? `Your session has ended (${reply.detail}). Please sign in again.`
      : "Your session has ended. Please sign in again.");
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
      if (!app.conn.isOpen()) await connect();
      const directory = el.directory.checked;
      const reply = await app.conn.request({
        type: "RegisterRequest", username, password, auth: directory,
        client: clientName(navigator.userAgent),
      });
      if (reply.type === "RegisterResponse") {
        el.password.value = "";
        signedIn(reply.username, reply.session_key || null, reply.display_name, reply.admin,
          directory, reply.session_id, false, reply.unread_total);
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

  function signedIn(username, key, displayName, admin, directory, sessionId, resumed = false,
    unreadTotal = null) {
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
    state.sessionId = sessionId || null;
    if (key) {
      state.session = { key, username, directory: Boolean(directory) };
      saveJSON(SESSION_KEY, state.session);
    }
    el.me.textContent = displayName ? `${displayName} (${username})` : username;
    app.chats.restoreView();
    showChat();
    setStatus("online", "Connected");
    app.people.start();
    app.people.refreshContacts();
    app.safety.refreshBlocked(false);
    app.moderation.renderAnnouncements();
    for (const chat of state.chats.values()) {
      chat.historyLoaded = Boolean(chat.removed);  // a removed group's history is closed to us
      chat.info = null;
    }
    if (state.current) app.chats.openChat(state.current);
    app.chats.renderChats();
    app.conversation.updateComposer();
    // The server's count of unread (unread_total) until the list's own counts arrive.
    if (Number.isInteger(unreadTotal) && unreadTotal > 0) {
      document.title = `(${unreadTotal > 999 ? "999+" : unreadTotal}) Chateau`;
    }
    // A resumed session first catches up on what it missed (SyncRequest), then the list's
    // counts come from the server (ConversationsRequest).
    (resumed ? app.sync.catchUp() : Promise.resolve()).then(() => app.reading.loadConversations());
  }

  async function signOut() {
    if (state.session && app.conn.isOpen()) await app.conn.request({ type: "LogoutRequest" });
    endHere("You have signed out.");
  }

  function endHere(notice) {
    /* This tab's session is over (signed out, this device revoked, the account deleted):
     * forget it and close the socket before the server does, so no close code is awaited. */
    forgetSession();
    saveJSON(VIEW_KEY, null);
    state.signedIn = false;
    app.people.stop();
    app.conn.close();
    app.conn.lost();
    clearAccount();
    showSignIn(notice);
  }

  function clearAccount() {
    /* Nothing of the last account stays in the page for whoever signs in next. */
    state.me = null;
    state.chats.clear();
    state.current = null;
    state.admin = false;
    state.sessionId = null;
    state.profile = null;
    state.blocked.clear();
    state.announcements = [];
    state.panelOpen = false;
    state.typingSent = null;
    state.search = null;
    app.search.clear();
    app.moderation.renderAnnouncements();
    app.dialogs.closeDialogs();
  }

  // -- screens ---------------------------------------------------------------

  function showSignIn(notice) {
    app.dialogs.closeDialogs();
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

  // -- start-up --------------------------------------------------------------

  function wire() {
    el.signinForm.addEventListener("submit", signIn);
    el.signout.addEventListener("click", signOut);
    window.addEventListener("online", () => { if (state.session && !state.ws) resume(); });
  }

  function start() {
    /* A saved session resumes; otherwise the sign-in form. */
    if (state.session) {
      el.resuming.hidden = false;
      resume();
    } else {
      showSignIn("");
    }
  }

  return { opened, closed, endHere, wire, start };
}
