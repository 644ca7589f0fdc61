// What an answer is made of: its model, prompt and completion tokens and the time to its first
// token, in a small popover on the "i" button of its meta row (shown on hover and on keyboard
// focus; a tap or a click pins it open, Escape closes it). An answer that max_tokens cut short
// says so, with a "Continue" button (chat.js streams the continuation into the same answer).
//
// The numbers are data attributes of the answer's <article>: rendered by the server for a
// stored answer (chat/ui.py), set from the stream's "done" event for a live one (recordMeta).

let counter = 0;

function formatMs(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

function row(label, value) {
  const item = document.createElement("span");
  item.className = "msg-details-row";
  const name = document.createElement("span");
  name.textContent = label;
  const shown = document.createElement("strong");
  shown.textContent = value;
  item.append(name, shown);
  return item;
}

/** Show what the article's data attributes say: the details button and the cut-off notice. */
export function showMeta(article) {
  const data = article.dataset;
  const cutoff = article.querySelector(".msg-cutoff");
  if (cutoff) cutoff.hidden = data.finishReason !== "length";
  const box = article.querySelector(".msg-details");
  if (!box || !data.model) return;
  const button = box.querySelector('[data-action="details"]');
  const pop = box.querySelector(".msg-details-pop");
  if (!pop.id) pop.id = `msg-details-${++counter}`;
  const rows = [row("Model", data.model)];
  if (data.promptTokens) rows.push(row("Prompt tokens", data.promptTokens));
  if (data.completionTokens) rows.push(row("Completion tokens", data.completionTokens));
  if (data.ttftMs) rows.push(row("Time to first token", formatMs(Number(data.ttftMs))));
  pop.replaceChildren(...rows);
  button.setAttribute("aria-describedby", pop.id);
  box.hidden = false;
}

/** Take an answer's details from its job's "done" event; a continuation adds to them. */
export function recordMeta(article, done) {
  const data = article.dataset;
  const usage = done.usage || {};
  if (done.continued && data.model) {
    if (!usage.completion_tokens) return showMeta(article); // it wrote nothing: as it was
    data.completionTokens = Number(data.completionTokens || 0) + usage.completion_tokens;
    data.promptTokens = usage.prompt_tokens ?? data.promptTokens;
  } else {
    data.model = done.model || "";
    data.promptTokens = usage.prompt_tokens ?? "";
    data.completionTokens = usage.completion_tokens ?? "";
    data.ttftMs = done.ttft_ms ?? "";
  }
  data.finishReason = done.finish_reason || "";
  showMeta(article);
}

// ---------- The popover: hover, focus, tap

function setOpen(box, open, { pinned = false } = {}) {
  const pop = box.querySelector(".msg-details-pop");
  const button = box.querySelector('[data-action="details"]');
  pop.hidden = !open;
  box.dataset.pinned = String(open && pinned);
  button.setAttribute("aria-expanded", String(open));
}

const boxOf = (target) => target?.closest?.(".msg-details");

document.addEventListener("mouseover", (event) => {
  const box = boxOf(event.target);
  if (box && !box.hidden) setOpen(box, true, { pinned: box.dataset.pinned === "true" });
});
document.addEventListener("mouseout", (event) => {
  const box = boxOf(event.target);
  if (!box || box.contains(event.relatedTarget)) return;
  if (box.dataset.pinned !== "true" && !box.contains(document.activeElement)) setOpen(box, false);
});
document.addEventListener("focusin", (event) => {
  const box = boxOf(event.target);
  if (box) setOpen(box, true, { pinned: box.dataset.pinned === "true" });
});
document.addEventListener("focusout", (event) => {
  const box = boxOf(event.target);
  if (box && !box.contains(event.relatedTarget)) setOpen(box, false);
});
document.addEventListener("click", (event) => {
  const button = event.target.closest?.('[data-action="details"]');
  if (!button) return;
  const box = boxOf(button);
  // A tap (or click) pins the details open; another one closes them.
  setOpen(box, box.dataset.pinned !== "true", { pinned: true });
});
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  for (const box of document.querySelectorAll(".msg-details")) {
    if (!box.querySelector(".msg-details-pop").hidden) {
      setOpen(box, false);
      event.preventDefault(); // closing the details is all this Escape does
    }
  }
});

for (const article of document.querySelectorAll(".msg-assistant")) showMeta(article);
