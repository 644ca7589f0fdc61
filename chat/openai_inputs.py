"""What the OpenAI-compatible endpoints accept: messages (tool calls and tool results included),
tools and ``tool_choice``, ``response_format``, ``n``, and the sampling parameters of
``chat.sampling``; anything else is a 400 naming the field (``RefusesUnknownFields``).

The request's grammar (a JSON schema, or a forced tool call) is built and checked here
(``chat.grammars``), so a schema llguidance cannot compile is a 400 at the door, and the worker
only hands the stored grammar to its engine.
"""

import re

from django.conf import settings
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from autoglm_site.fields import StrictBooleanField, StrictCharField, StrictIntegerField

from . import grammars
from .sampling import SamplingInput, StopField, max_tokens_field, no_nul

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_CHOICES = 16
MAX_TOOLS = 128
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["type", "text"],
                    "properties": {
                        "type": {"type": "string", "enum": ["text"]},
                        "text": {"type": "string"},
                    },
                },
            },
        ]
    }
)
class ContentField(serializers.Field):
    """OpenAI message content: a string, or a list of ``{"type": "text", "text": ...}`` parts."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            return no_nul(data)
        if isinstance(data, list) and data:
            texts = []
            for part in data:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise serializers.ValidationError("Only text content parts are supported.")
                if not isinstance(part.get("text"), str):
                    raise serializers.ValidationError("A text part needs a string 'text'.")
                texts.append(part["text"])
            return no_nul("".join(texts))
        raise serializers.ValidationError("Content must be a string or a list of text parts.")

    def to_representation(self, value):
        return value


def function_name_field(**kwargs) -> StrictCharField:
    return StrictCharField(max_length=64, **kwargs)


def check_function_name(name: str) -> str:
    if not FUNCTION_NAME.match(name):
        raise serializers.ValidationError(
            "A function name may hold only letters, digits, '_' and '-' (at most 64)."
        )
    return name


@extend_schema_field({"type": "object", "additionalProperties": True})
class JsonObjectField(serializers.Field):
    """A JSON object (a JSON schema, say), taken as it is."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        return data

    def to_representation(self, value):
        return value


class FunctionCallInput(serializers.Serializer):
    name = function_name_field(validators=[check_function_name])
    arguments = StrictCharField(allow_blank=True, max_length=settings.AUTOGLM_MAX_CONTENT_CHARS)


class ToolCallInput(serializers.Serializer):
    id = StrictCharField(max_length=200)
    type = serializers.ChoiceField(choices=["function"])
    function = FunctionCallInput()


class ChatMessageInput(serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)
    content = ContentField(required=False, allow_null=True)
    name = StrictCharField(required=False, max_length=64)
    tool_calls = ToolCallInput(many=True, required=False, allow_empty=False)
    tool_call_id = StrictCharField(required=False, max_length=200)

    def validate(self, data):
        role = data["role"]
        if data.get("tool_calls") and role != "assistant":
            raise serializers.ValidationError(
                {"tool_calls": ["Only assistant messages call tools."]}
            )
        if role == "tool" and not data.get("tool_call_id"):
            raise serializers.ValidationError(
                {"tool_call_id": ["A tool message names the call it answers."]}
            )
        if data.get("content") is None and not (role == "assistant" and data.get("tool_calls")):
            raise serializers.ValidationError(
                {"content": ["Content is required, unless an assistant message calls tools."]}
            )
        return data


class FunctionInput(serializers.Serializer):
    name = function_name_field(validators=[check_function_name])
    description = StrictCharField(required=False, allow_blank=True, max_length=10_000)
    parameters = JsonObjectField(required=False)
    strict = StrictBooleanField(required=False, allow_null=True)


class ToolInput(serializers.Serializer):
    type = serializers.ChoiceField(choices=["function"])
    function = FunctionInput()


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "enum": ["none", "auto", "required"]},
            {
                "type": "object",
                "required": ["type", "function"],
                "properties": {
                    "type": {"type": "string", "enum": ["function"]},
                    "function": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}},
                    },
                },
            },
        ]
    }
)
class ToolChoiceField(serializers.Field):
    """``none``, ``auto``, ``required``, or ``{"type": "function", "function": {"name": ...}}``."""

    def to_internal_value(self, data):
        if data in ("none", "auto", "required"):
            return data
        function = data.get("function") if isinstance(data, dict) else None
        if (
            isinstance(data, dict)
            and data.get("type") == "function"
            and isinstance(function, dict)
            and isinstance(function.get("name"), str)
        ):
            return {"type": "function", "function": {"name": function["name"]}}
        raise serializers.ValidationError(
            'tool_choice must be "none", "auto", "required" or '
            '{"type": "function", "function": {"name": ...}}.'
        )

    def to_representation(self, value):
        return value


class JsonSchemaInput(serializers.Serializer):
    name = StrictCharField(max_length=64)
    description = StrictCharField(required=False, allow_blank=True, max_length=10_000)
    schema = JsonObjectField(required=False)
    strict = StrictBooleanField(required=False, allow_null=True)


class ResponseFormatInput(serializers.Serializer):
    type = serializers.ChoiceField(choices=["text", "json_object", "json_schema"])
    json_schema = JsonSchemaInput(required=False)

    def validate(self, data):
        if data["type"] == "json_schema" and "json_schema" not in data:
            raise serializers.ValidationError(
                {"json_schema": ['A response_format of type "json_schema" needs its json_schema.']}
            )
        return data


