// The chat page: send (Enter; Shift+Enter is a new line), stream the answer over SSE from
// /api/v1/jobs/{id}/events, stop it, regenerate it, edit a sent message into a new branch (the
// editor is message_editor.js), move between versions, copy messages, and resume an answer still
// being generated when the page is (re)loaded. The settings panel is settings_panel.js.
import { MessageTree, showVersions } from "./branches.js";
import { setupComposerFiles, showFiles } from "./attachments.js";
import { api, cloneTemplate, copyWithFeedback, toast } from "./common.js";
import { renderInto } from "./markdown.js";
import { recordMeta } from "./answer_meta.js";
import { openEditor } from "./message_editor.js";
import { setupSettings } from "./settings_panel.js";

const config = JSON.parse(document.getElementById("chat-config").textContent);
const chat = document.getElementById("chat");
const thread = document.getElementById("thread");
const scroller = document.getElementById("messages");
const emptyState = document.getElementById("empty");
const composer = document.getElementById("composer");
const prompt = document.getElementById("prompt");
const sendButton = document.getElementById("send");
const stopButton = document.getElementById("stop");

const composerFiles = setupComposerFiles(config.attachments);

let session = config.session; // null on a new chat, until its first message creates it
let current = null; // the answer in progress: { article, jobId, source, stream, ... }
const sources = new WeakMap(); // message article -> its text (what "Copy" copies)
const tree = new MessageTree(config.tree);
const settings = setupSettings({
  getSession: () => session,
  setSession: (updated) => {
    session = updated;
  },
  prompt,
});

// ---------- Layout helpers

let stickToBottom = true;
scroller.addEventListener("scroll", () => {
  stickToBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 96;
});

function toBottom(force = false) {
  if (force || stickToBottom) scroller.scrollTop = scroller.scrollHeight;
}

function autosize() {
  prompt.style.height = "auto";
  prompt.style.height = `${Math.min(prompt.scrollHeight, window.innerHeight * 0.4)}px`;
}

function setBusy(busy) {
  const hadFocus = document.activeElement === sendButton || document.activeElement === stopButton;
  sendButton.hidden = busy;
  stopButton.hidden = !busy;
  stopButton.disabled = false;
  chat.dataset.busy = String(busy);
  if (hadFocus) (busy ? stopButton : prompt).focus();
  refreshActions();
}

function setTitles(title) {
  const shown = title || "Untitled chat";
  document.getElementById("chat-title").textContent = shown;
  const topbar = document.querySelector(".topbar-title");
  if (topbar) topbar.textContent = shown;
  document.title = `${shown} · autoglm`;
}

// ---------- Messages

function addUserMessage(content, parentId, files = []) {
  const article = cloneTemplate("tpl-user");
  article.dataset.parentId = parentId || "";
  renderInto(article.querySelector(".msg-body"), content);
  showFiles(article, files);
  sources.set(article, content);
  thread.append(article);
  emptyState.hidden = true;
  return article;
}

function addAssistantMessage() {
  const article = cloneTemplate("tpl-assistant");
  sources.set(article, "");
  thread.append(article);
  emptyState.hidden = true;
  toBottom(true);
  return article;
}

/** queued | sending | generating: in progress; done | stopped | error: ended. */
function setState(article, state, statusText = "") {
  article.dataset.state = state;
  const status = article.querySelector(".msg-status");
  status.textContent = statusText;
  status.hidden = !statusText;
  const body = article.querySelector(".msg-body");
  const busy = ["queued", "sending", "generating"].includes(state);
  body.setAttribute("aria-live", "polite");
  body.setAttribute("aria-busy", String(busy));
}

function showError(article, message, retry) {
  article.querySelector(".msg-error")?.remove();
  const box = cloneTemplate("tpl-error");
  box.querySelector(".msg-error-text").textContent = message;
  box.querySelector('[data-action="retry"]').addEventListener("click", () => {
    box.remove();
    retry();
  });
  article.querySelector(".msg-meta").before(box);
  toBottom();
}

/** A message's id, once the server has it: its anchor, and its place in the tree. */
function identify(article, id, parentId) {
  if (!id) return;
  article.dataset.messageId = id;
  article.id = `m-${id}`;
  tree.add(id, parentId);
}

/** The last message shown that the server stored: what the next message follows. */
function lastMessageId() {
  const stored = thread.querySelectorAll(".msg[data-message-id]");
  return stored.length ? stored[stored.length - 1].dataset.messageId : null;
}

