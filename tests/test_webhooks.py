"""Webhook deliveries, tried in this process against a real HTTP receiver on loopback: signed
(verified with the SDK's helper), tried again after a failure with the same webhook-id,
ended by a 2xx, disabling the endpoint on 410, never following a redirect, bounded in tries
and time, and refusing private addresses unless allowed. And the notifier plugin's events."""

import json
import uuid
from datetime import timedelta

import pytest
from autoglm import WebhookVerificationError, verify_webhook
from django.utils import timezone

from autoglm_plugins.webhook_notifier import SENT_KEY, WebhookNotifier
from autoglm_site import plugins
from autoglm_site.outbound import OutboundURLError
from autoglm_site.redisconn import broker_client, redis_client
from chat import jobs
from chat.models import ChatJob
from tenants.models import UsageRecord, WebhookDelivery, WebhookEndpoint
from tenants.webhook_delivery import backoff, delivery_try
from tenants.webhooks import (
    callback_secret,
    deliveries_send_due,
    emit,
    endpoint_create,
    endpoint_secret,
)
from tests.webhook_receiver import WebhookReceiver

ALL_JOB_EVENTS = ["job.succeeded", "job.failed", "job.cancelled"]


@pytest.fixture
def loopback(settings):
    """The receivers listen on loopback: let outbound calls reach it, with short waits."""
    settings.AUTOGLM_OUTBOUND_ALLOW_PRIVATE = True
    settings.AUTOGLM_WEBHOOK_TIMEOUT = 1
    # A queue no worker reads: the first tries that emit queues are made by the tests.
    settings.AUTOGLM_WEBHOOK_QUEUE = f"test.webhooks.{uuid.uuid4().hex}"
    return settings


def one_delivery(tenant, url: str, event="job.succeeded") -> tuple[WebhookDelivery, str]:
    endpoint, secret = endpoint_create(tenant=tenant, url=url, events=[event])
    [delivery] = emit(tenant=tenant, event_type=event, data={"id": "job-1"})
    return delivery, secret


@pytest.mark.django_db
def test_a_delivery_arrives_signed_and_verifies_with_the_sdk_helper(tenant_a, loopback):
    with WebhookReceiver() as receiver:
        delivery, secret = one_delivery(tenant_a, receiver.url + "/hooks?x=1")
        assert secret.startswith("whsec_")
        tried = delivery_try(str(delivery.id), 0)
        [got] = receiver.received
    assert got.path == "/hooks?x=1"
    assert tried.status_code == 200 and tried.latency_ms >= 0
    event = verify_webhook(got.body, got.headers, secret)
    assert event["type"] == "job.succeeded" and event["data"] == {"id": "job-1"}
    assert got.headers["webhook-id"] == delivery.webhook_id
    assert got.headers["Content-Type"] == "application/json"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(got.body + b" ", got.headers, secret)
    delivery.refresh_from_db()
    assert delivery.status == "succeeded" and delivery.ended_at is not None


@pytest.mark.django_db
def test_a_try_after_a_500_sends_the_same_message_and_a_duplicate_task_sends_nothing(
    tenant_a, loopback
):
    with WebhookReceiver(500) as receiver:
        delivery, secret = one_delivery(tenant_a, receiver.url)
        first = delivery_try(str(delivery.id), 0)
        delivery.refresh_from_db()
        assert first.status_code == 500 and delivery.status == "pending"
        assert delivery.next_attempt_at > timezone.now()  # its backoff
        assert delivery_try(str(delivery.id), 0) is None  # that try was made already
        second = delivery_try(str(delivery.id), 1)
        first_got, second_got = receiver.received
    assert second.status_code == 200
    assert first_got.headers["webhook-id"] == second_got.headers["webhook-id"]
    assert first_got.body == second_got.body
    for got in receiver.received:
        verify_webhook(got.body, got.headers, secret)
    delivery.refresh_from_db()
    assert delivery.status == "succeeded" and delivery.attempts == 2
    assert [(t.number, t.status_code) for t in delivery.tries.all()] == [(1, 500), (2, 200)]


