"""Native REST API: sessions, their messages, and jobs. Thin views over services/selectors."""

import json
import re

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from autoglm_site.errors import InvalidRequestError
from autoglm_site.fields import StrictBooleanField, StrictCharField
from autoglm_site.schema import ERROR_REF, ERRORS, JOB_EVENT_REF, list_of
from tenants.apiviews import ApiCall, ApiView, async_api
from tenants.auth import request_tenant
from tenants.idempotency import IN_FLIGHT, caller_scope, idempotency_schema, idempotent

from . import jobs, selectors, services
from .attachments import AttachmentsField
from .models import ChatJob
from .presenters import JobOutput, MessageOutput, SessionOutput, job_accepted
from .sampling import SamplingInput
from .session_tags import SessionFilterInput, TagListField
from .streaming import job_events, seen_the_end, sse

_EVENT_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")


class PageInput(serializers.Serializer):
    limit = serializers.IntegerField(required=False, min_value=1, max_value=100, default=20)
    after = serializers.CharField(required=False)


def paged(request, queryset, output, *, newest_first: bool) -> Response:
    query = PageInput(data=request.query_params)
    query.is_valid(raise_exception=True)
    rows, has_more = selectors.page(
        queryset,
        after=query.validated_data.get("after"),
        limit=query.validated_data["limit"],
        newest_first=newest_first,
    )
    data = output(rows, many=True).data
    return Response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
    )


PAGE_PARAMETERS = [
    OpenApiParameter("limit", int, description="1 to 100, default 20"),
    OpenApiParameter("after", str, description="id of the last item of the previous page"),
]

SESSION_FILTERS = [
    OpenApiParameter("archived", str, enum=["true", "false"], description="default: both"),
    OpenApiParameter("tag", str, description="only sessions with this tag (exact)"),
]


class SessionCreateInput(serializers.Serializer):
    title = StrictCharField(required=False, allow_blank=True, max_length=200, default="")
    model = StrictCharField(required=False, max_length=100)
    system_prompt = StrictCharField(
        required=False, allow_blank=True, default="", max_length=settings.AUTOGLM_MAX_CONTENT_CHARS
    )
    params = SamplingInput(required=False, default=dict)


class SessionUpdateInput(serializers.Serializer):
    title = StrictCharField(required=False, allow_blank=True, max_length=200)
    system_prompt = StrictCharField(
        required=False, allow_blank=True, max_length=settings.AUTOGLM_MAX_CONTENT_CHARS
    )
    params = SamplingInput(required=False)
    current_message_id = serializers.UUIDField(
        required=False,
        help_text="Show the branch ending at this message of the session; the next message "
        "follows it.",
    )
    pinned = StrictBooleanField(required=False)
    archived = StrictBooleanField(required=False)
    tags = TagListField(required=False)


class MessageInput(SamplingInput):
    content = StrictCharField(
        allow_blank=True,
        max_length=settings.AUTOGLM_MAX_CONTENT_CHARS,
        help_text="The message; it may be empty only when files are attached.",
    )
    callback_url = StrictCharField(required=False, max_length=2000, default="")
    parent_id = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="The message this one follows (null: a new first message). Left out: the "
        "session's current message. Following an earlier message starts a branch: this is "
        "how a message is edited.",
    )
    attachments = AttachmentsField(
        help_text="Text files sent with the message, `[{name, content}]`: the model reads each "
        "after the message's own text (chat/attachments.py has the rules)."
    )

    def validate(self, data):
        if not data["content"] and not data["attachments"]:
            raise serializers.ValidationError({"content": ["This field may not be blank."]})
        return super().validate(data)


class MessagesQuery(serializers.Serializer):
    view = serializers.ChoiceField(choices=["path", "tree"], required=False, default="path")


class SessionListCreateApi(ApiView):
    Input = SessionCreateInput

    @extend_schema(
        parameters=[*PAGE_PARAMETERS, *SESSION_FILTERS],
        responses=list_of(SessionOutput, name="SessionList", paged=True),
        operation_id="api_v1_sessions_list",
        summary="List sessions, newest first",
    )
    def get(self, request):
        query = SessionFilterInput(data=request.query_params)
        query.is_valid(raise_exception=True)
        sessions = selectors.session_list(tenant=request_tenant(request), **query.filters())
        return paged(request, sessions, SessionOutput, newest_first=True)

    @extend_schema(
        request=Input, summary="Create a session", **idempotency_schema({201: SessionOutput})
    )
    def post(self, request):
        tenant = request_tenant(request)
        scope = caller_scope(tenant, request.auth, request.user)
        return idempotent(request, scope=scope, create=lambda: self._create(request, tenant))

    def _create(self, request, tenant):
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        session = services.session_create(
            tenant=tenant, api_key=request.auth, **data.validated_data
        )
        return Response(SessionOutput(session).data, status=status.HTTP_201_CREATED)


