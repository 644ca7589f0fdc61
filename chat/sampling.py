"""The sampling parameters both APIs take, with their limits: one serializer, so the native API
(a session's defaults, one message's own) and the OpenAI-compatible one refuse the same values
with the same messages."""

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from autoglm_site.fields import StrictFloatField, StrictIntegerField

# Limits as OpenAI documents them (and as ints, so a message reads "less than or equal to 2").
TEMPERATURE_MAX = 2
TOP_P_MAX = 1  # and more than 0
# As in the OpenAI API. The engine, which the web side never imports, validates its requests
# with the same number (engine.request.MAX_STOP_SEQUENCES; tests/test_limits.py holds them equal).
MAX_STOP_SEQUENCES = 4


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


class SamplingInput(serializers.Serializer):
    """Sampling parameters, strictly typed. The native API takes these; the OpenAI-compatible
    one extends them (``max_completion_tokens``, ``stop``) and takes null for each."""

    max_tokens = max_tokens_field()
    temperature = StrictFloatField(required=False, min_value=0, max_value=TEMPERATURE_MAX)
    top_p = StrictFloatField(required=False, min_value=0, max_value=TOP_P_MAX)
    seed = StrictIntegerField(required=False, allow_null=True)

    def validate_top_p(self, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise serializers.ValidationError("top_p must be greater than 0.")
        return value
