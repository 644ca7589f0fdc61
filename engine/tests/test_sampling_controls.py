"""Penalties, logit_bias, top_k/min_p, logprobs and n choices on the batching engine (tiny model).

The tiny model's weights are random, so greedy decoding repeats a few tokens over and over:
that is what the penalties must change. Each test compares against the same request without
the control, so it fails if the engine ignores it.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch

from engine.engine import BatchingEngine
from engine.errors import InvalidGenerationRequest
from engine.registry import LoadedModel

from .helpers import LONG_STORY, MESSAGES, request

TOKENS = 24


def ids_of(engine: BatchingEngine, loaded: LoadedModel, **kwargs) -> list[int]:
    result = engine.submit(request(loaded, LONG_STORY, max_tokens=TOKENS, **kwargs)).result(60)
    return loaded.tokenizer.encode(result.text, add_special_tokens=False)


def greedy_tokens(engine: BatchingEngine, loaded: LoadedModel, **kwargs) -> list[int]:
    """The picked token ids, read from logprobs (which leave only end-of-turn out)."""
    handle = engine.submit(
        request(loaded, LONG_STORY, max_tokens=TOKENS, logprobs=0, stop=(), **kwargs)
    )
    return [entry.token for entry in handle.result(60).logprobs]


def test_frequency_and_presence_penalties_make_greedy_output_repeat_less(engine, tiny_loaded):
    plain = greedy_tokens(engine, tiny_loaded)
    most = Counter(plain).most_common(1)[0][1]
    assert most > 2, "the random model should repeat itself without a penalty"

    for field in ("frequency_penalty", "presence_penalty"):
        penalized = greedy_tokens(engine, tiny_loaded, **{field: 2.0})
        assert penalized != plain, field
        assert Counter(penalized).most_common(1)[0][1] < most, field


def test_a_negative_frequency_penalty_makes_it_repeat_more(engine, tiny_loaded):
    plain = greedy_tokens(engine, tiny_loaded)
    encouraged = greedy_tokens(engine, tiny_loaded, frequency_penalty=-2.0)
    assert len(set(encouraged)) <= len(set(plain))
    assert encouraged != plain or len(set(plain)) == 1


def test_repetition_penalty_changes_greedy_output(engine, tiny_loaded):
    plain = greedy_tokens(engine, tiny_loaded)
    penalized = greedy_tokens(engine, tiny_loaded, repetition_penalty=2.0)
    assert penalized != plain
    assert Counter(penalized).most_common(1)[0][1] <= Counter(plain).most_common(1)[0][1]


def test_logit_bias_bans_and_forces_tokens(engine, tiny_loaded):
    plain = greedy_tokens(engine, tiny_loaded)
    banned = plain[0]
    without = greedy_tokens(engine, tiny_loaded, logit_bias={banned: -100})
    assert banned not in without

    forced = tiny_loaded.tokenizer.encode(" cat", add_special_tokens=False)[0]
    assert set(greedy_tokens(engine, tiny_loaded, logit_bias={forced: 100})) == {forced}


def test_top_k_one_and_min_p_one_sample_the_greedy_token(engine, tiny_loaded):
    greedy = greedy_tokens(engine, tiny_loaded)
    for controls in ({"top_k": 1}, {"min_p": 1.0}):
        sampled = greedy_tokens(engine, tiny_loaded, temperature=1.5, seed=7, **controls)
        assert sampled == greedy, controls
    # Without them, a hot temperature wanders off the greedy path.
    assert greedy_tokens(engine, tiny_loaded, temperature=1.5, seed=7) != greedy


def test_logprobs_are_the_models_distribution_in_order(engine, tiny_loaded):
    handle = engine.submit(request(tiny_loaded, MESSAGES, max_tokens=8, logprobs=5))
    result = handle.result(60)
    assert len(result.logprobs) == result.completion_tokens - (result.finish_reason == "stop")
    for entry in result.logprobs:
        assert entry.logprob <= 0
        assert [lp for _, lp in entry.top] == sorted((lp for _, lp in entry.top), reverse=True)
        assert len(entry.top) == 5
        # Greedy: the pick is the most likely token, and its logprob is the top one's.
        assert entry.top[0] == (entry.token, pytest.approx(entry.logprob))
        assert sum(math.exp(lp) for _, lp in entry.top) <= 1 + 1e-5

    # The first token's logprobs are the log-softmax of the prompt's last logits.
    prompt = torch.tensor([handle.request.prompt_ids])
    with torch.inference_mode():
        logits = tiny_loaded.model(input_ids=prompt).logits[0, -1].float()
    expected = logits.log_softmax(-1)
    first = result.logprobs[0]
    assert first.logprob == pytest.approx(float(expected[first.token]), abs=1e-4)


def test_logprobs_reach_the_callback_before_their_text(engine, tiny_loaded):
    seen: list[str] = []
    handle = engine.submit(
        request(
            tiny_loaded,
            MESSAGES,
            max_tokens=8,
            logprobs=0,
            on_logprobs=lambda entries: seen.extend("L" for _ in entries),
            on_text=lambda text: seen.append("T"),
        )
    )
    result = handle.result(60)
    assert seen.count("L") == len(result.logprobs)
    assert seen[0] == "L"
    assert all(entry.top == () for entry in result.logprobs)


def test_choices_share_one_prefill_and_decode_on_their_own(engine, tiny_loaded):
    prompt = request(tiny_loaded, MESSAGES, max_tokens=8)
    greedy = engine.submit(prompt).result(60)
    before = engine.stats.prompt_tokens

    choices = [request(tiny_loaded, MESSAGES, max_tokens=8)] + [
        request(tiny_loaded, MESSAGES, max_tokens=8, temperature=1.0, seed=seed)
        for seed in (1, 2, 3)
    ]
    results = [h.result(60) for h in engine.submit_choices(choices)]

    assert engine.stats.prompt_tokens - before == len(prompt.prompt_ids)  # one prefill
    assert results[0].text == greedy.text  # the shared KV is the prompt's
    assert len({r.text for r in results[1:]}) > 1
    # A sibling's sample is what it would be on its own.
    alone = engine.submit(
        request(tiny_loaded, MESSAGES, max_tokens=8, temperature=1.0, seed=2)
    ).result(60)
    assert results[2].text == alone.text


def test_choices_must_share_their_prompt(engine, tiny_loaded):
    other = request(tiny_loaded, [{"role": "user", "content": "Hi"}], max_tokens=4)
    with pytest.raises(InvalidGenerationRequest):
        engine.submit_choices([request(tiny_loaded, MESSAGES, max_tokens=4), other])


@pytest.mark.parametrize(
    "controls",
    [
        {"top_k": -1},
        {"min_p": 1.5},
        {"repetition_penalty": 0},
        {"frequency_penalty": 2.5},
        {"presence_penalty": -3},
        {"logit_bias": {10**9: 1}},
        {"logit_bias": {1: 101}},
        {"logit_bias": {i: 1 for i in range(301)}},
        {"logprobs": 21},
        {"grammar": ""},
    ],
)
def test_it_refuses_controls_out_of_range(engine, tiny_loaded, controls):
    with pytest.raises(InvalidGenerationRequest):
        engine.submit(request(tiny_loaded, MESSAGES, max_tokens=4, **controls))


def test_a_grammar_shapes_its_job_and_not_its_batch_mates(engine, tiny_loaded):
    from llguidance import LLMatcher

    schema = {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green"]}, "ok": {"type": "boolean"}},
        "required": ["color", "ok"],
        "additionalProperties": False,
    }
    grammar = LLMatcher.grammar_from_json_schema(schema, overrides={"whitespace_flexible": False})
    alone = engine.submit(request(tiny_loaded, MESSAGES, max_tokens=12)).result(60)

    constrained = engine.submit(request(tiny_loaded, MESSAGES, max_tokens=40, grammar=grammar))
    mate = engine.submit(request(tiny_loaded, MESSAGES, max_tokens=12))
    result = constrained.result(60)

    assert result.finish_reason == "stop"  # the grammar ended, then only end-of-turn was let out
    data = json.loads(result.text)
    assert set(data) == {"color", "ok"} and data["color"] in ("red", "green")
    assert mate.result(60).text == alone.text


def test_a_grammar_that_does_not_compile_is_refused_at_submission(engine, tiny_loaded):
    with pytest.raises(InvalidGenerationRequest):
        engine.submit(request(tiny_loaded, MESSAGES, max_tokens=4, grammar="start: (((("))
