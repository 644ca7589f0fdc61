"""Server-sent events: relaying a job's Redis Stream to HTTP clients from async iterators."""

from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.db import connections
from django.http import StreamingHttpResponse

from . import events
from .models import ChatJob


def sse(frames: AsyncIterator[bytes]) -> StreamingHttpResponse:
    """An SSE response; its headers (x-request-id included) go out before the first frame."""
    response = StreamingHttpResponse(frames, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # tell proxies such as nginx not to buffer
    return response


async def release_database() -> None:
    """Close this request's database connections (or give them back to the pool)."""
    await sync_to_async(_close_connections)()


def _close_connections() -> None:
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


REPLAY_END = "0-2"  # the id of the last event of a replay from the database


def final_events(job: ChatJob) -> list[events.Event]:
    """A finished job's events rebuilt from the database, for when its stream is gone."""
    result = []
    if job.choices:  # several answers, or logprobs: each choice's text in one event (one id)
        for index, choice in enumerate(job.choices):
            data = events.token_event(choice["text"], index, choice.get("logprobs"))
            result.append(events.Event("0-1", *data))
    elif job.output:
        result.append(events.Event("0-1", *events.token_event(job.output)))
    if job.status == ChatJob.Status.FAILED:
        result.append(events.Event(REPLAY_END, *events.error_event(job)))
    else:
        result.append(events.Event(REPLAY_END, *events.done_event(job)))
    return result


def _replay(job: ChatJob, after: str) -> list[events.Event]:
    return [
        event for event in final_events(job) if events.id_order(event.id) > events.id_order(after)
    ]


async def seen_the_end(job: ChatJob, after: str) -> bool:
    """Whether a reader that has the events up to ``after`` has the job's final event, so that
    nothing is left to send it, ever (a resume after the end, or after an id past it)."""
    if not job.is_finished:
        return False
    end = await events.stream_end(job.id)
    if end is None:
        if await events.stream_exists(job.id):
            return False  # the final event is published just after the job's row is saved
        end = REPLAY_END
    return events.id_order(after) >= events.id_order(end)


async def job_events(
    job: ChatJob, *, after: str = "0-0", keepalive: bool = False
) -> AsyncIterator[events.Event | None]:
    """The job's events after ``after``, ending with its final event.

    While idle, checks the database: a finished job whose stream has expired is replayed from
    the stored result instead of waiting forever. With ``keepalive`` the idle ticks are yielded
    as ``None`` so the caller can send a keep-alive comment.

    The request's database connection is given back before the wait, and after each check: an
    open stream must not hold one of the database's few connections for minutes.
    """
    await release_database()
    if job.is_finished and not await events.stream_exists(job.id):
        for replayed in _replay(job, after):  # at once, not after the first idle wait
            yield replayed
        return
    async for event in events.read_events(job.id, after=after):
        if event is not None:
            yield event
            continue
        fresh = await ChatJob.objects.filter(pk=job.pk).afirst()
        await release_database()
        if fresh is None:
            return  # deleted with its tenant
        if fresh.is_finished and not await events.stream_exists(job.id):
            for replayed in _replay(fresh, after):
                yield replayed
            return
        if await seen_the_end(fresh, after):
            return  # ``after`` is past the final event: nothing will come
        if keepalive:
            yield None
