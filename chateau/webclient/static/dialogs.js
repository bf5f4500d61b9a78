/* Chateau web client: dialogs, and errors and notices in words.
 *
 * ask() is the small dialog with one field (a reason, a number of minutes);
 * openDialog/closeDialogs the page's other dialogs. say() shows an error or a
 * notice inside the open dialog (which covers the page), else in the notice
 * above the message box. No refusal of the server is kept quiet.
 */

export function createDialogs(app) {
  const { state, el } = app;

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
    clearTimeout(state.toastTimer);
    state.toastTimer = setTimeout(() => { el.toast.hidden = true; }, 8000);
  }

  function failed(what, reply) {
    showError(`${what}: ${reply.detail || "the server refused it"}`);
  }

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

  function wire() {
    el.toast.addEventListener("click", () => { el.toast.hidden = true; });
  }

  return { showError, showNotice, failed, ask, closeDialogs, openDialog, wire };
}
