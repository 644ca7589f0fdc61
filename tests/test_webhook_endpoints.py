"""Webhook endpoints managed by owners (the API and the Webhooks page, in a real browser) and by
operators (the admin): the secret shown once, members refused, another tenant's endpoint a 404,
bad input a 400 naming the field, private addresses refused unless allowed."""

import re
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from playwright.sync_api import expect

from tenants.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tenants.webhooks import endpoint_create, endpoint_secret
from tests.browser import orm, shot

from .conftest import api_client

SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]{32}")
URL = "http://127.0.0.1:9/hook"


def signed_in(username: str) -> Client:
    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    return client


@pytest.fixture
def private_allowed(settings):
    settings.AUTOGLM_OUTBOUND_ALLOW_PRIVATE = True


def create(client: Client, body: dict):
    return client.post("/api/v1/webhooks", body, content_type="application/json")


@pytest.mark.django_db
def test_an_owner_adds_lists_changes_and_deletes_an_endpoint(tenant_a, private_allowed):
    alice = signed_in("alice")
    created = create(alice, {"url": URL, "events": ["job.succeeded", "quota.threshold"]})
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["object"] == "webhook_endpoint" and body["is_active"] is True
    assert SECRET.fullmatch(body["secret"])
    assert endpoint_secret(WebhookEndpoint.objects.get()) == body["secret"]
    # Shown once: never in the list or the endpoint's own answer.
    listed = alice.get("/api/v1/webhooks")
    assert [e["id"] for e in listed.json()["data"]] == [body["id"]]
    one = alice.get(f"/api/v1/webhooks/{body['id']}")
    assert body["secret"] not in listed.content.decode() + one.content.decode()

    changed = alice.patch(
        f"/api/v1/webhooks/{body['id']}",
        {"events": ["job.failed"], "is_active": False, "description": "ops"},
        content_type="application/json",
    )
    assert changed.status_code == 200, changed.content
    assert changed.json()["events"] == ["job.failed"] and changed.json()["is_active"] is False
    assert alice.delete(f"/api/v1/webhooks/{body['id']}").status_code == 204
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
def test_an_endpoint_s_deliveries_are_listed_with_their_tries(tenant_a, private_allowed):
    endpoint, _ = endpoint_create(tenant=tenant_a, url=URL, events=["job.failed"])
    delivery = WebhookDelivery.objects.create(
        tenant=tenant_a, endpoint=endpoint, url=URL, event_type="job.failed", body="{}", attempts=2
    )
    WebhookAttempt.objects.create(delivery=delivery, number=1, status_code=500, latency_ms=12)
    WebhookAttempt.objects.create(delivery=delivery, number=2, error="ConnectionRefusedError")
    answer = signed_in("alice").get(f"/api/v1/webhooks/{endpoint.id}/deliveries").json()
    [listed] = answer["data"]
    assert listed["id"] == delivery.webhook_id and listed["attempts"] == 2
    assert listed["next_attempt_at"] is not None  # pending: tried again then
    assert [(t["number"], t["status_code"], t["latency_ms"]) for t in listed["tries"]] == [
        (1, 500, 12),
        (2, None, 0),
    ]


@pytest.mark.django_db
def test_the_callback_secret_is_kept_until_replaced(tenant_a):
    alice = signed_in("alice")
    first = alice.get("/api/v1/webhooks/callback-secret").json()["secret"]
    assert SECRET.fullmatch(first)
    assert alice.get("/api/v1/webhooks/callback-secret").json()["secret"] == first
    rotated = alice.post("/api/v1/webhooks/callback-secret/rotate").json()["secret"]
    assert rotated != first and SECRET.fullmatch(rotated)


