// The app shell: the sidebar (open and close on phones) and its conversations (rename inline,
// delete after confirmation). Chat pages listen for "conversation:renamed" and
// "conversation:deleted" to keep their header in step.
import { api, confirmDialog, toast } from "./common.js";

const app = document.getElementById("app");
const sidebar = document.getElementById("sidebar");
const openButton = document.getElementById("sidebar-open");
const closeButton = document.getElementById("sidebar-close");
const scrim = document.getElementById("scrim");
const list = document.getElementById("conv-list");
const phone = window.matchMedia("(max-width: 767px)");

function setSidebar(open, { focus = true } = {}) {
  app.classList.toggle("sidebar-open", open);
  scrim.hidden = !open;
  // While the drawer is open on a phone, the page behind it is out of reach (and of the tab order).
  document.getElementById("main").inert = open;
  document.querySelector(".topbar").inert = open;
  openButton.setAttribute("aria-expanded", String(open));
  if (open && focus) {
    (sidebar.querySelector('[aria-current="page"]') || document.getElementById("new-chat")).focus();
  } else if (!open && focus && sidebar.contains(document.activeElement)) {
    openButton.focus();
  }
}

openButton?.addEventListener("click", () => setSidebar(true));
closeButton?.addEventListener("click", () => setSidebar(false));
scrim?.addEventListener("click", () => setSidebar(false));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && app.classList.contains("sidebar-open")) {
    event.preventDefault();
    setSidebar(false);
  }
});
phone.addEventListener("change", () => setSidebar(false, { focus: false }));

const titleOf = (item) => item.querySelector(".conv-link").textContent.trim();

function setTitle(item, title) {
  const shown = title || "Untitled chat";
  item.querySelector(".conv-link").textContent = shown;
  item.querySelector('[data-action="rename"]').setAttribute("aria-label", `Rename ${shown}`);
  item.querySelector('[data-action="delete"]').setAttribute("aria-label", `Delete ${shown}`);
}

function startRename(item) {
  if (item.querySelector(".conv-rename")) return;
  const link = item.querySelector(".conv-link");
  const actions = item.querySelector(".conv-actions");
  const before = titleOf(item);
  const input = document.createElement("input");
  input.type = "text";
  input.className = "input conv-rename";
  input.maxLength = 200;
  input.value = before === "Untitled chat" ? "" : before;
  input.setAttribute("aria-label", "New name of the conversation");
  link.hidden = true;
  actions.hidden = true;
  item.prepend(input);
  input.focus();
  input.select();
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    input.remove();
    link.hidden = false;
    actions.hidden = false;
    if (!save || title === before) {
      link.focus();
      return;
    }
    try {
      await api("PATCH", `/api/v1/sessions/${item.dataset.sessionId}`, { title });
      setTitle(item, title);
      document.dispatchEvent(
        new CustomEvent("conversation:renamed", { detail: { id: item.dataset.sessionId, title } }),
      );
      toast("Conversation renamed");
    } catch (error) {
      toast(error.message);
    }
    link.focus();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      finish(true);
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
}

async function deleteConversation(item) {
  const ok = await confirmDialog({
    title: "Delete this conversation?",
    text: `"${titleOf(item)}" and all its messages will be deleted. This cannot be undone.`,
    confirm: "Delete",
  });
  if (!ok) return;
  try {
    await api("DELETE", `/api/v1/sessions/${item.dataset.sessionId}`);
  } catch (error) {
    toast(error.message);
    return;
  }
  const wasCurrent = item.classList.contains("is-current");
  const next = item.nextElementSibling || item.previousElementSibling;
  item.remove();
  document.getElementById("conv-empty").hidden = list.children.length > 0;
  document.dispatchEvent(
    new CustomEvent("conversation:deleted", { detail: { id: item.dataset.sessionId } }),
  );
  if (wasCurrent) {
    window.location.assign("/chat/");
    return;
  }
  toast("Conversation deleted");
  (next?.querySelector(".conv-link") || document.getElementById("new-chat")).focus();
}

// On the sidebar: its conversations are in several lists (pinned, the others, archived).
sidebar?.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  const item = button?.closest(".conv");
  if (!item) return;
  if (button.dataset.action === "rename") startRename(item);
  if (button.dataset.action === "delete") deleteConversation(item);
});

sidebar?.addEventListener("keydown", (event) => {
  // F2 renames the focused conversation, Delete deletes it (as in file managers).
  const item = event.target.closest?.(".conv");
  if (!item || event.target.matches("input, textarea")) return;
  if (event.key === "F2") {
    event.preventDefault();
    startRename(item);
  } else if (event.key === "Delete") {
    event.preventDefault();
    deleteConversation(item);
  }
});

export { setTitle };
