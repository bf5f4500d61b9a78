/* Chateau web client: the Account dialog, the user's own account.
 *
 * Profile (display name and status: ProfileRequest), password
 * (PasswordChangeRequest: the server signs every other device out), devices
 * (SessionListRequest, SessionRevokeRequest; signing out this device ends the
 * tab's session here, before the server's 4001), "Download my data" (GET
 * /api/me/export with the session key, saved through a Blob and a download
 * link) and deleting the account (AccountDeleteRequest, after the password is
 * asked again in a dialog of its own). Server text only ever as text.
 */

import { smallButton } from "./dom.js";
import { formatTime } from "./words.js";

export function createAccount(app) {
  const { state, el } = app;

  function directoryAccount() {
    return Boolean(state.session && state.session.directory);
  }

  async function open() {
    app.dialogs.openDialog(el.accountDialog);
    const directory = directoryAccount();
    el.profileName.readOnly = directory;
    el.profileNameNote.hidden = !directory;
    el.passwordSection.hidden = directory;
    el.deleteSection.hidden = directory;
    el.passwordForm.reset();
    await Promise.all([loadProfile(), loadDevices()]);
  }

  // -- profile -------------------------------------------------------------------

  function fillProfile(reply) {
    state.profile = { display_name: reply.display_name || "", status_text: reply.status_text || "" };
    el.profileName.value = state.profile.display_name;
    el.profileStatus.value = state.profile.status_text;
    if (state.me) el.me.textContent = reply.display_name ? `${reply.display_name} (${state.me})` : state.me;
  }

  function profileFields(enabled) {
    /* Disabled while the profile is read, so nothing typed meanwhile is overwritten. */
    el.profileName.disabled = !enabled;
    el.profileStatus.disabled = !enabled;
  }

  async function loadProfile() {
    profileFields(false);
    const reply = await app.conn.request({ type: "ProfileRequest" });
    profileFields(true);
    if (reply.type !== "ProfileResponse") {
      app.dialogs.failed("No profile", reply);
      return;
    }
    fillProfile(reply);
  }

  async function saveProfile(event) {
    event.preventDefault();
    const before = state.profile || { display_name: "", status_text: "" };
    const message = { type: "ProfileRequest" };
    const name = el.profileName.value.trim();
    const status = el.profileStatus.value.trim();
    if (!directoryAccount() && name !== before.display_name) message.display_name = name;
    if (status !== before.status_text) message.status_text = status;
    if (Object.keys(message).length === 1) {
      app.dialogs.showNotice("Nothing to change.");
      return;
    }
    const reply = await app.conn.request(message);
    if (reply.type !== "ProfileResponse") {
      app.dialogs.failed("Profile not saved", reply);
      return;
    }
    fillProfile(reply);
    app.dialogs.showNotice("Profile saved.");
  }

  // -- password ------------------------------------------------------------------

  async function changePassword(event) {
    event.preventDefault();
    const oldPassword = el.oldPassword.value;
    const newPassword = el.newPassword.value;
    if (!oldPassword || !newPassword) {
      app.dialogs.showError("Enter your current password and a new one.");
      return;
    }
    if (newPassword !== el.confirmPassword.value) {
      app.dialogs.showError("The new password and its confirmation differ.");
      return;
    }
    const reply = await app.conn.request({
      type: "PasswordChangeRequest", old_password: oldPassword, new_password: newPassword,
    });
    if (reply.type !== "PasswordChangeResponse") {
      app.dialogs.failed("Password not changed", reply);
      return;
    }
    el.passwordForm.reset();
    app.dialogs.showNotice("Password changed. Your other devices were signed out; this one stays signed in.");
    loadDevices();
  }

  // -- devices -------------------------------------------------------------------

  async function loadDevices() {
    const reply = await app.conn.request({ type: "SessionListRequest" });
    if (reply.type !== "SessionListResponse") {
      app.dialogs.failed("No list of devices", reply);
      return;
    }
    const sessions = reply.sessions || [];
    el.devicesList.replaceChildren(...(sessions.length ? sessions.map(deviceRow)
      : [Object.assign(document.createElement("li"), { className: "muted", textContent: "None." })]));
  }

  function deviceRow(session) {
    const li = document.createElement("li");
    li.className = "device";
    li.dataset.sessionId = session.id;
    if (session.current) li.dataset.current = "true";
    const text = document.createElement("div");
    text.className = "device-text";
    const name = document.createElement("span");
    name.className = "device-name";
    name.textContent = (session.client || "unknown client") + (session.current ? " (this device)" : "");
    const details = document.createElement("span");
    details.className = "muted device-details";
    details.textContent = [
      session.address ? `from ${session.address}` : "address unknown",
      `signed in ${formatTime(session.created) || session.created}`,
      `last used ${formatTime(session.last_used) || session.last_used}`,
    ].join(" · ");
    text.append(name, details);
    const label = session.current ? "Sign out this device"
      : `Sign out ${session.client || "unknown client"} (${session.id})`;
    li.append(text, smallButton("Sign out", label, () => revoke(session)));
    return li;
  }

  async function revoke(session) {
    const reply = await app.conn.request({ type: "SessionRevokeRequest", id: session.id });
    if (reply.type !== "SessionRevokeResponse") {
      app.dialogs.failed("Device not signed out", reply);
      return;
    }
    if (session.current) {
      app.session.endHere("You signed this device out.");
      return;
    }
    app.dialogs.showNotice(`${session.client || "That device"} is signed out.`);
    loadDevices();
  }

  // -- your data -----------------------------------------------------------------

  async function download() {
    if (!state.session || !state.session.key) {
      app.dialogs.showError("Download my data needs a session key, and this server gave none.");
      return;
    }
    let response;
    try {
      response = await fetch(new URL("api/me/export", location.href), {
        headers: { Authorization: `Bearer ${state.session.key}` }, cache: "no-store",
      });
    } catch (error) {
      app.dialogs.showError("Your data could not be downloaded: the server cannot be reached.");
      return;
    }
    if (!response.ok) {
      let detail = `status ${response.status}`;
      try {
        const body = await response.json();
        if (body && typeof body.detail === "string") detail = body.detail;
        else if (body && typeof body.error === "string") detail = body.error;
      } catch (error) { /* not JSON: the status says it */ }
      app.dialogs.showError(`Your data could not be downloaded: ${detail}`);
      return;
    }
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = `chateau-${state.me}-${new Date().toISOString().slice(0, 10)}.json`;
    link.hidden = true;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    app.dialogs.showNotice("Your data is downloaded (a JSON file).");
  }

  // -- deleting the account --------------------------------------------------------

  function askDelete() {
    el.accountDialog.close();
    el.deleteForm.reset();
    app.dialogs.openDialog(el.deleteDialog);
    el.deletePassword.focus();
  }

  async function deleteAccount(event) {
    event.preventDefault();
    const password = el.deletePassword.value;
    if (!password) {
      app.dialogs.showError("Enter your password to delete your account.");
      return;
    }
    const reply = await app.conn.request({ type: "AccountDeleteRequest", password });
    if (reply.type !== "AccountDeleteResponse" && !state.session) return;  // 4005 came first
    if (reply.type !== "AccountDeleteResponse") {
      app.dialogs.failed("Account not deleted", reply);
      return;
    }
    el.deleteForm.reset();
    app.session.endHere("Your account was deleted. Everything it held is gone from this server.");
  }

  function wire() {
    el.accountButton.addEventListener("click", open);
    el.accountClose.addEventListener("click", () => el.accountDialog.close());
    el.profileForm.addEventListener("submit", saveProfile);
    el.passwordForm.addEventListener("submit", changePassword);
    el.downloadButton.addEventListener("click", download);
    el.deleteButton.addEventListener("click", askDelete);
    el.deleteForm.addEventListener("submit", deleteAccount);
    el.deleteCancel.addEventListener("click", () => {
      el.deleteDialog.close();
      open();
    });
  }

  return { open, wire };
}
