"""Webhooks end to end: a job answered by the suite's real worker is told, signed, to the
tenant's endpoint and to the job's callback_url; the endpoint answers 500 first, and the
workers' sweeper tries it again with the same webhook-id until it answers 200."""

import json
import time

import pytest
from autoglm import verify_webhook

from tenants.models import WebhookDelivery
from tenants.webhooks import callback_secret, endpoint_create
from tests.conftest import DEMO_MODEL, wait_for_job
from tests.webhook_receiver import WebhookReceiver


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_job_s_end_reaches_its_endpoint_after_a_500_and_its_callback(
    celery_worker, client_a, tenant_a, settings
):
    settings.AUTOGLM_OUTBOUND_ALLOW_PRIVATE = True
    with WebhookReceiver(500) as endpoint_receiver, WebhookReceiver() as callback_receiver:
        _, secret = endpoint_create(
            tenant=tenant_a, url=endpoint_receiver.url + "/hook", events=["job.succeeded"]
        )
        session = client_a.post("/api/v1/sessions", {"model": DEMO_MODEL}, format="json").json()
        sent = client_a.post(
            f"/api/v1/sessions/{session['id']}/messages",
            {"content": "Hello", "max_tokens": 4, "callback_url": callback_receiver.url + "/cb"},
            format="json",
        )
        assert sent.status_code == 202, sent.content
        job_id = sent.json()["id"]
        assert wait_for_job(client_a, job_id)["status"] == "succeeded"
        first, retry = endpoint_receiver.wait_for(2)
        [callback] = callback_receiver.wait_for(1)

    assert first.headers["webhook-id"] == retry.headers["webhook-id"]
    for got in (first, retry):
        event = verify_webhook(got.body, got.headers, secret)
        assert event["type"] == "job.succeeded" and event["data"]["id"] == job_id
        assert event["data"]["usage"]["completion_tokens"] > 0
    told = verify_webhook(callback.body, callback.headers, callback_secret(tenant_a))
    assert told["data"]["id"] == job_id and told["data"]["status"] == "succeeded"
    assert json.loads(callback.body)["data"]["session_id"] == session["id"]

    delivery = WebhookDelivery.objects.get(endpoint__isnull=False)
    for _ in range(100):  # the worker records the second try just after the receiver answered
        delivery.refresh_from_db()
        if delivery.status == "succeeded":
            break
        time.sleep(0.05)
    assert delivery.status == "succeeded"
    assert [(t.number, t.status_code) for t in delivery.tries.all()] == [(1, 500), (2, 200)]