class SessionDetailApi(ApiView):
    Input = SessionUpdateInput

    @extend_schema(responses=SessionOutput, summary="Get a session")
    def get(self, request, session_id):
        session = selectors.session_get(tenant=request_tenant(request), session_id=session_id)
        return Response(SessionOutput(session).data)

    @extend_schema(
        request=Input,
        responses=SessionOutput,
        summary="Rename, pin, archive or tag a session, or change its system prompt or "
        "default parameters",
    )
    def patch(self, request, session_id):
        session = selectors.session_get(tenant=request_tenant(request), session_id=session_id)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        if "current_message_id" in changes:
            changes["current_message"] = selectors.message_get(
                tenant=session.tenant,
                session=session,
                message_id=changes.pop("current_message_id"),
                param="current_message_id",
            )
        session = services.session_update(session=session, **changes)
        return Response(SessionOutput(session).data)

    @extend_schema(responses={204: None}, summary="Delete a session, its messages and jobs")
    def delete(self, request, session_id):
        session = selectors.session_get(tenant=request_tenant(request), session_id=session_id)
        services.session_delete(session=session)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SessionMessagesApi(ApiView):
    Input = MessageInput

    @extend_schema(
        parameters=[
            *PAGE_PARAMETERS,
            OpenApiParameter(
                "view",
                str,
                enum=["path", "tree"],
                description="path (default): the branch shown, from the first message to the "
                "session's current one; tree: every message of every branch (each names its "
                "parent_id)",
            ),
        ],
        responses=list_of(MessageOutput, name="MessageList", paged=True),
        operation_id="api_v1_sessions_messages_list",
        summary="A session's history, oldest first",
    )
    def get(self, request, session_id):
        tenant = request_tenant(request)
        session = selectors.session_get(tenant=tenant, session_id=session_id)
        query = MessagesQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        if query.validated_data["view"] == "tree":
            messages = selectors.message_tree(tenant=tenant, session=session)
        else:
            messages = selectors.message_list(tenant=tenant, session=session)
        return paged(request, messages, MessageOutput, newest_first=False)

    @extend_schema(
        request=Input,
        summary="Post a user message; answers 202 with the job that will reply",
        **idempotency_schema(
            {
                202: JobOutput,
                409: OpenApiResponse(
                    ERROR_REF,
                    description="The session's previous answer is still queued or generating "
                    "(`conflict`): wait for its job to end, or cancel it, then post. Or: "
                    + IN_FLIGHT,
                ),
                429: OpenApiResponse(ERROR_REF, description=ERRORS["429"]),
            }
        ),
    )
    def post(self, request, session_id):
        tenant = request_tenant(request)
        session = selectors.session_get(tenant=tenant, session_id=session_id)
        scope = caller_scope(tenant, request.auth, request.user)
        create = lambda: self._submit(request, tenant, session)  # noqa: E731
        return idempotent(request, scope=scope, create=create)

    def _submit(self, request, tenant, session):
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        params = dict(data.validated_data)
        content = params.pop("content")
        job, limits = services.message_submit(
            tenant=tenant,
            session=session,
            content=content,
            attachments=params.pop("attachments"),
            callback_url=params.pop("callback_url"),
            parent=params.pop("parent_id", services.CURRENT),
            params=params,
            api_key=request.auth,
            trace_id=request.request_id,
        )
        return job_accepted(request, job, limits)


class RegenerateInput(serializers.Serializer):
    message_id = serializers.UUIDField(
        required=False,
        allow_null=True,
        default=None,
        help_text="The answer to redo, or the user message to answer; by default the last user "
        "message of the branch shown.",
    )


