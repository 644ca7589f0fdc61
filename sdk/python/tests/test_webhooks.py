"""autoglm.verify_webhook: Standard Webhooks signatures, checked against the specification's
own test vector, and refusals of what must not be acted on."""

import autoglm
import pytest

# The test vector of the Standard Webhooks specification's reference libraries.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = b'{"test": 2432232314}'
HEADERS = {
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}
AT = 1614265330


def test_it_verifies_the_specification_s_vector_and_returns_the_body():
    assert autoglm.verify_webhook(BODY, HEADERS, SECRET, now=AT) == {"test": 2432232314}
    assert autoglm.verify_webhook(BODY.decode(), HEADERS, SECRET, now=AT + 299)


def test_it_takes_any_of_several_signatures_and_any_header_case():
    headers = {k.title(): v for k, v in HEADERS.items()}
    headers["Webhook-Signature"] = "v1,bm90IGl0 " + HEADERS["webhook-signature"]
    assert autoglm.verify_webhook(BODY, headers, SECRET, now=AT)


@pytest.mark.parametrize(
    "change",
    [
        {"body": b'{"test": 2432232315}'},
        {"secret": "whsec_" + "A" * 32},
        {"now": AT + 301},
        {"now": AT - 301},
        {"headers": {**HEADERS, "webhook-id": "msg_other"}},
        {
            "headers": {
                **HEADERS,
                "webhook-signature": "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            }
        },
        {"headers": {k: v for k, v in HEADERS.items() if k != "webhook-timestamp"}},
        {"headers": {**HEADERS, "webhook-timestamp": "yesterday"}},
    ],
)
def test_it_refuses_what_does_not_check_out(change):
    arguments = {"body": BODY, "headers": HEADERS, "secret": SECRET, "now": AT, **change}
    with pytest.raises(autoglm.WebhookVerificationError):
        autoglm.verify_webhook(
            arguments["body"], arguments["headers"], arguments["secret"], now=arguments["now"]
        )
    assert issubclass(autoglm.WebhookVerificationError, autoglm.AutoGLMError)
