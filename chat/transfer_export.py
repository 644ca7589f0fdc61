"""Conversations written out: as JSON in our own versioned schema (every branch, so the tree
comes back whole through ``chat.transfer_import``), or as Markdown (the branch shown), for
people to read. docs/export-format.md describes the JSON."""

import re
from collections.abc import Iterable
from datetime import datetime

from django.utils import timezone
from django.utils.text import slugify

from tenants.models import Tenant

from . import selectors
from .models import ChatSession, Message

FORMAT = "autoglm.conversations"
VERSION = 1
FORMATS = ("json", "markdown")

HEADINGS = {
    Message.Role.USER: "You",
    Message.Role.ASSISTANT: "Assistant",
    Message.Role.SYSTEM: "System",
    Message.Role.TOOL: "Tool",
}


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def message_record(message: Message) -> dict:
    return {
        "id": str(message.id),
        "parent_id": str(message.parent_id) if message.parent_id else None,
        "role": message.role,
        "content": message.content,
        "attachments": message.attachments or [],
        "created_at": _when(message.created_at),
    }


def conversation_record(*, tenant: Tenant, session: ChatSession) -> dict:
    """One conversation of the JSON export: its settings and every message of every branch,
    oldest first."""
    messages = selectors.message_tree(tenant=tenant, session=session)
    return {
        "id": str(session.id),
        "title": session.title,
        "model": session.model,
        "system_prompt": session.system_prompt,
        "params": session.params or {},
        "tags": session.tags or [],
        "pinned": session.pinned,
        "archived": session.archived,
        "created_at": _when(session.created_at),
        "current_message_id": (
            str(session.current_message_id) if session.current_message_id else None
        ),
        "messages": [message_record(m) for m in messages],
    }


def export_document(*, tenant: Tenant, sessions: Iterable[ChatSession]) -> dict:
    """The JSON export of ``sessions`` (the tenant's own)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": _when(timezone.now()),
        "conversations": [conversation_record(tenant=tenant, session=s) for s in sessions],
    }


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text``, so the text cannot end it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def conversation_markdown(*, tenant: Tenant, session: ChatSession) -> str:
    """The branch shown, as Markdown: the title, the model, then each message under a
    ``## You`` or ``## Assistant`` heading; attachments as fenced blocks after their message."""
    lines = [f"# {session.title or 'Untitled chat'}", ""]
    started = timezone.localtime(session.created_at).strftime("%Y-%m-%d %H:%M %Z")
    lines += [f"Model: {session.model} · Started {started}", ""]
    if session.system_prompt:
        lines += ["## System prompt", "", session.system_prompt, ""]
    for message in selectors.message_list(tenant=tenant, session=session):
        lines += [f"## {HEADINGS.get(message.role, message.role.title())}", "", message.content, ""]
        for attachment in message.attachments or []:
            text = str(attachment.get("text", ""))
            fence = _fence(text)
            lines += [f"Attached: {attachment.get('name', 'file')}", "", fence, text, fence, ""]
    return "\n".join(lines).rstrip() + "\n"


def export_markdown(*, tenant: Tenant, sessions: Iterable[ChatSession]) -> str:
    parts = [conversation_markdown(tenant=tenant, session=s) for s in sessions]
    return "\n---\n\n".join(parts) if parts else "No conversations.\n"


def export_filename(*, session: ChatSession | None, tenant: Tenant, file_format: str) -> str:
    """``autoglm-<title>-<date>.json`` for one conversation, ``autoglm-<organisation>-<date>``
    for all of them (``.md`` for Markdown)."""
    title = session.title if session else tenant.slug
    name = slugify(title, allow_unicode=True)[:60] or "conversation"
    day = timezone.now().strftime("%Y%m%d")
    return f"autoglm-{name}-{day}.{'md' if file_format == 'markdown' else 'json'}"
