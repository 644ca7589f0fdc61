"""OpenAI's Responses API: ``POST /v1/responses`` (stream and not) and ``GET /v1/responses/{id}``.

A response runs as a queued ChatJob, like a chat completion; a stored one is a turn of a session,
so ``previous_response_id`` chains turns (chat/responses.py).
"""

import asyncio

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from drf_spectacular.utils import OpenApiResponse, OpenApiTypes, extend_schema
from rest_framework.response import Response

from autoglm_site.schema import ERROR_REF, ERRORS
from tenants.apiviews import ApiCall, ApiView, async_api
from tenants.auth import ApiKeyAuthentication, request_tenant

from . import responses
from .models import ChatJob
from .openai_api import timed_out, wait_for_end
from .openai_stream import cancel_job
from .presenters import job_error, job_error_status
from .responses_inputs import ResponseCreateInput, stored_message
from .responses_presenters import response_body, response_events
from .streaming import sse

SSE_EVENTS = (
    "With `stream: true`: typed events, each `event: <type>` and `data: {...}` with a "
    "`sequence_number`: `response.created`, `response.in_progress`, `response.output_item.added`, "
    "`response.content_part.added`, `response.output_text.delta` ..., "
    "`response.function_call_arguments.delta`/`.done`, `response.output_item.done`, then "
    "`response.completed` (or `.incomplete`, `.failed`) with the whole response."
)


@async_api(
    method="POST",
    not_allowed="Use POST to create a response.",
    authentication_classes=[ApiKeyAuthentication],
    body=ResponseCreateInput,
    operation_id="responses_create",
    tags=["openai"],
    summary="Create a response (OpenAI's Responses API)",
    responses={
        (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description=SSE_EVENTS),
        (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR),
        404: OpenApiResponse(ERROR_REF, description="No such previous_response_id."),
        409: OpenApiResponse(ERROR_REF, description="The previous response is still running."),
        429: OpenApiResponse(ERROR_REF, description=ERRORS["429"]),
        504: OpenApiResponse(ERROR_REF, description="It did not finish in time (`timeout`)."),
    },
)
async def responses_create(request, call: ApiCall) -> HttpResponse:
    data = call.body.validated_data
    job, limits = await sync_to_async(_submit)(call, request.request_id)
    if data.get("stream"):
        response = sse(response_events(job))
    else:
        try:
            async with asyncio.timeout(settings.AUTOGLM_REQUEST_TIMEOUT):
                job = await wait_for_end(job)
        except TimeoutError:
            await cancel_job(job)
            return timed_out(limits.values)
        except asyncio.CancelledError:
            await cancel_job(job)
            raise
        if job.status == ChatJob.Status.FAILED:
            response = JsonResponse(job_error(job), status=job_error_status(job))
        else:
            response = JsonResponse(response_body(job))
    for name, value in limits.values.items():
        response[name] = value
    return response


def _submit(call: ApiCall, trace_id: str):
    body = call.body
    data = body.validated_data
    previous = None
    if data.get("previous_response_id"):
        previous = responses.response_get(
            tenant=call.tenant,
            response_id=data["previous_response_id"],
            param="previous_response_id",
        )
    store = data.get("store") is not False
    params = body.job_params()
    params["response"] = {
        "instructions": data.get("instructions"),
        "metadata": data.get("metadata") or {},
        "previous_response_id": data.get("previous_response_id"),
        "store": store,
        "format": (data.get("text") or {}).get("format"),
    }
    return responses.response_submit(
        tenant=call.tenant,
        api_key=call.api_key,
        model=data["model"],
        messages=[stored_message(m) for m in data["input"]],
        instructions=data.get("instructions") or "",
        previous=previous,
        store=store,
        params=params,
        trace_id=trace_id,
    )


class ResponseDetailApi(ApiView):
    """A stored response, as ``POST /v1/responses`` answered it (or as it stands now)."""

    authentication_classes = [ApiKeyAuthentication]

    @extend_schema(
        responses={200: OpenApiTypes.OBJECT, 404: OpenApiResponse(ERROR_REF)},
        operation_id="responses_retrieve",
        tags=["openai"],
        summary="Get a response (OpenAI's Responses API)",
    )
    def get(self, request, response_id: str):
        job = responses.response_get(tenant=request_tenant(request), response_id=response_id)
        return Response(response_body(job))

    @extend_schema(
        responses={200: OpenApiTypes.OBJECT, 404: OpenApiResponse(ERROR_REF)},
        operation_id="responses_delete",
        tags=["openai"],
        summary="Delete a response (OpenAI's Responses API)",
    )
    def delete(self, request, response_id: str):
        job = responses.response_delete(tenant=request_tenant(request), response_id=response_id)
        return Response({"id": responses.response_id(job), "object": "response", "deleted": True})
