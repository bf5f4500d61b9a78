/* Chateau web client: the page's elements, and small pieces of page made here.
 *
 * findElements looks every element up once, by id, at start-up (app.js); a
 * new panel adds its elements here. Nothing here puts server text into the
 * page other than as text.
 */

export function findElements(document) {
  const $ = (id) => document.getElementById(id);
  return {
    signin: $("signin"), signinForm: $("signin-form"), signinNotice: $("signin-notice"),
    signinError: $("signin-error"), signinButton: $("signin-button"),
    username: $("username"), password: $("password"), directory: $("directory"),
    resuming: $("resuming"),
    chat: $("chat"), status: $("status"), me: $("me"), signout: $("signout"),
    chats: $("chats"), chatsEmpty: $("chats-empty"),
    randomButton: $("random-button"), groupToggle: $("group-toggle"), groupForm: $("group-form"),
    groupName: $("group-name"), groupMembers: $("group-members"),
    online: $("online"), onlineEmpty: $("online-empty"),
    contactsSection: $("contacts-section"), contacts: $("contacts"),
    title: $("conversation-title"), subtitle: $("conversation-subtitle"), leave: $("leave-button"),
    log: $("log"), older: $("older-button"), historyStart: $("history-start"), newer: $("newer-button"),
    typing: $("typing"), jumpForm: $("jump-form"), jumpDate: $("jump-date"),
    searchForm: $("search-form"), searchQuery: $("search-query"), searchStatus: $("search-status"),
    searchResults: $("search-results"), searchMore: $("search-more"), searchClose: $("search-close"),
    messages: $("messages"), composer: $("composer"), message: $("message"), send: $("send"),
    toast: $("toast"),
    moderationButton: $("moderation-button"), settingsButton: $("settings-button"),
    announcements: $("announcements"), announcementList: $("announcement-list"),
    joinToggle: $("join-toggle"), joinBox: $("join-box"), codeForm: $("code-form"),
    codeInput: $("invite-code-input"), directoryForm: $("directory-form"),
    directoryQuery: $("directory-query"), directoryResults: $("directory-results"),
    infoButton: $("info-button"), blockButton: $("block-button"), reportButton: $("report-button"),
    removedBanner: $("removed-banner"),
    panel: $("group-panel"), panelTitle: $("panel-title"), panelClose: $("panel-close"),
    panelTopic: $("panel-topic"), topicForm: $("topic-form"), topicInput: $("topic-input"),
    panelMembers: $("panel-members"), addForm: $("add-form"), addInput: $("add-input"),
    bansSection: $("bans-section"), panelBans: $("panel-bans"),
    inviteSection: $("invite-section"), inviteForm: $("invite-form"), inviteUses: $("invite-uses"),
    inviteHours: $("invite-hours"), inviteResult: $("invite-result"), inviteCode: $("invite-code"),
    inviteExpiry: $("invite-expiry"),
    settingsSection: $("settings-section"), groupSettingsForm: $("group-settings-form"),
    renameInput: $("rename-input"), joinSelect: $("join-select"),
    visibilitySelect: $("visibility-select"), whoAddSelect: $("who-add-select"),
    whoSendSelect: $("who-send-select"), retentionInput: $("retention-input"),
    panelDirectory: $("panel-directory"),
    askDialog: $("ask-dialog"), askForm: $("ask-form"), askTitle: $("ask-title"),
    askLabel: $("ask-label"), askInput: $("ask-input"), askCancel: $("ask-cancel"),
    settingsDialog: $("settings-dialog"), settingsForm: $("settings-form"),
    dmSelect: $("dm-select"), presenceSelect: $("presence-select"),
    randomCheck: $("random-check"), receiptsCheck: $("receipts-check"),
    blockedList: $("blocked-list"), settingsClose: $("settings-close"),
    moderationDialog: $("moderation-dialog"), announceForm: $("announce-form"),
    announceInput: $("announce-input"), reportsFilter: $("reports-filter"),
    reportsList: $("reports-list"), moderationClose: $("moderation-close"),
    userbanForm: $("userban-form"), userbanName: $("userban-name"), userbanHours: $("userban-hours"),
    userbanReason: $("userban-reason"), userunbanButton: $("userunban-button"),
    accountButton: $("account-button"), accountDialog: $("account-dialog"),
    accountClose: $("account-close"), profileForm: $("profile-form"), profileName: $("profile-name"),
    profileNameNote: $("profile-name-note"), profileStatus: $("profile-status"),
    passwordSection: $("password-section"), passwordForm: $("password-form"),
    oldPassword: $("old-password"), newPassword: $("new-password"),
    confirmPassword: $("confirm-password"), devicesList: $("devices-list"),
    downloadButton: $("download-button"), deleteSection: $("delete-section"),
    deleteButton: $("delete-button"), deleteDialog: $("delete-dialog"), deleteForm: $("delete-form"),
    deletePassword: $("delete-password"), deleteCancel: $("delete-cancel"),
  };
}

export function smallButton(label, ariaLabel, onClick, extra = "") {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `small ${extra}`.trim();
  button.textContent = label;
  if (ariaLabel) button.setAttribute("aria-label", ariaLabel);
  button.addEventListener("click", onClick);
  return button;
}
