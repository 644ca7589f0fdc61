"""The server's Standard Webhooks signatures verify with the SDK's helper (issue 16)."""

import json
import time

import autoglm
import pytest

from autoglm_site.webhook_signing import new_webhook_secret, signature, signed_headers


def test_a_signed_delivery_verifies_with_the_sdk():
    secret = new_webhook_secret()
    assert secret.startswith("whsec_") and secret != new_webhook_secret()
    body = json.dumps({"type": "job.succeeded", "data": {"id": "job_1"}}).encode()
    headers = signed_headers(secret, "msg_1", int(time.time()), body)
    assert autoglm.verify_webhook(body, headers, secret)["type"] == "job.succeeded"
    with pytest.raises(autoglm.WebhookVerificationError):
        autoglm.verify_webhook(body + b" ", headers, secret)


def test_it_signs_the_specification_s_vector():
    assert (
        signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
