/* Chateau web client: searching the messages the user may read.
 *
 * The search box sends SearchRequest; each result shows its conversation,
 * sender, time and snippet, the matched words marked from the server's
 * `highlights` (code-point offsets) as <mark> elements around text nodes.
 * Clicking a result opens its conversation at that message (HistoryRequest
 * after the message before it), scrolled to and marked.
 */

import { chatId } from "./state.js";
import { unsupported } from "./connection.js";
import { formatTime, personName } from "./words.js";

const PAGE = 20;

export function markedSnippet(snippet, highlights) {
  /* The snippet as text nodes and <mark> elements; offsets count code points. */
  const points = Array.from(String(snippet || ""));
  const spans = (Array.isArray(highlights) ? highlights : [])
    .filter((h) => Array.isArray(h) && Number.isInteger(h[0]) && Number.isInteger(h[1]) && h[0] < h[1])
    .map(([start, end]) => [Math.max(0, start), Math.min(points.length, end)])
    .sort((a, b) => a[0] - b[0]);
  const parts = [];
  let at = 0;
  for (const [start, end] of spans) {
    if (start < at || start >= points.length) continue;  // overlapping or out of range
    if (start > at) parts.push(document.createTextNode(points.slice(at, start).join("")));
    const mark = document.createElement("mark");
    mark.textContent = points.slice(start, end).join("");
    parts.push(mark);
    at = end;
  }
  if (at < points.length) parts.push(document.createTextNode(points.slice(at).join("")));
  return parts;
}

export function createSearch(app) {
  const { state, el } = app;

  async function search(event, more = false) {
    if (event) event.preventDefault();
    const query = more && state.search ? state.search.query : el.searchQuery.value.trim();
    if (!query) {
      clear();
      return;
    }
    if (!state.signedIn) return;
    const request = { type: "SearchRequest", query, limit: PAGE };
    if (more && state.search && state.search.results.length) {
      request.before = state.search.results[state.search.results.length - 1].id;
    }
    el.searchStatus.textContent = "Searching…";
    const reply = await app.conn.request(request);
    if (reply.type !== "SearchResponse") {
      el.searchStatus.textContent = unsupported(reply) ? "This server cannot search messages."
        : `Search failed: ${reply.detail || "the server refused it"}`;
      return;
    }
    const previous = more && state.search ? state.search.results : [];
    state.search = { query, results: previous.concat(reply.results || []), more: Boolean(reply.more) };
    render();
  }

  function clear() {
    state.search = null;
    el.searchQuery.value = "";
    render();
  }

  function render() {
    const found = state.search;
    el.searchResults.hidden = !found;
    el.searchMore.hidden = !(found && found.more);
    el.searchClose.hidden = !found;
    el.searchStatus.textContent = !found ? ""
      : found.results.length ? `${found.results.length}${found.more ? "+" : ""} found`
      : "No messages found.";
    el.searchResults.replaceChildren(...(found ? found.results : []).map((result) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "search-result";
      button.dataset.id = String(result.id);
      const head = document.createElement("span");
      head.className = "result-head";
      const where = document.createElement("span");
      where.className = "result-chat";
      where.textContent = result.chatname != null ? `# ${result.chatname}` : personName(result.user);
      const who = document.createElement("span");
      who.className = "result-sender";
      who.textContent = result.sender === state.me ? "You" : personName(result.sender);
      const time = document.createElement("time");
      time.dateTime = result.timestamp || "";
      time.textContent = formatTime(result.timestamp);
      head.append(where, who, time);
      const snippet = document.createElement("span");
      snippet.className = "result-snippet";
      snippet.append(...markedSnippet(result.snippet, result.highlights));
      button.append(head, snippet);
      button.addEventListener("click", () => open(result));
      li.append(button);
      return li;
    }));
  }

  function open(result) {
    /* The conversation at that message: the page after the one before it. */
    const kind = result.chatname != null ? "group" : "direct";
    const name = result.chatname != null ? result.chatname : result.user;
    const chat = state.chats.get(chatId(kind, name)) || app.chats.ensureChat(kind, name);
    app.chats.openAt(chat, { after: Math.max(0, result.id - 1) }, result.id);
  }

  function wire() {
    el.searchForm.addEventListener("submit", (event) => search(event));
    el.searchMore.addEventListener("click", () => search(null, true));
    el.searchClose.addEventListener("click", clear);
  }

  return { clear, pushes: {}, wire };
}
