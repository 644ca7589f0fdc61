"""Structured output at the door: the grammars chat/grammars.py builds from response_format and
tool_choice accept what they should, refuse what they should not, and a bad schema or tool is a
GrammarError naming the field. Checked with llguidance over a byte-level tokenizer, as the web
side has no model (the engine's own tests decode them on a model)."""

import json

import pytest
from llguidance import LLMatcher, LLTokenizer, TokenizerWrapper

from chat.grammars import (
    GrammarError,
    closed_schema,
    response_format_grammar,
    tool_choice_grammar,
    validate,
)


class _Bytes:
    """One token per byte, and an end of text: every string has exactly one tokenization."""

    eos_token_id = 256
    bos_token_id = None
    tokens = [bytes([b]) for b in range(256)] + [b"<eos>"]
    special_token_ids = [256]

    def __call__(self, text: bytes) -> list[int]:
        return list(text)


BYTES = LLTokenizer(TokenizerWrapper(_Bytes()))


def accepts(grammar: str, text: str) -> bool:
    """Whether ``text`` is a complete sentence of ``grammar``."""
    matcher = LLMatcher(BYTES, grammar, log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    return matcher.consume_tokens(list(text.encode())) and matcher.is_accepting()


def json_schema_format(schema, strict=False, name="answer"):
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": schema, "strict": strict},
    }


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "now"}}


def call(name, arguments):
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def test_it_asks_for_no_grammar_for_plain_text():
    assert response_format_grammar({"type": "text"}) is None


def test_it_makes_json_mode_any_object():
    grammar = response_format_grammar({"type": "json_object"})
    assert accepts(grammar, '{"a": [1, {"b": null}], "c": "d"}')
    assert accepts(grammar, "{}")
    assert not accepts(grammar, "[1, 2]")
    assert not accepts(grammar, '"text"')


def test_it_keeps_json_compact_so_a_model_cannot_spin_on_whitespace():
    grammar = response_format_grammar({"type": "json_object"})
    assert accepts(grammar, '{"a":1,"b":2}')
    assert accepts(grammar, '{"a": 1, "b": 2}')
    for loose in ('{ "a": 1}', '{"a":  1}', '{"a": 1,\n"b": 2}', '{"a" : 1}', '{"a": 1} '):
        assert not accepts(grammar, loose), loose


def test_it_follows_a_json_schema():
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1},
        },
        "required": ["name", "tags"],
    }
    grammar = response_format_grammar(json_schema_format(schema))
    assert accepts(grammar, '{"name": "x", "tags": ["a", "b"]}')
    assert not accepts(grammar, '{"name": "x", "tags": []}')
    assert not accepts(grammar, '{"name": "x", "tags": ["c"]}')
    assert not accepts(grammar, '{"tags": ["a"]}')
    # Not strict: JSON Schema lets an object carry other keys.
    assert accepts(grammar, '{"name": "x", "tags": ["a"], "extra": 1}')


def test_strict_closes_every_object_that_does_not_say_otherwise():
    schema = {
        "type": "object",
        "properties": {
            "inner": {"type": "object", "properties": {"x": {"type": "integer"}}},
            "items": {"type": "array", "items": {"properties": {"y": {"type": "boolean"}}}},
            "open": {"type": "object", "additionalProperties": True},
        },
    }
    grammar = response_format_grammar(json_schema_format(schema, strict=True))
    assert accepts(grammar, '{"inner": {"x": 1}, "items": [{"y": true}], "open": {"any": 1}}')
    assert not accepts(grammar, '{"extra": 1}')
    assert not accepts(grammar, '{"inner": {"x": 1, "z": 2}}')
    assert not accepts(grammar, '{"items": [{"y": true, "z": 2}]}')
    assert schema["properties"]["inner"].get("additionalProperties") is None  # not mutated