@pytest.mark.django_db
def test_members_keys_and_strangers_are_refused(tenant_a, key_a, private_allowed):
    bob = signed_in("bob")
    assert bob.get("/api/v1/webhooks").status_code == 403
    refused = create(bob, {"url": URL, "events": ["job.failed"]})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    assert bob.get("/api/v1/webhooks/callback-secret").status_code == 403
    assert api_client(key_a).get("/api/v1/webhooks").status_code == 403
    assert Client().get("/api/v1/webhooks").status_code in (401, 403)
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
def test_another_tenant_s_endpoint_is_not_found(tenant_a, tenant_b, private_allowed):
    endpoint, _ = endpoint_create(tenant=tenant_b, url=URL, events=["job.failed"])
    alice = signed_in("alice")
    for answer in [
        alice.get(f"/api/v1/webhooks/{endpoint.id}"),
        alice.patch(f"/api/v1/webhooks/{endpoint.id}", {}, content_type="application/json"),
        alice.delete(f"/api/v1/webhooks/{endpoint.id}"),
        alice.get(f"/api/v1/webhooks/{endpoint.id}/deliveries"),
        alice.get(f"/api/v1/webhooks/{uuid.uuid4()}"),
    ]:
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    assert alice.get("/api/v1/webhooks").json()["data"] == []
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, param",
    [
        ({"url": URL, "events": []}, "events"),
        ({"url": URL, "events": ["job.exploded"]}, "events"),
        ({"url": URL, "events": "job.failed"}, "events"),
        ({"url": "not a url", "events": ["job.failed"]}, "url"),
        ({"url": "ftp://example.com/", "events": ["job.failed"]}, "url"),
        ({"events": ["job.failed"]}, "url"),
        ({"url": URL, "events": ["job.failed"], "description": 5}, "description"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(tenant_a, private_allowed, body, param):
    answer = create(signed_in("alice"), body)
    assert answer.status_code == 400, answer.content
    assert answer.json()["error"]["param"].split(".")[0] == param  # events.0: its first item
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("url", [URL, "http://10.0.0.7/", "http://169.254.169.254/latest/"])
def test_private_addresses_are_refused(tenant_a, url):
    answer = create(signed_in("alice"), {"url": url, "events": ["job.failed"]})
    assert answer.status_code == 400
    assert answer.json()["error"] | {"message": ""} == {
        "message": "",
        "type": "invalid_request_error",
        "code": "invalid_url",
        "param": "url",
    }


@pytest.mark.django_db
def test_the_admin_shows_an_added_endpoint_s_secret_once(tenant_a, settings):
    settings.AUTOGLM_OUTBOUND_ALLOW_PRIVATE = True
    operator = Client()
    operator.force_login(get_user_model().objects.create_superuser("op", "op@example.com", "pw"))
    answer = operator.post(
        "/admin/tenants/webhookendpoint/add/",
        {"tenant": tenant_a.pk, "url": URL, "events": ["job.succeeded", "job.failed"]},
        follow=True,
    )
    assert answer.status_code == 200
    secret = SECRET.search(answer.content.decode()).group(0)
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint_secret(endpoint) == secret
    assert endpoint.events == ["job.succeeded", "job.failed"]
    change = operator.get(f"/admin/tenants/webhookendpoint/{endpoint.pk}/change/")
    assert 'name="tenant"' not in change.content.decode()  # it stays with its tenant
    listing = operator.get("/admin/tenants/webhookendpoint/")
    assert change.status_code == listing.status_code == 200
    assert secret not in change.content.decode() + listing.content.decode()
    # A private address is refused in the form, not a server error.
    settings.AUTOGLM_OUTBOUND_ALLOW_PRIVATE = False
    refused = operator.post(
        "/admin/tenants/webhookendpoint/add/",
        {"tenant": tenant_a.pk, "url": "http://10.0.0.1/", "events": ["job.failed"]},
    )
    assert refused.status_code == 200 and "errorlist" in refused.content.decode()
    # Deliveries and their tries are shown, read-only.
    delivery = WebhookDelivery.objects.create(
        tenant=tenant_a, endpoint=endpoint, url=URL, event_type="job.failed", body="{}"
    )
    WebhookAttempt.objects.create(delivery=delivery, number=1, status_code=503, latency_ms=42)
    page = operator.get(f"/admin/tenants/webhookdelivery/{delivery.pk}/change/")
    assert page.status_code == 200 and "503" in page.content.decode()
    assert operator.get("/admin/tenants/webhookdelivery/add/").status_code == 403


@pytest.mark.django_db
def test_the_webhooks_page_is_for_owners_and_admins(tenant_a, private_allowed):
    endpoint_create(tenant=tenant_a, url=URL, events=["job.failed"])
    page = signed_in("alice").get("/org/webhooks/")
    assert page.status_code == 200 and URL in page.content.decode()
    assert signed_in("bob").get("/org/webhooks/").status_code == 403


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_an_owner_adds_copies_disables_and_deletes_an_endpoint_in_the_browser(ui, tenant_a):
    page = ui.page(clipboard=True)
    page.get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
    page.get_by_label("URL").fill(URL)
    page.get_by_label("quota.threshold").uncheck()
    page.get_by_role("button", name="Add endpoint").click()
    secret_box = page.locator("#webhook-secret")
    expect(secret_box).to_be_visible()
    secret = page.get_by_role("textbox", name="Signing secret").input_value()
    assert SECRET.fullmatch(secret)
    secret_box.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    endpoint = orm(WebhookEndpoint.objects.get)
    assert endpoint.events == ["job.succeeded", "job.failed", "job.cancelled"]
    assert orm(endpoint_secret, endpoint) == secret
    shot(page, "webhooks-added")

    secret_box.get_by_role("button", name="Done").click()
    page.reload()
    assert secret not in page.content()
    row = page.locator("#webhooks-body tr", has_text=URL)
    row.get_by_role("button", name="Disable").click()
    expect(row.locator(".webhook-status")).to_have_text("Disabled")
    assert orm(lambda: WebhookEndpoint.objects.get().is_active) is False
    row.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.locator("#webhooks-empty")).to_be_visible()
    assert orm(WebhookEndpoint.objects.count) == 0
