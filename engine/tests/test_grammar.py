"""Grammar-constrained decoding on the tiny random model: whatever its logits, the output
follows the grammar (engine/grammar.py)."""

from __future__ import annotations

import dataclasses
import json
import re

import jsonschema
import pytest
import torch
from llguidance import LLMatcher

from engine.detokenizer import eos_token_ids
from engine.errors import InvalidGenerationRequest
from engine.grammar import GrammarConstraint, grammar_constraint, grammar_tokenizer
from engine.registry import LoadedModel, vocab_size
from engine.tests.helpers import chat
from workers.prompts import encode_prompt

# As chat/grammars.py lays JSON out (compact, one optional space after ":" and ",").
LAYOUT = {"whitespace_flexible": False, "key_separator": ": ?", "item_separator": ", ?"}

SCHEMAS = {
    "nested objects": {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 6},
                    "address": {
                        "type": "object",
                        "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                        "required": ["zip"],
                        "additionalProperties": False,
                    },
                },
                "required": ["name", "address"],
                "additionalProperties": False,
            }
        },
        "required": ["user"],
        "additionalProperties": False,
    },
    "array with minItems": {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "maximum": 9},
        "minItems": 3,
        "maxItems": 5,
    },
    "enums": {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "size": {"type": "string", "enum": ["S", "M", "L", "XL"]},
            "count": {"enum": [1, 2, None]},
        },
        "required": ["color", "size", "count"],
        "additionalProperties": False,
    },
    "bounded integers": {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "delta": {"type": "integer", "exclusiveMinimum": -5, "exclusiveMaximum": 5},
        },
        "required": ["age", "delta"],
        "additionalProperties": False,
    },
    "required among optional, closed": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 1, "maximum": 999},
            "ok": {"type": "boolean"},
            "note": {"type": "string", "maxLength": 4},
            "tags": {
                "type": "array",
                "items": {"type": "string", "maxLength": 3},
                "maxItems": 2,
            },
        },
        "required": ["id", "ok"],
        "additionalProperties": False,
    },
}

# The Hermes tool-call block, as chat/grammars.py builds it for a named function.
WEATHER_ARGS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 10},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
HERMES = (
    'start: "<tool_call>\\n{\\"name\\": \\"get_weather\\", \\"arguments\\": " args '
    '"}\\n</tool_call>"\n'
    f"args: %json {json.dumps({**WEATHER_ARGS, 'x-guidance': LAYOUT})}\n"
)


def json_grammar(schema: dict) -> str:
    return LLMatcher.grammar_from_json_schema(schema, overrides=LAYOUT)


def decode(
    loaded: LoadedModel,
    constraint: GrammarConstraint,
    *,
    seed: int | None = None,
    max_tokens: int = 400,
) -> str:
    """Greedy decoding of a prompt on ``loaded`` under ``constraint``, until the grammar is
    done; with ``seed``, Gumbel noise on the logits first, to walk other paths."""
    prompt = encode_prompt(loaded, chat("Answer in JSON."))
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    eos = set(eos_token_ids(loaded))
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(max_tokens):
            logits = loaded.model(input_ids=torch.tensor([prompt + out])).logits[:, -1].float()
            if generator is not None:
                noise = torch.empty_like(logits).exponential_(generator=generator)
                logits -= noise.log_()
            constraint.apply(logits)
            token = int(logits.argmax())
            constraint.accept(token)
            if token in eos:
                break
            out.append(token)
            if constraint.finished:
                break
        else:
            pytest.fail(f"no end after {max_tokens} tokens: {loaded.tokenizer.decode(out)!r}")
    assert constraint.finished
    return loaded.tokenizer.decode(out)


@pytest.mark.parametrize("name", SCHEMAS)
def test_it_decodes_only_json_the_schema_accepts(tiny_loaded, name):
    schema = SCHEMAS[name]
    grammar = json_grammar(schema)
    for seed in (None, 1, 2, 3):
        text = decode(tiny_loaded, grammar_constraint(tiny_loaded, grammar), seed=seed)
        jsonschema.validate(json.loads(text), schema)
        # Compact: no whitespace but the one space the layout allows after ":" and ",".
        assert not re.search(r"[\n\t\r]|  |[{\[] | [}\]]", text), text


