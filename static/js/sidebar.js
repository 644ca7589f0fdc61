// The sidebar's groups and labels: a "Pinned" group on top, then the other conversations, the
// archived ones behind an "Archived (n)" toggle. Each conversation's "More actions" button opens
// Pin/Unpin, Archive/Unarchive and Edit tags (inline, comma-separated) under it, all saved with
// PATCH /api/v1/sessions/{id}. A tag chip filters the list to the conversations with that tag.
// (Rename and delete are app.js's.)
import { api, toast } from "./common.js";

const sidebar = document.getElementById("sidebar");
const pinned = document.getElementById("conv-pinned");
const recent = document.getElementById("conv-list");
const archived = document.getElementById("conv-archived");
const archivedToggle = document.getElementById("archived-toggle");
const filterBar = document.getElementById("tag-filter");
let filterTag = null;

const lists = () => [pinned, recent, archived].filter(Boolean);
const items = () => lists().flatMap((list) => [...list.querySelectorAll(":scope > .conv")]);
const titleOf = (item) => item.querySelector(".conv-link").textContent.trim() || "Untitled chat";
const tagsOf = (item) => [...item.querySelectorAll(".tag-chip")].map((chip) => chip.dataset.tag);
const flag = (item, name) => item.dataset[name] === "true";

/** Labels and ids that name the conversation (its title, its state). */
function decorate(item) {
  const title = titleOf(item);
  const id = item.dataset.sessionId;
  const more = item.querySelector('[data-action="more"]');
  const panel = item.querySelector(".conv-more");
  if (!more || !panel) return;
  panel.id = `conv-more-${id}`;
  more.setAttribute("aria-controls", panel.id);
  more.setAttribute("aria-label", `More actions for ${title}`);
  const pin = panel.querySelector('[data-action="pin"]');
  pin.textContent = flag(item, "pinned") ? "Unpin" : "Pin";
  pin.setAttribute("aria-label", `${pin.textContent} ${title}`);
  const archive = panel.querySelector('[data-action="archive"]');
  archive.textContent = flag(item, "archived") ? "Unarchive" : "Archive";
  archive.setAttribute("aria-label", `${archive.textContent} ${title}`);
  panel.querySelector('[data-action="tags"]').setAttribute("aria-label", `Edit tags of ${title}`);
}

function setTags(item, tags) {
  const box = item.querySelector(".conv-tags");
  box.replaceChildren(
    ...tags.map((tag) => {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "tag-chip";
      chip.dataset.action = "filter-tag";
      chip.dataset.tag = tag;
      chip.textContent = tag;
      chip.setAttribute("aria-label", `Show only conversations tagged ${tag}`);
      return chip;
    }),
  );
  box.hidden = tags.length === 0;
}

/** Each list newest first: put the item where its creation time places it in its group. */
function place(item) {
  const target = flag(item, "archived") ? archived : flag(item, "pinned") ? pinned : recent;
  const created = Number(item.dataset.created || Infinity);
  const after = [...target.querySelectorAll(":scope > .conv")].find(
    (other) => other !== item && Number(other.dataset.created || Infinity) < created,
  );
  target.insertBefore(item, after ?? null);
}

function refresh() {
  const pinnedCount = pinned.querySelectorAll(":scope > .conv").length;
  pinned.hidden = pinnedCount === 0;
  document.getElementById("pinned-label").hidden = pinnedCount === 0;
  const archivedCount = archived.querySelectorAll(":scope > .conv").length;
  document.getElementById("archived-count").textContent = String(archivedCount);
  archivedToggle.hidden = archivedCount === 0;
  if (archivedCount === 0) showArchived(false);
  document.getElementById("conv-empty").hidden =
    pinnedCount + recent.querySelectorAll(":scope > .conv").length > 0;
  for (const item of items()) item.hidden = filterTag !== null && !tagsOf(item).includes(filterTag);
}

function showArchived(open) {
  archived.hidden = !open;
  archivedToggle.setAttribute("aria-expanded", String(open));
}

function setFilter(tag) {
  filterTag = tag;
  filterBar.hidden = tag === null;
  document.getElementById("tag-filter-name").textContent = tag ?? "";
  for (const chip of sidebar.querySelectorAll(".tag-chip")) {
    chip.setAttribute("aria-pressed", String(chip.dataset.tag === tag));
  }
  refresh();
}

