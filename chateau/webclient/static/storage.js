/* Chateau web client: what the tab keeps across reloads, in sessionStorage.
 *
 * The session key (per tab, so a reload or a dropped connection resumes
 * without the password) and the view: the open conversation and the chats.
 */

export const SESSION_KEY = "chateau.session";   // {key, username, directory}
export const VIEW_KEY = "chateau.view";         // {current, chats: [...]}

export function loadJSON(key) {
  try { return JSON.parse(sessionStorage.getItem(key) || "null"); } catch (e) { return null; }
}

export function saveJSON(key, value) {
  try {
    if (value === null) sessionStorage.removeItem(key);
    else sessionStorage.setItem(key, JSON.stringify(value));
  } catch (e) { /* private mode: the session just won't survive a reload */ }
}

export function saveView(state) {
  const chats = [...state.chats.values()]
    .filter((chat) => chat.kind !== "random-new" && !chat.left)
    .map((chat) => ({
      id: chat.id, kind: chat.kind, name: chat.name, partner: chat.partner, removed: chat.removed,
    }));
  saveJSON(VIEW_KEY, { current: state.current, chats });
}
