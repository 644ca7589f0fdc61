"""Worker-side plumbing between the engine thread and Redis, kept off the engine's hot path.

The engine calls ``on_text`` and ``should_stop`` for every job on every decode step; a Redis
round trip in each would stall the whole batch. So text goes into a queue that one publisher
thread writes to the job streams in pipelined batches, and cancellations arrive by pub/sub into
an in-memory set, so ``should_stop`` is a set lookup.
"""

from __future__ import annotations

import logging
import queue
import threading

from autoglm_site.redisconn import redis_client
from chat import events

logger = logging.getLogger(__name__)


class TokenPublisher:
    """Appends streamed text to job streams from a background thread, in order, in batches."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="token-publisher", daemon=True)
        self._thread.start()

    def publish(
        self, job_id: str, text: str, index: int = 0, logprobs: list[dict] | None = None
    ) -> None:
        """Queue a piece of choice ``index``'s text (with its tokens' logprobs, if kept)."""
        self._queue.put((job_id, events.token_event(text, index, logprobs)[1]))

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything published so far is in Redis (before a job's final event)."""
        done = threading.Event()
        self._queue.put(done)
        if not done.wait(timeout):
            logger.warning("token publisher flush timed out")

    def _run(self) -> None:
        client = redis_client()
        while True:
            items = [self._queue.get()]
            while len(items) < 4096:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            markers = [item for item in items if isinstance(item, threading.Event)]
            tokens = [item for item in items if not isinstance(item, threading.Event)]
            # When Redis or the web side falls behind, a job's pieces that waited together go
            # out as one event: fewer entries to write, relay and parse, same text in order.
            merged: dict[tuple[str, int], list[dict]] = {}
            for job_id, piece in tokens:
                merged.setdefault((job_id, piece.get("index", 0)), []).append(piece)
            try:
                if merged:
                    with client.pipeline(transaction=False) as pipe:
                        for (job_id, _), pieces in merged.items():
                            events.append(pipe, job_id, *events.merged_tokens(pieces))
                        pipe.execute()
            except Exception:
                logger.exception("publishing tokens failed", extra={"tokens": len(tokens)})
            for marker in markers:
                marker.set()


class CancelListener:
    """Knows which of this worker's jobs someone asked to cancel, from the pub/sub channel and the
    cancel keys.

    Every worker hears every cancel broadcast; only those of the jobs it watches are kept, and a
    job's entry goes when it is forgotten, so memory does not grow with other workers' traffic.
    """

    def __init__(self) -> None:
        self._watched: set[str] = set()
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="cancel-listener", daemon=True)
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait(5)

    def watch(self, job_id: str) -> None:
        """Start watching a job. Watched first, then its Redis key read: a cancel broadcast after
        this is kept, and one from before is in the key."""
        with self._lock:
            self._watched.add(job_id)
        if events.cancel_requested(job_id):
            with self._lock:
                self._cancelled.add(job_id)

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._watched.discard(job_id)
            self._cancelled.discard(job_id)

    def is_cancelled(self, job_id: str) -> bool:
        return job_id in self._cancelled

    def remembered(self) -> int:
        """How many jobs it holds anything for (a test's and an operator's leak check)."""
        with self._lock:
            return len(self._watched | self._cancelled)

    def _recheck_watched(self) -> None:
        with self._lock:
            watched = list(self._watched)
        for job_id in watched:
            if events.cancel_requested(job_id):
                with self._lock:
                    if job_id in self._watched:
                        self._cancelled.add(job_id)

    def _run(self) -> None:
        while True:
            try:
                pubsub = redis_client().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(events.CANCEL_CHANNEL)
                self._ready.set()
                self._recheck_watched()  # cancels broadcast while it was disconnected
                for message in pubsub.listen():
                    if message.get("type") == "message":
                        job_id = str(message["data"])
                        with self._lock:
                            if job_id in self._watched:
                                self._cancelled.add(job_id)
            except Exception:
                logger.exception("cancel listener lost Redis; reconnecting")
                threading.Event().wait(1)
