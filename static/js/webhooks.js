// Webhooks page: add an endpoint (its secret shown once, with a copy button), enable, disable or
// delete one, and show or replace the job-callback secret. All through the webhooks API
// (/api/v1/webhooks) with the session's CSRF token.
import { api, cloneTemplate, confirmDialog, oneTimeSecret, toast } from "./common.js";

const form = document.getElementById("webhook-form");
const urlInput = document.getElementById("webhook-url");
const errorBox = document.getElementById("webhook-error");
const secret = oneTimeSecret(document.getElementById("webhook-secret"), {
  onDone: () => urlInput.focus(),
});
const tbody = document.getElementById("webhooks-body");
const callbackValue = document.getElementById("callback-value");

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function addRow(endpoint) {
  const row = cloneTemplate("tpl-webhook-row");
  row.dataset.endpointId = endpoint.id;
  row.querySelector(".webhook-url").textContent = endpoint.url;
  row.querySelector(".webhook-events").textContent = endpoint.events.join(", ");
  tbody.prepend(row);
  document.getElementById("webhooks-empty").hidden = true;
}

function showStatus(row, active) {
  row.dataset.active = String(active);
  row.querySelector(".webhook-status").innerHTML = active
    ? '<span class="badge badge-success">Active</span>'
    : '<span class="badge badge-muted">Disabled</span>';
  row.querySelector('[data-action="toggle"]').textContent = active ? "Disable" : "Enable";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  errorBox.hidden = true;
  urlInput.removeAttribute("aria-invalid");
  const url = urlInput.value.trim();
  const events = [...form.querySelectorAll('input[name="events"]:checked')].map((box) => box.value);
  if (!url) {
    urlInput.setAttribute("aria-invalid", "true");
    urlInput.focus();
    showError("Give the endpoint's URL.");
    return;
  }
  if (!events.length) {
    showError("Tick at least one event.");
    return;
  }
  const body = { url, events, description: document.getElementById("webhook-description").value };
  const button = document.getElementById("webhook-create");
  button.disabled = true;
  try {
    const endpoint = await api("POST", "/api/v1/webhooks", body);
    addRow(endpoint);
    secret.show(endpoint.secret);
    form.reset();
  } catch (error) {
    showError(error.message);
  } finally {
    button.disabled = false;
  }
});

tbody.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const row = button.closest("tr");
  const path = `/api/v1/webhooks/${encodeURIComponent(row.dataset.endpointId)}`;
  try {
    if (button.dataset.action === "toggle") {
      const active = row.dataset.active !== "true";
      await api("PATCH", path, { is_active: active });
      showStatus(row, active);
      toast(active ? "Endpoint enabled" : "Endpoint disabled");
      return;
    }
    const ok = await confirmDialog({
      title: "Delete this endpoint?",
      text: `${row.querySelector(".webhook-url").textContent} will be sent nothing more, and its deliveries are forgotten.`,
      confirm: "Delete",
    });
    if (!ok) return;
    await api("DELETE", path);
    row.remove();
    document.getElementById("webhooks-empty").hidden = tbody.rows.length > 0;
    toast("Endpoint deleted");
  } catch (error) {
    toast(error.message);
  }
});

async function showCallbackSecret(method, path) {
  try {
    const answer = await api(method, path);
    callbackValue.value = answer.secret;
    callbackValue.focus();
    callbackValue.select();
  } catch (error) {
    toast(error.message);
  }
}

document.getElementById("callback-show").addEventListener("click", () =>
  showCallbackSecret("GET", "/api/v1/webhooks/callback-secret"),
);

document.getElementById("callback-rotate").addEventListener("click", async () => {
  const ok = await confirmDialog({
    title: "Replace the callback secret?",
    text: "Receivers checking callbacks with the old secret will refuse them until they have the new one.",
    confirm: "Replace",
  });
  if (ok) await showCallbackSecret("POST", "/api/v1/webhooks/callback-secret/rotate");
});
