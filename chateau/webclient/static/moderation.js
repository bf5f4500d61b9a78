/* Chateau web client: announcements and moderation.
 *
 * The banner under the top bar with the server admins' announcements and
 * moderators' warnings, for everyone; and for server admins the Moderation
 * dialog: announcing, server-wide bans and their lifting, and the reports
 * with the snapshot the server kept, to close them.
 */

import { smallButton } from "./dom.js";
import { eventWords, formatTime } from "./words.js";

export function createModeration(app) {
  const { state, el } = app;

  function renderAnnouncements() {
    el.announcements.hidden = state.announcements.length === 0;
    el.announcementList.replaceChildren(...state.announcements.map((announcement) => {
      const li = document.createElement("li");
      li.className = announcement.warning ? "announcement warning" : "announcement";
      const head = document.createElement("strong");
      head.textContent = announcement.warning
        ? `A warning from the moderators (report ${announcement.report_id})`
        : `Announcement from ${announcement.by}`;
      const when = document.createElement("span");
      when.className = "when";
      when.textContent = `${formatTime(announcement.timestamp)}${announcement.offline ? " · while you were away" : ""}`;
      const body = document.createElement("span");
      body.className = "announcement-text";
      body.textContent = announcement.warning
        ? (announcement.note || "Please keep to the rules.") : announcement.content;
      const dismiss = smallButton("Dismiss", announcement.warning ? "Dismiss warning" : "Dismiss announcement", () => {
        state.announcements = state.announcements.filter((a) => a !== announcement);
        renderAnnouncements();
      });
      li.append(head, when, body, dismiss);
      return li;
    }));
  }

  async function openModeration() {
    app.dialogs.openDialog(el.moderationDialog);
    loadReports(false);
  }

  async function announce(event) {
    event.preventDefault();
    const content = el.announceInput.value.trim();
    if (!content) return;
    const reply = await app.conn.request({ type: "AnnounceRequest", content });
    if (reply.type !== "AnnounceResponse") {
      app.dialogs.failed("Announcement not sent", reply);
      return;
    }
    el.announceInput.value = "";
    app.dialogs.showNotice("Announcement sent to everyone.");
  }

  async function banUser(event) {
    event.preventDefault();
    const username = el.userbanName.value.trim();
    if (!username) {
      app.dialogs.showError("Name the user to ban.");
      return;
    }
    const message = { type: "UserBanRequest", username, reason: el.userbanReason.value.trim() };
    if (el.userbanHours.value) message.hours = Number(el.userbanHours.value);
    const reply = await app.conn.request(message);
    if (reply.type !== "UserBanResponse") {
      app.dialogs.failed(`${username} not banned`, reply);
      return;
    }
    app.dialogs.showNotice(`${reply.username} is banned ${reply.until ? `until ${formatTime(reply.until) || reply.until}` : "until the ban is lifted"}.`);
  }

  async function unbanUser() {
    const username = el.userbanName.value.trim();
    if (!username) {
      app.dialogs.showError("Name the user whose ban to lift.");
      return;
    }
    const reply = await app.conn.request({ type: "UserUnbanRequest", username });
    if (reply.type !== "UserUnbanResponse") {
      app.dialogs.failed(`${username}'s ban not lifted`, reply);
      return;
    }
    app.dialogs.showNotice(`${reply.username}'s ban is lifted.`);
  }

  function snapshotText(snapshot) {
    /* What the server kept of a report: the message ({message}) and, for a random chat, its
     * last messages ({chat: {chatname, messages}}), as lines "sender: text". */
    if (!snapshot || typeof snapshot !== "object") return snapshot ? String(snapshot) : "";
    const line = (item) => (item.event ? eventWords(item.event, item.content)
      : `${item.sender || "?"}: ${item.content == null ? "(deleted)" : item.content}`);
    const lines = [];
    if (snapshot.message && typeof snapshot.message === "object") {
      lines.push(`Reported message, ${line(snapshot.message)}`);
    }
    if (snapshot.chat && Array.isArray(snapshot.chat.messages) && snapshot.chat.messages.length) {
      lines.push(`Last messages of ${snapshot.chat.chatname}:`,
        ...snapshot.chat.messages.filter((item) => item && typeof item === "object").map(line));
    }
    return lines.join("\n");
  }

  async function loadReports(older) {
    const message = { type: "ReportListRequest", status: el.reportsFilter.value };
    const shown = [...el.reportsList.querySelectorAll("[data-report-id]")].map((li) => Number(li.dataset.reportId));
    if (older && shown.length) message.before = Math.min(...shown);
    const reply = await app.conn.request(message);
    if (reply.type !== "ReportListResponse") {
      app.dialogs.failed("No reports", reply);
      return;
    }
    const items = (reply.reports || []).map(reportItem);
    if (!older) el.reportsList.replaceChildren();
    for (const old of el.reportsList.querySelectorAll(".more, .none")) old.remove();
    el.reportsList.append(...items);
    if (reply.more) {
      const li = document.createElement("li");
      li.className = "more";
      li.append(smallButton("Older reports", null, () => loadReports(true)));
      el.reportsList.append(li);
    } else if (!el.reportsList.querySelector("[data-report-id]")) {
      el.reportsList.append(Object.assign(document.createElement("li"), {
        className: "muted none", textContent: "No reports.",
      }));
    }
  }

  function reportItem(item) {
    const li = document.createElement("li");
    li.className = "report";
    li.dataset.reportId = String(item.report_id);
    const head = document.createElement("div");
    const target = [item.username, item.chatname && `in # ${item.chatname}`,
      item.message_id != null && `message ${item.message_id}`].filter(Boolean).join(", ");
    head.textContent = `Report ${item.report_id}: ${item.reporter} reported ${target || "something"}` +
      ` (${formatTime(item.created) || item.created})`;
    const reason = document.createElement("div");
    reason.className = "reason";
    reason.textContent = `Reason: ${item.reason}`;
    li.append(head, reason);
    const snapshot = snapshotText(item.snapshot);
    if (snapshot) {
      const quote = document.createElement("blockquote");
      quote.textContent = snapshot;
      li.append(quote);
    }
    if (item.status && item.status !== "open") {
      const outcome = document.createElement("div");
      outcome.className = "muted";
      outcome.textContent = `Closed by ${item.resolved_by}: ${item.action}${item.note ? ` (${item.note})` : ""}`;
      li.append(outcome);
      return li;
    }
    const note = document.createElement("input");
    note.setAttribute("aria-label", `Note for report ${item.report_id}`);
    note.placeholder = "Note (optional)";
    const actions = document.createElement("div");
    actions.className = "report-actions";
    const choices = [["Dismiss", "dismiss"], ["Warn", "warn"]];
    if (item.message_id != null) choices.push(["Delete message", "delete_message"]);
    if (item.username) choices.push(["Ban user", "ban_user"]);
    for (const [label, action] of choices) {
      actions.append(smallButton(label, `${label}: report ${item.report_id}`,
        () => resolveReport(item.report_id, action, note.value.trim())));
    }
    li.append(note, actions);
    return li;
  }

  async function resolveReport(reportId, action, note) {
    const reply = await app.conn.request({ type: "ReportResolveRequest", report_id: reportId, action, note });
    if (reply.type !== "ReportResolveResponse") {
      app.dialogs.failed(`Report ${reportId} not closed`, reply);
      return;
    }
    app.dialogs.showNotice(`Report ${reportId} closed: ${action}.`);
    loadReports(false);
  }

  const pushes = {
    ModerationWarningRecv(frame) {
      state.announcements.push({ ...frame, warning: true, timestamp: new Date().toISOString() });
      renderAnnouncements();
    },
    AnnouncementRecv(frame) {
      if (frame.id != null && state.announcements.some((a) => a.id === frame.id)) return;
      state.announcements.push(frame);
      renderAnnouncements();
    },
  };

  function wire() {
    el.moderationButton.addEventListener("click", openModeration);
    el.moderationClose.addEventListener("click", () => el.moderationDialog.close());
    el.announceForm.addEventListener("submit", announce);
    el.userbanForm.addEventListener("submit", banUser);
    el.userunbanButton.addEventListener("click", unbanUser);
    el.reportsFilter.addEventListener("change", () => loadReports(false));
  }

  return { renderAnnouncements, pushes, wire };
}
