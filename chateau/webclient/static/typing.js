/* Chateau web client: who is typing.
 *
 * TypingRecv from the server shows "bob is typing…" under the open
 * conversation; a name goes on false, on that person's message, or 6 s after
 * their last true. While the user types in the composer the page sends
 * TypingRequest true at most once per 2 s, and false when the message is sent
 * or the box cleared (or another conversation opened).
 */

import { chatId, conversationKey } from "./state.js";
import { unsupported } from "./connection.js";
import { typingText } from "./words.js";

const EXPIRY_MS = 6000;   // the server ends typing 6 s after the last true
const RENEW_MS = 2000;    // at most one TypingRequest true per 2 s

export function createTyping(app) {
  const { state, el } = app;

  // -- others typing -------------------------------------------------------------

  function chatOf(frame) {
    if (frame.user != null) return state.chats.get(chatId("direct", frame.user));
    const name = String(frame.chatname);
    return state.chats.get(chatId(name.startsWith("~") ? "random" : "group", name));
  }

  function stopped(chat, username) {
    /* username no longer types in chat (false, their message, or the 6 s are over). */
    const timer = chat.typing.get(username);
    if (timer === undefined) return;
    clearTimeout(timer);
    chat.typing.delete(username);
    if (chat.id === state.current) render();
  }

  function render() {
    const chat = state.chats.get(state.current);
    const names = chat ? [...chat.typing.keys()].sort() : [];
    el.typing.textContent = typingText(names);
  }

  const pushes = {
    TypingRecv(frame) {
      const chat = chatOf(frame);
      if (!chat || frame.username === state.me) return;
      if (!frame.typing) {
        stopped(chat, frame.username);
        return;
      }
      clearTimeout(chat.typing.get(frame.username));
      chat.typing.set(frame.username, setTimeout(() => stopped(chat, frame.username), EXPIRY_MS));
      if (chat.id === state.current) render();
    },
  };

  // -- this user typing ------------------------------------------------------------

  function canTell(chat) {
    return Boolean(state.typingSupported && state.signedIn && chat && !chat.ended && !chat.removed
      && (chat.kind === "group" || chat.kind === "direct" || (chat.kind === "random" && chat.partner)));
  }

  function send(chat, typing) {
    app.conn.request({ type: "TypingRequest", ...conversationKey(chat), typing }).then((reply) => {
      if (unsupported(reply)) state.typingSupported = false;
    });
  }

  function typed() {
    /* The composer changed: tell the others, at most once per 2 s; an emptied box ends it. */
    const chat = state.chats.get(state.current);
    if (!el.message.value.trim()) {
      done();
      return;
    }
    if (!canTell(chat)) return;
    const now = Date.now();
    const sent = state.typingSent;
    if (sent && sent.chatId === chat.id && now - sent.at < RENEW_MS) return;
    state.typingSent = { chatId: chat.id, at: now };
    send(chat, true);
  }

  function done() {
    /* The message was sent, the box emptied, or the user went to another conversation. */
    const sent = state.typingSent;
    state.typingSent = null;
    if (!sent) return;
    const chat = state.chats.get(sent.chatId);
    if (canTell(chat)) send(chat, false);
  }

  function wire() {
    el.message.addEventListener("input", typed);
  }

  return { stopped, render, done, leftChat: done, pushes, wire };
}
