"""OpenAI-compatible API: ``POST /v1/chat/completions`` (stream and not) and ``/v1/models``.

Each completion runs as a queued ChatJob through the model's Celery workers. These views are
async so that a stream is relayed from Redis as it is produced, holding no thread per client.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.response import Response

from autoglm_site.errors import NotFoundError, error_body
from autoglm_site.fields import StrictBooleanField, StrictCharField, StrictIntegerField
from autoglm_site.schema import (
    COMPLETION_EVENT_REF,
    COMPLETION_REF,
    ERROR_REF,
    ERRORS,
    list_of,
)
from tenants.apiviews import ApiCall, ApiView, async_api
from tenants.auth import ApiKeyAuthentication
from tenants.idempotency import (
    REPLAYED_HEADER,
    Replay,
    caller_scope,
    idempotency_begin,
    idempotency_finish,
    idempotency_release,
    idempotency_schema,
)

from . import events, jobs, services
from .models import ChatJob
from .presenters import (
    completion_body,
    completion_id,
    job_error,
    job_error_status,
    openai_finish_reason,
)
from .sampling import SamplingInput, StopField, max_tokens_field, no_nul
from .streaming import job_events, sse

logger = logging.getLogger(__name__)

ROLES = ("system", "developer", "user", "assistant")


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


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": 1})
class OnlyOneField(StrictIntegerField):
    """``n``: how many answers; only one is made (``validate_n`` says so)."""


class ChatMessageInput(serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)
    content = ContentField()


class StreamOptionsInput(serializers.Serializer):
    include_usage = StrictBooleanField(required=False, default=False)


# The schema keeps the component name it had when it was written by hand.
@extend_schema_serializer(component_name="ChatCompletionRequest")
class ChatCompletionInput(SamplingInput):
    """OpenAI's request body: the sampling parameters and the rest of what it takes."""

    model = StrictCharField(max_length=100)
    messages = ChatMessageInput(many=True, allow_empty=False)
    max_completion_tokens = max_tokens_field(allow_null=True)  # OpenAI's newer max_tokens
    stop = StopField(required=False, allow_null=True)
    n = OnlyOneField(required=False, allow_null=True)
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

    def validate_n(self, value):
        if value not in (None, 1):
            raise serializers.ValidationError("Only n=1 is supported.")
        return value

    def validate_messages(self, value):
        total = sum(len(m["content"]) for m in value)
        if total > settings.AUTOGLM_MAX_CONTENT_CHARS:
            raise serializers.ValidationError("The messages are too long.")
        return value

    def job_params(self) -> dict:
        data = self.validated_data
        params = {
            key: data[key]
            for key in ("temperature", "top_p", "seed", "stop")
            if data.get(key) is not None
        }
        max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        return params

    def job_messages(self) -> list[dict[str, str]]:
        # OpenAI's "developer" role is the system role of newer models.
        return [
            {"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"]}
            for m in self.validated_data["messages"]
        ]


SSE_COMPLETION = (
    "With `stream: true`: `data: <chat.completion.chunk>` frames, `finish_reason` on the last "
    "content chunk, a usage chunk (`choices: []`) when `stream_options.include_usage`, then "
    '`data: [DONE]`. A failure mid-stream is sent as `data: {"error": {...}}`. Closing the '
    "connection cancels the job."
)


@async_api(
    method="POST",
    not_allowed="Use POST for chat completions.",
    authentication_classes=[ApiKeyAuthentication],  # the OpenAI surface takes keys only
    body=ChatCompletionInput,
    operation_id="chat_completions_create",
    tags=["openai"],
    summary="Create a chat completion (OpenAI-compatible)",
    **idempotency_schema(
        {
            (200, "application/json"): OpenApiResponse(COMPLETION_REF, description=SSE_COMPLETION),
            (200, "text/event-stream"): OpenApiResponse(COMPLETION_EVENT_REF),
            429: OpenApiResponse(ERROR_REF, description=ERRORS["429"]),
            500: OpenApiResponse(ERROR_REF, description="The job failed on the worker."),
            504: OpenApiResponse(
                ERROR_REF,
                description="The job ran out of time, or the request waited past "
                "AUTOGLM_REQUEST_TIMEOUT (`timeout`).",
            ),
        }
    ),
)
async def chat_completions(request, call: ApiCall) -> HttpResponse:
    data = call.body
    scope = caller_scope(call.tenant, call.api_key, getattr(request, "user", None))
    claim = await _in_thread(idempotency_begin)(request, scope=scope, data=data.initial_data)
    if isinstance(claim, Replay):
        return await _replay(claim, call)
    try:
        job, limits = await _submit(
            tenant=call.tenant,
            api_key=call.api_key,
            model=data.validated_data["model"],
            messages=data.job_messages(),
            params=data.job_params(),
            trace_id=request.request_id,
        )
    except BaseException:
        if claim is not None:
            await _in_thread(idempotency_release)(claim)  # nothing was created
        raise
    if claim is not None:
        # Kept as soon as the job exists: a retry re-attaches to it (see _replay).
        finish = _in_thread(idempotency_finish)
        await finish(claim, status=200, headers=limits.values, job_id=str(job.id))
    return await _answer(job, data, limits.values, keyed=claim is not None)


