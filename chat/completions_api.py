"""OpenAI's legacy ``POST /v1/completions``: one prompt in, its continuation out (stream and
not), on the job machinery of ``/v1/chat/completions`` (``chat.openai_api.keyed_completion``):
keys only, the one error shape, its timeouts, cancellation and Idempotency-Key."""

import functools

from django.http import HttpResponse

from tenants.apiviews import ApiCall, async_api
from tenants.auth import ApiKeyAuthentication

from . import services
from .completions_inputs import CompletionInput
from .completions_presenters import text_completion_body, text_completion_chunks
from .completions_schema import TEXT_COMPLETION, TEXT_COMPLETION_EVENT
from .openai_api import Shape, completion_responses, keyed_completion, submit_in_thread

SSE_TEXT_COMPLETION = (
    "With `stream: true`: `data: <text_completion>` frames, one per piece of text, a last one "
    "per choice with its `finish_reason`, a usage chunk (`choices: []`) when "
    "`stream_options.include_usage`, then `data: [DONE]`. A failure mid-stream is sent as `data: "
    '{"error": {...}}`. Closing the connection cancels the job.'
)

TEXT = Shape(body=text_completion_body, chunks=text_completion_chunks)


@async_api(
    method="POST",
    not_allowed="Use POST for completions.",
    authentication_classes=[ApiKeyAuthentication],  # the OpenAI surface takes keys only
    body=CompletionInput,
    operation_id="completions_create",
    tags=["openai"],
    summary="Create a completion of a prompt (OpenAI's legacy API)",
    **completion_responses(TEXT_COMPLETION, TEXT_COMPLETION_EVENT, SSE_TEXT_COMPLETION),
)
async def completions(request, call: ApiCall) -> HttpResponse:
    data = call.body
    submit = functools.partial(
        submit_in_thread,
        services.prompt_submit,
        tenant=call.tenant,
        api_key=call.api_key,
        model=data.validated_data["model"],
        prompt=data.job_prompt(),
        params=data.job_params(),
        trace_id=request.request_id,
    )
    return await keyed_completion(request, call, submit=submit, shape=TEXT)
