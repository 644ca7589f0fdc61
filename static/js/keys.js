// API keys page: create a key (its secret is shown once, with a copy button), revoke one after
// confirmation. Both go through the self-service API (/api/v1/keys) with the session's CSRF token.
import { api, cloneTemplate, confirmDialog, oneTimeSecret, toast } from "./common.js";

const form = document.getElementById("key-form");
const nameInput = document.getElementById("key-name");
const errorBox = document.getElementById("key-error");
const secret = oneTimeSecret(document.getElementById("key-secret"), {
  onDone: () => nameInput.focus(),
});
const tbody = document.getElementById("keys-body");

const dateText = (iso) =>
  new Date(iso).toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });

function timeElement(iso) {
  const time = document.createElement("time");
  time.dateTime = iso;
  time.textContent = dateText(iso);
  return time;
}

function addRow(key) {
  const row = cloneTemplate("tpl-key-row");
  row.dataset.keyId = key.id;
  row.querySelector(".key-name").textContent = key.name;
  row.querySelector(".key-masked").textContent = key.masked;
  const created = row.querySelector(".key-created");
  created.dateTime = key.created_at;
  created.textContent = dateText(key.created_at);
  const expires = row.querySelector(".key-expires");
  if (key.expires_at) expires.append(timeElement(key.expires_at));
  else expires.innerHTML = '<span class="muted">Never</span>';
  row.querySelector('[data-action="revoke"]').dataset.name = key.name;
  tbody.prepend(row);
  document.getElementById("keys-empty").hidden = true;
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  errorBox.hidden = true;
  nameInput.removeAttribute("aria-invalid");
  const name = nameInput.value.trim();
  if (!name) {
    nameInput.setAttribute("aria-invalid", "true");
    nameInput.focus();
    showError("Give the key a name.");
    return;
  }
  const expires = document.getElementById("key-expiry").value;
  const body = {
    name,
    allowed_models: [...form.querySelectorAll('input[name="allowed_models"]:checked')].map(
      (box) => box.value,
    ),
  };
  if (expires) body.expires_days = Number(expires);
  const button = document.getElementById("key-create");
  button.disabled = true;
  try {
    const key = await api("POST", "/api/v1/keys", body);
    addRow(key);
    document.getElementById("secret-name").textContent = `“${key.name}”`;
    secret.show(key.key);
    form.reset();
  } catch (error) {
    showError(error.message);
  } finally {
    button.disabled = false;
  }
});

tbody.addEventListener("click", async (event) => {
  const button = event.target.closest('button[data-action="revoke"]');
  if (!button) return;
  const row = button.closest("tr");
  const ok = await confirmDialog({
    title: "Revoke this key?",
    text: `Programs using “${button.dataset.name}” will be refused at once. Revoking cannot be undone.`,
    confirm: "Revoke",
  });
  if (!ok) return;
  try {
    await api("POST", `/api/v1/keys/${encodeURIComponent(row.dataset.keyId)}/revoke`);
  } catch (error) {
    toast(error.message);
    return;
  }
  row.classList.add("is-revoked");
  row.querySelector(".key-status").innerHTML = '<span class="badge badge-danger">Revoked</span>';
  button.remove();
  toast("Key revoked");
});
