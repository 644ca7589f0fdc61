"""Share links in the native API: make, list and revoke read-only links to a conversation."""

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from autoglm_site.schema import list_of
from tenants.apiviews import ApiView
from tenants.auth import ApiKeyPrincipal, request_tenant
from tenants.idempotency import caller_scope, idempotency_schema, idempotent

from . import selectors, shares
from .api import PAGE_PARAMETERS, paged
from .models import ShareLink


class ShareOutput(serializers.ModelSerializer):
    object = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    shared_by = serializers.SerializerMethodField()
    message_count = serializers.SerializerMethodField()

    class Meta:
        model = ShareLink
        fields = (
            "id",
            "object",
            "url",
            "session_id",
            "title",
            "shared_by",
            "message_count",
            "created_at",
            "revoked_at",
        )

    def get_object(self, obj) -> str:
        return "chat.share"

    def get_url(self, obj) -> str:
        """The page that shows it: members of the organisation only, after signing in."""
        return self.context["request"].build_absolute_uri(reverse("ui-share", args=[obj.token]))

    def get_shared_by(self, obj) -> str | None:
        return obj.created_by.get_username() if obj.created_by else None

    def get_message_count(self, obj) -> int:
        return len(obj.messages)


class SessionSharesApi(ApiView):
    @extend_schema(
        parameters=PAGE_PARAMETERS,
        responses=list_of(ShareOutput, name="ShareList", paged=True),
        operation_id="api_v1_sessions_shares_list",
        summary="A session's share links, newest first (revoked ones too)",
    )
    def get(self, request, session_id):
        tenant = request_tenant(request)
        session = selectors.session_get(tenant=tenant, session_id=session_id)
        rows = shares.share_list(tenant=tenant, session=session)
        return paged(request, rows, self._output(request), newest_first=True)

    @extend_schema(
        request=None,
        summary="Share the conversation's current branch: a read-only snapshot link",
        **idempotency_schema({201: ShareOutput}),
    )
    def post(self, request, session_id):
        tenant = request_tenant(request)
        session = selectors.session_get(tenant=tenant, session_id=session_id)
        scope = caller_scope(tenant, request.auth, request.user)

        def create():
            # A person (signed in) is named as who shared it; an API key is not a person.
            user = None if isinstance(request.user, ApiKeyPrincipal) else request.user
            share = shares.share_create(tenant=tenant, session=session, user=user)
            body = ShareOutput(share, context={"request": request}).data
            return Response(body, status=status.HTTP_201_CREATED)

        return idempotent(request, scope=scope, create=create)

    @staticmethod
    def _output(request):
        return lambda rows, many: ShareOutput(rows, many=many, context={"request": request})


class ShareDetailApi(ApiView):
    @extend_schema(responses=ShareOutput, summary="Get a share link")
    def get(self, request, share_id):
        share = shares.share_get(tenant=request_tenant(request), share_id=share_id)
        return Response(ShareOutput(share, context={"request": request}).data)

    @extend_schema(responses={204: None}, summary="Revoke a share link: it is gone for good")
    def delete(self, request, share_id):
        share = shares.share_get(tenant=request_tenant(request), share_id=share_id)
        shares.share_revoke(share=share)
        return Response(status=status.HTTP_204_NO_CONTENT)
