/* Chateau web client: what the server sends, in words for the page.
 *
 * Pure functions from data to plain strings (times, group events, a chat's
 * title); the callers put them into the page as text, never as HTML.
 */

export function formatTime(timestamp) {
  const moment = new Date(timestamp);
  if (Number.isNaN(moment.getTime())) return "";
  const time = moment.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (moment.toDateString() === new Date().toDateString()) return time;
  return `${moment.toLocaleDateString([], { day: "numeric", month: "short" })} ${time}`;
}

// The sender of what an erased account wrote: no username can ever be this (docs/protocol.md).
export const DELETED_USER = "(deleted user)";

export function personName(name) {
  /* A user's name in words: an erased account is "deleted user". */
  return name === DELETED_USER ? "deleted user" : name;
}

export function chatTitle(chat) {
  if (chat.kind === "group") return `# ${chat.name}`;
  if (chat.kind === "random") return chat.partner ? `Random: ${personName(chat.partner)}` : "Random chat";
  if (chat.kind === "random-new") return "New random chat";
  return personName(chat.name);
}

export function clientName(userAgent) {
  /* What this page calls itself in the user's list of devices: "Web: Chrome on Linux". */
  const ua = String(userAgent || "");
  const browser = /Edg\//.test(ua) ? "Edge" : /OPR\/|Opera/.test(ua) ? "Opera"
    : /Firefox\//.test(ua) ? "Firefox" : /Chrom(e|ium)\//.test(ua) ? "Chrome"
    : /Safari\//.test(ua) ? "Safari" : "a browser";
  const system = /Android/.test(ua) ? "Android" : /iPhone|iPad|iPod/.test(ua) ? "iOS"
    : /Windows/.test(ua) ? "Windows" : /CrOS/.test(ua) ? "ChromeOS"
    : /Mac OS X|Macintosh/.test(ua) ? "macOS" : /Linux/.test(ua) ? "Linux" : "";
  return `Web: ${browser}${system ? ` on ${system}` : ""}`.slice(0, 64);
}

const EVENT_WORDS = {
  added: (e) => `${e.by} added ${e.user}`,
  removed: (e) => `${e.by} removed ${e.user}`,
  banned: (e) => `${e.by} banned ${e.user}`,
  unbanned: (e) => `${e.by} unbanned ${e.user}`,
  left: (e) => `${e.user} left`,
  joined: (e) => `${e.user} joined`,
  role: (e) => `${e.by} made ${e.user} ${e.role}`,
  muted: (e) => `${e.by} muted ${e.user} until ${formatTime(e.until) || e.until}`,
  unmuted: (e) => `${e.by} unmuted ${e.user}`,
  renamed: (e) => `${e.by} renamed the group from ${e.old_name} to ${e.new_name}`,
  topic: (e) => (e.topic ? `${e.by} set the topic: ${e.topic}` : `${e.by} cleared the topic`),
  settings: (e) => `${e.by} changed the group's settings` + (e.settings && typeof e.settings === "object"
    ? ` (${Object.entries(e.settings).map(([key, value]) => settingWords(key, value)).join(", ")})` : ""),
};

function settingWords(key, value) {
  if (key === "retention_days") {
    return `keep messages: ${value === null ? "server default" : value === 0 ? "forever" : `${value} days`}`;
  }
  return `${key}: ${value}`;
}

export function eventWords(original, fallback) {
  /* A system event in words ("bob added carol"), as the server words it in history. */
  const event = { ...original, user: personName(original.user), by: personName(original.by) };
  const words = EVENT_WORDS[event.event];
  const text = words ? words(event) : (fallback || `${event.by}: ${event.event} ${event.user}`);
  return event.reason ? `${text} (${event.reason})` : text;
}

export function eventKey(event) {
  return `${event.event}|${event.user}|${event.by}`;
}

export function removedText(removed) {
  if (!removed.by) return "You are no longer in this group. It is read-only now.";
  const how = removed.banned ? "banned you from" : "removed you from";
  return `${removed.by} ${how} this group${removed.reason ? `: ${removed.reason}` : ""}. ` +
    "It is read-only now.";
}

export function previewText(message, chat, me) {
  /* The last message in the chat list: "bob: see you at 4", "You: thanks". */
  if (message.hidden) return "message hidden (blocked user)";
  if (message.event) return message.content || "";
  if (message.deleted) return "message deleted";
  const text = String(message.content || "").replace(/\s+/g, " ").trim();
  const short = text.length > 80 ? `${text.slice(0, 79)}…` : text;
  if (message.sender === me || message.own) return `You: ${short}`;
  return chat.kind === "group" ? `${personName(message.sender)}: ${short}` : short;
}

export function typingText(names) {
  /* "bob is typing…", "bob and carol are typing…", "bob, carol and dave are typing…". */
  const people = names.map(personName);
  if (!people.length) return "";
  if (people.length === 1) return `${people[0]} is typing…`;
  if (people.length > 3) return "Several people are typing…";
  return `${people.slice(0, -1).join(", ")} and ${people.at(-1)} are typing…`;
}