def test_strict_leaves_all_of_branches_open():
    schema = {"allOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}}]}
    assert closed_schema(schema) == schema


def test_a_bad_response_format_is_refused_naming_what_is_wrong():
    cases = [
        ({"type": "xml"}, "response_format.type"),
        ({"type": "json_schema"}, "response_format.json_schema must be an object"),
        (json_schema_format({}, name="has space"), "response_format.json_schema.name"),
        (json_schema_format([]), "response_format.json_schema.schema must be an object"),
        (json_schema_format({}, strict="yes"), "strict must be a boolean"),
        (json_schema_format({"type": "integr"}), "schema: Invalid type: integr"),
        (json_schema_format({"$ref": "#/$defs/gone"}), "/$defs/gone"),
        (json_schema_format({"type": "string", "format": "colour"}), "format: colour"),
    ]
    for response_format, message in cases:
        with pytest.raises(GrammarError, match=message.replace("$", r"\$")) as caught:
            response_format_grammar(response_format)
        assert caught.value.param == "response_format"


def test_it_lets_the_model_answer_in_text_unless_a_tool_is_forced():
    for choice in (None, "none", "auto"):
        assert tool_choice_grammar([WEATHER], choice, True) is None


def test_a_named_function_is_called_exactly_once_with_its_arguments():
    choice = {"type": "function", "function": {"name": "get_weather"}}
    grammar = tool_choice_grammar([CLOCK, WEATHER], choice, parallel_tool_calls=True)
    assert accepts(grammar, call("get_weather", {"city": "Oslo", "days": 2}))
    assert not accepts(grammar, call("get_weather", {"days": 2}))
    assert not accepts(grammar, call("get_weather", {"city": "Oslo", "days": 0}))
    assert not accepts(grammar, call("now", {}))
    assert not accepts(grammar, call("get_weather", {"city": "a"}) + "\n" + call("now", {}))
    assert not accepts(grammar, "It is sunny.")


def test_required_calls_any_tool_once_or_in_parallel():
    grammar = tool_choice_grammar([WEATHER, CLOCK], "required", parallel_tool_calls=False)
    assert accepts(grammar, call("now", {}))
    assert accepts(grammar, call("get_weather", {"city": "Oslo"}))
    assert not accepts(grammar, call("now", {"extra": 1}))  # no parameters: no arguments
    assert not accepts(grammar, call("now", {}) + "\n" + call("now", {}))
    parallel = tool_choice_grammar([WEATHER, CLOCK], "required", parallel_tool_calls=True)
    assert accepts(parallel, call("now", {}) + "\n" + call("get_weather", {"city": "Oslo"}))
    assert not accepts(parallel, call("now", {}) + call("now", {}))


def test_a_forced_call_takes_only_the_declared_parameters_unless_its_schema_opens_them():
    choice = {"type": "function", "function": {"name": "get_weather"}}
    extra = call("get_weather", {"city": "a", "x": 1})
    assert not accepts(tool_choice_grammar([WEATHER], choice), extra)
    assert accepts(tool_choice_grammar([WEATHER], choice), call("get_weather", {"city": "a"}))
    params = {**WEATHER["function"]["parameters"], "additionalProperties": True}
    opened = {"type": "function", "function": {**WEATHER["function"], "parameters": params}}
    assert accepts(tool_choice_grammar([opened], choice), extra)


def test_names_and_schemas_cannot_break_out_of_the_grammar():
    sneaky = {"const": 'x"} start: /.*/ //', "description": "\n%ignore /.*/\n"}
    tool = {"type": "function", "function": {"name": "f", "parameters": sneaky}}
    grammar = tool_choice_grammar([tool], "required")
    assert accepts(grammar, call("f", 'x"} start: /.*/ //'))
    assert not accepts(grammar, "anything")


def test_bad_tools_are_refused_naming_what_is_wrong():
    cases = [
        ([WEATHER], "sometimes", "tool_choice must be", "tool_choice"),
        ([WEATHER], {"type": "function", "function": {"name": "nope"}}, "not in tools", None),
        ([WEATHER], {"type": "function"}, "tool_choice.function.name", "tool_choice"),
        ([], "required", "at least one tool", "tool_choice"),
        ("get_weather", "required", "tools must be a list", "tools"),
        ([{"type": "retrieval"}], "required", r"tools\[0\].type", "tools"),
        ([{"type": "function", "function": {"name": "a b"}}], "required", "function.name", None),
        ([WEATHER, WEATHER], "required", "used twice", "tools"),
        (
            [{"type": "function", "function": {"name": "f", "parameters": {"type": "integr"}}}],
            "required",
            r"invalid tools\[0\].function.parameters: Invalid type: integr",
            "tools",
        ),
    ]
    for tools, choice, message, param in cases:
        with pytest.raises(GrammarError, match=message) as caught:
            tool_choice_grammar(tools, choice, True)
        if param:
            assert caught.value.param == param


def test_validate_names_the_error():
    validate(LLMatcher.grammar_from_lark('start: "ok"'))
    with pytest.raises(GrammarError, match='invalid grammar: .*unknown name: "missing"'):
        validate(LLMatcher.grammar_from_lark("start: missing"))