class SessionRegenerateApi(ApiView):
    Input = RegenerateInput

    @extend_schema(
        request=Input,
        summary="Answer a message again; earlier answers stay, as versions (same parent_id)",
        **idempotency_schema(
            {
                202: JobOutput,
                409: OpenApiResponse(
                    ERROR_REF, description="An answer is still being generated (`conflict`)."
                ),
                429: OpenApiResponse(ERROR_REF, description=ERRORS["429"]),
            }
        ),
    )
    def post(self, request, session_id):
        tenant = request_tenant(request)
        session = selectors.session_get(tenant=tenant, session_id=session_id)
        scope = caller_scope(tenant, request.auth, request.user)
        create = lambda: self._regenerate(request, tenant, session)  # noqa: E731
        return idempotent(request, scope=scope, create=create)

    def _regenerate(self, request, tenant, session):
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        job, limits = services.session_regenerate(
            tenant=tenant,
            session=session,
            message_id=data.validated_data["message_id"],
            api_key=request.auth,
            trace_id=request.request_id,
        )
        return job_accepted(request, job, limits)


class JobDetailApi(ApiView):
    @extend_schema(responses=JobOutput, summary="A job's status and, once ended, its result")
    def get(self, request, job_id):
        job = selectors.job_get(tenant=request_tenant(request), job_id=job_id)
        return Response(JobOutput(job, context={"request": request}).data)


class JobCancelApi(ApiView):
    @extend_schema(
        request=None,
        responses=JobOutput,
        summary="Cancel a job: a queued one ends now, a running one within a step",
    )
    def post(self, request, job_id):
        job = selectors.job_get(tenant=request_tenant(request), job_id=job_id)
        job = jobs.job_cancel(job=job)
        return Response(JobOutput(job, context={"request": request}).data)


SSE_JOB = (
    'Server-sent events: `event: token` (`{"text"}`), `event: reset` (a redelivered job '
    'starts over), then `event: done` (`{"status", "finish_reason", "usage", '
    '"message_id"}`) or `event: error` (the error shape). Each has an `id:`; reconnect with '
    "`Last-Event-ID` to resume without gaps or duplicates. Closing does not cancel the job."
)


# An API key, or a signed-in user of the browser UI (a GET: no CSRF to check).
@async_api(
    method="GET",
    not_allowed="Use GET.",
    operation_id="jobs_events",
    tags=["api"],
    summary="Follow a job's events (SSE), resumable with Last-Event-ID",
    parameters=[
        OpenApiParameter(
            name,
            str,
            location,
            pattern=_EVENT_ID.pattern,
            description="Resume after this event id (the header wins over the query parameter).",
        )
        for name, location in [
            ("Last-Event-ID", OpenApiParameter.HEADER),
            ("last_event_id", OpenApiParameter.QUERY),
        ]
    ],
    responses={
        (200, "text/event-stream"): OpenApiResponse(JOB_EVENT_REF, description=SSE_JOB),
        204: OpenApiResponse(
            description="The job has ended and `Last-Event-ID` is its last event."
        ),
    },
)
async def job_events_view(request, call: ApiCall, job_id):
    """``GET /api/v1/jobs/{id}/events``: the job's events as SSE, resumable by event id.

    A late subscriber gets everything from the start; one that sends ``Last-Event-ID`` gets
    what came after that event, or a 204 once it has the final one. Disconnecting does not
    cancel the job (a reload resumes it).
    """
    after = check_event_id(request.headers.get("Last-Event-ID") or request.GET.get("last_event_id"))
    job = await sync_to_async(selectors.job_get)(tenant=call.tenant, job_id=job_id)
    if await seen_the_end(job, after):
        # Nothing more, ever: 204 is what tells EventSource to stop reconnecting.
        return HttpResponse(status=status.HTTP_204_NO_CONTENT)
    return sse(_job_event_frames(job, after))


_REDIS_ID_PART_MAX = 2**64 - 1  # each part of a Redis Stream id is a 64-bit unsigned number


def check_event_id(value: str | None) -> str:
    if not value:
        return "0-0"
    # fullmatch: ``$`` alone would let a trailing newline through.
    if not _EVENT_ID.fullmatch(value) or any(
        int(part) > _REDIS_ID_PART_MAX for part in value.split("-")
    ):
        raise InvalidRequestError("Last-Event-ID is not an event id.", param="Last-Event-ID")
    return value


async def _job_event_frames(job: ChatJob, after: str):
    yield b"retry: 1000\n\n"
    async for event in job_events(job, after=after, keepalive=True):
        if event is None:
            yield b": keep-alive\n\n"
            continue
        yield (
            f"id: {event.id}\nevent: {event.type}\ndata: ".encode() + _json(event.data) + b"\n\n"
        )


def _json(data) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()