/** Only the last answer offers "Regenerate", and only while nothing is generating. */
function refreshActions() {
  for (const article of thread.querySelectorAll(".msg")) {
    showVersions(article, tree, { busy: Boolean(current) });
    const edit = article.querySelector('[data-action="edit"]');
    if (edit) edit.disabled = Boolean(current) || !article.dataset.messageId;
  }
  for (const button of thread.querySelectorAll('[data-action="regenerate"]')) button.remove();
  const last = thread.lastElementChild;
  if (!last || current || !session) return;
  if (last.dataset.role === "assistant" && last.dataset.state !== "error") {
    last.querySelector(".msg-meta").append(cloneTemplate("tpl-regenerate"));
  } else if (last.dataset.role === "user") {
    // Its answer was stopped before a word or is missing: offer to answer again.
    const button = cloneTemplate("tpl-regenerate");
    button.setAttribute("aria-label", "Answer this message again");
    last.querySelector(".msg-meta").append(button);
  }
}

// ---------- Streaming an answer

function follow(answer, jobId) {
  answer.jobId = jobId;
  answer.article.dataset.jobId = jobId;
  if (answer.stopRequested) stop();
  setState(answer.article, "queued", "Waiting for a worker…");
  pollQueue(answer);
  // Same origin, so the session cookie goes along. The stream replays the job from its start,
  // and EventSource resumes after the last event id by itself if the connection drops.
  const stream = new EventSource(`/api/v1/jobs/${encodeURIComponent(jobId)}/events`);
  answer.stream = stream;
  stream.addEventListener("token", (event) => {
    answer.source += JSON.parse(event.data).text;
    if (!answer.started) {
      answer.started = true;
      clearTimeout(answer.poll);
      if (!answer.stopping) setState(answer.article, "generating", "Generating…");
    }
    scheduleRender(answer);
  });
  stream.addEventListener("reset", () => {
    // The job was restarted on another worker: its answer starts over (a continuation, from
    // the text it continues).
    answer.source = answer.base ?? "";
    scheduleRender(answer);
  });
  stream.addEventListener("done", (event) => finish(answer, JSON.parse(event.data)));
  stream.addEventListener("error", (event) => {
    if (event.data) {
      failed(answer, JSON.parse(event.data)); // the job failed: an "error" event of the stream
    } else if (stream.readyState === EventSource.CLOSED) {
      lost(answer); // refused (e.g. signed out) or gone: EventSource gives up
    } else if (!answer.done) {
      setState(answer.article, answer.article.dataset.state, "Connection lost, reconnecting…");
    }
  });
  stream.addEventListener("open", () => {
    if (answer.done) return;
    const state = answer.article.dataset.state;
    if (state === "generating") setState(answer.article, state, "Generating…");
  });
}

async function pollQueue(answer) {
  if (answer.started || answer.done) return;
  try {
    const state = await api("GET", `/ui/jobs/${encodeURIComponent(answer.jobId)}/state`);
    if (answer.started || answer.done || answer.stopping) return;
    if (state.status === "queued") {
      const where = state.queue_position ? ` (position ${state.queue_position} in line)` : "";
      setState(answer.article, "queued", `Queued${where}`);
    } else if (state.status === "running") {
      setState(answer.article, "generating", "Generating…");
    }
  } catch {
    // The stream says how it ends; the queue position is only a hint.
  }
  if (!answer.started && !answer.done) answer.poll = setTimeout(() => pollQueue(answer), 1000);
}

function scheduleRender(answer) {
  if (answer.frame) return;
  answer.frame = requestAnimationFrame(() => {
    answer.frame = 0;
    paint(answer);
  });
}

function paint(answer) {
  renderInto(answer.article.querySelector(".msg-body"), answer.source);
  sources.set(answer.article, answer.source);
  toBottom();
}

function settle(answer) {
  answer.done = true;
  answer.stream?.close();
  clearTimeout(answer.poll);
  if (answer.frame) cancelAnimationFrame(answer.frame);
  answer.frame = 0;
  paint(answer);
  if (current === answer) current = null;
  setBusy(false);
}

function finish(answer, data) {
  if (answer.done) return;
  const article = answer.article;
  identify(article, data.message_id, answer.questionId);
  settle(answer);
  if (data.status === "cancelled") {
    setState(article, "stopped", answer.source ? "" : "Stopped before any answer was written.");
    article.querySelector(".msg-stopped").hidden = false;
  } else {
    setState(article, "done");
  }
  recordMeta(article, data);
  refreshActions();
}

function failed(answer, data) {
  if (answer.done) return;
  settle(answer);
  setState(answer.article, "error");
  const retry = answer.retry || regenerate;
  showError(answer.article, data.error?.message || "The answer failed.", () => retry());
  refreshActions();
}

