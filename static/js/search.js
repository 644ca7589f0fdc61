// Search across the organisation's conversations (GET /api/v1/search): Ctrl+K / Cmd+K or a
// "Search" button opens the dialog; typing searches (debounced), arrow keys move through the
// results, Enter opens one, Esc closes. Stored text is only ever set as text: a snippet is cut
// at the API's match offsets into text nodes and <mark> elements.
//
// On a chat page whose URL ends in #m-<message id> (where a result leads), the message is
// scrolled into view and highlighted for a moment.
import { api } from "./common.js";

const DEBOUNCE_MS = 200;
const MESSAGE_HASH = /^#m-([0-9a-f-]{36})$/;
const ROLES = { user: "You", assistant: "Assistant", system: "System", tool: "Tool" };

const dialog = document.getElementById("search-dialog");
const input = document.getElementById("search-input");
const list = document.getElementById("search-results");
const status = document.getElementById("search-status");
const idleText = status?.textContent ?? "";
const mac = /Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent);

let hits = [];
let active = -1;
let timer = null;
let pending = false; // typed, and the debounce has not searched it yet
let asked = 0; // the latest request's number: an older answer arriving late is dropped
let opener = null;

/** The snippet as nodes: text, with each [start, end) range (in code points) in a <mark>. */
export function highlighted(snippet, ranges) {
  const chars = Array.from(snippet);
  const nodes = [];
  let at = 0;
  for (const [start, end] of ranges) {
    if (start < at || end <= start) continue;
    if (start > at) nodes.push(document.createTextNode(chars.slice(at, start).join("")));
    const mark = document.createElement("mark");
    mark.textContent = chars.slice(start, end).join("");
    nodes.push(mark);
    at = end;
  }
  if (at < chars.length) nodes.push(document.createTextNode(chars.slice(at).join("")));
  return nodes;
}

function hitUrl(hit) {
  const page = `/chat/${hit.session_id}/`;
  if (!hit.message_id) return page;
  return `${page}?message=${hit.message_id}#m-${hit.message_id}`;
}

function when(iso) {
  const date = new Date(iso);
  const sameYear = date.getFullYear() === new Date().getFullYear();
  return date.toLocaleDateString(undefined, {
    day: "numeric",
    month: "short",
    year: sameYear ? undefined : "numeric",
  });
}

