"""What an import file is read into before anything is stored (``chat.transfer_import`` for
our own format, ``chat.transfer_chatgpt`` for ChatGPT's), with the readers of its values: each
wrong value is refused with the path of where it is in the file."""

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from autoglm_site.errors import ApplicationError, InvalidRequestError

EARLIEST, LATEST = datetime(1900, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)


def max_bytes() -> int:
    return settings.AUTOGLM_IMPORT_MAX_BYTES


def max_conversations() -> int:
    return settings.AUTOGLM_IMPORT_MAX_CONVERSATIONS


def max_messages() -> int:
    return settings.AUTOGLM_IMPORT_MAX_MESSAGES


class ImportTooLargeError(ApplicationError):
    status_code = 413
    code = "request_too_large"


def too_large() -> ImportTooLargeError:
    megabytes = max_bytes() / (1024 * 1024)
    return ImportTooLargeError(f"The file is larger than the {megabytes:g} MB an import takes.")


def invalid(message: str, path: str | None) -> InvalidRequestError:
    return InvalidRequestError(message, param=path or None, code="invalid_import")


@dataclass
class DraftMessage:
    key: str  # its id in the file: only links its replies to it
    parent_key: str | None
    role: str
    content: str
    attachments: list = field(default_factory=list)
    created_at: datetime | None = None


@dataclass
class DraftConversation:
    title: str = ""
    model: str = ""
    system_prompt: str = ""
    params: dict = field(default_factory=dict)
    tags: list = field(default_factory=list)
    pinned: bool = False
    archived: bool = False
    created_at: datetime | None = None
    current_key: str | None = None
    messages: list[DraftMessage] = field(default_factory=list)


KINDS = {str: "a string", list: "a list", dict: "an object", bool: "true or false"}


def dict_or_empty(value) -> dict:
    return value if isinstance(value, dict) else {}


def str_or_none(value) -> str | None:
    return value if isinstance(value, str) else None


def member(obj: dict, key: str, path: str, kind: type, default=None, *, required=False):
    value = obj.get(key, default)
    if value is None and not required:
        return default
    if not isinstance(value, kind):
        raise invalid(f"{path}.{key} must be {KINDS[kind]}.", f"{path}.{key}")
    return value


def checked_text(value: str, path: str) -> str:
    limit = settings.AUTOGLM_MAX_CONTENT_CHARS
    if len(value) > limit:
        raise invalid(f"{path} is longer than the {limit} characters a message may have.", path)
    if "\x00" in value:
        raise invalid(f"{path} holds a null character, which cannot be stored.", path)
    return value


def in_range(when: datetime, path: str) -> datetime:
    if not EARLIEST <= when <= LATEST:
        raise invalid(f"{path} is not a time between {EARLIEST.year} and {LATEST.year}.", path)
    return when


def iso_time(value, path: str) -> datetime | None:
    if value is None:
        return None
    try:
        when = parse_datetime(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None:
        raise invalid(f"{path} must be an ISO 8601 date and time.", path)
    return in_range(when if timezone.is_aware(when) else when.replace(tzinfo=UTC), path)


def epoch_time(value, path: str) -> datetime | None:
    if value is None:
        return None
    try:
        if isinstance(value, bool) or not math.isfinite(value):
            raise ValueError
        when = datetime.fromtimestamp(value, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise invalid(f"{path} must be a time in seconds since 1970.", path) from None
    return in_range(when, path)


def check_count(count: int) -> None:
    if count == 0:
        raise invalid("The file holds no conversations.", "conversations")
    if count > max_conversations():
        raise invalid(
            f"The file holds {count} conversations; an import takes at most "
            f"{max_conversations()}. Split it.",
            "conversations",
        )
