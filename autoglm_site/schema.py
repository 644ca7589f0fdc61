"""OpenAPI additions: the one error shape on every operation, and the async (streaming)
endpoints that drf-spectacular cannot see because they are plain async Django views."""

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

ERRORS = {
    "400": "Invalid request: a wrong value (`param` names it) or a body that is not JSON.",
    "401": "Missing, wrong, revoked or expired API key (`invalid_api_key`).",
    "403": "The organisation is suspended (`tenant_suspended`).",
    "404": "No such object for this organisation (`not_found`, `model_not_found`).",
    "429": "Over a rate limit (`rate_limit_exceeded`) or out of quota (`insufficient_quota`).",
}


def _error_responses(codes: list[str]) -> dict:
    return {
        code: {
            "description": ERRORS[code],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code in codes
    }


MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
        "content": {
            "oneOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "type": {"type": "string", "enum": ["text"]},
                            "text": {"type": "string"},
                        },
                    },
                },
            ]
        },
    },
}

COMPLETION_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string"},
        "messages": {"type": "array", "minItems": 1, "items": MESSAGE},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2, "nullable": True},
        "top_p": {
            "type": "number",
            "minimum": 0,
            "exclusiveMinimum": True,
            "maximum": 1,
            "nullable": True,
        },
        "max_tokens": {"type": "integer", "minimum": 1, "nullable": True},
        "max_completion_tokens": {"type": "integer", "minimum": 1, "nullable": True},
        "stop": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "maxItems": 4},
            ],
            "nullable": True,
        },
        "seed": {"type": "integer", "nullable": True},
        "n": {"type": "integer", "enum": [1], "nullable": True},
        "stream": {"type": "boolean", "nullable": True},
        "stream_options": {
            "type": "object",
            "nullable": True,
            "properties": {"include_usage": {"type": "boolean"}},
        },
        "user": {"type": "string", "nullable": True},
    },
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

SSE_COMPLETION = (
    "With `stream: true`: `data: <chat.completion.chunk>` frames, `finish_reason` on the last "
    "content chunk, a usage chunk (`choices: []`) when `stream_options.include_usage`, then "
    '`data: [DONE]`. A failure mid-stream is sent as `data: {"error": {...}}`. Closing the '
    "connection cancels the job."
)

SSE_JOB = (
    'Server-sent events: `event: token` (`{"text"}`), `event: reset` (a redelivered job '
    'starts over), then `event: done` (`{"status", "finish_reason", "usage", '
    '"message_id"}`) or `event: error` (the error shape). Each has an `id:`; reconnect with '
    "`Last-Event-ID` to resume without gaps or duplicates. Closing does not cancel the job."
)


def add_async_endpoints(result, generator, request, public):
    """drf-spectacular post-processing hook."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR
    components["Usage"] = USAGE
    components["ChatCompletionRequest"] = COMPLETION_REQUEST
    components["ChatCompletion"] = COMPLETION
    security = [{"ApiKey": []}]
    paths = result.setdefault("paths", {})
    paths["/v1/chat/completions"] = {
        "post": {
            "operationId": "chat_completions_create",
            "summary": "Create a chat completion (OpenAI-compatible)",
            "tags": ["openai"],
            "security": security,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}
                    }
                },
            },
            "responses": {
                "200": {
                    "description": SSE_COMPLETION,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ChatCompletion"}
                        },
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **_error_responses(["400", "401", "403", "404", "429"]),
                "500": {
                    "description": "The job failed on the worker.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        }
    }
    paths["/api/v1/jobs/{job_id}/events"] = {
        "get": {
            "operationId": "jobs_events",
            "summary": "Follow a job's events (SSE), resumable with Last-Event-ID",
            "tags": ["api"],
            "security": security,
            "parameters": [
                {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}},
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "example": "1732650000000-0"},
                },
            ],
            "responses": {
                "200": {
                    "description": SSE_JOB,
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_error_responses(["400", "401", "403", "404"]),
            },
        }
    }
    for operations in paths.values():
        for operation in operations.values():
            operation.setdefault("security", security)
            responses = operation.setdefault("responses", {})
            for code, response in _error_responses(["400", "401", "403", "404"]).items():
                responses.setdefault(code, response)
    return result


def register_auth_extension() -> None:
    from drf_spectacular.extensions import OpenApiAuthenticationExtension

    class _Scheme(OpenApiAuthenticationExtension):
        target_class = "tenants.auth.ApiKeyAuthentication"
        name = "ApiKey"

        def get_security_definition(self, auto_schema):
            return {"type": "http", "scheme": "bearer", "description": "sk-<prefix>.<secret>"}