@pytest.mark.django_db
def test_410_disables_the_endpoint(tenant_a, loopback):
    with WebhookReceiver(410) as receiver:
        delivery, _ = one_delivery(tenant_a, receiver.url)
        delivery_try(str(delivery.id), 0)
    endpoint = WebhookEndpoint.objects.get()
    assert not endpoint.is_active and "410" in endpoint.disabled_reason
    assert WebhookDelivery.objects.get().status == "failed"
    # A disabled endpoint is sent nothing more.
    assert emit(tenant=tenant_a, event_type="job.succeeded", data={}) == []


@pytest.mark.django_db
def test_a_redirect_is_not_followed(tenant_a, loopback):
    with (
        WebhookReceiver() as elsewhere,
        WebhookReceiver(302, headers={"Location": elsewhere.url}) as receiver,
    ):
        delivery, _ = one_delivery(tenant_a, receiver.url)
        tried = delivery_try(str(delivery.id), 0)
    assert tried.status_code == 302 and not elsewhere.received
    assert WebhookDelivery.objects.get().status == "pending"  # tried again later


@pytest.mark.django_db
def test_a_slow_receiver_times_out_and_tries_are_bounded(tenant_a, loopback):
    loopback.AUTOGLM_WEBHOOK_TRIES = 2
    with WebhookReceiver(delay=2) as receiver:
        delivery, _ = one_delivery(tenant_a, receiver.url)
        first = delivery_try(str(delivery.id), 0)
        second = delivery_try(str(delivery.id), 1)
    assert first.status_code is None and "timed out" in first.error
    assert first.latency_ms < 1900
    assert second.status_code is None
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 2


@pytest.mark.django_db
def test_private_addresses_are_refused_unless_allowed(tenant_a, loopback):
    with WebhookReceiver() as receiver:
        delivery, _ = one_delivery(tenant_a, receiver.url)
        loopback.AUTOGLM_OUTBOUND_ALLOW_PRIVATE = False
        with pytest.raises(OutboundURLError):
            endpoint_create(tenant=tenant_a, url=receiver.url, events=["job.failed"])
        with pytest.raises(OutboundURLError):
            endpoint_create(tenant=tenant_a, url="http://169.254.169.254/", events=["job.failed"])
        # Checked again at each try: the endpoint saved before is refused now.
        tried = delivery_try(str(delivery.id), 0)
        assert not receiver.received
    assert tried.status_code is None and tried.error.startswith("refused")


