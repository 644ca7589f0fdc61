"""Self-service for organisation owners and admins: their API keys and their usage.

Signed-in users (session cookie, CSRF-checked) act in the tenant of their membership; only
owners and admins may manage keys or read usage. The browser UI builds on these endpoints.
"""

from django.conf import settings
from django.db import connection
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from autoglm_site.fields import StrictCharField, StrictIntegerField
from autoglm_site.schema import list_of

from . import selectors, services
from .apiviews import ApiView
from .auth import ApiKeyAuthentication
from .idempotency import caller_scope, idempotency_schema, idempotent
from .models import ApiKey
from .roles import manager_tenant


class IsSignedIn(BasePermission):
    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated)


class ManagerView(ApiView):
    authentication_classes = [SessionAuthentication, ApiKeyAuthentication]
    permission_classes = [IsSignedIn]


class ApiKeyOutput(serializers.Serializer):
    id = serializers.CharField(source="prefix")
    object = serializers.SerializerMethodField()
    name = serializers.CharField()
    masked = serializers.CharField()
    created_at = serializers.DateTimeField(source="created")
    expires_at = serializers.DateTimeField(source="expiry_date", allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked = serializers.BooleanField()
    revoked_at = serializers.DateTimeField(allow_null=True)
    allowed_models = serializers.ListField(child=serializers.CharField())
    requests_per_minute = serializers.IntegerField(allow_null=True)
    tokens_per_minute = serializers.IntegerField(allow_null=True)
    tokens_per_month = serializers.IntegerField(allow_null=True)
    max_concurrent_jobs = serializers.IntegerField(allow_null=True)

    def get_object(self, obj) -> str:
        return "api_key"


def limit_field(name: str) -> StrictIntegerField:
    """One of a key's own limits: none (null), or from 0 to the most its column can hold (a
    larger number is a 400 naming it, not a database error)."""
    column = ApiKey._meta.get_field(name).get_internal_type()
    _, most = connection.ops.integer_field_range(column)
    return StrictIntegerField(required=False, allow_null=True, min_value=0, max_value=most)


class ApiKeyCreateInput(serializers.Serializer):
    name = StrictCharField(max_length=50)
    expires_days = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=3650)
    allowed_models = serializers.ListField(
        child=StrictCharField(max_length=100), required=False, default=list
    )
    requests_per_minute = limit_field("requests_per_minute")
    tokens_per_minute = limit_field("tokens_per_minute")
    tokens_per_month = limit_field("tokens_per_month")
    max_concurrent_jobs = limit_field("max_concurrent_jobs")

    def validate_allowed_models(self, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in settings.AUTOGLM_MODELS]
        if unknown:
            raise serializers.ValidationError(f"Unknown model(s): {', '.join(unknown)}.")
        return value


class ApiKeyListCreateApi(ManagerView):
    @extend_schema(
        responses=list_of(ApiKeyOutput, name="ApiKeyList", paged=False),
        operation_id="api_v1_keys_list",
        summary="List the organisation's keys",
    )
    def get(self, request):
        keys = selectors.api_key_list(tenant=manager_tenant(request))
        return Response({"object": "list", "data": ApiKeyOutput(keys, many=True).data})

    @extend_schema(
        request=ApiKeyCreateInput,
        summary="Create a key; the answer holds the secret, shown this once",
        **idempotency_schema({201: ApiKeyOutput}),
    )
    def post(self, request):
        tenant = manager_tenant(request)
        scope = caller_scope(tenant, request.auth, request.user)
        return idempotent(request, scope=scope, create=lambda: self._create(request, tenant))

    def _create(self, request, tenant):
        data = ApiKeyCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        api_key, secret = services.api_key_create(
            tenant=tenant, created_by=request.user, **data.validated_data
        )
        body = {**ApiKeyOutput(api_key).data, "key": secret}
        return Response(body, status=status.HTTP_201_CREATED)


class ApiKeyRevokeApi(ManagerView):
    @extend_schema(request=None, responses=ApiKeyOutput, summary="Revoke a key (final)")
    def post(self, request, prefix: str):
        api_key = selectors.api_key_get(tenant=manager_tenant(request), prefix=prefix)
        return Response(ApiKeyOutput(services.api_key_revoke(api_key=api_key)).data)


class UsageDayOutput(serializers.Serializer):
    date = serializers.DateField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    requests = serializers.IntegerField()


class UsageMonthOutput(serializers.Serializer):
    total_tokens = serializers.IntegerField()
    limit = serializers.IntegerField(allow_null=True)
    remaining = serializers.IntegerField(allow_null=True)


class LimitsOutput(serializers.Serializer):
    requests_per_minute = serializers.IntegerField(allow_null=True)
    tokens_per_minute = serializers.IntegerField(allow_null=True)
    tokens_per_month = serializers.IntegerField(allow_null=True)
    max_concurrent_jobs = serializers.IntegerField(allow_null=True)


# The schema of the usage answer (built as a plain dict below).
class UsageOutput(serializers.Serializer):
    object = serializers.ChoiceField(choices=["usage"])
    tenant = serializers.CharField()
    daily = UsageDayOutput(many=True)
    month = UsageMonthOutput()
    limits = LimitsOutput()


class UsageApi(ManagerView):
    @extend_schema(
        responses=UsageOutput,
        summary="Tokens per day for the last 30 days, and the month against quota",
    )
    def get(self, request):
        tenant = manager_tenant(request)
        used = selectors.usage_month(tenant=tenant)
        limit = tenant.tokens_per_month
        return Response(
            {
                "object": "usage",
                "tenant": tenant.slug,
                "daily": selectors.usage_daily(tenant=tenant, days=30),
                "month": {
                    "total_tokens": used,
                    "limit": limit,
                    "remaining": None if limit is None else max(0, limit - used),
                },
                "limits": {
                    "requests_per_minute": tenant.requests_per_minute,
                    "tokens_per_minute": tenant.tokens_per_minute,
                    "tokens_per_month": tenant.tokens_per_month,
                    "max_concurrent_jobs": tenant.max_concurrent_jobs,
                },
            }
        )
