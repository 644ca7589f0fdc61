"""What the legacy ``POST /v1/completions`` accepts: one prompt (text or token ids), continued
without the chat template, and the sampling parameters of ``chat.sampling``. What it does not do
(``echo``, ``suffix``, ``best_of`` other than ``n``, several prompts) is a 400 naming the field,
as is any field it does not know (``RefusesUnknownFields``)."""

from django.conf import settings
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from autoglm_site.fields import StrictBooleanField, StrictCharField, StrictIntegerField

from .openai_inputs import MAX_CHOICES, StreamOptionsInput, job_params
from .sampling import SamplingInput, StopField, no_nul

# OpenAI's legacy endpoint: 16 tokens unless asked, at most 5 alternatives per token.
DEFAULT_MAX_TOKENS = 16
MAX_LEGACY_LOGPROBS = 5
ONE_PROMPT = "Only one prompt per request is supported."

MAX_TOKEN_ID = 2**31  # beyond any vocabulary (and what a tokenizer's ids hold)
TOKEN_IDS = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "integer", "minimum": 0, "maximum": MAX_TOKEN_ID - 1},
}


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "minItems": 1, "maxItems": 1, "items": {"type": "string"}},
            TOKEN_IDS,
            {"type": "array", "minItems": 1, "maxItems": 1, "items": TOKEN_IDS},
        ]
    }
)
class PromptField(serializers.Field):
    """A prompt: a string or token ids, alone or as the one item of a list (OpenAI takes a batch
    of them; one job answers one prompt here). Kept as the text or the list of ids."""

    def to_internal_value(self, data):
        if isinstance(data, list) and data and isinstance(data[0], str | list):
            if len(data) > 1:
                raise serializers.ValidationError(ONE_PROMPT)
            data = data[0]
        if isinstance(data, str):
            if not data:
                raise serializers.ValidationError("The prompt must not be empty.")
            if len(data) > settings.AUTOGLM_MAX_CONTENT_CHARS:
                raise serializers.ValidationError("The prompt is too long.")
            return no_nul(data)
        if isinstance(data, list) and data:
            if not all(type(token) is int and 0 <= token < MAX_TOKEN_ID for token in data):
                raise serializers.ValidationError(
                    "Token ids must be whole numbers from 0 to 2**31 - 1."
                )
            if len(data) > settings.AUTOGLM_MAX_CONTENT_CHARS:
                raise serializers.ValidationError("The prompt is too long.")
            return data
        raise serializers.ValidationError(
            "prompt must be a non-empty string or list of token ids (or a list of one of them)."
        )

    def to_representation(self, value):
        return value


@extend_schema_serializer(component_name="CompletionRequest")
class CompletionInput(SamplingInput):
    """OpenAI's legacy completion request, and vLLM's extra sampling parameters."""

    model = StrictCharField(max_length=100)
    prompt = PromptField()
    stop = StopField(required=False, allow_null=True)
    n = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_CHOICES)
    # Legacy logprobs: how many alternatives to each token (and the token's own logprob).
    logprobs = StrictIntegerField(required=False, min_value=0, max_value=MAX_LEGACY_LOGPROBS)
    echo = StrictBooleanField(required=False, help_text="Only false: the prompt is not echoed.")
    suffix = StrictCharField(required=False, help_text="Not supported: only null.")
    best_of = StrictIntegerField(
        required=False, min_value=1, max_value=MAX_CHOICES, help_text="Only null, or equal to n."
    )
    stream = StrictBooleanField(required=False, allow_null=True, default=False)
    stream_options = StreamOptionsInput(required=False, allow_null=True)
    user = StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=256)

    # An error names the first bad field, in the order OpenAI lists them. top_logprobs is not
    # among them: the legacy logprobs integer says how many.
    FIELD_ORDER = (
        "model",
        "prompt",
        "best_of",
        "echo",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "max_tokens",
        "n",
        "presence_penalty",
        "seed",
        "stop",
        "stream",
        "stream_options",
        "suffix",
        "temperature",
        "top_p",
        "user",
        "repetition_penalty",
        "top_k",
        "min_p",
    )

    def get_fields(self):
        fields = super().get_fields()
        del fields["top_logprobs"]  # refused as unknown (RefusesUnknownFields)
        for name, field in fields.items():
            # OpenAI's clients send null to mean "the default"; model and prompt have none.
            field.allow_null = name not in ("model", "prompt")
        assert set(fields) == set(self.FIELD_ORDER), "FIELD_ORDER must list every field"
        return {name: fields[name] for name in self.FIELD_ORDER}

    def validate_echo(self, value):
        if value:
            raise serializers.ValidationError("echo is not supported: the prompt is not echoed.")
        return value

    def validate_suffix(self, value):
        if value is not None:
            raise serializers.ValidationError("suffix is not supported.")
        return value

    def validate(self, data):
        data = super().validate(data)
        best_of = data.get("best_of")
        if best_of is not None and best_of != (data.get("n") or 1):
            raise serializers.ValidationError(
                {"best_of": ["best_of is only supported equal to n."]}
            )
        return data

    def job_prompt(self) -> str | list[int]:
        return self.validated_data["prompt"]

    def job_params(self) -> dict:
        """The job's sampling parameters: legacy ``logprobs: k`` is the chat API's
        ``logprobs: true, top_logprobs: k``."""
        data = self.validated_data
        params = job_params({**data, "logprobs": None})
        if data.get("logprobs") is not None:
            params |= {"logprobs": True, "top_logprobs": data["logprobs"]}
        params.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        return params
