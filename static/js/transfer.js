// Export and import of conversations: the chat header's Export menu (a menu button: the
// arrows move, Escape closes), the sidebar's Export all (a plain download link) and Import
// (a JSON file, uploaded as is; then the first imported conversation opens).
import { ApiError, csrfToken, toast } from "./common.js";

const FLASH = "autoglm:flash";

// A message to show after the next page load (the import goes to another page).
const flash = sessionStorage.getItem(FLASH);
if (flash) {
  sessionStorage.removeItem(FLASH);
  toast(flash, 4000);
}

// ---------- The Export menu

const menuBox = document.getElementById("export-menu");
const toggle = document.getElementById("export-toggle");
const menu = document.getElementById("export-items");
const chat = document.getElementById("chat");

const items = () => [...menu.querySelectorAll('[role="menuitem"]')];

function pointAtSession() {
  const id = chat?.dataset.sessionId;
  menuBox.hidden = !id;
  for (const item of items()) {
    if (id) item.href = `/api/v1/sessions/${id}/export?format=${item.dataset.format}`;
  }
}

function openMenu(focusIndex = 0) {
  pointAtSession();
  menu.hidden = false;
  toggle.setAttribute("aria-expanded", "true");
  const all = items();
  all.at(focusIndex)?.focus();
}

function closeMenu({ focus = true } = {}) {
  if (menu.hidden) return;
  menu.hidden = true;
  toggle.setAttribute("aria-expanded", "false");
  if (focus) toggle.focus();
}

if (menuBox && toggle && menu) {
  // A new conversation gets its id when its first message is sent (chat.js).
  if (chat) {
    new MutationObserver(pointAtSession).observe(chat, { attributeFilter: ["data-session-id"] });
  }
  pointAtSession();
  toggle.addEventListener("click", () => (menu.hidden ? openMenu() : closeMenu()));
  toggle.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      openMenu(event.key === "ArrowDown" ? 0 : -1);
    }
  });
  menu.addEventListener("keydown", (event) => {
    const all = items();
    const at = all.indexOf(document.activeElement);
    const moves = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: all.length - 1 };
    if (event.key in moves) {
      event.preventDefault();
      all[(moves[event.key] + all.length) % all.length].focus();
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      closeMenu();
    } else if (event.key === " ") {
      event.preventDefault();
      document.activeElement.click();
    }
  });
  menu.addEventListener("click", (event) => {
    if (!event.target.closest('[role="menuitem"]')) return;
    // The link downloads the file (Content-Disposition: attachment); the page stays.
    toast("Downloading the conversation…");
    setTimeout(() => closeMenu(), 0);
  });
  document.addEventListener("click", (event) => {
    if (!menuBox.contains(event.target)) closeMenu({ focus: false });
  });
  // Focus leaving the menu and its button (Tab, a click elsewhere) closes it.
  menuBox.addEventListener("focusout", (event) => {
    if (event.relatedTarget && !menuBox.contains(event.relatedTarget)) {
      closeMenu({ focus: false });
    }
  });
}

// ---------- Import

const importButton = document.getElementById("import-open");
const fileInput = document.getElementById("import-file");

async function upload(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  let response;
  try {
    response = await fetch("/api/v1/import", {
      method: "POST",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
      credentials: "same-origin",
      body: form,
    });
  } catch {
    throw new ApiError("The server could not be reached. Check your connection.", 0, "network");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = data?.error ?? {};
    const where = error.param ? ` (at ${error.param})` : "";
    throw new ApiError(
      `${error.message || `The import failed (HTTP ${response.status}).`}${where}`,
      response.status,
      error.code || "http_error",
    );
  }
  return data;
}

function setBusy(busy) {
  importButton.disabled = busy;
  importButton.setAttribute("aria-busy", String(busy));
  importButton.querySelector(".import-label").textContent = busy ? "Importing…" : "Import";
}

if (importButton && fileInput) {
  importButton.addEventListener("click", () => fileInput.click());
  fileInput.addEventListener("change", async () => {
    const file = fileInput.files?.[0];
    fileInput.value = ""; // the same file may be chosen again
    if (!file) return;
    const limit = Number(fileInput.dataset.maxBytes);
    if (limit && file.size > limit) {
      const megabytes = Math.round(limit / 1048576);
      toast(`That file is larger than the ${megabytes} MB an import takes.`, 6000);
      importButton.focus();
      return;
    }
    setBusy(true);
    try {
      const result = await upload(file);
      const made = result.data;
      const count = made.length === 1 ? "1 conversation" : `${made.length} conversations`;
      sessionStorage.setItem(FLASH, `Imported ${count} from ${file.name}`);
      window.location.assign(`/chat/${made[0].id}/`);
    } catch (error) {
      setBusy(false);
      toast(`Could not import ${file.name}: ${error.message}`, 8000);
      importButton.focus();
    }
  });
}
