"""Job events: one Redis Stream per job carrying ``token``, ``reset``, ``done`` and ``error``.

The worker appends (sync client); web processes read with ``XREAD BLOCK`` (asyncio client), so
a late subscriber replays what already happened and a resumed one continues after the last
event id it saw. The stream expires a while after the job ends; the final answer and usage live
in the database, so nothing depends on Redis keeping them.

This module owns the protocol: ``token_event``, ``reset_event``, ``done_event`` and
``error_event`` make each event's ``(type, data)``, for the worker that publishes it, the relay
that merges it and the replay that rebuilds it from the database alike.
"""

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from autoglm_site.redisconn import async_redis_client, redis_client, redis_deadline

from .models import ChatJob
from .presenters import job_error, job_usage

logger = logging.getLogger(__name__)

TOKEN, RESET, DONE, ERROR = "token", "reset", "done", "error"
CANCEL_CHANNEL = "autoglm:cancel"
FINAL = (DONE, ERROR)


def stream_key(job_id) -> str:
    return f"autoglm:job:{job_id}:events"


def cancel_key(job_id) -> str:
    return f"autoglm:job:{job_id}:cancel"


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    data: dict[str, Any]

    @property
    def is_final(self) -> bool:
        return self.type in FINAL


EventData = tuple[str, dict[str, Any]]  # an event's type and data, as published


def token_event(text: str, index: int = 0, logprobs: list[dict] | None = None) -> EventData:
    """A piece of the answer (several, merged, when the relay read them together): of choice
    ``index`` when a job makes several (``n``), with its tokens' logprobs when it keeps them."""
    data: dict[str, Any] = {"text": text}
    if index:
        data["index"] = index
    if logprobs is not None:
        data["logprobs"] = logprobs
    return TOKEN, data


def finish_reasons(done: dict[str, Any], n: int) -> list[str | None]:
    """Each of ``n`` choices' finish reason, from a done event's data. A job that ended with no
    choices stored (cancelled while queued, say) ended all of them one way."""
    if "choices" in done and len(done["choices"]) == n:
        return [choice["finish_reason"] for choice in done["choices"]]
    return [done.get("finish_reason")] * n


def reset_event(attempt: int) -> EventData:
    """A redelivered job starts over: listeners drop what the earlier attempt sent."""
    return RESET, {"attempt": attempt}


def done_event(job: ChatJob, *, with_message: bool = True) -> EventData:
    """The final event of a job that did not fail: succeeded, or cancelled (partial answer kept).

    A job cancelled while still queued has always been announced without ``message_id``
    (``with_message=False``); its replay from the database carries ``"message_id": null``.
    """
    data: dict[str, Any] = {
        "status": job.status,
        "finish_reason": job.finish_reason or None,
        "usage": job_usage(job),
        "model": job.model,
        "ttft_ms": job.ttft_ms,
    }
    if len(job.choices) > 1:
        data["choices"] = [{"finish_reason": c.get("finish_reason")} for c in job.choices]
    if with_message:
        # A job that continued an answer wrote into that message (it has none of its own).
        message_id = job.assistant_message_id or job.continued_message_id
        data["message_id"] = str(message_id) if message_id else None
        if job.continued_message_id:
            data["continued"] = True
    return DONE, data


def error_event(job: ChatJob) -> EventData:
    """The final event of a failed job: its error in the API's error shape."""
    return ERROR, {"status": ChatJob.Status.FAILED, **job_error(job)}


def append(pipe, job_id, type_: str, data: dict[str, Any]) -> None:
    """Queue one event and the stream's expiry on a Redis pipeline (the caller executes it).

    Every append pushes the expiry back; a final event starts the shorter ``AUTOGLM_STREAM_TTL``.
    """
    key = stream_key(job_id)
    pipe.xadd(key, {"type": type_, "data": json.dumps(data)})
    ttl = settings.AUTOGLM_STREAM_TTL if type_ in FINAL else settings.AUTOGLM_STREAM_MAX_AGE
    pipe.expire(key, ttl)


def publish(job_id, type_: str, data: dict[str, Any] | None = None) -> str:
    """Append one event to the job's stream; a final event starts the stream's expiry."""
    with redis_client().pipeline(transaction=False) as pipe:
        append(pipe, job_id, type_, data or {})
        return pipe.execute()[0]


def cancel_request(job_id) -> None:
    """Ask the worker running this job to stop at its next decode step.

    The key covers a job not yet picked up; the message reaches a running one at once.
    """
    client = redis_client()
    client.set(cancel_key(job_id), "1", ex=settings.AUTOGLM_STREAM_MAX_AGE)
    client.publish(CANCEL_CHANNEL, str(job_id))


