"""Bad input gets a 4xx in the one error shape, never a 500 or an HTML page (issue 14, defect 8).

Nothing here reaches a worker: every request is refused before a job is stored.
"""

import json

import pytest

from chat.models import ChatJob, Message

pytestmark = pytest.mark.django_db

NESTED = ("[" * 50_000 + "]" * 50_000).encode()
HUGE = json.dumps({"messages": [{"role": "user", "content": "x" * 10_000_000}]}).encode()


def post(client, path: str, body: bytes):
    return client.generic("POST", path, body, content_type="application/json")


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["content-type"].startswith("application/json")
    return response.json()["error"]


@pytest.fixture
def session_id(client_a) -> str:
    return client_a.post("/api/v1/sessions", {}, format="json").json()["id"]


@pytest.mark.parametrize("path", ["/api/v1/sessions", "/v1/chat/completions", "messages"])
def test_deeply_nested_json_is_a_400(client_a, session_id, path):
    path = f"/api/v1/sessions/{session_id}/messages" if path == "messages" else path
    assert error_of(post(client_a, path, NESTED), 400)["code"] == "invalid_json"


def test_deeply_nested_json_in_a_patch_is_a_400(client_a, session_id):
    response = client_a.generic(
        "PATCH", f"/api/v1/sessions/{session_id}", NESTED, content_type="application/json"
    )
    assert error_of(response, 400)["code"] == "invalid_json"


@pytest.mark.parametrize("text", ['"\\ud83d"', '"a\\u0000b"'], ids=["lone surrogate", "NUL"])
def test_a_string_no_database_can_store_is_a_400(client_a, session_id, text):
    body = f'{{"content": {text}}}'.encode()
    error = error_of(post(client_a, f"/api/v1/sessions/{session_id}/messages", body), 400)
    assert error["code"] == "invalid_request_error"
    body = f'{{"model": "autoglm-demo", "messages": [{{"role": "user", "content": {text}}}]}}'
    error_of(post(client_a, "/v1/chat/completions", body.encode()), 400)
    assert not Message.objects.exists() and not ChatJob.objects.exists()


def test_a_body_that_is_not_utf8_is_a_400(client_a, session_id):
    body = b'{"content": "caf\xe9"}'
    error = error_of(post(client_a, f"/api/v1/sessions/{session_id}/messages", body), 400)
    assert error["code"] == "invalid_json"
    assert error_of(post(client_a, "/v1/chat/completions", body), 400)["code"] == "invalid_json"


@pytest.mark.parametrize("path", ["/api/v1/sessions", "/v1/chat/completions", "messages"])
def test_a_body_over_the_limit_is_a_413(client_a, session_id, path):
    path = f"/api/v1/sessions/{session_id}/messages" if path == "messages" else path
    assert error_of(post(client_a, path, HUGE), 413)["code"] == "request_too_large"


@pytest.mark.parametrize("debug", [False, True])
def test_no_api_path_answers_an_html_page(client_a, settings, debug):
    settings.DEBUG = debug
    assert error_of(client_a.get("/api/v1/nowhere"), 404)["code"] == "not_found"
    assert error_of(client_a.get("/v1/nowhere"), 404)["code"] == "not_found"
    assert error_of(post(client_a, "/v1/chat/completions", HUGE), 413)


@pytest.mark.parametrize("path", ["/api/v1/sessions", "/v1/chat/completions", "messages"])
def test_an_integer_too_long_to_parse_is_a_400(client_a, session_id, path):
    # Python refuses to turn over 4300 digits into an int (a ValueError, not a JSONDecodeError).
    path = f"/api/v1/sessions/{session_id}/messages" if path == "messages" else path
    body = b'{"content": "x", "max_tokens": ' + b"9" * 5000 + b"}"
    assert error_of(post(client_a, path, body), 400)["code"] == "invalid_json"
