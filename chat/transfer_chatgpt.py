"""ChatGPT's ``conversations.json`` (Settings > Data controls > Export) read into drafts: a
list of conversations, each a ``mapping`` of nodes (a message or null, a parent, children) and
the ``current_node`` shown. Only what a person reads is kept, the tree with it."""

from datetime import datetime

from .models import Message
from .transfer_drafts import (
    DraftConversation,
    DraftMessage,
    check_count,
    checked_text,
    dict_or_empty,
    epoch_time,
    invalid,
    member,
    str_or_none,
)

# ChatGPT's roles that are conversation; system and tool messages are its own machinery.
CHATGPT_ROLES = {"user": Message.Role.USER, "assistant": Message.Role.ASSISTANT}
CHATGPT_TEXT = {"text", "multimodal_text"}


def _chatgpt_message(node: dict, path: str) -> tuple[str, str, datetime | None] | None:
    """(role, text, time) of a node that is conversation; None for anything else: the empty
    root, system and tool messages, hidden ones, tool calls, and content that is not text."""
    message = node.get("message")
    if not isinstance(message, dict):
        return None
    role = CHATGPT_ROLES.get(str_or_none(dict_or_empty(message.get("author")).get("role")))
    metadata = dict_or_empty(message.get("metadata"))
    if role is None or metadata.get("is_visually_hidden_from_conversation"):
        return None
    if message.get("recipient", "all") not in ("all", None):
        return None  # the assistant calling a tool
    content = dict_or_empty(message.get("content"))
    if str_or_none(content.get("content_type")) not in CHATGPT_TEXT:
        return None
    parts = content.get("parts") or []
    text = "\n".join(p for p in parts if isinstance(p, str)) if isinstance(parts, list) else ""
    if not text.strip():
        return None
    when = epoch_time(message.get("create_time"), f"{path}.message.create_time")
    return role, checked_text(text, f"{path}.message.content"), when


def _chatgpt_conversation(raw, path: str) -> DraftConversation:
    if not isinstance(raw, dict):
        raise invalid(f"{path} must be an object.", path)
    mapping = member(raw, "mapping", path, dict, required=True)
    parents, kept = {}, {}
    for key, node in mapping.items():
        where = f"{path}.mapping.{key}"
        if not isinstance(node, dict):
            raise invalid(f"{where} must be an object.", where)
        parent = node.get("parent")
        if parent is not None and (not isinstance(parent, str) or parent not in mapping):
            raise invalid(f"{where}.parent names {parent!r}, which is not in the mapping.", where)
        parents[key] = parent
        if (message := _chatgpt_message(node, where)) is not None:
            kept[key] = message

    _check_rooted(parents, f"{path}.mapping")

    def shown_ancestor(key: str | None) -> str | None:
        """The nearest node at or above ``key`` that is kept: a skipped node's replies hang
        from the message before it."""
        while key is not None and key not in kept:
            key = parents[key]
        return key

    current = str_or_none(raw.get("current_node"))
    return DraftConversation(
        title=checked_text(member(raw, "title", path, str, ""), f"{path}.title"),
        model=member(raw, "default_model_slug", path, str, ""),
        created_at=epoch_time(raw.get("create_time"), f"{path}.create_time"),
        current_key=shown_ancestor(current) if current in mapping else None,
        messages=[
            DraftMessage(key, shown_ancestor(parents[key]), role, text, created_at=when)
            for key, (role, text, when) in kept.items()
        ],
    )


def _check_rooted(parents: dict, path: str) -> None:
    """Every node's parents lead up to a root (no cycle)."""
    rooted = set()
    for start in parents:
        chain, key = set(), start
        while key is not None and key not in rooted:
            if key in chain:
                raise invalid(f"{path} has a cycle of parents (through {key!r}).", path)
            chain.add(key)
            key = parents[key]
        rooted |= chain


def chatgpt_read(conversations: list) -> list[DraftConversation]:
    check_count(len(conversations))
    return [_chatgpt_conversation(c, f"[{i}]") for i, c in enumerate(conversations)]
