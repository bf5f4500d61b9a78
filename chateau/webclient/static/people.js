/* Chateau web client: people in the sidebar: who is online, and contacts.
 *
 * The online list is asked for every few seconds while signed in and kept
 * up to date by presence pushes; contacts (on servers that have them) with
 * their open requests, to accept or deny. A name opens a direct chat.
 */

const ONLINE_REFRESH_MS = 5000;

export function createPeople(app) {
  const { state, el } = app;

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
    button.addEventListener("click", () => app.chats.openChat(app.chats.ensureChat("direct", username).id));
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

  async function refreshOnline() {
    if (!state.signedIn) return;
    const reply = await app.conn.request({ type: "ClientListRequest" });
    if (reply.type === "ClientListResponse") {
      state.online = [...reply.clients].sort();
      renderOnline();
    }
  }

  function start() {
    /* Signed in: the online list now and every few seconds. */
    refreshOnline();
    clearInterval(state.onlineTimer);
    state.onlineTimer = setInterval(refreshOnline, ONLINE_REFRESH_MS);
  }

  function stop() {
    clearInterval(state.onlineTimer);
  }

  async function refreshContacts() {
    if (!state.signedIn) return;
    const reply = await app.conn.request({ type: "ContactListRequest" });
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
            const answer = await app.conn.request({ type: kind, username: item.username });
            if (answer.type === "ErrorResponse") app.dialogs.showError(answer.detail);
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

  const pushes = {
    PresenceRecv(frame) {
      const others = new Set(state.online);
      if (frame.online && frame.username !== state.me) others.add(frame.username);
      else others.delete(frame.username);
      state.online = [...others].sort();
      renderOnline();
      refreshContacts();
    },
    ContactRequestRecv() { refreshContacts(); },
    ContactAcceptRecv() { refreshContacts(); },
    ContactRemoveRecv() { refreshContacts(); },
  };

  return { start, stop, refreshContacts, pushes };
}
