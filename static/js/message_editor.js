// Editing a sent message in place: the editor replaces the message's body until it is sent
// (Enter or Send) or cancelled (Escape or Cancel). What sending means (a new branch) is chat.js's.
import { cloneTemplate } from "./common.js";

/** Open the editor on ``article`` with ``text``; ``onSend(content)`` gets the edited text. */
export function openEditor(article, text, onSend) {
  if (article.querySelector(".msg-editor")) return;
  const editor = cloneTemplate("tpl-editor");
  const box = editor.querySelector("textarea");
  box.value = text;
  const body = article.querySelector(".msg-body");
  body.hidden = true;
  body.after(editor);
  const close = () => {
    editor.remove();
    body.hidden = false;
    article.querySelector('[data-action="edit"]')?.focus();
  };
  const send = () => {
    if (box.value.trim()) onSend(box.value);
  };
  editor.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  editor.querySelector('[data-action="edit-cancel"]').addEventListener("click", close);
  box.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      close();
    } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
}
