// Text files sent with a message: picked with the Attach button, dropped onto the composer or
// pasted into it, read here with File.text() and checked against the server's own rules (the
// page's chat-config "attachments": how many, how many characters in all, which extensions;
// chat/attachments.py), shown as chips with an × until sent, then as chips on the sent message.
import { cloneTemplate } from "./common.js";

const number = (n) => n.toLocaleString("en");

/** "812 chars", "12.3k chars": as chat/attachments.py file_chip writes it. */
export function sizeLabel(size) {
  if (size === 1) return "1 char";
  return size < 1000 ? `${size} chars` : `${(size / 1000).toFixed(1)}k chars`;
}

function chip(file, { removable }) {
  const item = cloneTemplate("tpl-file-chip");
  item.title = `${file.name} · ${file.size} characters`;
  item.querySelector(".file-chip-name").textContent = file.name;
  item.querySelector(".file-chip-size").textContent = sizeLabel(file.size);
  const remove = item.querySelector(".file-chip-remove");
  if (removable) remove.setAttribute("aria-label", `Remove ${file.name}`);
  else remove.remove();
  return item;
}

/** The chips of a sent message's files (``[{name, content}]``). */
export function showFiles(article, files) {
  const list = article.querySelector(".msg-files");
  if (!list) return;
  list.replaceChildren(
    ...files.map((f) => chip({ name: f.name, size: f.content.length }, { removable: false })),
  );
  list.hidden = files.length === 0;
}

function isTextName(name, rules) {
  const lower = name.toLowerCase();
  const dot = lower.lastIndexOf(".");
  if (dot <= 0) return rules.names.includes(lower); // "Makefile", or ".env" as a name
  return rules.extensions.includes(lower.slice(dot + 1));
}

/**
 * The composer's files: ``pending()`` the files to send with the next message
 * (``[{name, content}]``, what the API takes), ``clear()`` once they are sent.
 */
export function setupComposerFiles(rules) {
  const list = document.getElementById("composer-files");
  const error = document.getElementById("attach-error");
  const input = document.getElementById("attach-input");
  const button = document.getElementById("attach");
  const zone = document.getElementById("composer-wrap");
  const prompt = document.getElementById("prompt");
  let files = []; // [{ name, content }]
  button.hidden = !rules.max_files;
  // The picker offers what the server takes (and any text/* file, checked by name on adding).
  input.accept = ["text/*", ...rules.extensions.map((e) => `.${e}`)].join(",");

  function paint() {
    list.replaceChildren(
      ...files.map((f, index) => {
        const item = chip({ name: f.name, size: f.content.length }, { removable: true });
        item.dataset.index = String(index);
        return item;
      }),
    );
    list.hidden = files.length === 0;
  }

  function say(problems) {
    error.textContent = problems.join(" ");
    error.hidden = problems.length === 0;
  }

  async function add(picked) {
    const problems = [];
    for (const file of picked) {
      const name = file.name;
      if (!isTextName(name, rules)) {
        problems.push(`“${name}” is not a text file; attach .txt, .md, .csv, .json, code and the like.`);
        continue;
      }
      if (files.length >= rules.max_files) {
        problems.push(`At most ${rules.max_files} files can be sent with a message.`);
        break;
      }
      const used = files.reduce((sum, f) => sum + f.content.length, 0);
      // A character takes 1 to 4 bytes: a file this large cannot fit, so it is not even read.
      if (file.size > rules.max_chars * 4) {
        problems.push(`“${name}” is too big: attached files may have ${number(rules.max_chars)} characters in all.`);
        continue;
      }
      let content;
      try {
        content = await file.text();
      } catch {
        problems.push(`“${name}” could not be read.`);
        continue;
      }
      if (content.includes("\0")) {
        problems.push(`“${name}” is not a text file.`);
      } else if (used + content.length > rules.max_chars) {
        problems.push(
          `“${name}” is too long: ${number(content.length)} characters, and attached files may ` +
            `have ${number(rules.max_chars)} in all${used ? ` (${number(used)} already attached)` : ""}.`,
        );
      } else {
        files.push({ name, content });
      }
    }
    paint();
    say(problems);
  }

  button.addEventListener("click", () => input.click());
  input.addEventListener("change", async () => {
    await add([...input.files]);
    input.value = ""; // the same file may be picked again after removing it
    prompt.focus();
  });

  list.addEventListener("click", (event) => {
    const remove = event.target.closest('[data-action="remove-file"]');
    if (!remove) return;
    files.splice(Number(remove.closest(".file-chip").dataset.index), 1);
    paint();
    say([]);
    prompt.focus();
  });

  prompt.addEventListener("paste", (event) => {
    const pasted = [...(event.clipboardData?.files ?? [])];
    if (!pasted.length) return; // text is pasted as text
    event.preventDefault();
    add(pasted);
  });

  const carriesFiles = (event) => [...(event.dataTransfer?.types ?? [])].includes("Files");
  zone.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    zone.classList.add("is-dropping");
  });
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove("is-dropping");
  });
  zone.addEventListener("drop", (event) => {
    zone.classList.remove("is-dropping");
    if (!carriesFiles(event)) return;
    event.preventDefault();
    add([...event.dataTransfer.files]);
  });
  // A file dropped just beside the composer must not open in the tab, leaving the chat.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => {
      if (carriesFiles(event) && !event.defaultPrevented) {
        event.preventDefault();
        if (event.dataTransfer) event.dataTransfer.dropEffect = "none";
      }
    });
  }

  return {
    pending: () => files.map((f) => ({ ...f })),
    clear() {
      files = [];
      paint();
      say([]);
    },
  };
}
