"""OpenAI-compatible API: ``POST /v1/chat/completions`` (stream and not) and ``/v1/models``.

Each completion runs as a queued ChatJob through the model's Celery workers. These views are
async so that a stream is relayed from Redis as it is produced, holding no thread per client.
"""

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from autoglm_site.errors import NotFoundError, error_body
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
    idempotency_key,
    idempotency_release,
    idempotency_schema,
)

from . import jobs, services
from .models import ChatJob
from .openai_inputs import ChatCompletionInput
from .openai_stream import cancel_job, completion_chunks
from .presenters import completion_body, job_error, job_error_status
from .streaming import job_events, sse

logger = logging.getLogger(__name__)

SSE_COMPLETION = (
    "With `stream: true`: `data: <chat.completion.chunk>` frames, `finish_reason` on the last "
    "content chunk, a usage chunk (`choices: []`) when `stream_options.include_usage`, then "
    '`data: [DONE]`. A failure mid-stream is sent as `data: {"error": {...}}`. Closing the '
    "connection cancels the job."
)


def completion_responses(body, event, description: str) -> dict:
    """The schema of a completion operation's answers: ``body`` as JSON, ``event`` (one SSE
    event) with ``stream: true``, and its errors; with the Idempotency-Key header."""
    return idempotency_schema(
        {
            (200, "application/json"): OpenApiResponse(body, description=description),
            (200, "text/event-stream"): OpenApiResponse(event),
            429: OpenApiResponse(ERROR_REF, description=ERRORS["429"]),
            500: OpenApiResponse(ERROR_REF, description="The job failed on the worker."),
            504: OpenApiResponse(
                ERROR_REF,
                description="The job ran out of time, or the request waited past "
                "AUTOGLM_REQUEST_TIMEOUT (`timeout`).",
            ),
        }
    )


@async_api(
    method="POST",
    not_allowed="Use POST for chat completions.",
    authentication_classes=[ApiKeyAuthentication],  # the OpenAI surface takes keys only
    body=ChatCompletionInput,
    operation_id="chat_completions_create",
    tags=["openai"],
    summary="Create a chat completion (OpenAI-compatible)",
    **completion_responses(COMPLETION_REF, COMPLETION_EVENT_REF, SSE_COMPLETION),
)
async def chat_completions(request, call: ApiCall) -> HttpResponse:
    data = call.body
    submit = functools.partial(
        submit_in_thread,
        services.completion_submit,
        tenant=call.tenant,
        api_key=call.api_key,
        model=data.validated_data["model"],
        messages=data.job_messages(),
        params=data.job_params(),
        trace_id=request.request_id,
    )
    return await keyed_completion(request, call, submit=submit, shape=CHAT)


@dataclass(frozen=True)
class Shape:
    """How a completion endpoint presents a job: its body once it ends, its SSE frames."""

    body: Callable[[ChatJob], dict]
    chunks: Callable[..., AsyncIterator[bytes]]


CHAT = Shape(body=completion_body, chunks=completion_chunks)


async def keyed_completion(
    request,
    call: ApiCall,
    *,
    submit: Callable[[], Awaitable[tuple[ChatJob, object]]],
    shape: Shape,
) -> HttpResponse:
    """Submit a completion (``submit``) and answer it in ``shape``, with Idempotency-Key
    support: a retry with the same key and body gets the first request's job again."""
    scope = caller_scope(call.tenant, call.api_key, getattr(request, "user", None))
    claim = None
    if idempotency_key(request) is not None:  # else no trip to a thread for nothing
        begin = _in_thread(idempotency_begin)
        claim = await begin(request, scope=scope, data=call.body.initial_data)
    if isinstance(claim, Replay):
        return await _replay(claim, call, shape)
    try:
        job, limits = await submit()
    except BaseException:
        if claim is not None:
            await _in_thread(idempotency_release)(claim)  # nothing was created
        raise
    if claim is not None:
        # Kept as soon as the job exists: a retry re-attaches to it (see _replay).
        finish = _in_thread(idempotency_finish)
        await finish(claim, status=200, headers=limits.values, job_id=str(job.id))
    return await _answer(job, call.body, limits.values, keyed=claim is not None, shape=shape)


async def _replay(replay: Replay, call: ApiCall, shape: Shape) -> HttpResponse:
    """The answer of the first request with this Idempotency-Key: its job's, again (a stream of
    it from its start, or its completion once it ends)."""
    job = await ChatJob.objects.filter(pk=replay.job_id, tenant=call.tenant).afirst()
    if job is None:
        raise NotFoundError("The completion of this Idempotency-Key no longer exists.")
    response = await _answer(job, call.body, replay.headers, keyed=True, shape=shape)
    response[REPLAYED_HEADER] = "true"
    return response


async def _answer(
    job: ChatJob, data, headers: dict[str, str], *, keyed: bool, shape: Shape
) -> HttpResponse:
    """The job's answer: a stream, or its completion when it ends.

    A client that hangs up cancels the job, unless it sent an Idempotency-Key: it means to try
    again, and its retry re-attaches to the same job.
    """
    if data.validated_data.get("stream"):
        options = data.validated_data.get("stream_options") or {}
        include_usage = options.get("include_usage", False)
        response = sse(shape.chunks(job, include_usage=include_usage, cancel=not keyed))
    else:
        try:
            async with asyncio.timeout(settings.AUTOGLM_REQUEST_TIMEOUT):
                job = await wait_for_end(job)
        except TimeoutError:
            await cancel_job(job)  # no one will read its answer
            return timed_out(headers)
        except asyncio.CancelledError:
            if not keyed:
                await cancel_job(job)  # the client went away
            raise
        if job.status == ChatJob.Status.FAILED:
            response = JsonResponse(job_error(job), status=job_error_status(job))
        else:
            response = JsonResponse(shape.body(job))
    for name, value in headers.items():
        response[name] = value
    return response


def _in_thread(function):
    # Not thread-sensitive: a release may run as the request is cancelled (see _cancel).
    return sync_to_async(function, thread_sensitive=False)


def timed_out(headers: dict[str, str]) -> JsonResponse:
    seconds = settings.AUTOGLM_REQUEST_TIMEOUT
    body = error_body(
        f"The completion did not finish within {seconds}s (AUTOGLM_REQUEST_TIMEOUT); its job "
        "was cancelled.",
        type="server_error",
        code="timeout",
    )
    return JsonResponse(body, status=504, headers=headers)


async def submit_in_thread(service: Callable, **kwargs) -> tuple[ChatJob, object]:
    """A submitting service (``completion_submit``, ...) in a thread; a client that hangs up
    meanwhile does not leave the job it created running: the job is cancelled as soon as it
    exists."""
    submission = asyncio.ensure_future(sync_to_async(service)(**kwargs))
    try:
        return await asyncio.shield(submission)
    except asyncio.CancelledError:
        job, _ = await submission
        await cancel_job(job)
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


def document_input_limits(result, generator, request, public):
    """drf-spectacular post-processing hook: two limits the serializers check that their schema
    cannot show. A completion needs a message (``allow_empty=False`` on a list serializer), and
    ``top_p`` must be more than 0 (``validate_top_p``; drf-spectacular drops an
    ``exclusiveMinimum`` beside ``min_value``)."""
    schemas = result["components"]["schemas"]
    schemas["ChatCompletionRequest"]["properties"]["messages"]["minItems"] = 1
    for name in ("ChatCompletionRequest", "CompletionRequest", "SamplingInput", "MessageInput"):
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
