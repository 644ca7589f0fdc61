"""Grammars for structured output, built from OpenAI request fields and checked at the door.

``response_format`` (JSON mode, JSON schema) and a forced ``tool_choice`` become llguidance
grammars here, on the web side, so that a schema llguidance cannot compile is a 400 before
anything is queued. The worker hands the string on and the engine compiles it against the
model's tokenizer (engine/grammar.py). llguidance's core needs no tokenizer, nor torch, to
check a grammar.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from llguidance import LLMatcher

# The JSON the model writes: one optional space after ":" and ",", none elsewhere. Free
# whitespace would let a small model spin on spaces and newlines until max_tokens.
_JSON_LAYOUT = {"whitespace_flexible": False, "key_separator": ": ?", "item_separator": ", ?"}
# OpenAI's rule for function and schema names.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Keywords whose value is a subschema, a list of them, or a map of them.
_SUBSCHEMA = ("additionalProperties", "items", "not", "if", "then", "else", "contains")
_SUBSCHEMA_LISTS = ("prefixItems", "anyOf", "oneOf", "allOf")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
# What a function without ``parameters`` takes: nothing.
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


class GrammarError(ValueError):
    """A response_format or tool definition that cannot become a grammar; says what is wrong.

    ``param`` names the request field at fault, for the API's error shape.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def validate(grammar: str, param: str | None = None, where: str | None = None) -> None:
    """Raise GrammarError with llguidance's message unless ``grammar`` compiles.

    ``where`` (default ``param``, else "grammar") starts the message: the field at fault.
    """
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise GrammarError(f"invalid {where or param or 'grammar'}: {messages[0].strip()}", param)


def response_format_grammar(response_format: dict[str, Any]) -> str | None:
    """The grammar ``response_format`` asks for, validated; None for plain text.

    ``{"type": "json_object"}`` is any JSON object; ``{"type": "json_schema", "json_schema":
    {"name", "schema", "strict"}}`` follows the schema. Strict, as in OpenAI's strict mode,
    closes every object that does not say otherwise (``additionalProperties: false``);
    without it, JSON Schema's default lets objects carry other keys.
    """
    param = "response_format"
    if not isinstance(response_format, dict):
        raise GrammarError("response_format must be an object", param)
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema: dict[str, Any] = {"type": "object"}
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise GrammarError("response_format.json_schema must be an object", param)
        _check_name(spec.get("name"), "response_format.json_schema.name")
        schema = spec.get("schema", {})
        if not isinstance(schema, dict):
            raise GrammarError("response_format.json_schema.schema must be an object", param)
        strict = spec.get("strict", False)
        if not isinstance(strict, bool):
            raise GrammarError("response_format.json_schema.strict must be a boolean", param)
        if strict:
            schema = closed_schema(schema)
    else:
        raise GrammarError(
            f"response_format.type must be 'text', 'json_object' or 'json_schema', got {kind!r}",
            param,
        )
    grammar = LLMatcher.grammar_from_json_schema(schema, overrides=_JSON_LAYOUT)
    validate(grammar, param, "response_format.json_schema.schema")
    return grammar


def tool_choice_grammar(
    tools: list[dict[str, Any]], tool_choice: Any, parallel_tool_calls: bool = True
) -> str | None:
    """The grammar a forced ``tool_choice`` asks for, validated; None when the model may answer
    in text ("none", "auto", or no choice).

    The model then writes Hermes tool-call blocks, exactly
    ``<tool_call>\\n{"name": "X", "arguments": {...}}\\n</tool_call>``, the arguments following
    X's ``parameters`` schema (its objects closed unless they say otherwise: see _functions).
    "required": one block of any tool, or with ``parallel_tool_calls`` one or more separated by
    newlines;
    ``{"type": "function", "function": {"name": X}}``: exactly one block calling X.
    """
    if tool_choice in (None, "none", "auto"):
        return None
    functions = _functions(tools)
    if tool_choice == "required":
        if not functions:
            raise GrammarError("tool_choice 'required' needs at least one tool", "tool_choice")
        chosen, repeat = functions, parallel_tool_calls
    elif isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise GrammarError("tool_choice.function.name must be a string", "tool_choice")
        by_name = {f["name"]: f for f in functions}
        if name not in by_name:
            raise GrammarError(f"tool_choice names {name!r}, which is not in tools", "tool_choice")
        chosen, repeat = [by_name[name]], False
    else:
        raise GrammarError(
            "tool_choice must be 'none', 'auto', 'required' or "
            '{"type": "function", "function": {"name": ...}}',
            "tool_choice",
        )
    grammar = LLMatcher.grammar_from_lark(_hermes_lark(chosen, repeat))
    validate(grammar, "tools")
    return grammar


