// Share links. On the chat page: the "Share" dialog (make a read-only link to the conversation
// as it is now, copy it, revoke earlier ones) over /api/v1/sessions/{id}/shares. On a shared
// page (/share/<token>/): its messages rendered as in the chat, read-only, with copy buttons.
import { api, cloneTemplate, copyWithFeedback, toast } from "./common.js";
import { renderInto } from "./markdown.js";

const when = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

// ---------- The shared page

function sharedPage(thread) {
  // Read-only: the chat's edit button and version arrows (ui/message.html) have no place here.
  for (const control of thread.querySelectorAll('[data-action="edit"], .msg-versions')) {
    control.remove();
  }
  const sources = new WeakMap();
  for (const article of thread.querySelectorAll(".msg")) {
    const body = article.querySelector("[data-md]");
    sources.set(article, body.textContent);
    renderInto(body, body.textContent); // user messages are Markdown too, as in the chat
  }
  thread.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    if (button.dataset.action === "copy") {
      copyWithFeedback(button, sources.get(button.closest(".msg")) ?? "");
    } else if (button.dataset.action === "copy-code") {
      copyWithFeedback(button, button.closest(".code-block").querySelector("code").textContent);
    }
  });
}

// ---------- The chat page's dialog

function shareDialog(dialog, opener) {
  const chat = document.getElementById("chat");
  const links = document.getElementById("share-links");
  const none = document.getElementById("share-none");
  const fresh = document.getElementById("share-new");
  const url = document.getElementById("share-url");
  const error = document.getElementById("share-error");
  const create = document.getElementById("share-create");
  const sessionId = () => chat.dataset.sessionId;

  // A new chat gets its id with its first message (chat.js): only then is there anything to share.
  const showOpener = () => {
    opener.hidden = !sessionId();
  };
  new MutationObserver(showOpener).observe(chat, { attributeFilter: ["data-session-id"] });
  showOpener();

  function showError(message) {
    error.textContent = message;
    error.hidden = !message;
  }

  function row(share) {
    const item = cloneTemplate("tpl-share-link");
    const made = when.format(new Date(share.created_at));
    item.dataset.shareId = share.id;
    const link = item.querySelector(".share-link-url");
    link.href = share.url;
    link.textContent = `Link of ${made}`;
    const count = share.message_count === 1 ? "1 message" : `${share.message_count} messages`;
    item.querySelector(".share-link-meta").textContent = share.shared_by
      ? `${count} · by ${share.shared_by}`
      : count;
    const copy = item.querySelector('[data-action="copy-share"]');
    copy.setAttribute("aria-label", `Copy the link of ${made}`);
    copy.addEventListener("click", () => copyWithFeedback(copy, share.url));
    const revoke = item.querySelector('[data-action="revoke-share"]');
    revoke.setAttribute("aria-label", `Revoke the link of ${made}`);
    revoke.addEventListener("click", () => revokeLink(item, share));
    return item;
  }

  function refreshNone() {
    none.hidden = links.children.length > 0;
  }

  async function load() {
    links.replaceChildren();
    none.hidden = true;
    try {
      const page = await api("GET", `/api/v1/sessions/${sessionId()}/shares?limit=100`);
      links.append(...page.data.filter((share) => !share.revoked_at).map(row));
    } catch (failure) {
      showError(failure.message);
    }
    refreshNone();
  }

  async function createLink() {
    showError("");
    create.disabled = true;
    try {
      const share = await api("POST", `/api/v1/sessions/${sessionId()}/shares`);
      links.prepend(row(share));
      refreshNone();
      url.value = share.url;
      fresh.hidden = false;
      url.focus();
      url.select();
    } catch (failure) {
      showError(failure.message);
    } finally {
      create.disabled = false;
    }
  }

  async function revokeLink(item, share) {
    showError("");
    try {
      await api("DELETE", `/api/v1/shares/${share.id}`);
    } catch (failure) {
      showError(failure.message);
      return;
    }
    const next = item.nextElementSibling || item.previousElementSibling;
    item.remove();
    if (url.value === share.url) {
      url.value = "";
      fresh.hidden = true;
    }
    refreshNone();
    toast("Link revoked: it no longer opens");
    (next?.querySelector('[data-action="revoke-share"]') || create).focus();
  }

  opener.addEventListener("click", () => {
    showError("");
    fresh.hidden = true;
    url.value = "";
    dialog.showModal();
    create.focus();
    load();
  });
  create.addEventListener("click", createLink);
  document.getElementById("share-copy").addEventListener("click", (event) => {
    url.select();
    copyWithFeedback(event.currentTarget, url.value);
  });
  url.addEventListener("focus", () => url.select());
  document.getElementById("share-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => opener.focus());
}

const shared = document.getElementById("shared");
if (shared) sharedPage(shared.querySelector("#thread"));
const dialog = document.getElementById("share-dialog");
const opener = document.getElementById("share-open");
if (dialog && opener) shareDialog(dialog, opener);
