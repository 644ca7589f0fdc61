"""Chat completion on a resident model (tiny random demo model).

The model's weights are random, so these tests check mechanics (token
accounting, determinism, stopping, streaming, cancellation, concurrency),
never the text's content. Where exact text matters, a scripted stand-in for
the model replays chosen tokens through generate()'s own hooks.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch

from bench.baselines import generate
from engine.errors import GenerationError, InvalidGenerationRequest, PromptTooLongError
from engine.registry import LoadedModel
from engine.result import GenerationResult
from workers.prompts import encode_prompt

MESSAGES = [{"role": "user", "content": "Hello, who are you?"}]


class _ScriptedModel:
    """Stands in for the model: "generates" a fixed token sequence.

    Appends one scripted token per step and consults the stopping criteria
    generate() passed in, as ``model.generate`` does, so the text is exactly
    known (unlike the random demo model's).
    """

    def __init__(self, real: Any, script: list[int]) -> None:
        self.generation_config = real.generation_config
        self.script = script
        self.steps = 0

    def generate(self, *, input_ids: torch.Tensor, max_new_tokens: int, stopping_criteria, **_):
        for token in self.script[:max_new_tokens]:
            self.steps += 1
            input_ids = torch.cat([input_ids, torch.tensor([[token]])], dim=1)
            if stopping_criteria(input_ids, None).all():
                break
        return input_ids


def _scripted(loaded: LoadedModel, text: str) -> tuple[LoadedModel, list[int]]:
    script = loaded.tokenizer.encode(text)
    model = _ScriptedModel(loaded.model, script)
    return dataclasses.replace(loaded, model=model, lock=threading.Lock()), script


def test_it_generates_text_decoded_by_the_models_tokenizer(tiny_loaded: LoadedModel) -> None:
    result = generate(tiny_loaded, MESSAGES, max_tokens=8, temperature=0)

    # Reference: the same greedy decode straight through transformers.
    tokenizer = tiny_loaded.tokenizer
    encoded = tokenizer.apply_chat_template(
        MESSAGES, add_generation_prompt=True, tokenize=True, return_tensors="pt"
    )
    input_ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
    with torch.inference_mode():
        output = tiny_loaded.model.generate(
            input_ids.to(tiny_loaded.device), max_new_tokens=8, do_sample=False
        )
    expected = tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)

    assert isinstance(result, GenerationResult)
    assert result.text
    assert result.text == expected
    assert result.prompt_tokens == input_ids.shape[1] == len(encode_prompt(tiny_loaded, MESSAGES))
    assert result.completion_tokens == 8
    assert result.finish_reason == "length"


def test_it_is_deterministic_when_greedy(tiny_loaded: LoadedModel) -> None:
    first = generate(tiny_loaded, MESSAGES, max_tokens=12, temperature=0)
    torch.manual_seed(1234)  # global RNG state must not matter for greedy decoding
    second = generate(tiny_loaded, MESSAGES, max_tokens=12, temperature=0)

    assert first == second


def test_it_reproduces_sampled_output_for_the_same_seed(tiny_loaded: LoadedModel) -> None:
    def sample(seed: int | None) -> str:
        return generate(
            tiny_loaded, MESSAGES, max_tokens=12, temperature=1.0, top_p=0.95, seed=seed
        ).text

    first = sample(42)
    torch.manual_seed(999)  # seeded sampling must not depend on torch's global RNG
    torch.rand(10)

    assert sample(42) == first
    # ...and sampling is actually random: other seeds give other outputs.
    assert len({sample(seed) for seed in range(5)} | {first}) > 1
    assert len({sample(None) for _ in range(3)}) > 1


def test_it_stops_at_an_end_of_turn_token(tiny_loaded: LoadedModel) -> None:
    encoded = tiny_loaded.tokenizer.apply_chat_template(
        MESSAGES, add_generation_prompt=True, tokenize=True, return_tensors="pt"
    )
    input_ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
    with torch.inference_mode():
        logits = tiny_loaded.model(input_ids.to(tiny_loaded.device)).logits
    first_token = int(logits[0, -1].argmax())
    # Make the token greedy decoding produces first count as end-of-turn, on a
    # private copy so the shared session model is left alone.
    model = copy.deepcopy(tiny_loaded.model)
    model.generation_config.eos_token_id = [first_token]
    stopping = dataclasses.replace(tiny_loaded, model=model, lock=threading.Lock())

    result = generate(stopping, MESSAGES, max_tokens=10, temperature=0)

    assert result.finish_reason == "stop"
    assert result.completion_tokens == 1


def test_it_rejects_a_prompt_that_leaves_no_room(tiny_loaded: LoadedModel) -> None:
    prompt_tokens = len(encode_prompt(tiny_loaded, MESSAGES))
    max_tokens = tiny_loaded.context_window - prompt_tokens + 1

    with pytest.raises(PromptTooLongError) as excinfo:
        generate(tiny_loaded, MESSAGES, max_tokens=max_tokens, temperature=0)

    assert isinstance(excinfo.value, GenerationError)
    assert excinfo.value.prompt_tokens == prompt_tokens
    assert excinfo.value.context_window == tiny_loaded.context_window
    long_messages = [{"role": "user", "content": "word " * tiny_loaded.context_window}]
    with pytest.raises(PromptTooLongError):
        generate(tiny_loaded, long_messages, max_tokens=1)


@pytest.mark.parametrize(
    ("messages", "kwargs"),
    [
        (MESSAGES, {"max_tokens": 0}),
        (MESSAGES, {"max_tokens": 4, "temperature": -0.1}),
        (MESSAGES, {"max_tokens": 4, "top_p": 0.0}),
        (MESSAGES, {"max_tokens": 4, "top_p": 1.5}),
        ([], {"max_tokens": 4}),
        ([{"role": "user"}], {"max_tokens": 4}),
        (MESSAGES, {"max_tokens": 4, "stop": ["a", "b", "c", "d", "e"]}),
        (MESSAGES, {"max_tokens": 4, "stop": [""]}),
        (MESSAGES, {"max_tokens": 4, "stop": [7]}),
        (MESSAGES, {"max_tokens": 4, "stop": 7}),
    ],
)
def test_it_rejects_invalid_requests(
    tiny_loaded: LoadedModel, messages: list[dict], kwargs: dict
) -> None:
    with pytest.raises(InvalidGenerationRequest):
        generate(tiny_loaded, messages, **kwargs)


def test_it_serves_concurrent_requests_on_one_model(tiny_loaded: LoadedModel) -> None:
    expected = generate(tiny_loaded, MESSAGES, max_tokens=6, temperature=0)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(
                lambda _: generate(tiny_loaded, MESSAGES, max_tokens=6, temperature=0), range(4)
            )
        )

    assert results == [expected] * 4


# -- streaming --------------------------------------------------------------------------------


def test_it_streams_deltas_that_concatenate_to_the_text(tiny_loaded: LoadedModel) -> None:
    deltas: list[str] = []

    result = generate(tiny_loaded, MESSAGES, max_tokens=32, temperature=0, on_text=deltas.append)

    assert result.text
    assert "".join(deltas) == result.text
    assert all(deltas)  # never called with ""


def test_it_streams_during_generation_not_at_the_end(tiny_loaded: LoadedModel) -> None:
    # One log for both callbacks: None marks a should_stop() check (one per
    # decode step, plus one before the prompt), a string is a delta.
    log: list[str | None] = []

    result = generate(
        tiny_loaded,
        MESSAGES,
        max_tokens=32,
        temperature=0,
        on_text=log.append,
        should_stop=lambda: log.append(None) or False,
    )

    deltas = [entry for entry in log if entry is not None]
    assert result.completion_tokens == 32
    assert log.count(None) == 1 + 32
    assert len(deltas) > 8
    assert "".join(deltas) == result.text
    # At most one delta per step, and the first arrives long before the end.
    assert all(a is None or b is None for a, b in zip(log, log[1:], strict=False))
    assert log.index(deltas[0]) < 5


def test_it_returns_the_same_greedy_output_with_or_without_streaming(
    tiny_loaded: LoadedModel,
) -> None:
    plain = generate(tiny_loaded, MESSAGES, max_tokens=40, temperature=0)
    streamed = generate(
        tiny_loaded,
        MESSAGES,
        max_tokens=40,
        temperature=0,
        on_text=lambda _: None,
        should_stop=lambda: False,
    )

    assert streamed == plain


def test_it_streams_seeded_samples_identically(tiny_loaded: LoadedModel) -> None:
    deltas: list[str] = []
    kwargs: dict[str, Any] = {"max_tokens": 24, "temperature": 0.8, "seed": 7}

    streamed = generate(tiny_loaded, MESSAGES, on_text=deltas.append, **kwargs)

    assert streamed == generate(tiny_loaded, MESSAGES, **kwargs)
    assert "".join(deltas) == streamed.text


def test_it_never_streams_half_a_utf8_character(tiny_loaded: LoadedModel) -> None:
    text = "héllo 🙂 wörld 世界"
    loaded, script = _scripted(tiny_loaded, text)
    # Precondition: byte-level BPE splits some characters over several tokens.
    prefixes = [tiny_loaded.tokenizer.decode(script[:n]) for n in range(1, len(script))]
    assert any(prefix.endswith("\ufffd") for prefix in prefixes)
    deltas: list[str] = []

    result = generate(loaded, MESSAGES, max_tokens=len(script), on_text=deltas.append)

    assert result.text == text
    assert result.finish_reason == "length"
    assert "".join(deltas) == text
    assert not any("\ufffd" in delta for delta in deltas)
    assert len(deltas) > 4


def test_it_releases_an_incomplete_character_when_generation_ends(
    tiny_loaded: LoadedModel,
) -> None:
    loaded, script = _scripted(tiny_loaded, "ab🙂")
    deltas: list[str] = []

    result = generate(loaded, MESSAGES, max_tokens=len(script) - 1, on_text=deltas.append)

    assert result.text.startswith("ab")
    assert result.text.endswith("\ufffd")
    assert "".join(deltas) == result.text


# -- stop strings -----------------------------------------------------------------------------


def test_it_cuts_the_text_before_a_stop_string(tiny_loaded: LoadedModel) -> None:
    full = generate(tiny_loaded, MESSAGES, max_tokens=32, temperature=0)
    # A stop string from the middle of the output whose first occurrence is
    # where it was taken from.
    position = next(
        p
        for p in range(10, len(full.text) - 3)
        if full.text.find(full.text[p : p + 3]) == p and "\ufffd" not in full.text[p : p + 3]
    )
    stop = full.text[position : position + 3]
    deltas: list[str] = []

    result = generate(
        tiny_loaded, MESSAGES, max_tokens=32, temperature=0, stop=[stop], on_text=deltas.append
    )

    assert result.text == full.text[:position]
    assert result.finish_reason == "stop"
    assert result.completion_tokens < full.completion_tokens
    # Nothing of the stop string (or after it) was ever streamed.
    assert "".join(deltas) == result.text


def test_it_stops_at_the_earliest_of_several_stop_strings(tiny_loaded: LoadedModel) -> None:
    loaded, script = _scripted(tiny_loaded, "one two three four five")

    result = generate(loaded, MESSAGES, max_tokens=len(script), stop=["four", "o th", "ee"])

    assert result.text == "one tw"
    assert result.finish_reason == "stop"
    # Tokens up to the one that completed the stop string: "one", " two", " th".
    assert result.completion_tokens == 3
    assert loaded.model.steps == 3


def test_it_accepts_a_single_stop_string(tiny_loaded: LoadedModel) -> None:
    loaded, script = _scripted(tiny_loaded, "one two three four five")

    result = generate(loaded, MESSAGES, max_tokens=len(script), stop="four")

    assert result.text == "one two three "
    assert result.finish_reason == "stop"


def test_it_holds_back_text_that_may_start_a_stop_string(tiny_loaded: LoadedModel) -> None:
    loaded, script = _scripted(tiny_loaded, "one two three four five")
    deltas: list[str] = []

    result = generate(
        loaded, MESSAGES, max_tokens=len(script), stop=["three fx"], on_text=deltas.append
    )

    assert result.text == "one two three four five"
    assert result.finish_reason == "length"
    assert "".join(deltas) == result.text
    # "three f" could have become the stop string until "our" ruled it out.
    assert [delta for delta in deltas if "th" in delta] == ["three four"]


def test_it_releases_a_possible_stop_prefix_when_generation_ends(
    tiny_loaded: LoadedModel,
) -> None:
    loaded, script = _scripted(tiny_loaded, "one two th")
    deltas: list[str] = []

    result = generate(
        loaded, MESSAGES, max_tokens=len(script), stop=["three"], on_text=deltas.append
    )

    assert result.text == "one two th"
    assert "".join(deltas) == result.text
    assert deltas[-1].endswith("th")


# -- cancellation -----------------------------------------------------------------------------


def test_it_cancels_when_should_stop_returns_true(tiny_loaded: LoadedModel) -> None:
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3

    deltas: list[str] = []

    result = generate(
        tiny_loaded,
        MESSAGES,
        max_tokens=500,
        temperature=0,
        on_text=deltas.append,
        should_stop=should_stop,
    )

    full = generate(tiny_loaded, MESSAGES, max_tokens=500, temperature=0)
    assert full.completion_tokens > 10  # the uncancelled run goes on much longer
    assert result.finish_reason == "cancelled"
    # Checked once before the prompt is processed, then once per token.
    assert result.completion_tokens == 3
    assert calls == 4  # not asked again once it said stop
    assert "".join(deltas) == result.text
    assert result.text
    assert full.text.startswith(result.text)


def test_it_cancels_from_another_thread(tiny_loaded: LoadedModel) -> None:
    cancel = threading.Event()
    deltas: list[str] = []

    def on_text(delta: str) -> None:
        deltas.append(delta)
        if len(deltas) == 2:
            # Another thread (e.g. the API) asks to cancel; wait until it has.
            thread = threading.Thread(target=cancel.set)
            thread.start()
            thread.join()

    result = generate(
        tiny_loaded,
        MESSAGES,
        max_tokens=500,
        temperature=0,
        on_text=on_text,
        should_stop=cancel.is_set,
    )

    assert result.finish_reason == "cancelled"
    assert len(deltas) in (2, 3)  # at most the flush of held-back text follows
    assert "".join(deltas) == result.text


def test_it_skips_generation_when_cancelled_before_it_starts(tiny_loaded: LoadedModel) -> None:
    loaded, _ = _scripted(tiny_loaded, "one two three")
    deltas: list[str] = []

    result = generate(
        loaded, MESSAGES, max_tokens=10, on_text=deltas.append, should_stop=lambda: True
    )

    assert result.finish_reason == "cancelled"
    assert result.text == ""
    assert result.completion_tokens == 0
    assert result.prompt_tokens == len(encode_prompt(tiny_loaded, MESSAGES))
    assert deltas == []
    assert loaded.model.steps == 0
