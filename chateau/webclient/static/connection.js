/* Chateau web client: the one WebSocket to /ws beside this page.
 *
 * Requests carry a msg_id so their replies can be matched (request() resolves
 * with the reply); everything else the server sends is a push, handed to the
 * handler of its type in app.pushes (each part of the page brings its own).
 * What to do when the socket opens or closes (resume, reconnect, sign-in
 * screen) is the session's: session.js.
 */

export function unsupported(reply) {
  /* This server does not know the request (an older server): the feature is just absent. */
  return reply.status === 400 && /^unknown request type/.test(reply.detail || "");
}

export function createConnection(app) {
  const { state } = app;

  function socketURL() {
    const url = new URL("ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    url.hash = "";
    return url.href;
  }

  function connect() {
    return new Promise((resolve, reject) => {
      let ws;
      try { ws = new WebSocket(socketURL()); } catch (error) { reject(error); return; }
      state.ws = ws;
      let opened = false;
      ws.onopen = () => { opened = true; app.session.opened(); resolve(ws); };
      ws.onmessage = (event) => { if (ws === state.ws) receive(event.data); };
      ws.onclose = (event) => {
        if (!opened) reject(new Error("cannot reach the server"));
        if (ws !== state.ws) return;
        app.session.closed(event);
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

  function lost() {
    /* The socket is gone: every request still waiting is answered with an error. */
    state.ws = null;
    for (const { resolve } of state.pending.values()) {
      resolve({ type: "ErrorResponse", status: 0, detail: "the connection to the server was lost" });
    }
    state.pending.clear();
  }

  function close() {
    const ws = state.ws;
    state.ws = null;
    if (ws) ws.close();
  }

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
    const handler = app.pushes[frame.type];
    if (handler) handler(frame);
    else if (frame.type === "ErrorResponse") app.dialogs.showError(frame.detail || "The server reported an error.");
  }

  const pushes = {
    HeartbeatRequest(frame) {
      if (isOpen()) state.ws.send(JSON.stringify({ type: "HeartbeatResponse", payload: frame.payload }));
    },
  };

  return { connect, isOpen, request, lost, close, pushes };
}
