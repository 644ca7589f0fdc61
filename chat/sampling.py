"""The sampling parameters both APIs take, with their limits: one serializer, so the native API
(a session's defaults, one message's own) and the OpenAI-compatible one refuse the same values
with the same messages."""

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from autoglm_site.fields import StrictBooleanField, StrictFloatField, StrictIntegerField

# Limits as OpenAI documents them (and as ints, so a message reads "less than or equal to 2").
TEMPERATURE_MAX = 2
TOP_P_MAX = 1  # and more than 0
# As in the OpenAI API. The engine, which the web side never imports, validates its requests
# with the same numbers (engine.request; tests/test_limits.py holds them equal).
MAX_STOP_SEQUENCES = 4
MAX_LOGIT_BIAS = 300
MAX_TOP_LOGPROBS = 20
PENALTY_MAX = 2  # frequency_penalty and presence_penalty: -2..2; repetition_penalty: (0, 2]
LOGIT_BIAS_MAX = 100


def no_nul(text: str) -> str:
    # PostgreSQL cannot store NUL in text or JSON; refuse it at the door, not with a 500.
    if "\x00" in text:
        raise serializers.ValidationError("Null characters are not allowed.")
    return text


def max_tokens_field(**kwargs) -> StrictIntegerField:
    return StrictIntegerField(
        required=False, min_value=1, max_value=settings.AUTOGLM_MAX_TOKENS_LIMIT, **kwargs
    )


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "minLength": 1},
            {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
                "maxItems": MAX_STOP_SEQUENCES,
            },
        ]
    }
)
class StopField(serializers.Field):
    """``stop``: a non-empty string or a list of 1 to ``MAX_STOP_SEQUENCES`` of them."""

    def to_internal_value(self, data):
        stops = [data] if isinstance(data, str) else data
        if not isinstance(stops, list) or not 1 <= len(stops) <= MAX_STOP_SEQUENCES:
            raise serializers.ValidationError(
                f"stop must be a string or a list of 1 to {MAX_STOP_SEQUENCES} strings."
            )
        if not all(isinstance(s, str) and s for s in stops):
            raise serializers.ValidationError("Each stop sequence must be a non-empty string.")
        for stop in stops:
            no_nul(stop)
        return stops

    def to_representation(self, value):
        return value


@extend_schema_field(
    {
        "type": "object",
        "maxProperties": MAX_LOGIT_BIAS,
        "additionalProperties": {
            "type": "number",
            "minimum": -LOGIT_BIAS_MAX,
            "maximum": LOGIT_BIAS_MAX,
        },
        "description": "Token id (as a string key, as JSON objects have) -> bias.",
    }
)
class LogitBiasField(serializers.Field):
    """OpenAI's ``logit_bias``: token ids (JSON object keys, so strings of digits) to a bias in
    -100..100, at most 300 of them. Kept with string keys, as JSON stores them."""

    def to_internal_value(self, data):
        if not isinstance(data, dict) or len(data) > MAX_LOGIT_BIAS:
            raise serializers.ValidationError(
                f"logit_bias must be an object of at most {MAX_LOGIT_BIAS} token ids."
            )
        bias = {}
        for token, value in data.items():
            # Ten digits cover any vocabulary (and int() of thousands would be refused).
            digits = isinstance(token, str) and token.isascii() and token.isdigit()
            if not digits or len(token) > 10:
                raise serializers.ValidationError(f"{token!r} is not a token id.")
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not -LOGIT_BIAS_MAX <= value <= LOGIT_BIAS_MAX:
                raise serializers.ValidationError(
                    f"The bias of token {token} must be a number from -100 to 100."
                )
            bias[str(int(token))] = value
        return bias

    def to_representation(self, value):
        return value


class RefusesUnknownFields:
    """A body field we do not support is a 400 naming it (OpenAI answers the same), never
    silently dropped. A null is let through: it asks for nothing."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            for key, value in data.items():
                if key not in self.fields and value is not None:
                    raise serializers.ValidationError(
                        {key: [f"Unrecognized request argument supplied: {key}"]}
                    )
        return super().to_internal_value(data)


class SamplingInput(RefusesUnknownFields, serializers.Serializer):
    """Sampling parameters, strictly typed, as OpenAI and vLLM define them (engine/logits.py).
    The native API takes these; the OpenAI-compatible one extends them (``max_completion_tokens``,
    ``stop``, tools, ``n`` ...) and takes null for each."""

    max_tokens = max_tokens_field()
    temperature = StrictFloatField(required=False, min_value=0, max_value=TEMPERATURE_MAX)
    top_p = StrictFloatField(required=False, min_value=0, max_value=TOP_P_MAX)
    seed = StrictIntegerField(required=False, allow_null=True)
    frequency_penalty = StrictFloatField(
        required=False, min_value=-PENALTY_MAX, max_value=PENALTY_MAX
    )
    presence_penalty = StrictFloatField(
        required=False, min_value=-PENALTY_MAX, max_value=PENALTY_MAX
    )
    logit_bias = LogitBiasField(required=False)
    # vLLM's extra sampling parameters.
    repetition_penalty = StrictFloatField(required=False, min_value=0, max_value=PENALTY_MAX)
    top_k = StrictIntegerField(required=False, min_value=-1, help_text="-1 or 0: no top-k.")
    min_p = StrictFloatField(required=False, min_value=0, max_value=1)
    logprobs = StrictBooleanField(required=False)
    top_logprobs = StrictIntegerField(required=False, min_value=0, max_value=MAX_TOP_LOGPROBS)

    def validate_top_p(self, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise serializers.ValidationError("top_p must be greater than 0.")
        return value

    def validate_repetition_penalty(self, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise serializers.ValidationError("repetition_penalty must be greater than 0.")
        return value

    def validate(self, data):
        if data.get("top_logprobs") is not None and not data.get("logprobs"):
            raise serializers.ValidationError(
                {"top_logprobs": ["logprobs must be true when top_logprobs is used."]}
            )
        return data
