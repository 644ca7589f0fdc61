"""OpenAPI additions: the one error shape on every operation, and the response shapes of the
OpenAI-compatible completion, which is built as a plain dict rather than by a serializer.

The async views describe their operations from their serializers, as DRF views do
(``tenants.apiviews.async_api``).
"""

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
    "403": "The organisation is suspended (`tenant_suspended`).",
    "404": "No such object for this organisation (`not_found`, `model_not_found`).",
    "429": "Over a rate limit (`rate_limit_exceeded`) or out of quota (`insufficient_quota`).",
}


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


def add_error_shape(result, generator, request, public):
    """drf-spectacular post-processing hook: the error shape and the completion's shapes as
    components, and the errors every operation may answer."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR
    components["Usage"] = USAGE
    components["ChatCompletion"] = COMPLETION
    security = [{"ApiKey": []}]
    for operations in result.setdefault("paths", {}).values():
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
