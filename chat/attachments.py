"""Text files sent with a user message: what is accepted, and how they reach the model.

A message keeps what the user typed in ``content`` and its files in ``attachments``
(``[{"name", "text"}]``). The model reads them together (``prompt_content``): the typed text,
then each file under its name in a code fence. The fence is longer than any run of backticks in
the file, so a file cannot close it early and have the rest of its text read as the user's own
words; the name on its own line before it tells the model which file is which.
"""

import os
import re

from django.conf import settings
from django.core.validators import ProhibitNullCharactersValidator
from rest_framework import serializers

from autoglm_site.errors import InvalidRequestError
from autoglm_site.fields import StrictCharField

from .tokens import context_window, count_prompt_tokens

# Files a browser or a program sends as text: prose, data, configuration, markup and code.
TEXT_EXTENSIONS = frozenset(
    """
    txt text md markdown rst adoc org tex csv tsv json jsonl ndjson yaml yml toml ini cfg conf
    env properties xml html htm css scss sass less svg js mjs cjs jsx ts tsx vue svelte py pyi
    ipynb rb php pl pm lua r jl rs go java kt kts scala swift m mm c h cc cpp cxx hpp hh cs fs
    hs ml clj ex exs erl dart zig nim sh bash zsh fish ps1 bat cmd sql graphql gql proto
    gradle cmake mk make dockerfile tf hcl nix diff patch log srt vtt bib
    """.split()
)
# Names that are text though they have no extension of their own.
TEXT_NAMES = frozenset(
    {"dockerfile", "makefile", "license", "readme", "changelog", "gemfile", "procfile"}
)
MAX_NAME_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def is_text_name(name: str) -> bool:
    """Whether a file of this name is one we take as text (by its extension)."""
    stem, extension = os.path.splitext(name.lower())
    return extension[1:] in TEXT_EXTENSIONS or (not extension and stem in TEXT_NAMES)


def clean_name(raw: str) -> str:
    """The file's own name: any directory part dropped (a browser may send a path, and the name
    is shown and put in the prompt, never used as a path); refused when it is empty, too long,
    has control characters or is not a text file's."""
    if _CONTROL.search(raw):
        raise serializers.ValidationError("A file name must not contain control characters.")
    name = raw.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or name in {".", ".."}:
        raise serializers.ValidationError(f"{raw!r} is not a file name.")
    if len(name) > MAX_NAME_CHARS:
        raise serializers.ValidationError(
            f"A file name may have at most {MAX_NAME_CHARS} characters."
        )
    if not is_text_name(name):
        raise serializers.ValidationError(
            f"'{name}' is not a text file; attach text files such as .txt, .md, .csv, .json, "
            ".yaml, .html or source code."
        )
    return name


class _FileText(StrictCharField):
    """A file's text as it is: no whitespace trimmed, and NUL refused by ``AttachmentInput``
    with the file's name (not DRF's nameless "Null characters are not allowed")."""

    def __init__(self, **kwargs):
        super().__init__(allow_blank=True, trim_whitespace=False, **kwargs)
        self.validators = [
            v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)
        ]


class AttachmentInput(serializers.Serializer):
    name = StrictCharField(max_length=MAX_NAME_CHARS * 4)  # cleaned below, path parts dropped
    content = _FileText()

    def validate_name(self, value: str) -> str:
        return clean_name(value)

    def validate(self, data: dict) -> dict:
        if "\x00" in data["content"]:
            raise serializers.ValidationError(
                {"content": f"'{data['name']}' is not a text file (it has NUL bytes)."}
            )
        limit = settings.AUTOGLM_MAX_ATTACHMENT_CHARS
        if len(data["content"]) > limit:
            raise serializers.ValidationError(
                {
                    "content": f"'{data['name']}' has {len(data['content'])} characters; "
                    f"attached files may have {limit} in all."
                }
            )
        return {"name": data["name"], "text": data["content"]}


class AttachmentsField(serializers.ListField):
    """``[{"name", "content"}]`` in, ``[{"name", "text"}]`` out (as ``Message.attachments``)."""

    child = AttachmentInput()

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("default", list)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        # Before each file is read: a request with too many is refused without the work.
        if isinstance(data, list) and len(data) > settings.AUTOGLM_MAX_ATTACHMENTS:
            raise serializers.ValidationError(
                f"At most {settings.AUTOGLM_MAX_ATTACHMENTS} files may be attached to a message."
            )
        files = super().to_internal_value(data)
        total, limit = sum(len(f["text"]) for f in files), settings.AUTOGLM_MAX_ATTACHMENT_CHARS
        if total > limit:
            raise serializers.ValidationError(
                f"The attached files have {total} characters in all; at most {limit} are allowed."
            )
        return files


def files_as_messages(messages: list[dict]) -> list[dict]:
    """The turn as the plugins' ``before_admission`` sees it: each attached file a message of
    its own (its text as ``content``, its name as ``attachment``) right after the one it came
    with, so a guardrail that refuses or masks what messages say does so in files too."""
    flat = []
    for message in messages:
        files = message.get("attachments") or []
        flat.append({k: v for k, v in message.items() if k != "attachments"})
        flat.extend(
            {"role": message["role"], "content": f["text"], "attachment": f["name"]} for f in files
        )
    return flat


def messages_with_files(flat: list[dict]) -> list[dict]:
    """``files_as_messages`` undone on what the plugins made of it (masked text, say)."""
    messages: list[dict] = []
    for item in flat:
        if "attachment" in item and messages:
            text = item.get("content") or ""
            messages[-1]["attachments"].append({"name": item["attachment"], "text": text})
        else:
            messages.append({**item, "attachments": []})
    return messages


def file_chip(file: dict) -> dict:
    """What a chip of the chat page shows of a stored file: its name and length (as
    static/js/attachments.js writes it for one just sent)."""
    size = len(file["text"])
    if size == 1:
        label = "1 char"
    else:
        label = f"{size} chars" if size < 1000 else f"{size / 1000:.1f}k chars"
    return {"name": file["name"], "size": size, "label": label}


def _fence(text: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def prompt_content(content: str, attachments: list[dict] | None) -> str:
    """What the model reads of a message: its text, then each attached file under its name."""
    parts = [content] if content else []
    for file in attachments or []:
        fence = _fence(file["text"])
        parts.append(f"{file['name']}\n{fence}\n{file['text']}\n{fence}")
    return "\n\n".join(parts)


def attachments_fit_check(*, model: str, prompt: list[dict], max_tokens: int) -> None:
    """Refuse a message whose files cannot fit the model's context window.

    The worker drops the oldest messages of a long conversation to fit (``dropped_messages``)
    but always keeps the system prompt and the message it answers, whole: when those two and
    the answer's ``max_tokens`` do not fit, the job could only fail. So it is refused here,
    before anything is stored or reserved. ``prompt`` ends with the message with the files.
    """
    window = context_window(model)
    if window is None:
        return  # the model's files are not on this machine: the worker checks it
    kept = [m for m in prompt[:-1] if m["role"] == "system"] + prompt[-1:]
    tokens = count_prompt_tokens(model, kept)
    if tokens + max_tokens <= window:
        return
    raise InvalidRequestError(
        f"The attached files are too long for the model's context: the message with them takes "
        f"about {tokens} tokens of the model's {window} (and the answer may take {max_tokens} "
        "more). Attach less text, or a part of the file.",
        param="attachments",
        code="context_length_exceeded",
    )