class StreamOptionsInput(serializers.Serializer):
    include_usage = StrictBooleanField(required=False, default=False)


class ToolsInput(SamplingInput):
    """Tools, ``tool_choice`` and ``response_format``, and the grammar they make: shared by Chat
    Completions and the Responses API."""

    tools = ToolInput(many=True, required=False, allow_null=True, max_length=MAX_TOOLS)
    tool_choice = ToolChoiceField(required=False, allow_null=True)
    parallel_tool_calls = StrictBooleanField(required=False, allow_null=True)
    response_format = ResponseFormatInput(required=False, allow_null=True)

    def validate(self, data):
        data = super().validate(data)
        tools, choice = data.get("tools") or [], data.get("tool_choice")
        if choice is not None and not tools and choice != "none":
            raise serializers.ValidationError(
                {"tool_choice": ["tool_choice is only allowed when tools are given."]}
            )
        names = [tool["function"]["name"] for tool in tools]
        if len(set(names)) < len(names):
            raise serializers.ValidationError({"tools": ["Each tool needs its own name."]})
        if isinstance(choice, dict) and choice["function"]["name"] not in names:
            raise serializers.ValidationError(
                {"tool_choice": [f"No tool is named {choice['function']['name']!r}."]}
            )
        data["grammar"] = self._grammar(data, tools, choice)
        return data

    @staticmethod
    def _grammar(data: dict, tools: list[dict], choice) -> str | None:
        forced = tools and (choice == "required" or isinstance(choice, dict))
        response_format = data.get("response_format") or {"type": "text"}
        if forced and response_format["type"] != "text":
            raise serializers.ValidationError(
                {
                    "response_format": [
                        "A forced tool call and a response_format cannot be combined."
                    ]
                }
            )
        try:
            if forced:
                parallel = data.get("parallel_tool_calls") is not False
                return grammars.tool_choice_grammar(tools, choice, parallel)
            return grammars.response_format_grammar(response_format)
        except grammars.GrammarError as exc:
            raise serializers.ValidationError({exc.param or "response_format": [str(exc)]}) from exc
        except RecursionError:  # a schema nested hundreds deep
            param = "tools" if forced else "response_format"
            raise serializers.ValidationError(
                {param: ["The schema is nested too deeply."]}
            ) from None

    def tool_params(self) -> dict:
        """The tool fields a job needs: its worker renders the tools into the prompt and hands
        the grammar to its engine; the answer is parsed into tool calls when it ends."""
        data = self.validated_data
        params = {}
        if data.get("tools") and data.get("tool_choice") != "none":
            params["tools"] = data["tools"]
            params["tool_choice"] = data.get("tool_choice") or "auto"
            params["parallel_tool_calls"] = data.get("parallel_tool_calls") is not False
        if data.get("grammar"):
            params["grammar"] = data["grammar"]
        return params


# The schema keeps the component name it had when it was written by hand.
@extend_schema_serializer(component_name="ChatCompletionRequest")
class ChatCompletionInput(ToolsInput):
    """OpenAI's request body: the sampling parameters and the rest of what it takes."""

    model = StrictCharField(max_length=100)
    messages = ChatMessageInput(many=True, allow_empty=False)
    max_completion_tokens = max_tokens_field(allow_null=True)  # OpenAI's newer max_tokens
    stop = StopField(required=False, allow_null=True)
    n = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_CHOICES)
    stream = StrictBooleanField(required=False, allow_null=True, default=False)
    stream_options = StreamOptionsInput(required=False, allow_null=True)
    user = StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=256)

    # An error names the first bad field: model and messages first, as OpenAI lists them.
    FIELD_ORDER = (
        "model",
        "messages",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "n",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "repetition_penalty",
        "top_k",
        "min_p",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "stream",
        "stream_options",
        "user",
    )

    def get_fields(self):
        fields = super().get_fields()
        # OpenAI's clients send null to mean "the default"; the native API refuses it.
        for name in SamplingInput._declared_fields:
            fields[name].allow_null = True
        assert set(fields) == set(self.FIELD_ORDER), "FIELD_ORDER must list every field"
        return {name: fields[name] for name in self.FIELD_ORDER}

    def validate_messages(self, value):
        total = sum(len(m.get("content") or "") for m in value)
        if total > settings.AUTOGLM_MAX_CONTENT_CHARS:
            raise serializers.ValidationError("The messages are too long.")
        return value

    def job_params(self) -> dict:
        return job_params(self.validated_data) | self.tool_params()

    def job_messages(self) -> list[dict]:
        return [job_message(m) for m in self.validated_data["messages"]]


# The sampling fields a job keeps, when given (n and logprobs among them).
SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "seed",
    "stop",
    "n",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "repetition_penalty",
    "top_k",
    "min_p",
    "logprobs",
    "top_logprobs",
)


def job_params(data: dict) -> dict:
    params = {key: data[key] for key in SAMPLING_KEYS if data.get(key) is not None}
    max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    return params


def job_message(message: dict) -> dict:
    """A message as the worker renders it. OpenAI's "developer" role is the system role of
    newer models."""
    role = "system" if message["role"] == "developer" else message["role"]
    rendered = {"role": role, "content": message.get("content")}
    for key in ("tool_calls", "tool_call_id", "name"):
        if message.get(key):
            rendered[key] = message[key]
    return rendered
