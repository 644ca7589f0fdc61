"""A job's events as OpenAI ``chat.completion.chunk`` SSE frames: content deltas, tool-call
deltas (the model's text parsed as it comes, ``chat.tool_calls``), logprobs, one stream per
choice when ``n`` > 1, the usage chunk, ``[DONE]``."""

import json
import logging
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async

from . import events, jobs
from .models import ChatJob
from .presenters import completion_id, openai_finish_reason, tool_call_prefix, tool_parser_for
from .streaming import job_events

logger = logging.getLogger(__name__)


class ChoiceStream:
    """One choice's deltas. The last one is held back so that ``finish_reason`` rides on it;
    the logprobs of the tokens that made a delta ride on it."""

    def __init__(self, job: ChatJob, index: int) -> None:
        self.job, self.index = job, index
        self.want_logprobs = bool(job.params.get("logprobs"))
        self.reset()

    def reset(self) -> None:
        parser = tool_parser_for(self.job)
        prefix = tool_call_prefix(self.job, self.index)
        self.tools = parser.stream(prefix) if parser is not None else None
        self.held: dict | None = None
        self.held_logprobs: list[dict] = []
        self.logprobs: list[dict] = []  # of tokens whose text is in no delta yet
        self.called = False

    def opening(self) -> list[dict]:
        role = {"role": "assistant", "content": ""}
        return [{"index": self.index, "delta": role, "logprobs": None, "finish_reason": None}]

    def feed(self, text: str, logprobs: list[dict] | None) -> list[dict]:
        self.logprobs.extend(logprobs or ())
        return self._take(self.tools.feed(text) if self.tools else [{"content": text}])

    def finish(self, reason: str | None) -> list[dict]:
        out = self._take(self.tools.finish() if self.tools else [])
        finish_reason = openai_finish_reason(reason)
        if self.called and finish_reason == "stop":
            finish_reason = "tool_calls"
        self.held_logprobs += self.logprobs
        self.logprobs = []
        out.append(self._choice(self.held or {}, finish_reason))
        self.held = None
        return out

    def _take(self, deltas: list[dict]) -> list[dict]:
        out = []
        for delta in deltas:
            if delta.get("content") == "":
                continue
            self.called = self.called or "tool_calls" in delta
            if self.held is not None:
                out.append(self._choice(self.held))
            self.held, self.held_logprobs, self.logprobs = delta, self.logprobs, []
        return out

    def _choice(self, delta: dict, finish_reason: str | None = None) -> dict:
        logprobs = None
        if self.want_logprobs:
            logprobs = {"content": self.held_logprobs, "refusal": None}
            self.held_logprobs = []
        return {
            "index": self.index,
            "delta": delta,
            "logprobs": logprobs,
            "finish_reason": finish_reason,
        }


async def completion_chunks(
    job: ChatJob, *, include_usage: bool, cancel: bool = True
) -> AsyncIterator[bytes]:
    """The job's events as OpenAI ``chat.completion.chunk`` SSE frames (see ``choice_chunks``)."""
    choices = [ChoiceStream(job, index) for index in range(job.params.get("n") or 1)]
    base = chunk_base(job, completion_id(job), "chat.completion.chunk")
    async for out in choice_chunks(job, base, choices, include_usage=include_usage, cancel=cancel):
        yield out


def chunk_base(job: ChatJob, id_: str, object_: str) -> dict:
    """What every chunk of a job's stream repeats."""
    return {
        "id": id_,
        "object": object_,
        "created": int(job.created_at.timestamp()),
        "model": job.model,
        "system_fingerprint": None,
    }


async def choice_chunks(
    job: ChatJob, base: dict, choices: list, *, include_usage: bool, cancel: bool = True
) -> AsyncIterator[bytes]:
    """The job's events as SSE chunks of ``base``: each of ``choices`` (a ``ChoiceStream`` or
    another with its ``opening``, ``feed``, ``finish`` and ``reset``) turns its events into
    chunk choices; the usage chunk when asked, then ``[DONE]``.

    A client that disconnects before the end cancels the job (with ``cancel``), and so does a
    restart of the job after text went out (the client is told to retry, see ``_restart``).
    """

    def chunk(choice: dict) -> bytes:
        return frame({**base, "choices": [choice]})

    ended = False
    try:
        for choice in choices:
            for out in choice.opening():
                yield chunk(out)
        sent_text = False
        async for event in job_events(job, keepalive=True):
            if event is None:
                yield b": keep-alive\n\n"
            elif event.type == events.TOKEN:
                choice = choices[event.data.get("index", 0)]
                for out in choice.feed(event.data["text"], event.data.get("logprobs")):
                    sent_text = True
                    yield chunk(out)
            elif event.type == events.RESET:
                if sent_text:
                    ended = True
                    yield await _restart(job)
                    break
                for choice in choices:
                    choice.reset()
            elif event.type == events.DONE:
                reasons = events.finish_reasons(event.data, len(choices))
                for choice in choices:
                    for out in choice.finish(reasons[choice.index]):
                        yield chunk(out)
                if include_usage:
                    yield frame({**base, "choices": [], "usage": event.data.get("usage")})
                ended = True
            elif event.type == events.ERROR:
                ended = True
                yield frame({"error": event.data["error"]})
        yield b"data: [DONE]\n\n"
    finally:
        if not ended and cancel:
            logger.info("stream closed early, cancelling", extra={"job_id": str(job.id)})
            await cancel_job(job)


async def cancel_job(job: ChatJob) -> None:
    # Not thread-sensitive: it often runs as the request is cancelled, while the request's own
    # thread context is being torn down.
    await sync_to_async(jobs.job_cancel, thread_sensitive=False)(job=job)


async def _restart(job: ChatJob) -> bytes:
    """The frame that ends a stream whose job restarted (a redelivery) after text went out.

    The client cannot take back the text it has, so it is told to retry; the restarted attempt
    is cancelled first, or it would run on with no one reading it and be billed beside the
    retry.
    """
    logger.info("generation restarted mid-stream, cancelling", extra={"job_id": str(job.id)})
    await cancel_job(job)
    return frame(restart_error())


def restart_error() -> dict:
    return {
        "error": {
            "message": "The worker restarted this generation; retry the request.",
            "type": "server_error",
            "param": None,
            "code": "generation_restarted",
        }
    }


def frame(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
