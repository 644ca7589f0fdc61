"""What ``POST /v1/responses`` accepts (OpenAI's Responses API, for text and function tools),
translated into what Chat Completions takes: the flat Responses tools into Chat's nested ones,
``text.format`` into ``response_format``, ``max_output_tokens`` into ``max_tokens``, and the
input items into chat messages. The sampling fields, tools and grammar are then checked by the
same serializer as a chat completion's (``chat.openai_inputs.ToolsInput``)."""

from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from autoglm_site.fields import StrictBooleanField, StrictCharField

from .openai_inputs import ChatMessageInput, JsonObjectField, ToolsInput, job_params
from .sampling import max_tokens_field, no_nul
from .tool_calls import tool_call_text

TEXT_PART_TYPES = ("input_text", "output_text", "text")
MESSAGE_ROLES = ("user", "system", "developer", "assistant")
MAX_METADATA = 16


def _text(content, where: str) -> str:
    if isinstance(content, str):
        return no_nul(content)
    if isinstance(content, list) and content:
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in TEXT_PART_TYPES:
                raise serializers.ValidationError(
                    {where: ["Only text content parts are supported."]}
                )
            if not isinstance(part.get("text"), str):
                raise serializers.ValidationError({where: ["A text part needs a string 'text'."]})
            texts.append(part["text"])
        return no_nul("".join(texts))
    raise serializers.ValidationError({where: ["Content must be a string or text parts."]})


def input_messages(items) -> list[dict]:
    """The input (a string, or message, function_call and function_call_output items) as chat
    messages: a function call joins the assistant message before it, as Chat has them."""
    if isinstance(items, str):
        return [{"role": "user", "content": no_nul(items)}]
    if not isinstance(items, list) or not items:
        raise serializers.ValidationError(["input must be a string or a non-empty list of items."])
    messages: list[dict] = []
    for index, item in enumerate(items):
        where = f"[{index}]"
        if not isinstance(item, dict):
            raise serializers.ValidationError({where: ["An input item must be an object."]})
        kind = item.get("type", "message")
        if kind == "message":
            if item.get("role") not in MESSAGE_ROLES:
                raise serializers.ValidationError({f"{where}.role": ["Not a message role."]})
            content = _text(item.get("content"), f"{where}.content")
            messages.append({"role": item["role"], "content": content})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            elif last is not None and last["role"] == "assistant":
                last["tool_calls"] = [call]
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append(
                {"role": "tool", "tool_call_id": item.get("call_id"), "content": output}
            )
        else:
            raise serializers.ValidationError(
                {f"{where}.type": [f"Input items of type {kind!r} are not supported."]}
            )
    checked = ChatMessageInput(data=messages, many=True)
    checked.is_valid(raise_exception=True)
    return [dict(message) for message in checked.validated_data]


class ResponseInputField(serializers.Field):
    """``input``: a string, or a list of input items."""

    def to_internal_value(self, data):
        return input_messages(data)

    def to_representation(self, value):
        return value


class TextFormatInput(serializers.Serializer):
    format = JsonObjectField(required=False)


def _chat_tools(tools):
    """Responses' ``{"type": "function", "name", "parameters", ...}`` as Chat's nested tool."""
    if not isinstance(tools, list):
        return tools
    return [
        {
            "type": tool.get("type"),
            "function": {k: v for k, v in tool.items() if k != "type"},
        }
        if isinstance(tool, dict)
        else tool
        for tool in tools
    ]


def _chat_tool_choice(choice):
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def _chat_response_format(text):
    """``text.format`` as Chat's ``response_format`` (a json_schema's fields sit flat in it)."""
    if not isinstance(text, dict) or not isinstance(text.get("format"), dict):
        return None
    fmt = text["format"]
    if fmt.get("type") == "json_schema":
        schema = {k: v for k, v in fmt.items() if k != "type"}
        return {"type": "json_schema", "json_schema": schema}
    return fmt


@extend_schema_serializer(component_name="ResponseCreateRequest")
class ResponseCreateInput(ToolsInput):
    model = StrictCharField(max_length=100)
    input = ResponseInputField()
    instructions = StrictCharField(required=False, allow_null=True, allow_blank=True)
    previous_response_id = StrictCharField(required=False, allow_null=True, max_length=100)
    store = StrictBooleanField(required=False, allow_null=True)
    stream = StrictBooleanField(required=False, allow_null=True)
    max_output_tokens = max_tokens_field(allow_null=True)
    text = TextFormatInput(required=False, allow_null=True)
    metadata = serializers.DictField(
        child=StrictCharField(max_length=512, allow_blank=True), required=False, allow_null=True
    )
    user = StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=256)

    def to_internal_value(self, data):
        if isinstance(data, dict):
            if data.get("response_format") is not None:  # Chat's field; here it is text.format
                raise serializers.ValidationError(
                    {"response_format": ["Unrecognized request argument supplied: response_format"]}
                )
            data = dict(data)
            if "tools" in data:
                data["tools"] = _chat_tools(data["tools"])
            if "tool_choice" in data:
                data["tool_choice"] = _chat_tool_choice(data["tool_choice"])
            if data.get("text") is not None:
                data["response_format"] = _chat_response_format(data["text"])
        return super().to_internal_value(data)

    def get_fields(self):
        fields = super().get_fields()
        for name in ("temperature", "top_p", "seed"):
            fields[name].allow_null = True
        # The Responses API's is max_output_tokens; logprobs are not in its output here, so
        # they are refused rather than dropped.
        for name in ("max_tokens", "logprobs", "top_logprobs"):
            fields.pop(name)
        return fields

    def validate_metadata(self, value):
        if value is not None and len(value) > MAX_METADATA:
            raise serializers.ValidationError(f"metadata holds at most {MAX_METADATA} keys.")
        return value

    def job_params(self) -> dict:
        params = job_params({**self.validated_data, "max_tokens": None})
        if self.validated_data.get("max_output_tokens") is not None:
            params["max_tokens"] = self.validated_data["max_output_tokens"]
        return params | self.tool_params()


def stored_message(message: dict) -> dict:
    """A chat message as a session keeps it (role and text): a tool call as the Hermes text the
    model wrote it in, the developer role as the system role."""
    role = "system" if message["role"] == "developer" else message["role"]
    content = message.get("content") or ""
    if message.get("tool_calls"):
        content = (content + "\n" if content else "") + tool_call_text(message["tool_calls"])
    return {"role": role, "content": content}
