"""OpenAPI shapes of the legacy completion's answers (built as plain dicts, as the chat
completion's are in ``autoglm_site.schema``): the body, and one event of its stream."""

from autoglm_site.schema import ERROR, NULLABLE_USAGE

LEGACY_LOGPROBS = {
    "type": "object",
    "nullable": True,
    "properties": {
        "tokens": {"type": "array", "items": {"type": "string"}},
        "token_logprobs": {"type": "array", "items": {"type": "number"}},
        "top_logprobs": {
            "type": "array",
            "items": {"type": "object", "additionalProperties": {"type": "number"}},
        },
        "text_offset": {"type": "array", "items": {"type": "integer"}},
    },
}


def _text_completion(finish_reasons: list) -> dict:
    return {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string", "example": "cmpl-0f8e..."},
            "object": {"type": "string", "enum": ["text_completion"]},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "system_fingerprint": {"type": "string", "nullable": True},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "text", "logprobs", "finish_reason"],
                    "properties": {
                        "index": {"type": "integer"},
                        "text": {"type": "string"},
                        "logprobs": LEGACY_LOGPROBS,
                        "finish_reason": {
                            "type": "string",
                            "nullable": None in finish_reasons,
                            "enum": finish_reasons,
                        },
                    },
                },
            },
            "usage": NULLABLE_USAGE,
        },
    }


TEXT_COMPLETION = _text_completion(["stop", "length"])

# A chunk, an error met mid-stream, or the closing [DONE].
TEXT_COMPLETION_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "anyOf": [
                {"type": "string", "enum": ["[DONE]"]},
                {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"anyOf": [_text_completion(["stop", "length", None]), ERROR]},
                },
            ]
        }
    },
}
