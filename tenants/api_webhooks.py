"""Self-service webhooks for organisation owners and admins: their endpoints (the secret shown
once, at creation), each endpoint's recent deliveries with their tries, and the secret that
signs deliveries to jobs' ``callback_url``. Signed-in managers only, as for keys (``api.py``);
another organisation's endpoint is a 404."""

from datetime import datetime

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from autoglm_site.errors import NotFoundError
from autoglm_site.fields import StrictBooleanField, StrictCharField
from autoglm_site.schema import list_of

from . import webhooks
from .api import ManagerView
from .idempotency import caller_scope, idempotency_schema, idempotent
from .models import WebhookDelivery, WebhookEndpoint
from .roles import manager_tenant

DELIVERIES_SHOWN = 50


class WebhookEndpointOutput(serializers.Serializer):
    id = serializers.UUIDField()
    object = serializers.SerializerMethodField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    description = serializers.CharField()
    is_active = serializers.BooleanField()
    disabled_reason = serializers.CharField()
    created_at = serializers.DateTimeField()

    def get_object(self, obj) -> str:
        return "webhook_endpoint"


class WebhookCreatedOutput(WebhookEndpointOutput):
    secret = serializers.CharField(help_text="whsec_...: shown this once")


class WebhookTryOutput(serializers.Serializer):
    number = serializers.IntegerField()
    status_code = serializers.IntegerField(allow_null=True)
    error = serializers.CharField()
    latency_ms = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class WebhookDeliveryOutput(serializers.Serializer):
    id = serializers.CharField(source="webhook_id", help_text="its webhook-id header")
    object = serializers.SerializerMethodField()
    event_type = serializers.CharField()
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)
    tries = WebhookTryOutput(many=True)

    def get_object(self, obj) -> str:
        return "webhook_delivery"

    def get_next_attempt_at(self, obj) -> datetime | None:
        """When it is tried next; none once it has ended."""
        pending = obj.status == WebhookDelivery.Status.PENDING
        return (
            serializers.DateTimeField().to_representation(obj.next_attempt_at) if pending else None
        )


class CallbackSecretOutput(serializers.Serializer):
    object = serializers.ChoiceField(choices=["webhook_callback_secret"])
    secret = serializers.CharField()


def _events_field(**kwargs) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.ChoiceField(choices=WebhookEndpoint.Event.values),
        min_length=1,
        max_length=len(WebhookEndpoint.Event.values),
        **kwargs,
    )


class WebhookCreateInput(serializers.Serializer):
    url = serializers.URLField(max_length=2000)
    events = _events_field()
    description = StrictCharField(max_length=200, required=False, allow_blank=True, default="")


class WebhookUpdateInput(serializers.Serializer):
    url = serializers.URLField(max_length=2000, required=False)
    events = _events_field(required=False)
    description = StrictCharField(max_length=200, required=False, allow_blank=True)
    is_active = StrictBooleanField(required=False)


def _endpoint(request, endpoint_id) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.filter(
        tenant=manager_tenant(request), pk=endpoint_id
    ).first()
    if endpoint is None:
        raise NotFoundError(f"No webhook endpoint with id {endpoint_id}.")
    return endpoint


def _callback_secret_answer(secret: str) -> Response:
    return Response({"object": "webhook_callback_secret", "secret": secret})


class WebhookListCreateApi(ManagerView):
    @extend_schema(
        responses=list_of(WebhookEndpointOutput, name="WebhookEndpointList", paged=False),
        operation_id="api_v1_webhooks_list",
        summary="List the organisation's webhook endpoints",
    )
    def get(self, request):
        endpoints = WebhookEndpoint.objects.filter(tenant=manager_tenant(request))
        return Response(
            {"object": "list", "data": WebhookEndpointOutput(endpoints, many=True).data}
        )

    @extend_schema(
        request=WebhookCreateInput,
        summary="Add a webhook endpoint; the answer holds its secret, shown this once",
        **idempotency_schema({201: WebhookCreatedOutput}),
    )
    def post(self, request):
        tenant = manager_tenant(request)
        scope = caller_scope(tenant, request.auth, request.user)
        return idempotent(request, scope=scope, create=lambda: self._create(request, tenant))

    def _create(self, request, tenant):
        data = WebhookCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint, secret = webhooks.endpoint_create(
            tenant=tenant, created_by=request.user, **data.validated_data
        )
        body = {**WebhookEndpointOutput(endpoint).data, "secret": secret}
        return Response(body, status=status.HTTP_201_CREATED)


class WebhookDetailApi(ManagerView):
    @extend_schema(responses=WebhookEndpointOutput, summary="A webhook endpoint")
    def get(self, request, endpoint_id):
        return Response(WebhookEndpointOutput(_endpoint(request, endpoint_id)).data)

    @extend_schema(
        request=WebhookUpdateInput,
        responses=WebhookEndpointOutput,
        summary="Change an endpoint's URL, events or description, or enable or disable it",
    )
    def patch(self, request, endpoint_id):
        endpoint = _endpoint(request, endpoint_id)
        data = WebhookUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = webhooks.endpoint_update(endpoint=endpoint, **data.validated_data)
        return Response(WebhookEndpointOutput(endpoint).data)

    @extend_schema(request=None, responses={204: None}, summary="Delete an endpoint")
    def delete(self, request, endpoint_id):
        webhooks.endpoint_delete(endpoint=_endpoint(request, endpoint_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveriesApi(ManagerView):
    @extend_schema(
        responses=list_of(WebhookDeliveryOutput, name="WebhookDeliveryList", paged=False),
        summary=f"An endpoint's latest {DELIVERIES_SHOWN} deliveries, each with its tries",
    )
    def get(self, request, endpoint_id):
        endpoint = _endpoint(request, endpoint_id)
        deliveries = WebhookDelivery.objects.filter(endpoint=endpoint).prefetch_related("tries")
        data = WebhookDeliveryOutput(deliveries[:DELIVERIES_SHOWN], many=True).data
        return Response({"object": "list", "data": data})


class CallbackSecretApi(ManagerView):
    @extend_schema(
        responses=CallbackSecretOutput,
        summary="The secret that signs deliveries to jobs' callback_url",
    )
    def get(self, request):
        return _callback_secret_answer(webhooks.callback_secret(manager_tenant(request)))


class CallbackSecretRotateApi(ManagerView):
    @extend_schema(
        request=None, responses=CallbackSecretOutput, summary="Replace the callback secret"
    )
    def post(self, request):
        secret = webhooks.callback_secret(manager_tenant(request), rotate=True)
        return _callback_secret_answer(secret)
