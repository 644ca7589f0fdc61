"""The scheduler alone, without a model: admission, reaping, step plans, post-processing.

Sequences are real (with a real CompletionMonitor over a one-character-per-token decoder); the KV
cache is a stand-in that sizes rows like the real one and records the row moves.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.detokenizer import CompletionMonitor
from engine.errors import JobTimeoutError
from engine.request import EngineHandle, EngineRequest
from engine.scheduler import Scheduler, StepPlan
from engine.sequence import Sequence

EOS = 0
TOKEN = 7  # what the stand-in model always samples


class FakeKV:
    """A KV cache that costs one byte per token and row, and records what it is asked."""

    def __init__(self) -> None:
        self.moves: list[tuple[str, int, int]] = []
        self.ensured: list[tuple[int, int, int]] = []

    def allocation_bytes(self, rows: int, length: int) -> int:
        return rows * length

    def ensure(self, rows: int, length: int, live_rows: int, length_limit: int) -> None:
        self.ensured.append((rows, length, length_limit))

    def copy_row(self, src: int, dst: int, length: int) -> None:
        self.moves.append(("copy", src, dst))

    def swap_rows(self, a: int, a_len: int, b: int, b_len: int) -> None:
        self.moves.append(("swap", a, b))


def make_seq(prompt_len: int, max_tokens: int = 4, *, timeout: float | None = None, **callbacks):
    request = EngineRequest(
        prompt_ids=list(range(1, prompt_len + 1)), max_tokens=max_tokens, timeout=timeout
    )
    handle = EngineHandle(request, prompt_len, wake=lambda: None)
    monitor = CompletionMonitor(
        decode=lambda ids: "".join(chr(ord("a") + token % 26) for token in ids),
        prompt_tokens=prompt_len,
        max_tokens=max_tokens,
        eos_ids=[EOS],
        stop=(),
        on_text=callbacks.get("on_text"),
        should_stop=callbacks.get("should_stop"),
    )
    return Sequence(handle, request.prompt_ids, monitor, [], timeout)


def make_scheduler(kv: FakeKV | None = None, **limits) -> Scheduler:
    limits = {
        "max_batch_size": 8,
        "max_batch_tokens": 64,
        "max_prefill_tokens": 32,
        "max_cache_bytes": 10**9,
        **limits,
    }
    return Scheduler(kv or FakeKV(), **limits)


def step(scheduler: Scheduler, now: float = 0.0) -> StepPlan | None:
    """One engine step, with a model that samples TOKEN for every sequence."""
    plan = scheduler.schedule(now)
    if plan is not None:
        ending = [seq for seq, start, n in plan.prefill if start + n == seq.prompt_len]
        scheduler.postprocess_prefill(plan.prefill, [TOKEN] * len(ending))
        scheduler.postprocess_decode(plan.decode, [TOKEN] * len(plan.decode))
    scheduler.compact()
    return plan


def test_it_plans_nothing_without_sequences() -> None:
    assert make_scheduler().schedule(0.0) is None


def test_it_admits_in_submission_order_up_to_max_batch_size() -> None:
    scheduler = make_scheduler(max_batch_size=2)
    a, b, c = make_seq(3), make_seq(3), make_seq(3)
    scheduler.add([a, b, c])

    plan = scheduler.schedule(0.0)

    assert plan is not None
    assert plan.prefill == [(a, 0, 3), (b, 0, 3)]
    assert plan.decode == []
    assert scheduler.rows == [a, b]
    assert list(scheduler.waiting) == [c]


def test_it_stamps_when_a_sequence_enters_the_batch() -> None:
    scheduler = make_scheduler(max_batch_size=1)
    first, second = make_seq(3, max_tokens=2), make_seq(3, max_tokens=2)
    scheduler.add([first, second])

    step(scheduler)
    assert first.handle.admitted_at is not None and second.handle.admitted_at is None
    assert first.handle.submitted_at <= first.handle.admitted_at <= first.handle.first_token_at

    step(scheduler)  # the first one's last token: its row goes to the second
    step(scheduler)
    assert second.handle.admitted_at >= first.handle.finished_at


def test_it_splits_a_long_prompt_into_chunks_within_the_budget() -> None:
    scheduler = make_scheduler(max_batch_tokens=6, max_prefill_tokens=8)
    short, long = make_seq(3, max_tokens=10), make_seq(12)
    scheduler.add([short])
    step(scheduler)
    scheduler.add([long])

    plans = [step(scheduler) for _ in range(3)]

    # One token for the decoding sequence, the rest of the step's budget for the prompt.
    assert [p.decode for p in plans] == [[short]] * 3
    assert [p.prefill for p in plans] == [[(long, 0, 5)], [(long, 5, 5)], [(long, 10, 2)]]
    assert long.decoding and long.monitor.ids == [TOKEN]


def test_it_reserves_kv_room_for_the_step() -> None:
    kv = FakeKV()
    scheduler = make_scheduler(kv)
    scheduler.add([make_seq(5, max_tokens=3), make_seq(9, max_tokens=4)])

    step(scheduler)

    # Two rows, the longest chunk ends at 9, and no sequence may grow beyond 9 + 4.
    assert kv.ensured == [(2, 9, 13)]


def test_it_waits_for_kv_room_in_submission_order() -> None:
    # Room for two rows of 20 tokens: a third sequence waits, and so does the small one behind it.
    scheduler = make_scheduler(max_cache_bytes=40)
    a, b, c, d = make_seq(10, 10), make_seq(10, 10), make_seq(10, 10), make_seq(1, 1)
    scheduler.add([a, b, c, d])

    step(scheduler)

    assert scheduler.rows == [a, b]
    assert list(scheduler.waiting) == [c, d]


def test_it_finishes_a_sequence_at_max_tokens_and_frees_its_row() -> None:
    scheduler = make_scheduler()
    seq = make_seq(4, max_tokens=3)
    scheduler.add([seq])

    for _ in range(3):  # prefill (first token), then two decode steps
        step(scheduler)

    result = seq.handle.result(timeout=0)
    assert (result.completion_tokens, result.finish_reason) == (3, "length")
    assert result.prompt_tokens == 4
    assert scheduler.rows == [] and not scheduler.has_work
    assert (scheduler.generated_tokens, scheduler.finished, scheduler.failed) == (3, 1, 0)


def test_it_keeps_decoding_sequences_in_the_first_rows() -> None:
    kv = FakeKV()
    scheduler = make_scheduler(kv, max_prefill_tokens=4)
    long, short = make_seq(10), make_seq(2)
    scheduler.add([long, short])

    step(scheduler)  # long gets 4 prompt tokens, short none (the budget is spent)
    step(scheduler)  # 4 more for long; short still waits for budget
    step(scheduler)  # long's last 2 and short's 2: both decode from now on

    assert long.decoding and short.decoding
    assert [seq.row for seq in scheduler.rows] == [0, 1]
    assert scheduler.n_decoding == 2
    assert kv.moves == []

    other = make_seq(6)
    scheduler.add([other])
    step(scheduler)
    assert scheduler.rows[2] is other and not other.decoding


def test_it_moves_one_row_when_a_sequence_leaves() -> None:
    kv = FakeKV()
    scheduler = make_scheduler(kv)
    first, second, third = make_seq(2, max_tokens=1), make_seq(2), make_seq(2)
    scheduler.add([first, second, third])

    step(scheduler)  # first is done after its first token

    assert first.done
    assert scheduler.rows == [third, second]
    assert kv.moves == [("copy", 2, 0)]  # the last row fills the hole; the middle one stays


def test_it_gives_a_sequence_that_starts_decoding_the_row_a_finished_one_left() -> None:
    kv = FakeKV()
    scheduler = make_scheduler(kv)
    first, second = make_seq(2, max_tokens=2), make_seq(2, max_tokens=10)
    scheduler.add([first, second])
    step(scheduler)  # both prompts done: rows [first, second], decoding
    third = make_seq(3)
    scheduler.add([third])

    step(scheduler)  # first's last token; third's prompt in the same step

    assert first.done and third.decoding
    assert scheduler.rows == [third, second]
    assert scheduler.n_decoding == 2
    assert kv.moves == [("copy", 2, 0)]


def test_it_cancels_a_sequence_that_is_still_waiting() -> None:
    scheduler = make_scheduler(max_batch_size=1)
    running, queued = make_seq(4, max_tokens=100), make_seq(4)
    scheduler.add([running, queued])
    step(scheduler)

    queued.handle.cancel()
    step(scheduler)

    result = queued.handle.result(timeout=0)
    assert (result.text, result.completion_tokens, result.finish_reason) == ("", 0, "cancelled")
    assert list(scheduler.waiting) == []
    assert scheduler.rows == [running] and not running.done


def test_it_times_out_a_sequence_past_its_deadline() -> None:
    scheduler = make_scheduler()
    seq = make_seq(4, max_tokens=100, timeout=1.0)
    scheduler.add([seq])
    now = seq.handle.submitted_at
    step(scheduler, now)
    step(scheduler, now + 0.5)

    step(scheduler, now + 1.0)

    with pytest.raises(JobTimeoutError) as excinfo:
        seq.handle.result(timeout=0)
    assert excinfo.value.timeout == 1.0
    assert excinfo.value.partial.completion_tokens == 2
    assert excinfo.value.partial.finish_reason == "cancelled"
    assert scheduler.rows == [] and scheduler.failed == 1


def test_it_asks_should_stop_once_before_the_prompt() -> None:
    scheduler = make_scheduler()
    asked: list[bool] = []
    stopping = make_seq(4, should_stop=lambda: asked.append(True) or True)
    mate = make_seq(4)
    scheduler.add([stopping, mate])

    plan = step(scheduler)

    assert plan is not None and plan.prefill == [(mate, 0, 4)]
    assert asked == [True]
    result = stopping.handle.result(timeout=0)
    assert (result.completion_tokens, result.finish_reason) == (0, "cancelled")


def test_it_fails_only_the_sequence_whose_callback_raises() -> None:
    def on_text(delta: str) -> None:
        raise ValueError("client went away")

    scheduler = make_scheduler()
    failing, mate = make_seq(3, on_text=on_text), make_seq(3, max_tokens=2)
    scheduler.add([failing, mate])

    step(scheduler)
    step(scheduler)

    with pytest.raises(ValueError, match="client went away"):
        failing.handle.result(timeout=0)
    assert mate.handle.result(timeout=0).completion_tokens == 2
    assert (scheduler.finished, scheduler.failed) == (1, 1)


def test_it_hands_back_what_had_not_ended_when_abandoned() -> None:
    scheduler = make_scheduler(max_batch_size=1)
    done, running, queued = make_seq(2, max_tokens=1), make_seq(2), make_seq(2)
    scheduler.add([done])
    step(scheduler)
    scheduler.add([running, queued])
    step(scheduler)

    assert scheduler.abandon() == [running, queued]
    assert not scheduler.has_work


def test_it_imports_no_torch() -> None:
    root = Path(__file__).resolve().parents[2]
    code = "import sys, engine.scheduler; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
