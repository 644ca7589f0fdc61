// Keyboard shortcuts of every app page (ChatGPT's keys where it has them), the dialog that
// lists them (? or the keyboard button), the theme switch (System / Light / Dark: theme.js
// applies and keeps it) and the desktop sidebar's show/hide.
//
// Ctrl is Cmd on a Mac. Search (Ctrl+K) belongs to search.js, editing the last message to the
// chat page (it listens for "chat:edit-last"); stop (Esc) to chat.js.

const mac = /Mac|iPhone|iPad|iPod/.test(navigator.userAgentData?.platform || navigator.platform || "");
const dialog = document.getElementById("shortcuts-dialog");
const phone = window.matchMedia("(max-width: 767px)");
const theme = window.autoglmTheme;

const withMod = (event) => (mac ? event.metaKey && !event.ctrlKey : event.ctrlKey && !event.metaKey);

function typing(target) {
  return Boolean(target?.closest?.("input, textarea, select, [contenteditable]:not([contenteditable='false'])"));
}

// ---------- The dialog

if (mac) for (const key of document.querySelectorAll("kbd[data-mod]")) key.textContent = "⌘";

function openShortcuts() {
  if (!dialog || dialog.open) return;
  if (document.querySelector("dialog[open]")) return; // one dialog at a time
  for (const row of dialog.querySelectorAll("[data-needs]")) {
    row.hidden = !document.querySelector(row.dataset.needs);
  }
  const opener = document.activeElement;
  dialog.addEventListener("close", () => opener?.isConnected && opener.focus(), { once: true });
  dialog.showModal();
}

document.getElementById("shortcuts-open")?.addEventListener("click", openShortcuts);
dialog?.addEventListener("click", (event) => {
  if (event.target === dialog) dialog.close(); // a click on the backdrop
});

// ---------- Actions

function newChat() {
  window.location.assign(document.getElementById("new-chat")?.getAttribute("href") || "/chat/");
}

function copyLastAnswer() {
  const answers = document.querySelectorAll("#thread .msg-assistant");
  const last = answers[answers.length - 1];
  // Its own Copy button copies the answer's Markdown source, with the page's feedback.
  last?.querySelector('[data-action="copy"]')?.click();
}

function focusPrompt() {
  const prompt = document.getElementById("prompt");
  if (!prompt) return;
  prompt.focus();
  prompt.setSelectionRange(prompt.value.length, prompt.value.length);
}

function toggleSidebar() {
  if (phone.matches) {
    const open = document.getElementById("app")?.classList.contains("sidebar-open");
    document.getElementById(open ? "sidebar-close" : "sidebar-open")?.click();
    return;
  }
  const collapsed = document.documentElement.dataset.sidebar === "collapsed";
  theme?.setSidebar(!collapsed);
  if (!collapsed && document.getElementById("sidebar")?.contains(document.activeElement)) {
    document.getElementById("main")?.focus();
  }
}

// On a desktop with the sidebar hidden, the top bar's menu button shows it again (on a phone it
// opens the drawer: app.js).
document.addEventListener(
  "click",
  (event) => {
    if (phone.matches || document.documentElement.dataset.sidebar !== "collapsed") return;
    if (!event.target.closest?.("#sidebar-open")) return;
    event.stopPropagation();
    theme?.setSidebar(false);
    document.getElementById("new-chat")?.focus();
  },
  true,
);

// ---------- Theme

const switcher = document.getElementById("theme-switch");

function showChoice() {
  const chosen = theme?.choice() || "system";
  for (const input of switcher?.querySelectorAll('input[name="theme"]') || []) {
    input.checked = input.value === chosen;
  }
}

switcher?.addEventListener("change", (event) => theme?.set(event.target.value));
document.addEventListener("theme:changed", showChoice);
showChoice();

function toggleTheme() {
  theme?.set(theme.dark() ? "light" : "dark");
}

// ---------- Keys

const WITH_MOD_SHIFT = { o: newChat, c: copyLastAnswer, s: toggleSidebar, l: toggleTheme };

document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.isComposing || event.altKey) return;
  const key = event.key.toLowerCase();
  if (withMod(event) && event.shiftKey && WITH_MOD_SHIFT[key]) {
    event.preventDefault();
    WITH_MOD_SHIFT[key]();
  } else if (withMod(event) && !event.shiftKey && key === "/") {
    event.preventDefault();
    openShortcuts();
  } else if (event.key === "?" && !event.ctrlKey && !event.metaKey && !typing(event.target)) {
    event.preventDefault();
    openShortcuts();
  } else if (event.key === "Escape" && event.shiftKey && !withMod(event)) {
    if (document.querySelector("dialog[open]")) return;
    event.preventDefault();
    focusPrompt();
  } else if (
    event.key === "ArrowUp" &&
    !event.shiftKey &&
    !event.ctrlKey &&
    !event.metaKey &&
    event.target.id === "prompt" &&
    event.target.value === ""
  ) {
    document.dispatchEvent(new CustomEvent("chat:edit-last"));
  }
});
