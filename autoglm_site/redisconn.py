"""Redis clients for the app's own data (job event streams, quotas) and for a look at the
broker's queues; Celery has its own."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis
import redis.asyncio as aioredis
from django.conf import settings

# A Redis that does not answer (a host gone, not just a refused port) must fail a request fast
# (503), not hang it.
CONNECT_TIMEOUT_S = 1.0

_sync_client: redis.Redis | None = None
_broker_client: redis.Redis | None = None
_async_clients: dict[int, aioredis.Redis] = {}


def redis_client() -> redis.Redis:
    """The process's Redis client (thread-safe; it pools connections)."""
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(
            settings.REDIS_URL, decode_responses=True, socket_connect_timeout=CONNECT_TIMEOUT_S
        )
    return _sync_client


def broker_client() -> redis.Redis:
    """A client of the Celery broker's Redis, where the job queues are (CELERY_BROKER_URL may
    name another Redis than REDIS_URL); bytes, as messages are."""
    global _broker_client
    if _broker_client is None:
        _broker_client = redis.Redis.from_url(
            settings.CELERY_BROKER_URL, socket_connect_timeout=CONNECT_TIMEOUT_S
        )
    return _broker_client


def async_redis_client() -> aioredis.Redis:
    """An asyncio Redis client for the running event loop (connections are bound to a loop).

    It has no socket timeout: callers bound each call with ``redis_deadline``. With a socket
    timeout, redis-py sends every command under ``asyncio.wait_for``, which on Python 3.11 loses
    a cancellation that lands while the command is being written (cpython issue 86296): a
    client's hang-up then no longer stops the relay of its stream, nor cancels its job.
    """
    loop_id = id(asyncio.get_running_loop())
    client = _async_clients.get(loop_id)
    if client is None:
        client = aioredis.Redis.from_url(
            settings.REDIS_URL,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=None,  # not redis-py's default (5 s): see redis_deadline
        )
        _async_clients[loop_id] = client
    return client


@contextlib.asynccontextmanager
async def redis_deadline(seconds: float) -> AsyncIterator[None]:
    """Bound an async Redis call: past ``seconds`` it raises redis' own TimeoutError (an outage,
    as a socket timeout would). ``asyncio.timeout`` tells its own expiry from a cancellation of
    the task, so a cancellation always goes through."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        raise redis.exceptions.TimeoutError(f"Redis gave no answer in {seconds} s") from exc
