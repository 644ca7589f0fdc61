"""The engine's lifecycle (tiny random demo model): cancellation within a step, timeouts
while running and while waiting, a crashing engine thread that fails its jobs with a reason,
and stopping with and without draining.
"""

from __future__ import annotations

import threading
import time

import pytest

from bench.baselines import generate
from engine.engine import BatchingEngine
from engine.errors import (
    EngineDeadError,
    GenerationError,
    JobTimeoutError,
)
from engine.registry import LoadedModel
from engine.request import EngineHandle

from .helpers import LONG_STORY, MESSAGES, PROMPTS, chat, request


def test_it_cancels_when_should_stop_returns_true(
    tiny_loaded: LoadedModel, engine: BatchingEngine
) -> None:
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3

    deltas: list[str] = []
    mate = engine.submit(request(tiny_loaded, chat(PROMPTS[2]), max_tokens=20))

    result = engine.submit(
        request(
            tiny_loaded, LONG_STORY, max_tokens=200, on_text=deltas.append, should_stop=should_stop
        )
    ).result(timeout=30)

    assert result.finish_reason == "cancelled"
    # As in generate(): asked once before the prompt, then once per token.
    assert result.completion_tokens == 3
    assert calls == 4
    assert result.text
    assert "".join(deltas) == result.text
    full = generate(tiny_loaded, LONG_STORY, max_tokens=10, temperature=0)
    assert full.text.startswith(result.text)
    assert mate.result(timeout=30) == generate(
        tiny_loaded, chat(PROMPTS[2]), max_tokens=20, temperature=0
    )


def test_it_cancels_a_running_job_within_one_step(
    tiny_loaded: LoadedModel, engine: BatchingEngine
) -> None:
    holder: list[EngineHandle] = []
    deltas: list[str] = []
    tokens = 0
    tokens_at_cancel: list[int] = []

    def should_stop() -> bool:
        nonlocal tokens
        tokens += 1
        return False

    def on_text(delta: str) -> None:
        deltas.append(delta)
        if len(deltas) == 2:
            # Cancelled from another thread (e.g. the API), waiting until it has.
            thread = threading.Thread(target=holder[0].cancel)
            thread.start()
            thread.join()
            tokens_at_cancel.append(tokens - 1)  # one call was before the prompt

    holder.append(
        engine.submit(
            request(
                tiny_loaded, LONG_STORY, max_tokens=300, on_text=on_text, should_stop=should_stop
            )
        )
    )
    result = holder[0].result(timeout=30)

    assert result.finish_reason == "cancelled"
    assert result.completion_tokens == tokens_at_cancel[0]  # no further token was generated
    assert result.text
    assert "".join(deltas) == result.text


def test_it_cancels_a_job_that_is_still_waiting(tiny_loaded: LoadedModel) -> None:
    engine = BatchingEngine(tiny_loaded, max_batch_size=1)
    engine.start()
    try:
        started = threading.Event()

        def slow_client() -> bool:
            started.set()
            time.sleep(0.002)  # keeps the blocker busy for 2 s at least
            return False

        blocker = engine.submit(
            request(tiny_loaded, LONG_STORY, max_tokens=1000, should_stop=slow_client)
        )
        assert started.wait(timeout=30)
        asked: list[bool] = []
        queued = engine.submit(
            request(tiny_loaded, MESSAGES, max_tokens=10, should_stop=lambda: asked.append(True))
        )
        assert engine.stats.waiting == 1

        queued.cancel()
        result = queued.result(timeout=30)

        assert result.finish_reason == "cancelled"
        assert (result.text, result.completion_tokens) == ("", 0)
        assert result.prompt_tokens == queued.prompt_tokens
        assert asked == []  # it never reached the batch
        assert not blocker.done()
        blocker.cancel()
        assert blocker.result(timeout=30).finish_reason == "cancelled"
    finally:
        engine.stop(drain=False)


def test_it_times_out_a_job_that_runs_too_long(
    tiny_loaded: LoadedModel, engine: BatchingEngine
) -> None:
    deltas: list[str] = []

    def slow_client() -> bool:
        time.sleep(0.01)
        return False

    mate = engine.submit(request(tiny_loaded, MESSAGES, max_tokens=12))
    handle = engine.submit(
        request(
            tiny_loaded,
            LONG_STORY,
            max_tokens=1000,
            timeout=0.3,
            on_text=deltas.append,
            should_stop=slow_client,
        )
    )

    with pytest.raises(JobTimeoutError) as excinfo:
        handle.result(timeout=30)

    error = excinfo.value
    assert isinstance(error, GenerationError)
    assert isinstance(error, TimeoutError)
    assert error.timeout == 0.3
    assert 0 < error.partial.completion_tokens < 1000
    assert error.partial.text == "".join(deltas)
    assert handle.finished_at - handle.submitted_at < 2
    assert mate.result(timeout=30).completion_tokens == 12


