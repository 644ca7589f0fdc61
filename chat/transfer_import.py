"""Conversations read in: our own export (``chat.transfer_export``, docs/export-format.md) or
ChatGPT's ``conversations.json`` (``chat.transfer_chatgpt``). Both are read into drafts and
checked whole first; then ``conversations_import`` writes them in one transaction, under new
ids, so a file is imported entirely or not at all, and nothing in it can name (or overwrite)
anything already stored."""

import uuid
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from autoglm_site.errors import first_validation_error
from tenants.models import ApiKey, Tenant

from .models import ChatSession, Message
from .sampling import SamplingInput
from .services import model_check
from .transfer_chatgpt import chatgpt_read
from .transfer_drafts import (
    DraftConversation,
    DraftMessage,
    check_count,
    checked_text,
    invalid,
    iso_time,
    max_messages,
    member,
    str_or_none,
)
from .transfer_export import FORMAT, VERSION

TITLE_MAX = 200
TAGS_MAX, TAG_MAX_CHARS = 20, 64
STEP = timedelta(microseconds=1)  # a reply is stored at least this much after its parent
ROLES = set(Message.Role.values)


def _key(value, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise invalid(f"{path} must be a non-empty string.", path)
    return str(value)


def _params(value: dict, path: str) -> dict:
    sampling = SamplingInput(data=value)
    if not sampling.is_valid():
        param, message = first_validation_error(sampling.errors)
        raise invalid(f"{path}.{param}: {message}", f"{path}.{param}")
    return dict(sampling.validated_data)


def _tags(value: list, path: str) -> list[str]:
    if len(value) > TAGS_MAX:
        raise invalid(f"{path} has more than {TAGS_MAX} tags.", path)
    tags = []
    for index, tag in enumerate(value):
        if not isinstance(tag, str) or not tag.strip() or len(tag) > TAG_MAX_CHARS:
            raise invalid(
                f"{path}[{index}] must be a string of 1 to {TAG_MAX_CHARS} characters.", path
            )
        if tag.strip() not in tags:
            tags.append(checked_text(tag.strip(), f"{path}[{index}]"))
    return tags


def _attachments(value: list, path: str) -> list[dict]:
    kept = []
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, dict):
            raise invalid(f"{where} must be an object with a name and a text.", where)
        name = member(item, "name", where, str, required=True)
        text = member(item, "text", where, str, required=True)
        kept.append(
            {
                "name": checked_text(name, f"{where}.name"),
                "text": checked_text(text, f"{where}.text"),
            }
        )
    return kept


# Our own format.


def _our_message(raw, path: str) -> DraftMessage:
    if not isinstance(raw, dict):
        raise invalid(f"{path} must be an object.", path)
    role = str_or_none(raw.get("role"))
    if role not in ROLES:
        raise invalid(f"{path}.role must be one of {', '.join(sorted(ROLES))}.", f"{path}.role")
    parent = raw.get("parent_id")
    return DraftMessage(
        key=_key(raw.get("id"), f"{path}.id"),
        parent_key=None if parent is None else _key(parent, f"{path}.parent_id"),
        role=role,
        content=checked_text(member(raw, "content", path, str, required=True), f"{path}.content"),
        attachments=_attachments(member(raw, "attachments", path, list, []), f"{path}.attachments"),
        created_at=iso_time(raw.get("created_at"), f"{path}.created_at"),
    )


def _our_conversation(raw, path: str) -> DraftConversation:
    if not isinstance(raw, dict):
        raise invalid(f"{path} must be an object.", path)
    messages = member(raw, "messages", path, list, [])
    current = raw.get("current_message_id")
    return DraftConversation(
        title=checked_text(member(raw, "title", path, str, ""), f"{path}.title"),
        model=member(raw, "model", path, str, ""),
        system_prompt=checked_text(
            member(raw, "system_prompt", path, str, ""), f"{path}.system_prompt"
        ),
        params=_params(member(raw, "params", path, dict, {}), f"{path}.params"),
        tags=_tags(member(raw, "tags", path, list, []), f"{path}.tags"),
        pinned=member(raw, "pinned", path, bool, False),
        archived=member(raw, "archived", path, bool, False),
        created_at=iso_time(raw.get("created_at"), f"{path}.created_at"),
        current_key=None if current is None else _key(current, f"{path}.current_message_id"),
        messages=[_our_message(m, f"{path}.messages[{i}]") for i, m in enumerate(messages)],
    )


def _ours(data: dict) -> list[DraftConversation]:
    version = data.get("version")
    if type(version) is not int or version != VERSION:
        raise invalid(
            f"This server reads version {VERSION} of the {FORMAT} format, not {version!r}.",
            "version",
        )
    conversations = data.get("conversations")
    if not isinstance(conversations, list):
        raise invalid("conversations must be a list.", "conversations")
    check_count(len(conversations))
    return [_our_conversation(c, f"conversations[{i}]") for i, c in enumerate(conversations)]


