"""The continuous-batching engine (tiny random demo model).

Mechanics only, as in test_generation: batching must not change what a job
produces (greedy output equals unbatched generate() token for token), jobs
join and leave a running batch, and one job's trouble stays its own.
Cancellation, timeouts, crashes and stopping: test_engine_lifecycle.py.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections import Counter

import pytest
import torch

from bench.baselines import TransformersEngine, generate, generate_messages
from engine.attention import _allowed_slots, _eager_attention, _gemv_attention
from engine.engine import BatchingEngine
from engine.errors import (
    GenerationError,
    InvalidGenerationRequest,
    PromptTooLongError,
)
from engine.registry import LoadedModel
from engine.request import EngineRequest
from workers.prompts import encode_prompt

from .helpers import LONG_STORY, MESSAGES, PROMPTS, chat, request


def test_it_matches_unbatched_generate_token_for_token(
    tiny_loaded: LoadedModel, engine: BatchingEngine
) -> None:
    expected = [generate(tiny_loaded, chat(p), max_tokens=24, temperature=0) for p in PROMPTS]

    handles = [engine.submit(request(tiny_loaded, chat(p), max_tokens=24)) for p in PROMPTS]

    assert [h.result(timeout=30) for h in handles] == expected
    lengths = [h.prompt_tokens for h in handles]
    assert len(set(lengths)) == len(lengths)
    assert max(lengths) > 64 > min(lengths)  # chunked and packed prefills both ran


def test_it_streams_the_same_deltas_as_generate(
    tiny_loaded: LoadedModel, engine: BatchingEngine
) -> None:
    expected_deltas: list[str] = []
    expected = generate(
        tiny_loaded, MESSAGES, max_tokens=32, temperature=0, on_text=expected_deltas.append
    )
    deltas: list[str] = []
    mate = engine.submit(request(tiny_loaded, chat(PROMPTS[2]), max_tokens=32))

    result = engine.submit(
        request(tiny_loaded, MESSAGES, max_tokens=32, on_text=deltas.append)
    ).result(timeout=30)

    assert result == expected
    assert deltas == expected_deltas
    assert "".join(deltas) == result.text
    mate.result(timeout=30)


def test_it_lets_a_new_job_join_the_running_batch(
    tiny_loaded: LoadedModel, engine: BatchingEngine
) -> None:
    long_tokens = 0
    twenty_done = threading.Event()
    short_submitted = threading.Event()

    def long_should_stop() -> bool:  # asked once before the prompt, then once per token
        nonlocal long_tokens
        long_tokens += 1
        if long_tokens == 21:
            twenty_done.set()
            # Hold the engine here until the short job is in, whatever the
            # scheduling of this test's thread.
            assert short_submitted.wait(timeout=30)
        return False

    long = engine.submit(
        request(tiny_loaded, LONG_STORY, max_tokens=300, should_stop=long_should_stop)
    )
    assert twenty_done.wait(timeout=30)
    decoding_seen: list[int] = []

    def short_should_stop() -> bool:
        decoding_seen.append(engine.stats.decoding)
        return False

    short = engine.submit(
        request(tiny_loaded, MESSAGES, max_tokens=5, should_stop=short_should_stop)
    )
    short_submitted.set()
    result = short.result(timeout=30)

    assert result.completion_tokens == 5
    assert result.finish_reason == "length"
    assert not long.done()  # the long job still has most of its 300 tokens to go
    assert long_tokens < 21 + 10
    assert max(decoding_seen) == 2  # both decoded in the same forward passes
    assert long.result(timeout=60).completion_tokens == 300


def test_it_fails_only_the_job_whose_callback_raises(
    tiny_loaded: LoadedModel, engine: BatchingEngine
) -> None:
    expected = [generate(tiny_loaded, chat(p), max_tokens=16, temperature=0) for p in PROMPTS[:3]]

    def on_text(delta: str) -> None:
        raise ValueError("client went away")

    mates = [engine.submit(request(tiny_loaded, chat(p), max_tokens=16)) for p in PROMPTS[:3]]
    failing = engine.submit(request(tiny_loaded, LONG_STORY, max_tokens=16, on_text=on_text))

    with pytest.raises(ValueError, match="client went away"):
        failing.result(timeout=30)
    assert [h.result(timeout=30) for h in mates] == expected
    assert engine.alive
    assert engine.stats.jobs_failed == 1


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"prompt_ids": []}, InvalidGenerationRequest),
        ({"prompt_ids": [1, 10**6]}, InvalidGenerationRequest),  # outside the vocabulary
        ({"prompt_ids": [1, -1]}, InvalidGenerationRequest),
        ({"prompt_ids": "hello"}, InvalidGenerationRequest),
        ({"max_tokens": 0}, InvalidGenerationRequest),
        ({"temperature": -1.0}, InvalidGenerationRequest),
        ({"top_p": 0.0}, InvalidGenerationRequest),
        ({"stop": [""]}, InvalidGenerationRequest),
        ({"seed": "42"}, InvalidGenerationRequest),
        ({"timeout": 0}, InvalidGenerationRequest),
        ({"max_tokens": 2048}, PromptTooLongError),
    ],
)
def test_it_rejects_a_bad_request_without_harming_the_batch(
    tiny_loaded: LoadedModel, engine: BatchingEngine, overrides: dict, error: type
) -> None:
    mate = engine.submit(request(tiny_loaded, MESSAGES, max_tokens=12))
    fields = {"prompt_ids": encode_prompt(tiny_loaded, MESSAGES), "max_tokens": 4, **overrides}

    with pytest.raises(error) as excinfo:
        engine.submit(EngineRequest(**fields))

    assert isinstance(excinfo.value, GenerationError)
    assert mate.result(timeout=30) == generate(tiny_loaded, MESSAGES, max_tokens=12, temperature=0)
    assert engine.alive


def test_it_reproduces_seeded_samples_regardless_of_batch_mates(
    tiny_loaded: LoadedModel, engine: BatchingEngine
) -> None:
    sampling = {"max_tokens": 16, "temperature": 0.9, "top_p": 0.95, "seed": 1234}
    alone = engine.submit(request(tiny_loaded, MESSAGES, **sampling)).result(timeout=30)

    mates = [
        engine.submit(request(tiny_loaded, chat(p), max_tokens=20, temperature=1.0, seed=seed))
        for seed, p in enumerate(PROMPTS)
    ]
    crowded = engine.submit(request(tiny_loaded, MESSAGES, **sampling))
    greedy_mate = engine.submit(request(tiny_loaded, LONG_STORY, max_tokens=20))

    assert crowded.result(timeout=30) == alone
    assert alone == generate(tiny_loaded, MESSAGES, **sampling)  # same draws as generate()
    other_seed = engine.submit(request(tiny_loaded, MESSAGES, **{**sampling, "seed": 99}))
    assert other_seed.result(timeout=30).text != alone.text
    for handle in [*mates, greedy_mate]:
        handle.result(timeout=30)


def test_it_cuts_the_text_before_a_stop_string(
    tiny_loaded: LoadedModel, engine: BatchingEngine
) -> None:
    full = generate(tiny_loaded, LONG_STORY, max_tokens=40, temperature=0)
    position = next(
        p
        for p in range(10, len(full.text) - 3)
        if full.text.find(full.text[p : p + 3]) == p and "\ufffd" not in full.text[p : p + 3]
    )
    stop = full.text[position : position + 3]
    deltas: list[str] = []
    mate = engine.submit(request(tiny_loaded, MESSAGES, max_tokens=12, stop="\x00never"))

    result = engine.submit(
        request(tiny_loaded, LONG_STORY, max_tokens=40, stop=[stop], on_text=deltas.append)
    ).result(timeout=30)

    assert result.text == full.text[:position]
    assert result.finish_reason == "stop"
    assert result.completion_tokens < full.completion_tokens
    assert "".join(deltas) == result.text  # nothing of the stop string was streamed
    assert result == generate(tiny_loaded, LONG_STORY, max_tokens=40, temperature=0, stop=stop)
    assert mate.result(timeout=30).finish_reason == "length"


def test_it_keeps_the_batch_within_max_batch_size(tiny_loaded: LoadedModel) -> None:
    expected = [generate(tiny_loaded, chat(p), max_tokens=12, temperature=0) for p in PROMPTS]
    engine = BatchingEngine(tiny_loaded, max_batch_size=2)
    seen: list[tuple[int, int]] = []

    def should_stop() -> bool:
        stats = engine.stats
        seen.append((stats.batch_size, stats.waiting))
        return False

    engine.start()
    try:
        requests = [
            request(tiny_loaded, chat(p), max_tokens=12, should_stop=should_stop) for p in PROMPTS
        ]
        handles = [engine.submit(r) for r in requests]
        results = [h.result(timeout=30) for h in handles]
    finally:
        engine.stop()

    assert results == expected
    assert max(batch for batch, _ in seen) == 2
    assert max(waiting for _, waiting in seen) >= 1  # the others waited their turn


def test_it_keeps_every_step_within_the_token_budget(
    tiny_loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = [generate(tiny_loaded, chat(p), max_tokens=8, temperature=0) for p in PROMPTS]
    engine = BatchingEngine(tiny_loaded, max_batch_size=4, max_batch_tokens=12)
    tokens_per_step: Counter[int] = Counter()
    real_forward = tiny_loaded.model.forward

    def counting_forward(*args, input_ids, **kwargs):
        tokens_per_step[engine.stats.steps] += input_ids.numel()
        return real_forward(*args, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(tiny_loaded.model, "forward", counting_forward)
    engine.start()
    try:
        requests = [request(tiny_loaded, chat(p), max_tokens=8) for p in PROMPTS]
        handles = [engine.submit(r) for r in requests]
        results = [h.result(timeout=30) for h in handles]
    finally:
        engine.stop()

    assert results == expected  # prompts of up to ~160 tokens went in chunks of <= 12
    assert max(tokens_per_step.values()) == 12
    prompt_tokens = sum(r.prompt_tokens for r in results)
    decoded = sum(r.completion_tokens - 1 for r in results)  # the first comes from prefill
    assert sum(tokens_per_step.values()) == prompt_tokens + decoded


def test_it_generates_from_messages_like_generate(
    tiny_loaded: LoadedModel, engine: BatchingEngine
) -> None:
    deltas: list[str] = []
    expected_deltas: list[str] = []
    kwargs = {"max_tokens": 20, "temperature": 0, "stop": ["\x00"]}

    result = generate_messages(engine, tiny_loaded, MESSAGES, on_text=deltas.append, **kwargs)

    assert result == generate(tiny_loaded, MESSAGES, on_text=expected_deltas.append, **kwargs)
    assert deltas == expected_deltas
    with pytest.raises(PromptTooLongError):
        generate_messages(engine, tiny_loaded, MESSAGES, max_tokens=tiny_loaded.context_window)
    with pytest.raises(InvalidGenerationRequest):
        generate_messages(engine, tiny_loaded, [], max_tokens=4)


def test_it_serves_the_same_requests_through_transformers_continuous_batching(
    tiny_loaded: LoadedModel,
) -> None:
    expected = [generate(tiny_loaded, chat(p), max_tokens=12, temperature=0) for p in PROMPTS[:3]]
    engine = TransformersEngine(tiny_loaded, max_batch_size=4, cache_tokens=4096)
    engine.start()
    try:
        handles = [engine.submit(request(tiny_loaded, chat(p), max_tokens=12)) for p in PROMPTS[:3]]
        assert [h.result(timeout=30) for h in handles] == expected
        with pytest.raises(InvalidGenerationRequest):  # one decoding mode per manager
            engine.submit(request(tiny_loaded, MESSAGES, max_tokens=4, temperature=0.7))
    finally:
        engine.stop()
    assert not engine.alive


def test_it_computes_single_query_attention_like_sdpa() -> None:
    # The half-precision decode path, checked in float32 against torch's sdpa,
    # with grouped-query heads and rows of different lengths.
    batch, heads, kv_heads, length, dim = 5, 12, 4, 37, 16
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(batch, heads, 1, dim, generator=generator)
    key = torch.randn(batch, kv_heads, length, dim, generator=generator)
    value = torch.randn(batch, kv_heads, length, dim, generator=generator)
    positions = torch.tensor([3, 36, 20, 0, 10])
    allowed = (torch.arange(length)[None, :] <= positions[:, None])[:, None, None, :]
    additive = torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf"))

    out = _gemv_attention(query, key, value, additive, None)

    expected = torch.nn.functional.scaled_dot_product_attention(
        query,
        key.repeat_interleave(heads // kv_heads, dim=1),
        value.repeat_interleave(heads // kv_heads, dim=1),
        attn_mask=allowed,
    ).transpose(1, 2)
    torch.testing.assert_close(out, expected)


def test_it_computes_windowed_soft_capped_attention_like_eager() -> None:
    # Gemma 2's eager attention (scale, soft-cap, additive mask, float32 softmax) is
    # the reference for both the prompt path and the single-query decode path.
    from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward

    heads, kv_heads, length, dim, window = 4, 2, 20, 8, 6
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, heads, length, dim, generator=generator) * 3
    key = torch.randn(1, kv_heads, length, dim, generator=generator) * 3
    value = torch.randn(1, kv_heads, length, dim, generator=generator)
    allowed = _allowed_slots(torch.arange(length), length, window)[None, None]
    additive = torch.zeros(allowed.shape).masked_fill_(~allowed, torch.finfo(torch.float32).min)
    module = torch.nn.Module()
    module.num_key_value_groups, module.training = heads // kv_heads, False
    expected, _ = eager_attention_forward(
        module, query, key, value, additive, scaling=0.3, softcap=5.0
    )

    rows = [query[0, :, :, None].transpose(0, 1)]  # one query per row: [length, heads, 1, dim]
    rows += [key.expand(length, -1, -1, -1), value.expand(length, -1, -1, -1)]
    per_row = torch.zeros(length, 1, 1, length).masked_fill_(
        ~allowed[0, 0, :, None, None], float("-inf")
    )

    prompt = _eager_attention(query, key, value, allowed, 0.3, 5.0)
    decode = _gemv_attention(*rows, per_row, 0.3, 5.0)
    decode_bf16 = _gemv_attention(*(t.bfloat16() for t in rows), per_row, 0.3, 5.0)

    torch.testing.assert_close(prompt, expected)
    torch.testing.assert_close(decode[:, 0], expected[0])
    torch.testing.assert_close(decode_bf16[:, 0].float(), expected[0], atol=0.05, rtol=0.02)
    assert not allowed[0, 0, -1, : length - window].any()  # the window did leave keys out


def test_it_serves_a_bfloat16_model(tiny_loaded: LoadedModel) -> None:
    model = copy.deepcopy(tiny_loaded.model).to(torch.bfloat16)
    loaded = dataclasses.replace(
        tiny_loaded, model=model, dtype=torch.bfloat16, lock=threading.Lock()
    )
    engine = BatchingEngine(loaded, max_batch_size=4, max_prefill_tokens=64)
    engine.start()
    try:
        alone = engine.submit(request(loaded, LONG_STORY, max_tokens=20)).result(timeout=30)
        handles = [
            engine.submit(request(loaded, chat(p), max_tokens=20, temperature=t, seed=1))
            for p in PROMPTS
            for t in (0, 0.8)
        ]
        results = [h.result(timeout=30) for h in handles]
    finally:
        engine.stop()

    # (A random model may end a turn early; the point is that every job is served.)
    assert all(0 < r.completion_tokens <= 20 for r in [alone, *results])
    assert all(r.finish_reason in ("length", "stop") for r in [alone, *results])
    # Greedy decoding is batch-invariant only in float32, but a lone job's first
    # token is computed exactly as generate() computes it.
    expected = generate(loaded, LONG_STORY, max_tokens=1, temperature=0)
    assert alone.text.startswith(expected.text)
