"""API keys: every way a key can be wrong answers 401 in the one error shape."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tenants.models import ApiKey
from tenants.services import api_key_create, api_key_revoke

from .conftest import api_client

pytestmark = pytest.mark.django_db


def assert_invalid_key(response):
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}


def test_it_refuses_a_missing_key(tenant_a):
    assert_invalid_key(api_client().get("/api/v1/sessions"))


def test_it_refuses_a_wrong_key(key_a):
    prefix = key_a.split(".")[0]
    assert_invalid_key(api_client(prefix + "." + "x" * 32).get("/api/v1/sessions"))


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer a b",
        "Basic abc",
        "Bearer sk-short",
        "Bearer sk-abcdefgh.tooshort",
        "Token sk-x",
    ],
)
def test_it_refuses_malformed_authorization(tenant_a, header):
    client = api_client()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert_invalid_key(client.get("/api/v1/sessions"))


def test_it_refuses_a_revoked_key(tenant_a):
    api_key, key = api_key_create(tenant=tenant_a, name="to revoke")
    assert api_client(key).get("/api/v1/sessions").status_code == 200
    api_key_revoke(api_key=api_key)
    assert_invalid_key(api_client(key).get("/api/v1/sessions"))


def test_it_refuses_an_expired_key(tenant_a):
    api_key, key = api_key_create(tenant=tenant_a, name="old", expires_days=1)
    ApiKey.objects.filter(pk=api_key.pk).update(expiry_date=timezone.now() - timedelta(seconds=1))
    assert_invalid_key(api_client(key).get("/api/v1/sessions"))


def test_it_refuses_a_suspended_tenant(tenant_a, key_a):
    tenant_a.is_active = False
    tenant_a.save()
    response = api_client(key_a).get("/api/v1/sessions")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "tenant_suspended"


def test_it_stores_only_a_hash_of_the_key(tenant_a):
    api_key, key = api_key_create(tenant=tenant_a, name="hashed")
    secret = key.split(".")[1]
    row = ApiKey.objects.get(pk=api_key.pk)
    assert key.startswith(f"sk-{row.prefix}.")
    assert secret not in row.hashed_key and secret not in row.pk
    assert row.hashed_key.startswith("sha512$$")


def test_it_records_last_use(tenant_a):
    api_key, key = api_key_create(tenant=tenant_a, name="used")
    assert api_key.last_used_at is None
    api_client(key).get("/api/v1/sessions")
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None


def test_it_sends_a_request_id_on_every_response(key_a):
    ok = api_client(key_a).get("/api/v1/sessions")
    refused = api_client().get("/api/v1/sessions")
    missing = api_client(key_a).get("/api/v1/nothing-here")
    assert ok["x-request-id"] and refused["x-request-id"] and missing["x-request-id"]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    echoed = api_client(key_a).get("/api/v1/sessions", HTTP_X_REQUEST_ID="my-trace-1")
    assert echoed["x-request-id"] == "my-trace-1"
