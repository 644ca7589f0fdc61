"""Job event streams on a real Redis: the relay merges tokens under load and loses none."""

import asyncio
import json
import socket
import threading
import time
import uuid

import pytest
import redis
import redis.asyncio as aioredis

from autoglm_site.redisconn import redis_client, redis_deadline
from chat import events
from chat.events import read_events


def produce(job_id: str, pieces: list[str], every: float) -> None:
    for piece in pieces:
        events.publish(job_id, events.TOKEN, {"text": piece})
        time.sleep(every)
    events.publish(job_id, events.DONE, {"status": "succeeded"})


def relay(job_id: str, after: str = "0-0") -> list[events.Event]:
    async def collect():
        return [event async for event in read_events(job_id, after=after) if event is not None]

    return asyncio.run(collect())


def test_it_merges_tokens_into_fewer_events_when_over_the_budget(settings):
    # One stream and a budget of 10 events a second: after the first two pieces (sent as soon
    # as they exist), the stream is read every 0.1 s, so each event carries several tokens.
    settings.AUTOGLM_STREAM_EVENTS_PER_S = 10
    job_id = str(uuid.uuid4())
    pieces = [f"w{i} " for i in range(40)]
    producer = threading.Thread(target=produce, args=(job_id, pieces, 0.01))
    producer.start()
    got = relay(job_id)
    producer.join()
    tokens = [event for event in got if event.type == events.TOKEN]
    assert "".join(event.data["text"] for event in tokens) == "".join(pieces)
    assert [event.data["text"] for event in tokens[:2]] == pieces[:2]
    assert len(tokens) < 20
    assert got[-1].type == events.DONE
    ids = [tuple(map(int, event.id.split("-"))) for event in got]
    assert ids == sorted(set(ids))


def test_it_resumes_after_a_merged_event_without_gap_or_repeat(settings):
    settings.AUTOGLM_STREAM_EVENTS_PER_S = 10
    job_id = str(uuid.uuid4())
    pieces = [f"p{i}," for i in range(12)]
    produce(job_id, pieces, 0)
    first = relay(job_id)
    # Everything was already there: one merged token event, then done.
    assert [event.type for event in first] == [events.TOKEN, events.DONE]
    assert first[0].data["text"] == "".join(pieces)
    # Resuming after a merged event continues after its last token; after the middle of the
    # stream, the rest comes once.
    entries = redis_client().xrange(events.stream_key(job_id))
    middle = entries[5][0]
    rest = relay(job_id, after=middle)
    assert rest[0].data["text"] == "".join(pieces[6:])
    assert relay(job_id, after=first[0].id)[0].type == events.DONE


def test_it_never_merges_across_a_reset(settings):
    settings.AUTOGLM_STREAM_EVENTS_PER_S = 10
    job_id = str(uuid.uuid4())
    events.publish(job_id, events.TOKEN, {"text": "first try"})
    events.publish(job_id, events.RESET, {"attempt": 2})
    events.publish(job_id, events.TOKEN, {"text": "second "})
    events.publish(job_id, events.TOKEN, {"text": "try"})
    events.publish(job_id, events.DONE, {"status": "succeeded"})
    got = relay(job_id)
    assert [(event.type, event.data.get("text")) for event in got] == [
        (events.TOKEN, "first try"),
        (events.RESET, None),
        (events.TOKEN, "second try"),
        (events.DONE, None),
    ]
    assert json.loads(json.dumps(got[-1].data)) == {"status": "succeeded"}


# Issue 14, defect 6: a relay must end when its task is cancelled (the client hung up), at
# whatever moment of its XREAD the cancellation lands. One asyncio.run for all the moments: the
# async Redis client belongs to its event loop.


async def _follow(job_id: str) -> None:
    async for _ in read_events(job_id, block_ms=100):
        pass  # an idle stream: a None every 100 ms, for ever


async def _stops_when_cancelled(job_id: str, loop_turns: int) -> bool:
    """Cancel a relay after ``loop_turns`` turns of the event loop; did it end within 2 s?"""
    relay_task = asyncio.create_task(_follow(job_id))
    for _ in range(loop_turns):
        await asyncio.sleep(0)
    relay_task.cancel()
    done, _ = await asyncio.wait([relay_task], timeout=2)
    if not done:
        relay_task.cancel()  # give up on it; the test has failed
        return False
    return relay_task.cancelled()


def test_a_relay_stops_at_once_whenever_its_task_is_cancelled():
    job_id = str(uuid.uuid4())

    async def every_moment() -> list[int]:
        await events.async_redis_client().ping()  # connected: the first XREAD is sent at once
        return [turns for turns in range(8) if not await _stops_when_cancelled(job_id, turns)]

    assert asyncio.run(every_moment()) == []


def test_a_relay_stops_even_when_its_tasks_cancellation_was_swallowed():
    # A library that loses a cancellation (as asyncio.wait_for does on Python 3.11, cpython
    # issue 86296) leaves the task's cancel request pending: the relay obeys it all the same.
    job_id = str(uuid.uuid4())

    async def cancelled_then_swallowed() -> None:
        asyncio.current_task().cancel()
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            pass  # the swallowing library
        await _follow(job_id)

    async def main() -> bool:
        relay_task = asyncio.create_task(cancelled_then_swallowed())
        done, _ = await asyncio.wait([relay_task], timeout=2)
        relay_task.cancel()
        return bool(done) and relay_task.cancelled()

    assert asyncio.run(main())


def test_a_redis_that_stops_answering_is_an_outage_not_a_hang():
    # The relay's client has no socket timeout (see async_redis_client); redis_deadline bounds
    # each call instead, with the error an outage maps to (503 before a stream has started).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections complete in the backlog; nothing ever answers

        async def ask() -> None:
            client = aioredis.Redis(port=silent.getsockname()[1], socket_timeout=None)
            try:
                async with asyncio.timeout(3):  # a hang fails the test, with another error
                    async with redis_deadline(0.3):
                        await client.xread({"nothing": "0-0"}, block=100)
            finally:
                await client.aclose()

        with pytest.raises(redis.exceptions.TimeoutError):
            asyncio.run(ask())