function toggleMore(item, open) {
  const more = item.querySelector('[data-action="more"]');
  const panel = item.querySelector(".conv-more");
  if (open) {
    for (const other of items()) if (other !== item) toggleMore(other, false);
  }
  panel.hidden = !open;
  more.setAttribute("aria-expanded", String(open));
  item.classList.toggle("is-open", open);
}

async function update(item, body) {
  const session = await api("PATCH", `/api/v1/sessions/${item.dataset.sessionId}`, body);
  item.dataset.pinned = String(session.pinned);
  item.dataset.archived = String(session.archived);
  setTags(item, session.tags);
  decorate(item);
  return session;
}

async function setFlag(item, name, value) {
  try {
    await update(item, { [name]: value });
  } catch (error) {
    toast(error.message);
    return;
  }
  const title = titleOf(item);
  const news = {
    pinned: value ? `Pinned ${title}` : `Unpinned ${title}`,
    archived: value ? `Archived ${title}` : `Moved ${title} back to the conversations`,
  };
  toggleMore(item, false);
  place(item);
  refresh();
  toast(news[name]);
  // Keep the focus on the conversation, unless it went into the closed archive.
  if (!item.closest("[hidden]")) item.querySelector('[data-action="more"]').focus();
  else archivedToggle.focus();
}

function editTags(item) {
  const panel = item.querySelector(".conv-more");
  if (panel.querySelector(".conv-tags-input")) return;
  const buttons = [...panel.children];
  const input = document.createElement("input");
  input.type = "text";
  input.className = "input conv-tags-input";
  input.value = tagsOf(item).join(", ");
  input.placeholder = "work, ideas";
  input.setAttribute("aria-label", `Tags of ${titleOf(item)}, separated by commas`);
  input.setAttribute("aria-describedby", "conv-tags-help");
  for (const button of buttons) button.hidden = true;
  panel.append(input);
  input.focus();
  input.select();
  let done = false;
  const close = () => {
    done = true;
    input.remove();
    for (const button of buttons) button.hidden = false;
  };
  const save = async () => {
    if (done) return;
    const tags = input.value
      .split(",")
      .map((tag) => tag.trim())
      .filter(Boolean);
    const before = tagsOf(item);
    if (tags.join("\n") === before.join("\n")) {
      close();
      item.querySelector('[data-action="tags"]').focus();
      return;
    }
    try {
      await update(item, { tags });
    } catch (error) {
      toast(error.message, 5000); // the input stays, to fix the tag it names
      input.setAttribute("aria-invalid", "true");
      return;
    }
    close();
    refresh();
    toast(tags.length ? `Tags saved: ${tagsOf(item).join(", ")}` : "Tags removed");
    item.querySelector('[data-action="tags"]').focus();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      save();
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      close();
      item.querySelector('[data-action="tags"]').focus();
    }
  });
}

sidebar?.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  const item = button?.closest(".conv");
  if (!item) return;
  const action = button.dataset.action;
  if (action === "more") toggleMore(item, item.querySelector(".conv-more").hidden);
  else if (action === "pin") setFlag(item, "pinned", !flag(item, "pinned"));
  else if (action === "archive") setFlag(item, "archived", !flag(item, "archived"));
  else if (action === "tags") editTags(item);
  else if (action === "filter-tag") setFilter(filterTag === button.dataset.tag ? null : button.dataset.tag);
});

archivedToggle?.addEventListener("click", () => showArchived(archived.hidden));
document.getElementById("tag-filter-clear")?.addEventListener("click", () => {
  setFilter(null);
  (recent.querySelector(".conv:not([hidden]) .conv-link") || document.getElementById("new-chat")).focus();
});

if (sidebar && recent) {
  for (const item of items()) decorate(item);
  // A conversation that chat.js adds (its first message), or one that app.js renames or deletes.
  new MutationObserver((changes) => {
    for (const change of changes) {
      for (const node of change.addedNodes) if (node.classList?.contains("conv")) decorate(node);
    }
    refresh();
  }).observe(recent, { childList: true });
  document.addEventListener("conversation:renamed", (event) => {
    const item = sidebar.querySelector(`.conv[data-session-id="${event.detail.id}"]`);
    if (item) decorate(item);
  });
  document.addEventListener("conversation:deleted", refresh);
  const help = document.createElement("p");
  help.id = "conv-tags-help";
  help.className = "visually-hidden";
  help.textContent = "Up to 10 tags of 1 to 32 characters. Enter saves, Escape cancels.";
  sidebar.append(help);
}
