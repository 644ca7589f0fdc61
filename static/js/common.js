// Shared helpers of the UI's modules: the API client (session cookie + CSRF token), toasts,
// the confirmation dialog and the clipboard.

export class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]')?.content ?? "";
}

/** Call the JSON API as the signed-in user; errors arrive in the API's one shape. */
export async function api(method, url, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError("The server could not be reached. Check your connection.", 0, "network");
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    // not JSON: fall through with a generic message
  }
  if (!response.ok) {
    const error = data?.error ?? {};
    throw new ApiError(
      error.message || `The request failed (HTTP ${response.status}).`,
      response.status,
      error.code || "http_error",
    );
  }
  return data;
}

/** A short message in the polite live region at the bottom of the page. */
export function toast(message, ms = 2600) {
  const box = document.getElementById("toasts");
  if (!box) return;
  const item = document.createElement("div");
  item.className = "toast";
  item.textContent = message;
  box.append(item);
  setTimeout(() => item.remove(), ms);
}

/** Ask before something destructive; resolves true when confirmed. */
export function confirmDialog({ title, text, confirm = "Delete" }) {
  const dialog = document.getElementById("confirm-dialog");
  if (!dialog?.showModal) return Promise.resolve(window.confirm(`${title}\n\n${text}`));
  dialog.querySelector("#confirm-title").textContent = title;
  dialog.querySelector("#confirm-text").textContent = text;
  dialog.querySelector("#confirm-ok").textContent = confirm;
  dialog.returnValue = "cancel";
  const opener = document.activeElement;
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        resolve(dialog.returnValue === "confirm");
        if (opener?.isConnected) opener.focus();
      },
      { once: true },
    );
    dialog.showModal();
  });
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Older browsers, or no permission: the selection fallback.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}

/** Copy, then show a check mark on the button for a moment. */
export async function copyWithFeedback(button, text) {
  const ok = await copyText(text);
  toast(ok ? "Copied to the clipboard" : "Could not copy: select the text and copy it");
  if (ok && button) {
    button.classList.add("is-done");
    setTimeout(() => button.classList.remove("is-done"), 1500);
  }
  return ok;
}

/**
 * The box that shows a new secret once (#secret-value, #secret-copy, #secret-done): `show(secret)`
 * puts it up; Done clears it from the page, for good, and calls `onDone`.
 */
export function oneTimeSecret(box, { onDone }) {
  const value = document.getElementById("secret-value");
  document.getElementById("secret-copy").addEventListener("click", (event) => {
    value.select();
    copyWithFeedback(event.currentTarget, value.value);
  });
  value.addEventListener("focus", () => value.select());
  document.getElementById("secret-done").addEventListener("click", () => {
    value.value = "";
    box.hidden = true;
    onDone();
  });
  return {
    show(secret) {
      value.value = secret;
      box.hidden = false;
      box.focus();
    },
  };
}

export function cloneTemplate(id) {
  return document.getElementById(id).content.firstElementChild.cloneNode(true);
}