async def _replay(replay: Replay, call: ApiCall) -> HttpResponse:
    """The answer of the first request with this Idempotency-Key: its job's, again (a stream of
    it from its start, or its completion once it ends)."""
    job = await ChatJob.objects.filter(pk=replay.job_id, tenant=call.tenant).afirst()
    if job is None:
        raise NotFoundError("The completion of this Idempotency-Key no longer exists.")
    response = await _answer(job, call.body, replay.headers, keyed=True)
    response[REPLAYED_HEADER] = "true"
    return response


async def _answer(job: ChatJob, data, headers: dict[str, str], *, keyed: bool) -> HttpResponse:
    """The job's answer: a stream, or its completion when it ends.

    A client that hangs up cancels the job, unless it sent an Idempotency-Key: it means to try
    again, and its retry re-attaches to the same job.
    """
    if data.validated_data.get("stream"):
        options = data.validated_data.get("stream_options") or {}
        include_usage = options.get("include_usage", False)
        response = sse(completion_chunks(job, include_usage=include_usage, cancel=not keyed))
    else:
        try:
            async with asyncio.timeout(settings.AUTOGLM_REQUEST_TIMEOUT):
                job = await wait_for_end(job)
        except TimeoutError:
            await _cancel(job)  # no one will read its answer
            return _timed_out(headers)
        except asyncio.CancelledError:
            if not keyed:
                await _cancel(job)  # the client went away
            raise
        if job.status == ChatJob.Status.FAILED:
            response = JsonResponse(job_error(job), status=job_error_status(job))
        else:
            response = JsonResponse(completion_body(job))
    for name, value in headers.items():
        response[name] = value
    return response


def _in_thread(function):
    # Not thread-sensitive: a release may run as the request is cancelled (see _cancel).
    return sync_to_async(function, thread_sensitive=False)


def _timed_out(headers: dict[str, str]) -> JsonResponse:
    seconds = settings.AUTOGLM_REQUEST_TIMEOUT
    body = error_body(
        f"The completion did not finish within {seconds}s (AUTOGLM_REQUEST_TIMEOUT); its job "
        "was cancelled.",
        type="server_error",
        code="timeout",
    )
    return JsonResponse(body, status=504, headers=headers)


async def _submit(**kwargs) -> tuple[ChatJob, object]:
    """``completion_submit`` in a thread; a client that hangs up meanwhile does not leave the
    job it created running: the job is cancelled as soon as it exists."""
    submission = asyncio.ensure_future(sync_to_async(services.completion_submit)(**kwargs))
    try:
        return await asyncio.shield(submission)
    except asyncio.CancelledError:
        job, _ = await submission
        await _cancel(job)
        raise


async def wait_for_end(job: ChatJob) -> ChatJob:
    """Wait for the job's final event, then read the stored result. A job that no worker
    takes is failed after the queued lease (``jobs.job_expire_unstarted``), which ends the
    wait."""
    expired = False
    async for event in job_events(job, keepalive=True):
        if event is None:
            if not expired:
                fresh = await ChatJob.objects.aget(pk=job.pk)
                expired = await sync_to_async(jobs.job_expire_unstarted)(job=fresh)
            continue
        if event.is_final:
            break
    return await ChatJob.objects.aget(pk=job.pk)