def test_the_backoff_doubles_with_jitter_up_to_the_max(settings):
    settings.AUTOGLM_WEBHOOK_RETRY_BASE, settings.AUTOGLM_WEBHOOK_RETRY_MAX = 10, 60
    for tries, ceiling in [(1, 10), (2, 20), (3, 40), (4, 60), (9, 60)]:
        waits = [backoff(tries) for _ in range(200)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
        assert len(set(waits)) > 1  # jittered


@pytest.mark.django_db
def test_due_deliveries_are_queued_once_and_held_while_they_wait(tenant_a, loopback):
    delivery, _ = one_delivery(tenant_a, "http://127.0.0.1:9/")
    queue = loopback.AUTOGLM_WEBHOOK_QUEUE
    assert deliveries_send_due() == 0  # not due: its first try was queued when it was made
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    assert deliveries_send_due() == 1
    assert deliveries_send_due() == 0  # held: not queued again while its try waits
    messages = broker_client().lrange(queue, 0, -1)
    assert len(messages) == 1 and str(delivery.id).encode() in messages[0]
    broker_client().delete(queue)


@pytest.mark.django_db
def test_a_callback_is_signed_with_the_tenant_s_callback_secret(tenant_a, loopback):
    with WebhookReceiver() as receiver:
        [delivery] = emit(
            tenant=tenant_a, event_type="job.failed", data={}, callback_url=receiver.url
        )
        delivery_try(str(delivery.id), 0)
        [got] = receiver.received
    secret = callback_secret(tenant_a)
    assert verify_webhook(got.body, got.headers, secret)["type"] == "job.failed"
    assert callback_secret(tenant_a) == secret  # kept
    assert callback_secret(tenant_a, rotate=True) != secret


@pytest.mark.django_db
def test_secrets_are_stored_sealed(tenant_a, loopback):
    endpoint, secret = endpoint_create(
        tenant=tenant_a, url="http://127.0.0.1:9/", events=["job.failed"]
    )
    stored = WebhookEndpoint.objects.get(pk=endpoint.pk)
    assert secret not in stored.secret_sealed
    assert endpoint_secret(stored) == secret


# -- the notifier plugin ---------------------------------------------------------------------


@pytest.fixture
def notifier(monkeypatch, loopback):
    host = plugins.PluginHost()
    host.register(WebhookNotifier(), "autoglm_plugins.webhook_notifier:WebhookNotifier")
    host.initialize({})
    host.start()
    monkeypatch.setattr(plugins, "_host", host)
    return host.plugins[0].plugin


@pytest.mark.django_db
def test_a_cancelled_job_is_told_to_its_endpoint_and_its_callback(
    client_a, tenant_a, notifier, django_capture_on_commit_callbacks
):
    endpoint_create(tenant=tenant_a, url="http://127.0.0.1:9/e", events=ALL_JOB_EVENTS)
    endpoint_create(tenant=tenant_a, url="http://127.0.0.1:9/q", events=["quota.threshold"])
    session = client_a.post("/api/v1/sessions", {"model": "autoglm-idle"}, format="json").json()
    sent = client_a.post(
        f"/api/v1/sessions/{session['id']}/messages",
        {"content": "hi", "callback_url": "http://127.0.0.1:9/cb"},
        format="json",
    ).json()
    assert sent["callback_url"] == "http://127.0.0.1:9/cb"
    with django_capture_on_commit_callbacks(execute=True):
        jobs.job_cancel(job=ChatJob.objects.get(pk=sent["id"]))
    deliveries = WebhookDelivery.objects.order_by("url")
    assert [(d.url, d.event_type) for d in deliveries] == [
        ("http://127.0.0.1:9/cb", "job.cancelled"),
        ("http://127.0.0.1:9/e", "job.cancelled"),
    ]
    event = json.loads(deliveries[0].body)
    assert event["object"] == "event" and event["id"].startswith("evt_")
    assert event["data"]["id"] == sent["id"] and event["data"]["status"] == "cancelled"
    assert event["data"]["session_id"] == session["id"]
    assert deliveries[0].body == deliveries[1].body  # one event, two deliveries


@pytest.mark.django_db
def test_a_callback_url_is_checked_like_any_outbound_url(client_a, settings):
    session = client_a.post("/api/v1/sessions", {"model": "autoglm-idle"}, format="json").json()
    for url in ["http://127.0.0.1/cb", "ftp://example.com/", "not a url"]:
        response = client_a.post(
            f"/api/v1/sessions/{session['id']}/messages",
            {"content": "hi", "callback_url": url},
            format="json",
        )
        assert response.status_code == 400, url
        error = response.json()["error"]
        assert error["code"] == "invalid_url" and error["param"] == "callback_url"
    assert not ChatJob.objects.exists()


@pytest.mark.django_db
def test_quota_thresholds_are_told_once_each_month(tenant_a, notifier):
    tenant_a.tokens_per_month = 100
    tenant_a.save()
    month = timezone.now().strftime("%Y-%m")
    for percent in (80, 100):
        redis_client().delete(SENT_KEY.format(tenant=tenant_a.pk, month=month, percent=percent))
    endpoint_create(tenant=tenant_a, url="http://127.0.0.1:9/", events=["quota.threshold"])

    def use(tokens: int) -> list[dict]:
        UsageRecord.objects.create(
            tenant=tenant_a,
            job_id=uuid.uuid4(),
            model="m",
            status="succeeded",
            prompt_tokens=tokens,
        )
        notifier.check_quota(tenant_a)
        return [json.loads(d.body)["data"] for d in WebhookDelivery.objects.order_by("created_at")]

    assert use(79) == []
    assert [e["threshold_percent"] for e in use(1)] == [80]
    assert [e["threshold_percent"] for e in use(5)] == [80]  # told once
    told = use(20)
    assert [e["threshold_percent"] for e in told] == [80, 100]
    assert told[1]["tokens_used"] == 105 and told[1]["tokens_per_month"] == 100


@pytest.mark.parametrize(
    "config", [{"quota_thresholds": [0]}, {"quota_thresholds": "80"}, {"thresholds": [80]}]
)
def test_the_notifier_refuses_a_bad_configuration(config):
    with pytest.raises(ValueError):
        WebhookNotifier().configure(config)


def test_autoglm_installs_the_notifier_by_its_entry_point():
    found = {plugin.name: source for plugin, source in plugins.discover({})}
    assert "webhook_notifier:WebhookNotifier" in found["webhooks"]
