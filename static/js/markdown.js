// Markdown for messages, rendered safely: raw HTML in a message is shown as text (never as
// markup), the result goes through DOMPurify, links open in a new tab without referrer, and
// images become links (nothing is fetched from elsewhere). Code blocks are highlighted.
import DOMPurify from "../vendor/dompurify/purify.es.js";
import hljs from "../vendor/highlight/highlight.min.js";
import { Marked } from "../vendor/marked/marked.esm.js";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

const SAFE_URL = /^(https?:|mailto:|#|\/(?!\/))/i;

const marked = new Marked({
  gfm: true,
  breaks: true,
  renderer: {
    // Raw HTML (a block or inline tag) is text, exactly as typed.
    html({ text }) {
      return escapeHtml(text);
    },
    code({ text, lang }) {
      const language = (lang || "").trim().split(/\s+/)[0].toLowerCase();
      const known = language && hljs.getLanguage(language);
      const body = known
        ? hljs.highlight(text, { language, ignoreIllegals: true }).value
        : escapeHtml(text);
      const label = escapeHtml(known ? language : language || "text");
      return (
        `<div class="code-block"><div class="code-head"><span>${label}</span></div>` +
        `<pre><code class="hljs${known ? ` language-${label}` : ""}">${body}</code></pre></div>`
      );
    },
    image({ href, text }) {
      const label = escapeHtml(text || href || "image");
      return SAFE_URL.test(href || "") ? `<a href="${escapeHtml(href)}">${label}</a>` : label;
    },
  },
});

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    const href = node.getAttribute("href") || "";
    if (!SAFE_URL.test(href)) node.removeAttribute("href");
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

// Only what the Markdown renderer produces; nothing else survives.
const PURIFY = {
  ALLOWED_TAGS: [
    "a", "b", "blockquote", "br", "code", "del", "div", "em", "h1", "h2", "h3", "h4", "h5",
    "h6", "hr", "i", "input", "li", "ol", "p", "pre", "s", "span", "strong", "sub", "sup",
    "table", "tbody", "td", "th", "thead", "tr", "ul",
  ],
  ALLOWED_ATTR: ["href", "title", "class", "type", "checked", "disabled", "align", "start"],
  ALLOW_DATA_ATTR: false,
};

/** Sanitized HTML for a message's Markdown source. */
export function renderMarkdown(source) {
  try {
    return DOMPurify.sanitize(marked.parse(source ?? ""), PURIFY);
  } catch {
    return escapeHtml(source ?? "");
  }
}

/** Render into an element; code blocks get a copy button (built here, not sanitized). */
export function renderInto(element, source) {
  element.innerHTML = renderMarkdown(source);
  for (const head of element.querySelectorAll(".code-head")) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn btn-sm code-copy";
    button.dataset.action = "copy-code";
    button.textContent = "Copy";
    button.setAttribute("aria-label", "Copy code");
    head.append(button);
  }
}
