// The conversation settings panel: the model (chosen before the first message), temperature,
// max tokens, top p and the system prompt, stored as the session's defaults. chat.js owns the
// session; this module reads the form, shows its summary in the header and saves it.
import { api, toast } from "./common.js";

const panel = document.getElementById("settings");
const toggle = document.getElementById("settings-toggle");
const form = document.getElementById("settings-form");
const errorLine = document.getElementById("settings-error");
const model = document.getElementById("set-model");
const temperature = document.getElementById("set-temperature");
const temperatureValue = document.getElementById("set-temperature-value");
const maxTokens = document.getElementById("set-max-tokens");

function open(show) {
  panel.hidden = !show;
  toggle.setAttribute("aria-expanded", String(show));
  if (show) {
    errorLine.hidden = true;
    (form.querySelector("select:not(:disabled)") || temperature).focus();
  } else {
    toggle.focus();
  }
}

function showError(message) {
  errorLine.textContent = message;
  errorLine.hidden = false;
}

function numberOrNull(input, { integer = false } = {}) {
  const raw = input.value.trim();
  input.removeAttribute("aria-invalid");
  if (raw === "") return null;
  const value = Number(raw);
  const min = Number(input.min);
  const max = Number(input.max);
  if (!Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value))) {
    input.setAttribute("aria-invalid", "true");
    throw new Error(`${input.labels[0].textContent.trim()} must be between ${min} and ${max}.`);
  }
  return value;
}

/**
 * Wire the panel. ``getSession``/``setSession`` reach chat.js's session (null until the first
 * message creates it); ``prompt`` is the message box, whose placeholder names the model.
 * Returns ``read`` (the body of a session create or update; throws on a bad value), ``summarise``
 * (refresh the header) and ``lockModel`` (once the session exists its model is fixed).
 */
export function setupSettings({ getSession, setSession, prompt }) {
  function read() {
    const params = { temperature: Number(temperature.value) };
    const tokens = numberOrNull(maxTokens, { integer: true });
    const topP = numberOrNull(document.getElementById("set-top-p"));
    if (tokens !== null) params.max_tokens = tokens;
    if (topP !== null) params.top_p = topP;
    const body = { system_prompt: document.getElementById("set-system-prompt").value, params };
    if (!getSession()) body.model = model.value;
    return body;
  }

  function summarise() {
    const name = getSession()?.model || model.value;
    const parts = [name, `temp ${Number(temperature.value).toFixed(1)}`];
    if (maxTokens.value.trim()) parts.push(`${maxTokens.value.trim()} tokens`);
    document.getElementById("settings-summary").textContent = parts.join(" · ");
    document.getElementById("empty-model").textContent = name;
    prompt.placeholder = `Message ${name}…`;
  }

  function lockModel() {
    model.disabled = true;
    document.getElementById("settings-save").textContent = "Save";
  }

  toggle.addEventListener("click", () => open(panel.hidden));
  document.getElementById("settings-cancel").addEventListener("click", () => open(false));
  panel.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      open(false);
    }
  });
  temperature.addEventListener("input", () => {
    temperatureValue.textContent = Number(temperature.value).toFixed(1);
  });
  model.addEventListener("change", summarise);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let body;
    try {
      body = read();
    } catch (error) {
      showError(error.message);
      return;
    }
    const session = getSession();
    // Without a session yet nothing is saved: the first message creates it with these values.
    if (session) {
      try {
        setSession(await api("PATCH", `/api/v1/sessions/${session.id}`, body));
        toast("Settings saved");
      } catch (error) {
        showError(error.message);
        return;
      }
    }
    summarise();
    open(false);
  });

  return { read, summarise, lockModel };
}