def _functions(tools: Any) -> list[dict[str, Any]]:
    """The functions of ``tools`` as ``{"name", "parameters"}``, their shape checked."""
    if not isinstance(tools, list):
        raise GrammarError("tools must be a list", "tools")
    functions: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise GrammarError(f"{where}.type must be 'function'", "tools")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise GrammarError(f"{where}.function must be an object", "tools")
        name = function.get("name")
        _check_name(name, f"{where}.function.name", "tools")
        if any(f["name"] == name for f in functions):
            raise GrammarError(f"{where}.function.name {name!r} is used twice", "tools")
        parameters = function.get("parameters", _NO_PARAMETERS)
        if not isinstance(parameters, dict):
            raise GrammarError(f"{where}.function.parameters must be an object", "tools")
        # A forced call writes the declared arguments only, strict or not: left open, a small
        # model invents keys until max_tokens cuts the call off, and a cut call is no call.
        parameters = closed_schema(parameters)
        # Each schema on its own first, so that the error names the tool.
        schema_grammar = LLMatcher.grammar_from_json_schema(parameters, overrides=_JSON_LAYOUT)
        validate(schema_grammar, "tools", f"{where}.function.parameters")
        functions.append({"name": name, "parameters": parameters})
    return functions


def _hermes_lark(functions: list[dict[str, Any]], repeat: bool) -> str:
    # Rules are named by position and every literal goes through json.dumps, so no name or
    # schema can break out of its place in the grammar.
    lines = ['start: call ("\\n" call)*' if repeat else "start: call"]
    lines.append("call: " + " | ".join(f"call_{i}" for i in range(len(functions))))
    for i, function in enumerate(functions):
        head = '<tool_call>\n{"name": ' + json.dumps(function["name"]) + ', "arguments": '
        lines.append(f'call_{i}: {json.dumps(head)} args_{i} "}}\\n</tool_call>"')
        # x-guidance is read at the top of each %json schema.
        schema = {**function["parameters"], "x-guidance": _JSON_LAYOUT}
        lines.append(f"args_{i}: %json {json.dumps(schema)}")
    return "\n".join(lines) + "\n"


def _check_name(name: Any, where: str, param: str = "response_format") -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise GrammarError(
            f"{where} must be 1 to 64 letters, digits, underscores or dashes, got {name!r}", param
        )


def closed_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` in which every object schema that leaves ``additionalProperties``
    unsaid forbids keys other than its ``properties``, as OpenAI's strict mode reads a schema.

    An ``allOf`` and its branches stay open: each closed on its own, no object could have the
    keys of all of them.
    """
    schema = copy.deepcopy(schema)
    _close(schema, in_all_of=False)
    return schema


def _close(schema: Any, *, in_all_of: bool) -> None:
    if isinstance(schema, list):  # "items" as a list, before draft 2020-12
        for child in schema:
            _close(child, in_all_of=False)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    is_object = kind == "object" or (isinstance(kind, list) and "object" in kind)
    if (is_object or "properties" in schema) and not in_all_of and "allOf" not in schema:
        schema.setdefault("additionalProperties", False)
    for key in _SUBSCHEMA:
        _close(schema.get(key), in_all_of=False)
    for key in _SUBSCHEMA_LISTS:
        children = schema.get(key)
        if isinstance(children, list):
            for child in children:
                _close(child, in_all_of=key == "allOf")
    for key in _SUBSCHEMA_MAPS:
        children = schema.get(key)
        if isinstance(children, dict):
            for child in children.values():
                _close(child, in_all_of=False)
