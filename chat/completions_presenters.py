"""A legacy completion job as OpenAI's ``text_completion``: the body once it ends, and its SSE
chunks, with logprobs in the legacy shape (``tokens``, ``token_logprobs``, ``top_logprobs``,
``text_offset``) built from the OpenAI entries the worker stores and streams."""

from collections.abc import AsyncIterator

from .models import ChatJob
from .openai_stream import choice_chunks, chunk_base
from .presenters import job_usage, openai_finish_reason, stored_choices

OBJECT = "text_completion"


def text_completion_id(job: ChatJob) -> str:
    return f"cmpl-{job.id.hex}"


def legacy_logprobs(entries: list[dict], offset: int = 0) -> dict:
    """OpenAI's entries (``{"token", "logprob", "top_logprobs": [...]}``) in the legacy shape;
    ``text_offset`` counts characters from ``offset`` (where these tokens start in the text)."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    return {
        "tokens": [entry["token"] for entry in entries],
        "token_logprobs": [entry["logprob"] for entry in entries],
        "top_logprobs": [
            {top["token"]: top["logprob"] for top in entry.get("top_logprobs") or ()}
            for entry in entries
        ],
        "text_offset": offsets,
    }


def text_completion_body(job: ChatJob) -> dict:
    """A finished legacy completion job as OpenAI's ``text_completion`` object."""
    want_logprobs = bool(job.params.get("logprobs"))
    choices = [
        {
            "index": index,
            "text": stored["text"],
            "logprobs": legacy_logprobs(stored.get("logprobs") or []) if want_logprobs else None,
            "finish_reason": openai_finish_reason(stored["finish_reason"]),
        }
        for index, stored in enumerate(stored_choices(job))
    ]
    return {
        "id": text_completion_id(job),
        "object": OBJECT,
        "created": int(job.created_at.timestamp()),
        "model": job.model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": job_usage(job),
    }


class TextChoiceStream:
    """One choice's chunks: each piece of text as it comes with its tokens' logprobs, then a
    last chunk with the finish reason (``chat.openai_stream.choice_chunks`` drives it)."""

    def __init__(self, job: ChatJob, index: int) -> None:
        self.index = index
        self.want_logprobs = bool(job.params.get("logprobs"))
        self.reset()

    def reset(self) -> None:
        self.offset = 0  # characters of this choice's logprob tokens so far

    def opening(self) -> list[dict]:
        return []

    def feed(self, text: str, logprobs: list[dict] | None) -> list[dict]:
        if not text and not logprobs:
            return []
        legacy = None
        if self.want_logprobs:
            legacy = legacy_logprobs(logprobs or [], self.offset)
            self.offset += sum(len(entry["token"]) for entry in logprobs or ())
        return [self._choice(text, legacy, None)]

    def finish(self, reason: str | None) -> list[dict]:
        return [self._choice("", None, openai_finish_reason(reason))]

    def _choice(self, text: str, logprobs: dict | None, finish_reason: str | None) -> dict:
        return {
            "index": self.index,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": finish_reason,
        }


async def text_completion_chunks(
    job: ChatJob, *, include_usage: bool, cancel: bool = True
) -> AsyncIterator[bytes]:
    """The job's events as ``text_completion`` SSE frames, ``[DONE]`` last."""
    choices = [TextChoiceStream(job, index) for index in range(job.params.get("n") or 1)]
    base = chunk_base(job, text_completion_id(job), OBJECT)
    async for out in choice_chunks(job, base, choices, include_usage=include_usage, cancel=cancel):
        yield out
