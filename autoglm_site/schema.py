"""OpenAPI additions: the one error shape on every operation, the response shapes of the
OpenAI-compatible completion, which is built as a plain dict rather than by a serializer, and
one event of each server-sent event stream (a job's, a streamed completion's).

The async views describe their operations from their serializers, as DRF views do
(``tenants.apiviews.async_api``).
"""

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string", "example": "invalid_request_error"},
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True, "example": "invalid_api_key"},
            },
        }
    },
}

ERROR_REF = {"$ref": "#/components/schemas/Error"}
COMPLETION_REF = {"$ref": "#/components/schemas/ChatCompletion"}

ERRORS = {
    "400": "Invalid request: a wrong value (`param` names it) or a body that is not JSON.",
    "401": "Missing, wrong, revoked or expired API key (`invalid_api_key`).",
    "403": "The organisation is suspended (`tenant_suspended`), or the caller may not do this "
    "(`permission_denied`).",
    "404": "No such object for this organisation (`not_found`, `model_not_found`).",
    "429": "Over a rate limit (`rate_limit_exceeded`) or out of quota (`insufficient_quota`).",
    "413": "The body is larger than the server accepts (`request_too_large`).",
    "415": "The body is not `application/json` (`unsupported_media_type`).",
    "503": "Try again after `retry-after`: the database or Redis is unreachable "
    "(`service_unavailable`), the model's queue is full (`server_overloaded`) or no worker "
    "serves the model (`model_unavailable`).",
}

# What any operation may answer: a request refused before the view, and an outage; and what
# one that takes a body may answer too.
COMMON_ERRORS = ["400", "401", "403", "404", "503"]
BODY_ERRORS = ["413", "415"]


def _error_responses(codes: list[str]) -> dict:
    return {
        code: {
            "description": ERRORS[code],
            "content": {"application/json": {"schema": ERROR_REF}},
        }
        for code in codes
    }


USAGE = {
    "type": "object",
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
    },
}

COMPLETION = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "example": "chatcmpl-0f8e..."},
        "object": {"type": "string", "enum": ["chat.completion"]},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "message": {
                        "type": "object",
                        "properties": {
                            "role": {"type": "string", "enum": ["assistant"]},
                            "content": {"type": "string"},
                        },
                    },
                    "finish_reason": {"type": "string", "enum": ["stop", "length"]},
                },
            },
        },
        "usage": {"$ref": "#/components/schemas/Usage"},
    },
}


def _json_text(schema: dict) -> dict:
    """An SSE ``data:`` line that holds JSON of this schema."""
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


def _job_event(event: str, data: dict) -> dict:
    return {"properties": {"event": {"type": "string", "enum": [event]}, "data": _json_text(data)}}


NULLABLE_USAGE = {**USAGE, "nullable": True}

# One event of GET /api/v1/jobs/{id}/events (chat/events.py makes them); each has an id to resume
# after (a Redis Stream id, or "0-N" when a finished job is replayed from the database).
JOB_EVENT = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {"id": {"type": "string", "pattern": "^[0-9]+-[0-9]+$"}},
    "oneOf": [
        _job_event(
            "token",
            {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
        ),
        _job_event(
            "reset",
            {
                "type": "object",
                "required": ["attempt"],
                "properties": {"attempt": {"type": "integer"}},
            },
        ),
        _job_event(
            "done",
            {
                "type": "object",
                "required": ["status", "finish_reason", "usage"],
                "properties": {
                    "status": {"type": "string", "enum": ["succeeded", "cancelled"]},
                    "finish_reason": {"type": "string", "nullable": True},
                    "usage": NULLABLE_USAGE,
                    "message_id": {"type": "string", "nullable": True},
                },
            },
        ),
        _job_event(
            "error",
            {
                "type": "object",
                "required": ["status", "error"],
                "properties": {
                    "status": {"type": "string", "enum": ["failed"]},
                    "error": ERROR["properties"]["error"],
                },
            },
        ),
    ],
}

COMPLETION_CHUNK = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["chat.completion.chunk"]},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "system_fingerprint": {"type": "string", "nullable": True},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "delta", "finish_reason"],
                "properties": {
                    "index": {"type": "integer"},
                    "delta": {
                        "type": "object",
                        "properties": {
                            "role": {"type": "string", "enum": ["assistant"]},
                            "content": {"type": "string"},
                        },
                    },
                    "logprobs": {"type": "object", "nullable": True},
                    "finish_reason": {
                        "type": "string",
                        "nullable": True,
                        "enum": ["stop", "length", None],
                    },
                },
            },
        },
        "usage": NULLABLE_USAGE,
    },
}

# One event of a streamed completion: a chunk, an error met mid-stream, or the closing [DONE].
COMPLETION_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "anyOf": [
                {"type": "string", "enum": ["[DONE]"]},
                _json_text({"anyOf": [COMPLETION_CHUNK, ERROR]}),
            ]
        }
    },
}

JOB_EVENT_REF = {"$ref": "#/components/schemas/JobEvent"}
COMPLETION_EVENT_REF = {"$ref": "#/components/schemas/ChatCompletionStreamEvent"}


def list_of(
    item: type[serializers.Serializer], *, name: str, paged: bool
) -> serializers.Serializer:
    """The schema of a list answer, ``{"object": "list", "data": [item, ...]}``, as OpenAI's
    lists are; a paged one also has ``first_id``, ``last_id`` and ``has_more``."""
    fields = {
        "object": serializers.ChoiceField(choices=["list"]),
        "data": item(many=True),
    }
    if paged:
        fields["first_id"] = serializers.CharField(allow_null=True)
        fields["last_id"] = serializers.CharField(allow_null=True)
        fields["has_more"] = serializers.BooleanField()
    return inline_serializer(name=name, fields=fields)


def add_error_shape(result, generator, request, public):
    """drf-spectacular post-processing hook: the error shape, the completion's shapes and the
    events of the two streams as components, and the errors every operation may answer."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR
    components["Usage"] = USAGE
    components["ChatCompletion"] = COMPLETION
    components["JobEvent"] = JOB_EVENT
    components["ChatCompletionStreamEvent"] = COMPLETION_EVENT
    security = [{"ApiKey": []}]
    for operations in result.setdefault("paths", {}).values():
        for operation in operations.values():
            operation.setdefault("security", security)
            responses = operation.setdefault("responses", {})
            codes = COMMON_ERRORS + (BODY_ERRORS if "requestBody" in operation else [])
            for code, response in _error_responses(codes).items():
                responses.setdefault(code, response)
    return result


def register_auth_extension() -> None:
    from drf_spectacular.extensions import OpenApiAuthenticationExtension

    class _Scheme(OpenApiAuthenticationExtension):
        target_class = "tenants.auth.ApiKeyAuthentication"
        name = "ApiKey"

        def get_security_definition(self, auto_schema):
            return {"type": "http", "scheme": "bearer", "description": "sk-<prefix>.<secret>"}