def cancel_requested(job_id) -> bool:
    return bool(redis_client().exists(cancel_key(job_id)))


# How long Redis may take to answer, beyond what a command itself waits (XREAD's BLOCK).
_ANSWER_S = 10.0


async def stream_exists(job_id) -> bool:
    async with redis_deadline(_ANSWER_S):
        return bool(await async_redis_client().exists(stream_key(job_id)))


async def stream_end(job_id) -> str | None:
    """The id of the stream's final event; None while it has none (or there is no stream)."""
    last = await async_redis_client().xrevrange(stream_key(job_id), count=1)
    return last[0][0] if last and last[0][1].get("type") in FINAL else None


def id_order(event_id: str) -> tuple[int, int]:
    """An event id as numbers, to compare: "1700000000000-3" -> (1700000000000, 3)."""
    time_ms, _, sequence = event_id.partition("-")
    return int(time_ms), int(sequence)


# Event streams this process is relaying now: together they share AUTOGLM_STREAM_EVENTS_PER_S.
_relaying = 0
# However many streams share the budget, each is read at least this often.
_MAX_PAUSE_S = 1.0


async def read_events(
    job_id, *, after: str = "0-0", block_ms: int | None = None
) -> AsyncIterator[Event | None]:
    """Yield the job's events after ``after`` until a final one; ``None`` on each idle wait.

    The idle ``None`` lets a caller send an SSE keep-alive and check the database, in case the
    stream is gone (expired, or Redis lost it) while the job is already finished.

    Token events that are read together are merged into one (its id is the last one's, so a
    resume after it neither skips nor repeats text). Once a stream has yielded two pieces of
    text (the first ones go out as soon as they exist), it is read at most every
    N / AUTOGLM_STREAM_EVENTS_PER_S seconds, N being the streams this process relays: the
    relay's cost per second stays bounded however many streams are open, and under load each
    event carries a few tokens instead of one. With few streams a token is its own event unless
    the model writes faster than a stream is read.
    """
    global _relaying
    client = async_redis_client()
    key = stream_key(job_id)
    block = block_ms if block_ms is not None else settings.AUTOGLM_SSE_KEEPALIVE_MS
    budget = settings.AUTOGLM_STREAM_EVENTS_PER_S
    texts = 0
    _relaying += 1
    try:
        while True:
            _stop_if_cancelled()
            async with redis_deadline(block / 1000 + _ANSWER_S):
                response = await client.xread({key: after}, block=block, count=1024)
            _stop_if_cancelled()
            if not response:
                yield None
                continue
            for event in _merged(response[0][1]):
                after = event.id
                texts += event.type == TOKEN
                yield event
                if event.is_final:
                    return
            pause = min(_relaying / budget, _MAX_PAUSE_S) if budget else 0
            if texts >= 2 and pause >= 0.005:
                await asyncio.sleep(pause)
    finally:
        _relaying -= 1


def _stop_if_cancelled() -> None:
    """Raise the cancellation of this task if it is pending but was lost on the way.

    A relay runs in its request's task, which Django's ASGI handler cancels once when the
    client hangs up. Code that swallows that CancelledError leaves the request pending with
    ``cancelling()`` still counting it: ``asyncio.wait_for`` on Python 3.11 does, in a race
    (cpython issue 86296; redis-py's async client used it for every command), and so does
    asgiref's bridge over the sync middleware when the view has just returned its response. The
    relay then ran on to the job's end, and the job was never cancelled. Nobody here uncancels
    a task, so a pending count always means "stop".
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _merged(entries: list[tuple[str, dict[str, str]]]) -> list[Event]:
    """Stream entries as events, each run of consecutive token events merged into one."""
    parsed = [
        Event(event_id, fields.get("type", ""), json.loads(fields.get("data") or "{}"))
        for event_id, fields in entries
    ]
    result: list[Event] = []
    for (is_token, _), run in itertools.groupby(parsed, key=_token_choice):
        run = list(run)
        if is_token and len(run) > 1:
            result.append(Event(run[-1].id, *merged_tokens([event.data for event in run])))
        else:
            result.extend(run)
    return result


def _token_choice(event: Event) -> tuple[bool, int]:
    return event.type == TOKEN, event.data.get("index", 0) if event.type == TOKEN else 0


def merged_tokens(pieces: list[dict[str, Any]]) -> EventData:
    """One token event for consecutive pieces of one choice: their text and logprobs joined."""
    text = "".join(piece.get("text", "") for piece in pieces)
    logprobs = None
    if any("logprobs" in piece for piece in pieces):
        logprobs = [entry for piece in pieces for entry in piece.get("logprobs") or ()]
    return token_event(text, pieces[0].get("index", 0), logprobs)
