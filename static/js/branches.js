// A conversation's messages form a tree (each message names its parent): an edited message
// and a regenerated answer are siblings of what they replace. The page shows one branch; this
// keeps the whole tree (ids only) so each message can offer "< 2/3 >" between its versions.

export class MessageTree {
  /** rows: [id, parentId] of every message, oldest first. */
  constructor(rows = []) {
    this.parents = new Map();
    this.children = new Map(); // parent id ("" for first messages) -> child ids, oldest first
    for (const [id, parentId] of rows) this.add(id, parentId);
  }

  add(id, parentId) {
    if (!id || this.parents.has(id)) return;
    const key = parentId || "";
    this.parents.set(id, key || null);
    if (!this.children.has(key)) this.children.set(key, []);
    this.children.get(key).push(id);
  }

  /** The versions of a message: it and its siblings, oldest first. */
  versions(id) {
    if (!this.parents.has(id)) return [id];
    return this.children.get(this.parents.get(id) || "") || [id];
  }

  /** The end of the newest branch under a message (itself when nothing follows it). */
  newestLeaf(id) {
    for (let next = this.children.get(id); next?.length; next = this.children.get(id)) {
      id = next[next.length - 1];
    }
    return id;
  }
}

/** Show "< i/n >" on an article whose message has other versions; hide it otherwise. */
export function showVersions(article, tree, { busy = false } = {}) {
  const nav = article.querySelector(".msg-versions");
  const id = article.dataset.messageId;
  const versions = id ? tree.versions(id) : [];
  nav.hidden = versions.length < 2;
  if (nav.hidden) return;
  const index = versions.indexOf(id);
  nav.querySelector(".msg-versions-count").textContent = `${index + 1}/${versions.length}`;
  const [prev, next] = nav.querySelectorAll("button");
  prev.dataset.target = versions[index - 1] || "";
  next.dataset.target = versions[index + 1] || "";
  prev.disabled = busy || index === 0;
  next.disabled = busy || index === versions.length - 1;
  nav.setAttribute("aria-label", `Version ${index + 1} of ${versions.length}`);
}