def test_it_decodes_a_hermes_tool_call_naming_the_function(tiny_loaded):
    for seed in (None, 7):
        text = decode(tiny_loaded, grammar_constraint(tiny_loaded, HERMES), seed=seed)
        match = re.fullmatch(r"<tool_call>\n(.*)\n</tool_call>", text, re.DOTALL)
        assert match, text
        call = json.loads(match.group(1))
        assert call["name"] == "get_weather" and set(call) == {"name", "arguments"}
        jsonschema.validate(call["arguments"], WEATHER_ARGS)


def test_once_finished_only_end_of_turn_is_allowed(tiny_loaded):
    constraint = grammar_constraint(tiny_loaded, LLMatcher.grammar_from_lark('start: "yes"'))
    for token in tiny_loaded.tokenizer.encode("yes", add_special_tokens=False):
        assert not constraint.finished
        constraint.accept(token)
    assert constraint.finished
    scores = torch.zeros(1, vocab_size(tiny_loaded.model))
    constraint.apply(scores)
    assert torch.isfinite(scores[0]).nonzero().flatten().tolist() == eos_token_ids(tiny_loaded)


def test_a_grammar_that_does_not_compile_is_a_bad_request(tiny_loaded):
    with pytest.raises(InvalidGenerationRequest, match="unknown name"):
        grammar_constraint(tiny_loaded, "start: nowhere")
    with pytest.raises(InvalidGenerationRequest, match="Invalid type"):
        grammar_constraint(tiny_loaded, json_grammar({"type": "integr"}))


def test_a_token_the_grammar_forbids_is_refused(tiny_loaded):
    constraint = grammar_constraint(tiny_loaded, json_grammar({"type": "object"}))
    (letter,) = tiny_loaded.tokenizer.encode("x", add_special_tokens=False)
    with pytest.raises(InvalidGenerationRequest, match="left its grammar"):
        constraint.accept(letter)


def test_the_torch_path_masks_what_the_numpy_path_masks(tiny_loaded):
    # bfloat16 rows (and rows on an accelerator) take the torch path.
    grammar = json_grammar(SCHEMAS["enums"])
    numpy_side = grammar_constraint(tiny_loaded, grammar)
    torch_side = grammar_constraint(tiny_loaded, grammar)
    for token in tiny_loaded.tokenizer.encode('{"color": "', add_special_tokens=False):
        fp32 = torch.zeros(1, vocab_size(tiny_loaded.model))
        bf16 = fp32.to(torch.bfloat16)
        numpy_side.apply(fp32)
        torch_side.apply(bf16)
        assert torch.equal(torch.isfinite(fp32), torch.isfinite(bf16))
        assert 0 < int(torch.isfinite(fp32).sum()) < fp32.shape[1]
        numpy_side.accept(token)
        torch_side.accept(token)


def test_it_masks_a_row_of_a_batch_in_place(tiny_loaded):
    constraint = grammar_constraint(tiny_loaded, json_grammar({"type": "object"}))
    batch = torch.zeros(3, vocab_size(tiny_loaded.model))
    constraint.apply(batch[1:2])
    constraint.apply(batch.t()[:, 2])  # a strided column, by the torch path
    (brace,) = tiny_loaded.tokenizer.encode("{", add_special_tokens=False)
    assert torch.isfinite(batch[0]).all()
    assert batch[1, brace] == 0 and torch.isneginf(batch[1]).sum() > 1000
    assert torch.equal(batch[1], batch[2])


def test_ids_the_tokenizer_lacks_are_never_allowed(tiny_loaded):
    # Embeddings padded past the tokenizer, as many checkpoints have them.
    padded_config = tiny_loaded.model.config.__class__(**tiny_loaded.model.config.to_dict())
    padded_config.vocab_size = len(tiny_loaded.tokenizer) + 64
    padded = dataclasses.replace(tiny_loaded, model=type(tiny_loaded.model)(padded_config).eval())
    tokenizer = grammar_tokenizer(padded)
    assert tokenizer.vocab_size == padded_config.vocab_size
    assert grammar_tokenizer(padded) is tokenizer  # built once per model
    constraint = grammar_constraint(padded, LLMatcher.grammar_from_lark("start: /(.|\\n)*/"))
    scores = torch.zeros(1, padded_config.vocab_size)
    constraint.apply(scores)
    assert torch.isneginf(scores[0, len(tiny_loaded.tokenizer) :]).all()
    assert torch.isfinite(scores[0, : len(tiny_loaded.tokenizer)]).sum() > 900
