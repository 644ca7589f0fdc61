from django.urls import path

from . import api

urlpatterns = [
    path("keys", api.ApiKeyListCreateApi.as_view(), name="api-keys"),
    path("keys/<str:prefix>/revoke", api.ApiKeyRevokeApi.as_view(), name="api-key-revoke"),
    path("usage", api.UsageApi.as_view(), name="api-usage"),
]