function lost(answer) {
  if (answer.done) return;
  const { article, jobId } = answer;
  settle(answer);
  setState(article, "error");
  refreshActions();
  showError(article, "Lost the connection to the answer.", () => {
    // Follow the same job again from its start (the stream replays it).
    const again = { article, source: answer.base ?? "", base: answer.base, retry: answer.retry };
    current = again;
    setBusy(true);
    follow(again, jobId);
  });
}

// ---------- Sending, stopping, regenerating

async function ensureSession(content) {
  if (session) return session;
  const firstLine = content.trim().split("\n")[0];
  const title = firstLine.length > 60 ? `${firstLine.slice(0, 57).trimEnd()}…` : firstLine;
  session = await api("POST", "/api/v1/sessions", { title, ...settings.read() });
  history.replaceState(null, "", `/chat/${session.id}/`);
  chat.dataset.sessionId = session.id;
  setTitles(session.title);
  addToSidebar(session);
  settings.lockModel();
  return session;
}

function addToSidebar(created) {
  const list = document.getElementById("conv-list");
  for (const item of list.querySelectorAll(".conv.is-current")) {
    item.classList.remove("is-current");
    item.querySelector(".conv-link").removeAttribute("aria-current");
  }
  const item = cloneTemplate("tpl-conv");
  const shown = created.title || "Untitled chat";
  item.dataset.sessionId = created.id;
  item.classList.add("is-current");
  const link = item.querySelector(".conv-link");
  link.href = `/chat/${created.id}/`;
  link.textContent = shown;
  link.setAttribute("aria-current", "page");
  item.querySelector('[data-action="rename"]').setAttribute("aria-label", `Rename ${shown}`);
  item.querySelector('[data-action="delete"]').setAttribute("aria-label", `Delete ${shown}`);
  list.prepend(item);
  document.getElementById("conv-empty").hidden = true;
}

/** Post a message after ``parentId`` (null: a first message), then follow its answer. */
async function submit(answer, question, content, parentId, files = []) {
  try {
    await ensureSession(content.trim() ? content : files[0]?.name ?? "");
    const body = { content, parent_id: parentId };
    if (files.length) body.attachments = files;
    const job = await api("POST", `/api/v1/sessions/${session.id}/messages`, body);
    identify(question, job.user_message_id, parentId);
    answer.questionId = job.user_message_id;
    follow(answer, job.id);
  } catch (error) {
    // Refused before anything was stored (quota, rate limit, network): retry sends it again.
    settle(answer);
    setState(answer.article, "error");
    refreshActions();
    showError(answer.article, error.message, () => {
      const again = begin(answer.article);
      submit(again, question, content, parentId, files);
    });
  }
}

function begin(article, source = "") {
  const answer = { article, source, base: source, jobId: null };
  current = answer;
  setState(article, "sending", "Sending…");
  setBusy(true);
  return answer;
}

function send() {
  const content = prompt.value;
  const files = composerFiles.pending();
  if (current || (!content.trim() && !files.length)) return;
  prompt.value = "";
  autosize();
  composerFiles.clear();
  // What is on screen is what the model sees: the message follows the last one shown.
  const parentId = lastMessageId();
  const question = addUserMessage(content, parentId, files);
  submit(begin(addAssistantMessage()), question, content, parentId, files);
}

// ---------- Editing a sent message (a new branch) and moving between versions

function edit(article) {
  if (current || !article.dataset.messageId) return;
  openEditor(article, sources.get(article) ?? "", (content) => {
    if (current) return;
    // The edited message is a sibling of the original: the branch from here on is new.
    const parentId = article.dataset.parentId || null;
    let next = article;
    while (next) {
      const after = next.nextElementSibling;
      next.remove();
      next = after;
    }
    const question = addUserMessage(content, parentId);
    submit(begin(addAssistantMessage()), question, content, parentId);
  });
}

document.addEventListener("chat:edit-last", () => {
  const users = thread.querySelectorAll('.msg-user[data-message-id]');
  if (users.length) edit(users[users.length - 1]);
});

/** Show another version of a message: the newest branch through it becomes the current one. */
async function showVersion(target) {
  if (current || !target || !session) return;
  try {
    await api("PATCH", `/api/v1/sessions/${session.id}`, {
      current_message_id: tree.newestLeaf(target),
    });
    window.location.assign(`/chat/${session.id}/?message=${target}#m-${target}`);
  } catch (error) {
    toast(error.message);
  }
}

