"""Key lifecycle and usage for owners (self-service API) and operators (Django admin)."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tenants.models import ApiKey, UsageRecord

from .conftest import api_client

pytestmark = pytest.mark.django_db


def signed_in(username: str) -> Client:
    client = Client(enforce_csrf_checks=False)
    client.force_login(get_user_model().objects.get(username=username))
    return client


def test_it_lets_an_owner_create_list_and_revoke_keys(tenant_a):
    alice = signed_in("alice")
    created = alice.post(
        "/api/v1/keys",
        {"name": "ci", "expires_days": 30, "requests_per_minute": 5},
        content_type="application/json",
    )
    assert created.status_code == 201
    body = created.json()
    secret = body["key"]
    assert secret.startswith(f"sk-{body['id']}.")
    assert body["requests_per_minute"] == 5 and body["expires_at"]
    # The secret is shown once: the list shows the key masked, and only a hash is stored.
    listed = alice.get("/api/v1/keys").json()["data"]
    assert [k["id"] for k in listed] == [body["id"]]
    assert secret not in alice.get("/api/v1/keys").content.decode()
    assert listed[0]["masked"] == f"sk-{body['id']}.********"
    assert api_client(secret).get("/api/v1/sessions").status_code == 200
    revoked = alice.post(f"/api/v1/keys/{body['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert api_client(secret).get("/api/v1/sessions").status_code == 401


def test_it_refuses_key_management_to_members_keys_and_strangers(tenant_a, key_a):
    assert signed_in("bob").get("/api/v1/keys").status_code == 403
    bob_create = signed_in("bob").post(
        "/api/v1/keys", {"name": "x"}, content_type="application/json"
    )
    assert bob_create.status_code == 403
    assert bob_create.json()["error"]["code"] == "permission_denied"
    assert api_client(key_a).get("/api/v1/keys").status_code == 403
    assert Client().get("/api/v1/keys").status_code in (401, 403)
    assert ApiKey.objects.filter(name="x").count() == 0


def test_it_hides_another_tenants_keys(tenant_a, tenant_b):
    created = (
        signed_in("alice")
        .post("/api/v1/keys", {"name": "a-key"}, content_type="application/json")
        .json()
    )
    charlie = signed_in("charlie")
    assert created["id"] not in charlie.get("/api/v1/keys").content.decode()
    response = charlie.post(f"/api/v1/keys/{created['id']}/revoke")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert ApiKey.objects.get(prefix=created["id"]).revoked is False


def test_it_checks_key_input(tenant_a):
    alice = signed_in("alice")
    for payload, param in [
        ({}, "name"),
        ({"name": "k", "expires_days": 0}, "expires_days"),
        ({"name": "k", "allowed_models": ["gpt-9"]}, "allowed_models"),
        ({"name": "k", "tokens_per_month": -1}, "tokens_per_month"),
    ]:
        response = alice.post("/api/v1/keys", payload, content_type="application/json")
        assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert ApiKey.objects.count() == 0


@pytest.mark.parametrize(
    "field, too_big",
    [
        ("requests_per_minute", 2**31),
        ("tokens_per_minute", 2**31),
        ("max_concurrent_jobs", 2**31),
        ("tokens_per_month", 2**63),
    ],
)
def test_it_refuses_a_key_limit_too_big_to_store(tenant_a, field, too_big):
    """Found by the schema fuzz: a limit past its database column was a 500 (DataError)."""
    alice = signed_in("alice")
    payload = {"name": "k", field: too_big}
    response = alice.post("/api/v1/keys", payload, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["param"] == field
    payload[field] = too_big - 1  # the largest the column holds
    response = alice.post("/api/v1/keys", payload, content_type="application/json")
    assert response.status_code == 201 and response.json()[field] == too_big - 1
    assert ApiKey.objects.get().__dict__[field] == too_big - 1


def test_it_answers_a_key_id_with_a_nul_as_missing(tenant_a):
    """Found by reading after the fuzz: PostgreSQL cannot compare text with a NUL, a 500."""
    response = signed_in("alice").post("/api/v1/keys/a%00b/revoke")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_it_limits_a_key_to_its_allowed_models(tenant_a):
    secret = (
        signed_in("alice")
        .post(
            "/api/v1/keys",
            {"name": "m", "allowed_models": ["autoglm-demo"]},
            content_type="application/json",
        )
        .json()["key"]
    )
    client = api_client(secret)
    # Several models are configured; the key sees one and may use only that one.
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["autoglm-demo"]
    other = client.post(
        "/v1/chat/completions",
        {"model": "autoglm-idle", "messages": [{"role": "user", "content": "hi"}]},
        format="json",
    )
    assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"


def test_it_shows_usage_per_day_and_against_the_month(tenant_a, tenant_b):
    tenant_a.tokens_per_month = 10_000
    tenant_a.save()
    UsageRecord.objects.create(
        tenant=tenant_a,
        job_id="00000000-0000-0000-0000-00000000000a",
        model="autoglm-demo",
        status="succeeded",
        prompt_tokens=100,
        completion_tokens=50,
    )
    UsageRecord.objects.create(
        tenant=tenant_b,
        job_id="00000000-0000-0000-0000-00000000000b",
        model="autoglm-demo",
        status="succeeded",
        prompt_tokens=7,
        completion_tokens=7,
    )
    usage = signed_in("alice").get("/api/v1/usage").json()
    assert len(usage["daily"]) == 30
    assert usage["daily"][-1]["total_tokens"] == 150 and usage["daily"][-1]["requests"] == 1
    assert usage["month"] == {"total_tokens": 150, "limit": 10_000, "remaining": 9_850}
    assert signed_in("bob").get("/api/v1/usage").status_code == 403


@pytest.fixture
def operator():
    user = get_user_model().objects.create_superuser("operator", "op@example.com", "op-pw")
    client = Client()
    client.force_login(user)
    return client


def test_it_shows_an_admin_created_key_once(operator, tenant_a):
    response = operator.post(
        "/admin/tenants/apikey/add/",
        {"tenant": tenant_a.pk, "name": "from-admin", "allowed_models": "[]"},
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    secret = re.search(r"sk-[A-Za-z0-9]{8}\.[A-Za-z0-9]{32}", page).group(0)
    api_key = ApiKey.objects.get(name="from-admin")
    assert secret.startswith(f"sk-{api_key.prefix}.")
    assert api_client(secret).get("/api/v1/sessions").status_code == 200
    # Never again: not on the key's page, not in the list.
    change = operator.get(f"/admin/tenants/apikey/{api_key.pk}/change/").content.decode()
    listing = operator.get("/admin/tenants/apikey/").content.decode()
    assert secret not in change and secret not in listing
    assert secret.split(".")[1] not in change + listing


def test_allowed_models_entered_as_one_json_string_is_refused_not_a_substring_match(
    operator, tenant_a
):
    page = operator.post(
        "/admin/tenants/apikey/add/",
        {"tenant": tenant_a.pk, "name": "typo", "allowed_models": '"autoglm-demo-and-more"'},
    )
    assert page.status_code == 200  # the form again, with its error
    assert "a list of model names" in page.content.decode()
    assert not ApiKey.objects.filter(name="typo").exists()
    # A value stored that way before is read as no model at all, never as a substring.
    api_key = ApiKey.objects.create(tenant=tenant_a, name="old", allowed_models="autoglm-demo-x")
    assert not api_key.allows_model("autoglm-demo")


def test_it_revokes_keys_from_the_admin(operator, tenant_a, key_a):
    api_key = ApiKey.objects.get(tenant=tenant_a)
    operator.post(
        "/admin/tenants/apikey/", {"action": "revoke_keys", "_selected_action": [api_key.pk]}
    )
    api_key.refresh_from_db()
    assert api_key.revoked and api_key.revoked_at
    assert api_client(key_a).get("/api/v1/sessions").status_code == 401


def test_it_shows_the_tenant_usage_chart(operator, tenant_a):
    UsageRecord.objects.create(
        tenant=tenant_a,
        job_id="00000000-0000-0000-0000-00000000000c",
        model="autoglm-demo",
        status="succeeded",
        prompt_tokens=10,
        completion_tokens=5,
    )
    page = operator.get(f"/admin/tenants/tenant/{tenant_a.pk}/change/").content.decode()
    assert "Usage, last 30 days" in page
    assert page.count('<g class="bar">') == 30
    assert "15 tokens (10 prompt, 5 completion), 1 request" in page
    assert page.count("<rect") == 2  # today's prompt and completion; the other days are empty


def test_it_refuses_the_admin_to_non_staff(tenant_a):
    alice = signed_in("alice")
    response = alice.get("/admin/tenants/tenant/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert alice.get("/admin/tenants/apikey/add/").status_code == 302


def test_it_lists_jobs_in_the_admin_with_filters(operator, client_a):
    session = client_a.post("/api/v1/sessions", {}, format="json").json()
    client_a.post(f"/api/v1/sessions/{session['id']}/messages", {"content": "x"}, format="json")
    page = operator.get("/admin/chat/chatjob/?status__exact=queued&model=autoglm-demo")
    assert page.status_code == 200 and "1 chat job" in page.content.decode()


def test_it_refuses_the_users_of_a_suspended_tenant(tenant_a):
    tenant_a.is_active = False
    tenant_a.save()
    response = signed_in("alice").get("/api/v1/keys")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "tenant_suspended"
