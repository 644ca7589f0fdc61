"""What clients see of chat objects: output shapes, usage, completion bodies, and the HTTP
status and error body of a failed job. The native API, the OpenAI-compatible API, the event
replay and the UI all present through here."""

from typing import Any

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response

from autoglm_site.errors import error_body

from .models import ChatJob, ChatSession, Message
from .tool_calls import DEFAULT_TOOL_PARSER, FirstCallOnly, tool_parser

Code = ChatJob.ErrorCode

# A failed job's error code -> (HTTP status, error type) when it is reported to a client.
JOB_ERRORS: dict[str, tuple[int, str]] = {
    Code.CONTEXT_LENGTH_EXCEEDED: (400, "invalid_request_error"),
    Code.INVALID_REQUEST: (400, "invalid_request_error"),
    Code.INSUFFICIENT_QUOTA: (429, "insufficient_quota"),
    Code.TIMEOUT: (504, "server_error"),
    Code.ENGINE_ERROR: (503, "server_error"),
    Code.MODEL_UNAVAILABLE: (503, "server_error"),
    Code.WORKER_CRASHED: (500, "server_error"),
    Code.PLUGIN_ERROR: (500, "server_error"),
}
_UNKNOWN_ERROR = (500, "server_error")


def job_error_status(job: ChatJob) -> int:
    return JOB_ERRORS.get(job.error_code, _UNKNOWN_ERROR)[0]


def job_error(job: ChatJob) -> dict[str, Any]:
    """A failed job's error, in the API's error shape."""
    return error_body(
        job.error or "The job failed.",
        type=JOB_ERRORS.get(job.error_code, _UNKNOWN_ERROR)[1],
        code=job.error_code or Code.INTERNAL_ERROR,
        param=prompt_param(job) if job.error_code == Code.CONTEXT_LENGTH_EXCEEDED else None,
    )


def prompt_param(job: ChatJob) -> str:
    """The request field that holds a job's prompt: a legacy completion's ``prompt``, else
    the ``messages``."""
    return "prompt" if {"prompt", "prompt_ids"} & set(job.params) else "messages"


def job_usage(job: ChatJob) -> dict | None:
    if job.prompt_tokens is None:
        return None
    completion = job.completion_tokens or 0
    return {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": job.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": job.cached_tokens},
    }


class SessionOutput(serializers.ModelSerializer):
    object = serializers.SerializerMethodField()
    current_message_id = serializers.UUIDField(
        read_only=True, allow_null=True, help_text="The last message of the branch shown."
    )

    class Meta:
        model = ChatSession
        fields = (
            "id",
            "object",
            "title",
            "model",
            "system_prompt",
            "params",
            "current_message_id",
            "pinned",
            "archived",
            "tags",
            "created_at",
            "updated_at",
        )

    def get_object(self, obj) -> str:
        return "chat.session"


class AttachmentOutput(serializers.Serializer):
    name = serializers.CharField()
    size = serializers.IntegerField(help_text="The file's length in characters.")


class MessageOutput(serializers.ModelSerializer):
    object = serializers.SerializerMethodField()
    parent_id = serializers.UUIDField(
        read_only=True, allow_null=True, help_text="The message it follows; null: a first one."
    )
    attachments = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = ("id", "object", "parent_id", "role", "content", "attachments", "created_at")

    def get_object(self, obj) -> str:
        return "chat.message"

    # The files' names and sizes: a list of messages stays small; their text is in the prompt.
    @extend_schema_field(AttachmentOutput(many=True))
    def get_attachments(self, obj) -> list[dict]:
        return [{"name": f["name"], "size": len(f["text"])} for f in obj.attachments or []]