def _in_order(draft: DraftConversation, path: str, start: datetime) -> None:
    """Check the tree (known parents, no cycles), then put replies after their parents, each
    stored strictly later than its parent: the shown branch is read back by time."""
    by_key = {}
    for index, message in enumerate(draft.messages):
        if message.key in by_key:
            where = f"{path}.messages[{index}].id"
            raise invalid(f"{where}: the id {message.key!r} is used twice.", where)
        by_key[message.key] = message
    for index, message in enumerate(draft.messages):
        if message.parent_key is not None and message.parent_key not in by_key:
            where = f"{path}.messages[{index}].parent_id"
            raise invalid(f"{where} names {message.parent_key!r}, not a message here.", where)
    if draft.current_key is not None and draft.current_key not in by_key:
        where = f"{path}.current_message_id"
        raise invalid(f"{where} names {draft.current_key!r}, not a message here.", where)
    never = datetime.max.replace(tzinfo=UTC)
    ranked = sorted(enumerate(draft.messages), key=lambda p: (p[1].created_at or never, p[0]))
    ordered, placed = [], set()
    for _, message in ranked:
        chain, key = [], message.key
        while key is not None and key not in placed:
            if key in chain:
                raise invalid(f"{path}.messages: the parents form a cycle.", f"{path}.messages")
            chain.append(key)
            key = by_key[key].parent_key
        for key in reversed(chain):
            placed.add(key)
            ordered.append(by_key[key])
    last = start
    for message in ordered:
        when = message.created_at or last + STEP
        if message.parent_key is not None:
            when = max(when, by_key[message.parent_key].created_at + STEP)
        message.created_at = last = when
    draft.messages = ordered


def drafts_read(data) -> list[DraftConversation]:
    """The conversations of an import file (parsed JSON): our export, or ChatGPT's; anything
    wrong with it is a 400 naming where."""
    if isinstance(data, dict) and "format" in data:
        if data["format"] != FORMAT:
            raise invalid(f"Unknown format {data['format']!r}; expected {FORMAT!r}.", "format")
        drafts = _ours(data)
        base = "conversations"
    elif isinstance(data, list) or (isinstance(data, dict) and "mapping" in data):
        drafts = chatgpt_read(data if isinstance(data, list) else [data])
        base = ""
    else:
        raise invalid(
            f'Expected an autoglm export ({{"format": "{FORMAT}", ...}}) or ChatGPT\'s '
            "conversations.json (a list of conversations with a mapping).",
            None,
        )
    total = sum(len(d.messages) for d in drafts)
    if total > max_messages():
        raise invalid(
            f"The file holds {total} messages; an import takes at most {max_messages()}.",
            "conversations",
        )
    now = timezone.now()
    for index, draft in enumerate(drafts):
        draft.title = draft.title.strip()[:TITLE_MAX]
        draft.created_at = draft.created_at or now
        _in_order(draft, f"{base}[{index}]", draft.created_at)
    return drafts


def _model_for(name: str, api_key: ApiKey | None) -> str:
    if name in settings.AUTOGLM_MODELS and (api_key is None or api_key.allows_model(name)):
        return name
    return model_check(model=settings.AUTOGLM_DEFAULT_MODEL, api_key=api_key)


def _restore_times(model, times: dict, batch: int = 500) -> None:
    """Put back the file's times, which ``auto_now_add`` replaced with now at insert: one
    ``UPDATE ... SET created_at = CASE id WHEN ... END`` per batch. (The ORM's ``Case(When(pk=))``
    says the same, but resolving 20 000 ``When`` expressions takes longer than the import.)"""
    quote = connection.ops.quote_name
    pk, column = model._meta.pk, model._meta.get_field("created_at")
    table, pk_name, name = quote(model._meta.db_table), quote(pk.column), quote(column.column)
    items = list(times.items())
    with connection.cursor() as cursor:
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            ids = [pk.get_db_prep_value(key, connection) for key, _ in chunk]
            whens = [column.get_db_prep_value(when, connection) for _, when in chunk]
            cases = " ".join(["WHEN %s THEN %s"] * len(chunk))
            marks = ", ".join(["%s"] * len(chunk))
            cursor.execute(
                f"UPDATE {table} SET {name} = CASE {pk_name} {cases} END "
                f"WHERE {pk_name} IN ({marks})",
                [value for pair in zip(ids, whens, strict=True) for value in pair] + ids,
            )


@transaction.atomic
def conversations_import(
    *, tenant: Tenant, drafts: list[DraftConversation], api_key: ApiKey | None = None
) -> list[ChatSession]:
    """Store ``drafts`` (from ``drafts_read``) as new conversations of ``tenant``, in their
    order: new ids for everything, the file's times, the default model where the file's is not
    one served here (or the key may not use)."""
    sessions, messages, times = [], [], {}
    for draft in drafts:
        session = ChatSession(
            tenant=tenant,
            title=draft.title,
            model=_model_for(draft.model, api_key),
            system_prompt=draft.system_prompt,
            params=draft.params,
            tags=draft.tags,
            pinned=draft.pinned,
            archived=draft.archived,
        )
        ids = {m.key: uuid.uuid4() for m in draft.messages}
        for m in draft.messages:
            messages.append(
                Message(
                    id=ids[m.key],
                    tenant=tenant,
                    session=session,
                    parent_id=ids.get(m.parent_key),
                    role=m.role,
                    content=m.content,
                    attachments=m.attachments,
                )
            )
            times[ids[m.key]] = m.created_at
        # (Foreign keys are checked at commit: the current message is inserted after this.)
        session.current_message_id = ids.get(draft.current_key)
        session.message_count = len(draft.messages)
        sessions.append(session)
        times[session.id] = draft.created_at
    ChatSession.objects.bulk_create(sessions)
    Message.objects.bulk_create(messages, batch_size=1000)
    _restore_times(Message, {m.id: times[m.id] for m in messages})
    _restore_times(ChatSession, {s.id: times[s.id] for s in sessions})
    return sessions