function span(className, text) {
  const node = document.createElement("span");
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function resultItem(hit, index) {
  const item = document.createElement("li");
  item.className = "search-hit";
  item.id = `search-hit-${index}`;
  item.setAttribute("role", "option");
  item.setAttribute("aria-selected", "false");
  item.dataset.index = String(index);

  const head = span("search-hit-head");
  head.append(span("search-hit-title", hit.session_title || "Untitled chat"));
  if (hit.archived) head.append(span("badge badge-muted search-hit-badge", "Archived"));
  head.append(span("search-hit-role", hit.message_id ? ROLES[hit.role] || hit.role : "Title"));
  head.append(span("search-hit-date", when(hit.created_at)));
  const text = span("search-hit-snippet");
  text.append(...highlighted(hit.snippet, hit.highlights));
  item.append(head, text);
  return item;
}

function setActive(index) {
  const items = list.children;
  if (active >= 0 && items[active]) items[active].setAttribute("aria-selected", "false");
  active = items.length ? Math.max(0, Math.min(index, items.length - 1)) : -1;
  if (active < 0) {
    input.removeAttribute("aria-activedescendant");
    return;
  }
  items[active].setAttribute("aria-selected", "true");
  input.setAttribute("aria-activedescendant", items[active].id);
  items[active].scrollIntoView({ block: "nearest" });
}

function show(found, query) {
  hits = found;
  list.replaceChildren(...found.map(resultItem));
  list.hidden = found.length === 0;
  input.setAttribute("aria-expanded", String(found.length > 0));
  active = -1;
  setActive(0);
  status.textContent = found.length
    ? `${found.length} result${found.length === 1 ? "" : "s"}`
    : `Nothing found for “${query}”.`;
}

function clear() {
  asked += 1; // an answer still on its way is no longer wanted
  hits = [];
  list.replaceChildren();
  list.hidden = true;
  input.setAttribute("aria-expanded", "false");
  input.removeAttribute("aria-activedescendant");
  active = -1;
  status.textContent = idleText;
}

async function run(query) {
  const number = ++asked;
  status.textContent = "Searching…";
  try {
    const answer = await api("GET", `/api/v1/search?${new URLSearchParams({ q: query })}`);
    if (number === asked) show(answer.data, query);
  } catch (error) {
    if (number === asked) {
      list.replaceChildren();
      list.hidden = true;
      status.textContent = error.message;
    }
  }
}

function scheduleSearch() {
  clearTimeout(timer);
  pending = false;
  const query = input.value.trim();
  if (!query) {
    clear();
    return;
  }
  pending = true;
  timer = setTimeout(() => {
    pending = false;
    run(query);
  }, DEBOUNCE_MS);
}

function open() {
  if (!dialog) return;
  if (dialog.open) {
    input.select();
    return;
  }
  const app = document.getElementById("app");
  if (app?.classList.contains("sidebar-open")) document.getElementById("sidebar-close")?.click();
  opener = document.activeElement;
  dialog.showModal();
  input.focus();
  input.select();
}

function choose(index) {
  const hit = hits[index];
  if (!hit) return;
  const url = hitUrl(hit);
  const here = hit.message_id && document.getElementById(`m-${hit.message_id}`);
  // Already on its page with the message shown: no reload, just go to it (and give it the
  // focus rather than the button that opened the search).
  const stay = here && window.location.pathname === `/chat/${hit.session_id}/`;
  if (stay) opener = null;
  dialog.close();
  if (stay) {
    history.pushState(null, "", url);
    reveal(here);
  } else {
    window.location.assign(url);
  }
}

/** Scroll a message into view and highlight it for a moment. */
function reveal(article) {
  article.scrollIntoView({ block: "center" });
  article.setAttribute("tabindex", "-1");
  article.focus({ preventScroll: true });
  article.classList.remove("is-found");
  void article.offsetWidth; // restart the animation when the same message is found again
  article.classList.add("is-found");
  setTimeout(() => article.classList.remove("is-found"), 2400);
}

function revealFromHash() {
  const match = MESSAGE_HASH.exec(window.location.hash);
  const article = match && document.getElementById(`m-${match[1]}`);
  if (article) reveal(article);
}

if (dialog) {
  for (const kbd of document.querySelectorAll(".search-kbd")) {
    kbd.textContent = mac ? "⌘K" : "Ctrl K";
  }
  for (const button of document.querySelectorAll("[data-search-open]")) {
    button.addEventListener("click", open);
  }
  document.getElementById("search-close").addEventListener("click", () => dialog.close());
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && !event.altKey && event.key.toLowerCase() === "k") {
      event.preventDefault();
      open();
    }
  });
  input.addEventListener("input", scheduleSearch);
  input.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      setActive(active + (event.key === "ArrowDown" ? 1 : -1));
    } else if (event.key === "Home" && event.ctrlKey) {
      setActive(0);
    } else if (event.key === "End" && event.ctrlKey) {
      setActive(hits.length - 1);
    } else if (event.key === "Enter" && !event.isComposing) {
      event.preventDefault();
      if (pending) {
        clearTimeout(timer); // Enter before the debounce ran: search now, open nothing yet
        pending = false;
        run(input.value.trim());
        return;
      }
      choose(active);
    }
  });
  list.addEventListener("click", (event) => {
    const item = event.target.closest(".search-hit");
    if (item) choose(Number(item.dataset.index));
  });
  list.addEventListener("mousemove", (event) => {
    const item = event.target.closest(".search-hit");
    if (item && Number(item.dataset.index) !== active) setActive(Number(item.dataset.index));
  });
  // A click on the backdrop (outside the dialog's box) closes it.
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close();
  });
  dialog.addEventListener("close", () => {
    clearTimeout(timer);
    pending = false;
    if (opener?.isConnected) opener.focus({ preventScroll: true });
  });
}

// Module scripts run in order, before DOMContentLoaded: chat.js has then scrolled its thread
// to the end, and this takes it to the message the URL names.
document.addEventListener("DOMContentLoaded", revealFromHash);
window.addEventListener("hashchange", revealFromHash);
