from django.urls import path

from . import api, api_webhooks

urlpatterns = [
    path("keys", api.ApiKeyListCreateApi.as_view(), name="api-keys"),
    path("keys/<str:prefix>/revoke", api.ApiKeyRevokeApi.as_view(), name="api-key-revoke"),
    path("usage", api.UsageApi.as_view(), name="api-usage"),
    path("webhooks", api_webhooks.WebhookListCreateApi.as_view(), name="api-webhooks"),
    path(
        "webhooks/callback-secret",
        api_webhooks.CallbackSecretApi.as_view(),
        name="api-webhook-callback-secret",
    ),
    path(
        "webhooks/callback-secret/rotate",
        api_webhooks.CallbackSecretRotateApi.as_view(),
        name="api-webhook-callback-secret-rotate",
    ),
    path(
        "webhooks/<uuid:endpoint_id>",
        api_webhooks.WebhookDetailApi.as_view(),
        name="api-webhook",
    ),
    path(
        "webhooks/<uuid:endpoint_id>/deliveries",
        api_webhooks.WebhookDeliveriesApi.as_view(),
        name="api-webhook-deliveries",
    ),
]
