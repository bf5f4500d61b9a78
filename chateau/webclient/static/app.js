/* Chateau web client: plain JavaScript modules, no build step.
 *
 * One WebSocket to /ws beside this page (connection.js). Requests carry a
 * msg_id so their replies can be matched; everything else the server sends
 * is a push. The session key lives in sessionStorage (per tab, kept across
 * reloads), so a reload or a dropped connection resumes without asking for
 * the password (session.js). Text from the server is only ever put into the
 * page as text, never HTML.
 *
 * This file builds the page: the one state object, the elements, and each
 * part, in the app object every part is given. A part is a module exporting
 * createXxx(app), which returns its functions, plus `pushes` (handlers by
 * push type) if it handles pushes and `wire()` if it has controls of its own.
 * Parts call each other only through app (app.chats.openChat(...)), at call
 * time, so no module imports another's part and there are no import cycles;
 * modules import only the helpers that hold no state (state.js, storage.js,
 * words.js, dom.js, connection.js's unsupported).
 */

import { createAccount } from "./account.js";
import { createChats } from "./chats.js";
import { createConnection } from "./connection.js";
import { createConversation } from "./conversation.js";
import { createDialogs } from "./dialogs.js";
import { findElements } from "./dom.js";
import { createGroups } from "./groups.js";
import { createJoining } from "./joining.js";
import { createModeration } from "./moderation.js";
import { createPeople } from "./people.js";
import { createReading } from "./reading.js";
import { createSafety } from "./safety.js";
import { createSearch } from "./search.js";
import { createSession } from "./session.js";
import { createState } from "./state.js";
import { createSync } from "./sync.js";
import { createTyping } from "./typing.js";
import { SESSION_KEY, loadJSON } from "./storage.js";

function mergePushes(parts) {
  /* One handler per push type, from every part that has some. */
  const pushes = {};
  for (const part of parts) {
    for (const [type, handler] of Object.entries(part.pushes || {})) {
      if (Object.hasOwn(pushes, type)) throw new Error(`two handlers for ${type}`);
      pushes[type] = handler;
    }
  }
  return pushes;
}

const app = {
  state: createState(loadJSON(SESSION_KEY)),
  el: findElements(document),
};
app.dialogs = createDialogs(app);
app.conn = createConnection(app);
app.session = createSession(app);
app.people = createPeople(app);
app.chats = createChats(app);
app.conversation = createConversation(app);
app.groups = createGroups(app);
app.joining = createJoining(app);
app.safety = createSafety(app);
app.moderation = createModeration(app);
app.account = createAccount(app);
app.reading = createReading(app);
app.typing = createTyping(app);
app.search = createSearch(app);
app.sync = createSync(app);

const parts = [app.dialogs, app.conn, app.session, app.people, app.chats, app.conversation,
  app.groups, app.joining, app.safety, app.moderation, app.account, app.reading, app.typing,
  app.search, app.sync];
app.pushes = mergePushes(parts);
Object.freeze(app);

for (const part of parts) {
  if (part.wire) part.wire();
}
app.session.start();