def test_it_times_out_a_job_while_it_waits(tiny_loaded: LoadedModel) -> None:
    engine = BatchingEngine(tiny_loaded, max_batch_size=1)
    engine.start()
    try:
        blocker = engine.submit(
            request(tiny_loaded, LONG_STORY, max_tokens=1000, should_stop=lambda: time.sleep(0.002))
        )
        queued = engine.submit(request(tiny_loaded, MESSAGES, max_tokens=10, timeout=0.1))

        with pytest.raises(JobTimeoutError) as excinfo:
            queued.result(timeout=30)

        assert excinfo.value.partial.completion_tokens == 0
        assert not blocker.done()
    finally:
        engine.stop(drain=False)


def test_it_fails_in_flight_jobs_when_the_engine_thread_crashes(
    tiny_loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    deaths: list[BaseException] = []
    engine = BatchingEngine(tiny_loaded, max_batch_size=2, on_dead=deaths.append)
    model = tiny_loaded.model
    real_forward = model.forward
    forwards = 0

    def faulty_forward(*args, **kwargs):
        nonlocal forwards
        forwards += 1
        if forwards > 5:
            raise RuntimeError("injected fault")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", faulty_forward)
    engine.start()
    handles = [
        engine.submit(request(tiny_loaded, chat(p), max_tokens=200)) for p in PROMPTS[:3]
    ]  # two in the batch, one waiting

    streamed: list[int] = []
    for handle in handles:
        with pytest.raises(EngineDeadError) as excinfo:
            handle.result(timeout=30)
        assert "injected fault" in str(excinfo.value)
        assert isinstance(excinfo.value.__cause__, RuntimeError)
        # What the job produced before the crash, to bill and keep.
        partial = excinfo.value.partial
        assert partial is not None and partial.finish_reason == "cancelled"
        assert partial.prompt_tokens == len(handle.request.prompt_ids)
        streamed.append(partial.completion_tokens)
    assert streamed[0] > 0 and streamed[2] == 0  # the waiting job never generated
    assert not engine.alive
    assert "injected fault" in (engine.dead_reason or "")
    assert len(deaths) == 1 and str(deaths[0]) == "injected fault"
    with pytest.raises(EngineDeadError):
        engine.submit(request(tiny_loaded, MESSAGES, max_tokens=4))
    engine.stop()  # harmless on a dead engine


def test_it_drains_in_flight_jobs_on_stop(tiny_loaded: LoadedModel) -> None:
    engine = BatchingEngine(tiny_loaded, max_batch_size=2)
    engine.start()
    handles = [engine.submit(request(tiny_loaded, chat(p), max_tokens=10)) for p in PROMPTS]

    engine.stop(drain=True)

    assert all(h.done() for h in handles)
    assert [h.result().completion_tokens for h in handles] == [10] * len(PROMPTS)
    assert not engine.alive
    with pytest.raises(EngineDeadError):
        engine.submit(request(tiny_loaded, MESSAGES, max_tokens=4))


def test_it_fails_in_flight_jobs_when_stopped_without_draining(
    tiny_loaded: LoadedModel,
) -> None:
    engine = BatchingEngine(tiny_loaded, max_batch_size=1)
    engine.start()
    started = threading.Event()
    running = engine.submit(
        request(tiny_loaded, LONG_STORY, max_tokens=1000, should_stop=lambda: started.set())
    )
    queued = engine.submit(request(tiny_loaded, MESSAGES, max_tokens=10))
    assert started.wait(timeout=30)

    engine.stop(drain=False)

    for handle in (running, queued):
        with pytest.raises(EngineDeadError, match="stopped"):
            handle.result(timeout=1)
    assert not engine.alive


def test_it_fails_what_is_left_when_a_draining_stop_times_out(tiny_loaded: LoadedModel) -> None:
    engine = BatchingEngine(tiny_loaded)
    engine.start()
    quick = engine.submit(request(tiny_loaded, MESSAGES, max_tokens=2))
    slow = engine.submit(
        request(tiny_loaded, LONG_STORY, max_tokens=1000, should_stop=lambda: time.sleep(0.01))
    )

    started = time.monotonic()
    engine.stop(drain=True, timeout=0.3)

    assert time.monotonic() - started < 5
    assert quick.result(timeout=1).completion_tokens == 2
    with pytest.raises(EngineDeadError):
        slow.result(timeout=1)