async function stop() {
  const answer = current;
  if (!answer) return;
  if (!answer.jobId) {
    answer.stopRequested = true; // the job is being created: cancel it as soon as it exists
    return;
  }
  answer.stopping = true;
  stopButton.disabled = true;
  setState(answer.article, answer.article.dataset.state, "Stopping…");
  try {
    await api("POST", `/api/v1/jobs/${encodeURIComponent(answer.jobId)}/cancel`);
    // The stream's "done" event (status "cancelled") ends the answer, partial text kept.
  } catch (error) {
    answer.stopping = false;
    stopButton.disabled = false;
    toast(error.message);
  }
}

async function regenerate() {
  if (current || !session) return;
  const articles = [...thread.querySelectorAll(".msg")];
  const lastUser = articles.findLastIndex((article) => article.dataset.role === "user");
  const questionId = articles[lastUser]?.dataset.messageId || null;
  // The answers shown stay stored, as earlier versions of the new one.
  for (const article of articles.slice(lastUser + 1)) article.remove();
  const answer = begin(addAssistantMessage());
  answer.questionId = questionId;
  try {
    const job = await api("POST", `/api/v1/sessions/${session.id}/regenerate`, {
      message_id: questionId,
    });
    follow(answer, job.id);
  } catch (error) {
    settle(answer);
    setState(answer.article, "error");
    refreshActions();
    showError(answer.article, error.message, () => regenerate());
  }
}

/** Write more of an answer cut by max_tokens: the new text streams in after the old. */
async function continueAnswer(article) {
  if (current || !session || !article.dataset.messageId) return;
  const answer = begin(article, sources.get(article) ?? "");
  answer.retry = () => continueAnswer(article);
  article.querySelector(".msg-stopped").hidden = true;
  const url = `/api/v1/sessions/${session.id}/messages/${article.dataset.messageId}/continue`;
  try {
    const job = await api("POST", url);
    follow(answer, job.id);
  } catch (error) {
    settle(answer);
    setState(article, "done");
    refreshActions();
    toast(error.message);
  }
}

composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});

prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
    event.preventDefault();
    send();
  }
});
prompt.addEventListener("input", autosize);

stopButton.addEventListener("click", stop);

document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || !current || event.defaultPrevented) return;
  if (document.querySelector("dialog[open]") || !document.getElementById("settings").hidden) return;
  if (document.getElementById("app").classList.contains("sidebar-open")) return;
  stop();
});

thread.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const article = button.closest(".msg");
  if (button.dataset.action === "copy") {
    copyWithFeedback(button, sources.get(article) ?? "");
  } else if (button.dataset.action === "copy-code") {
    const code = button.closest(".code-block").querySelector("code");
    copyWithFeedback(button, code.textContent);
  } else if (button.dataset.action === "regenerate") {
    regenerate();
  } else if (button.dataset.action === "edit") {
    edit(article);
  } else if (button.dataset.action.startsWith("version-")) {
    showVersion(button.dataset.target);
  } else if (button.dataset.action === "continue") {
    continueAnswer(article);
  }
});

document.addEventListener("conversation:renamed", (event) => {
  if (session && event.detail.id === session.id) {
    session.title = event.detail.title;
    setTitles(event.detail.title);
  }
});

// ---------- Start

for (const article of thread.querySelectorAll(".msg")) {
  const body = article.querySelector("[data-md]");
  const source = body.textContent;
  sources.set(article, source);
  renderInto(body, source);
}

settings.summarise();
if (config.active_job) {
  // An answer was being generated when the page (re)loaded: follow it from its start (more of
  // an answer: into that answer, after its text as stored before the job began).
  const id = config.active_job.continued_message_id;
  const continued = id && thread.querySelector(`.msg[data-message-id="${CSS.escape(id)}"]`);
  const answer = continued ? begin(continued, sources.get(continued)) : begin(addAssistantMessage());
  if (continued) answer.retry = () => continueAnswer(continued);
  answer.questionId = config.active_job.user_message_id;
  follow(answer, config.active_job.id);
} else if (config.failed_job?.continued_message_id) {
  // Writing more of an answer failed: the answer stays as it was, with the error under it.
  const id = config.failed_job.continued_message_id;
  const article = thread.querySelector(`.msg[data-message-id="${CSS.escape(id)}"]`);
  if (article) showError(article, config.failed_job.error.message, () => continueAnswer(article));
} else if (config.failed_job) {
  const article = addAssistantMessage();
  setState(article, "error");
  showError(article, config.failed_job.error.message, () => regenerate());
}
refreshActions();
const linked = window.location.hash.startsWith("#m-") && document.getElementById(window.location.hash.slice(1));
if (linked) linked.scrollIntoView({ block: "center" });
else toBottom(true);
if (!window.matchMedia("(max-width: 767px)").matches) prompt.focus();
