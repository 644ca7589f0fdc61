"""Native REST API: sessions, their messages, and jobs. Thin views over services/selectors."""

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from autoglm_site.fields import StrictCharField, StrictFloatField, StrictIntegerField
from tenants.auth import request_tenant

from . import selectors, services
from .models import ChatJob, ChatSession, Message


class SessionOutput(serializers.ModelSerializer):
    object = serializers.SerializerMethodField()

    class Meta:
        model = ChatSession
        fields = ("id", "object", "title", "model", "system_prompt", "created_at", "updated_at")

    def get_object(self, obj) -> str:
        return "chat.session"


class MessageOutput(serializers.ModelSerializer):
    object = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = ("id", "object", "role", "content", "created_at")

    def get_object(self, obj) -> str:
        return "chat.message"


def job_representation(job: ChatJob, request) -> dict:
    usage = None
    if job.prompt_tokens is not None:
        completion = job.completion_tokens or 0
        usage = {
            "prompt_tokens": job.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": job.prompt_tokens + completion,
        }
    return {
        "id": str(job.id),
        "object": "chat.job",
        "status": job.status,
        "model": job.model,
        "session_id": str(job.session_id),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "finish_reason": job.finish_reason or None,
        "error": job.error or None,
        "usage": usage,
        "message": MessageOutput(job.assistant_message).data if job.assistant_message else None,
        "links": {
            "self": request.build_absolute_uri(reverse("api-job-detail", args=[job.id])),
            "session": request.build_absolute_uri(
                reverse("api-session-detail", args=[job.session_id])
            ),
            "messages": request.build_absolute_uri(
                reverse("api-session-messages", args=[job.session_id])
            ),
        },
    }


class SessionListCreateApi(APIView):
    class Input(serializers.Serializer):
        title = StrictCharField(required=False, allow_blank=True, max_length=200, default="")
        model = StrictCharField(required=False, max_length=100)
        system_prompt = StrictCharField(
            required=False,
            allow_blank=True,
            default="",
            max_length=settings.AUTOGLM_MAX_CONTENT_CHARS,
        )

    @extend_schema(responses=SessionOutput(many=True))
    def get(self, request):
        sessions = selectors.session_list(tenant=request_tenant(request))
        return Response({"object": "list", "data": SessionOutput(sessions, many=True).data})

    @extend_schema(request=Input, responses={201: SessionOutput})
    def post(self, request):
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        session = services.session_create(
            tenant=request_tenant(request), api_key=request.auth, **data.validated_data
        )
        return Response(SessionOutput(session).data, status=status.HTTP_201_CREATED)


class SessionDetailApi(APIView):
    @extend_schema(responses=SessionOutput)
    def get(self, request, session_id):
        session = selectors.session_get(tenant=request_tenant(request), session_id=session_id)
        return Response(SessionOutput(session).data)


class SessionMessagesApi(APIView):
    class Input(serializers.Serializer):
        content = StrictCharField(max_length=settings.AUTOGLM_MAX_CONTENT_CHARS)
        max_tokens = StrictIntegerField(
            required=False,
            min_value=1,
            max_value=settings.AUTOGLM_MAX_TOKENS_LIMIT,
            default=settings.AUTOGLM_DEFAULT_MAX_TOKENS,
        )
        temperature = StrictFloatField(required=False, min_value=0.0, max_value=2.0, default=1.0)
        top_p = StrictFloatField(required=False, min_value=0.0, max_value=1.0, default=1.0)
        seed = StrictIntegerField(required=False, allow_null=True, default=None)

        def validate_top_p(self, value: float) -> float:
            if value <= 0:
                raise serializers.ValidationError("top_p must be greater than 0.")
            return value

    @extend_schema(responses=MessageOutput(many=True))
    def get(self, request, session_id):
        tenant = request_tenant(request)
        session = selectors.session_get(tenant=tenant, session_id=session_id)
        messages = selectors.message_list(tenant=tenant, session=session)
        return Response({"object": "list", "data": MessageOutput(messages, many=True).data})

    @extend_schema(request=Input, responses={202: dict})
    def post(self, request, session_id):
        tenant = request_tenant(request)
        session = selectors.session_get(tenant=tenant, session_id=session_id)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        params = dict(data.validated_data)
        content = params.pop("content")
        job = services.message_submit(
            tenant=tenant,
            session=session,
            content=content,
            params=params,
            api_key=request.auth,
            trace_id=request.request_id,
        )
        return Response(job_representation(job, request), status=status.HTTP_202_ACCEPTED)


class JobDetailApi(APIView):
    @extend_schema(responses=dict)
    def get(self, request, job_id):
        job = selectors.job_get(tenant=request_tenant(request), job_id=job_id)
        return Response(job_representation(job, request))