class JobOutput(serializers.Serializer):
    """A job as clients see it, with the assistant's message once there is one."""

    id = serializers.UUIDField()
    object = serializers.SerializerMethodField()
    status = serializers.CharField()
    model = serializers.CharField()
    session_id = serializers.UUIDField(allow_null=True)
    user_message_id = serializers.UUIDField(
        allow_null=True, help_text="The session's message it answers."
    )
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    finish_reason = serializers.SerializerMethodField()
    dropped_messages = serializers.IntegerField()
    callback_url = serializers.CharField(allow_blank=True)
    error = serializers.SerializerMethodField()
    usage = serializers.SerializerMethodField()
    message = serializers.SerializerMethodField()
    logprobs = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()

    def get_object(self, job) -> str:
        return "chat.job"

    def get_finish_reason(self, job) -> str | None:
        return job.finish_reason or None

    def get_error(self, job) -> dict | None:
        return job_error(job)["error"] if job.status == ChatJob.Status.FAILED else None

    def get_usage(self, job) -> dict | None:
        return job_usage(job)

    def get_logprobs(self, job) -> list[dict] | None:
        """The answer's tokens with their logprobs (OpenAI's entries), when they were asked for."""
        if not job.params.get("logprobs"):
            return None
        return stored_choices(job)[0].get("logprobs") or []

    def get_message(self, job) -> dict | None:
        if job.assistant_message:
            return MessageOutput(job.assistant_message).data
        if job.continued_message and job.is_finished:  # the answer it wrote more of
            return MessageOutput(job.continued_message).data
        return None

    def get_links(self, job) -> dict:
        request = self.context["request"]

        def url(name: str, *args) -> str:
            return request.build_absolute_uri(reverse(name, args=args))

        links = {
            "self": url("api-job-detail", job.id),
            "events": url("api-job-events", job.id),
            "cancel": url("api-job-cancel", job.id),
        }
        if job.session_id:
            links["session"] = url("api-session-detail", job.session_id)
            links["messages"] = url("api-session-messages", job.session_id)
        return links


def job_accepted(request, job: ChatJob, limits) -> Response:
    """The 202 of a call that queued a job: the job, and the caller's rate-limit headers
    (``limits``, a tenants.quotas.Headers)."""
    body = JobOutput(job, context={"request": request}).data
    return Response(body, status=status.HTTP_202_ACCEPTED, headers=limits.values)


def completion_id(job: ChatJob) -> str:
    return f"chatcmpl-{job.id.hex}"


def openai_finish_reason(reason: str | None) -> str:
    # OpenAI knows only stop and length; a cancelled answer ended early, as with a stop.
    return "length" if reason == "length" else "stop"


def tool_parser_for(job: ChatJob):
    """The parser of the job's model's tool calls (``AUTOGLM_TOOL_PARSERS``), when the job was
    given tools; None when its answer is plain text."""
    if not job.params.get("tools"):
        return None
    parser = tool_parser(settings.AUTOGLM_TOOL_PARSERS.get(job.model, DEFAULT_TOOL_PARSER))
    return parser if job.params.get("parallel_tool_calls", True) else FirstCallOnly(parser)


def tool_call_prefix(job: ChatJob, index: int) -> str:
    # The same ids whether the calls are streamed or read back later.
    return f"{job.id.hex[:20]}{index}"


def stored_choices(job: ChatJob) -> list[dict]:
    """The job's answers: ``job.choices`` when it has several or kept logprobs, else its output."""
    if job.choices:
        return job.choices
    return [{"text": job.output, "finish_reason": job.finish_reason, "logprobs": None}]


def completion_choice(job: ChatJob, index: int, stored: dict) -> dict:
    """One choice of a finished job as OpenAI's ``chat.completion`` choice: its text, or the
    tool calls the model's text makes."""
    message = {"role": "assistant", "content": stored["text"], "refusal": None}
    finish_reason = openai_finish_reason(stored["finish_reason"])
    parser = tool_parser_for(job)
    if parser is not None:
        content, calls = parser.parse(stored["text"], call_id_prefix=tool_call_prefix(job, index))
        if calls:
            message = {**message, "content": content, "tool_calls": calls}
            if finish_reason == "stop":
                finish_reason = "tool_calls"
    logprobs = None
    if job.params.get("logprobs"):
        logprobs = {"content": stored.get("logprobs") or [], "refusal": None}
    return {
        "index": index,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": finish_reason,
    }


def completion_body(job: ChatJob) -> dict:
    """A finished job as OpenAI's ``chat.completion`` object."""
    return {
        "id": completion_id(job),
        "object": "chat.completion",
        "created": int(job.created_at.timestamp()),
        "model": job.model,
        "system_fingerprint": None,
        "choices": [
            completion_choice(job, index, stored)
            for index, stored in enumerate(stored_choices(job))
        ],
        "usage": job_usage(job),
    }