async def completion_chunks(
    job: ChatJob, *, include_usage: bool, cancel: bool = True
) -> AsyncIterator[bytes]:
    """The job's events as OpenAI ``chat.completion.chunk`` SSE frames.

    One token is held back so that ``finish_reason`` rides on the last content chunk. A client
    that disconnects before the end cancels the job (with ``cancel``), and so does a restart of
    the job after text went out (the client is told to retry, see ``_restart``).
    """
    base = {
        "id": completion_id(job),
        "object": "chat.completion.chunk",
        "created": int(job.created_at.timestamp()),
        "model": job.model,
        "system_fingerprint": None,
    }

    def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return frame({**base, "choices": [choice]})

    ended = False
    try:
        yield chunk({"role": "assistant", "content": ""})
        pending: str | None = None
        sent_text = False
        async for event in job_events(job, keepalive=True):
            if event is None:
                yield b": keep-alive\n\n"
            elif event.type == events.TOKEN:
                if pending is not None:
                    yield chunk({"content": pending})
                    sent_text = True
                pending = event.data["text"]
            elif event.type == events.RESET:
                if sent_text:
                    ended = True
                    yield await _restart(job)
                    break
                pending = None
            elif event.type == events.DONE:
                reason = openai_finish_reason(event.data.get("finish_reason"))
                yield chunk({"content": pending} if pending else {}, reason)
                if include_usage:
                    yield frame({**base, "choices": [], "usage": event.data.get("usage")})
                ended = True
            elif event.type == events.ERROR:
                ended = True
                yield frame({"error": event.data["error"]})
        yield b"data: [DONE]\n\n"
    finally:
        if not ended and cancel:
            logger.info("stream closed early, cancelling", extra={"job_id": str(job.id)})
            await _cancel(job)


async def _cancel(job: ChatJob) -> None:
    # Not thread-sensitive: it often runs as the request is cancelled, while the request's own
    # thread context is being torn down.
    await sync_to_async(jobs.job_cancel, thread_sensitive=False)(job=job)


async def _restart(job: ChatJob) -> bytes:
    """The frame that ends a stream whose job restarted (a redelivery) after text went out.

    The client cannot take back the text it has, so it is told to retry; the restarted attempt
    is cancelled first, or it would run on with no one reading it and be billed beside the
    retry.
    """
    logger.info("generation restarted mid-stream, cancelling", extra={"job_id": str(job.id)})
    await _cancel(job)
    return frame(_restart_error())


def _restart_error() -> dict:
    return {
        "error": {
            "message": "The worker restarted this generation; retry the request.",
            "type": "server_error",
            "param": None,
            "code": "generation_restarted",
        }
    }


def frame(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def document_input_limits(result, generator, request, public):
    """drf-spectacular post-processing hook: two limits the serializers check that their schema
    cannot show. A completion needs a message (``allow_empty=False`` on a list serializer), and
    ``top_p`` must be more than 0 (``validate_top_p``; drf-spectacular drops an
    ``exclusiveMinimum`` beside ``min_value``)."""
    schemas = result["components"]["schemas"]
    schemas["ChatCompletionRequest"]["properties"]["messages"]["minItems"] = 1
    for name in ("ChatCompletionRequest", "SamplingInput", "MessageInput"):
        schemas[name]["properties"]["top_p"]["exclusiveMinimum"] = True
    return result


class ModelOutput(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField(default="model")
    created = serializers.IntegerField()
    owned_by = serializers.CharField()


class ModelListApi(ApiView):
    """OpenAI's model list: the configured models this key may use."""

    authentication_classes = [ApiKeyAuthentication]  # the OpenAI surface takes keys only

    @extend_schema(
        responses=list_of(ModelOutput, name="ModelList", paged=False),
        operation_id="v1_models_list",
        summary="List models (OpenAI-compatible)",
    )
    def get(self, request):
        return Response({"object": "list", "data": [_model(m) for m in _models_for(request)]})


class ModelDetailApi(ApiView):
    authentication_classes = [ApiKeyAuthentication]

    @extend_schema(responses=ModelOutput, summary="Get a model (OpenAI-compatible)")
    def get(self, request, model_id: str):
        services.model_check(model=model_id, api_key=request.auth)
        return Response(_model(model_id))


def _models_for(request) -> list[str]:
    return [m for m in settings.AUTOGLM_MODELS if request.auth.allows_model(m)]


def _model(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "autoglm"}
