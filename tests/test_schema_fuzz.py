"""Schemathesis over the OpenAPI schema, against the live stack (issue 14: bad input everywhere).

Every operation of the schema that ``/api/schema/`` serves gets generated input, valid and invalid
(schemathesis' coverage and fuzzing phases), and every answer must be: not a 5xx, a documented
status, a documented content type, and a body (or each SSE event) that matches its schema.

The fuzzer aims at real objects: in the valid cases each path parameter names one of the objects
made here (``TARGETS``), in the invalid ones anything else (which must be a 404 or a 400). It
stays cheap: messages go to sessions on ``autoglm-idle``, which no worker serves (their jobs stay
queued and are cancelled after each test), and a completion on the demo model asks for a few
tokens.

``FUZZ_EXAMPLES=300 make test PYTEST_ARGS=tests/test_schema_fuzz.py`` runs a longer fuzz.
"""

import json
import os
import secrets

import httpx
import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client, override_settings
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chat import jobs
from chat.models import ChatJob, ChatSession
from tenants.models import Membership
from tenants.services import api_key_create, membership_ensure, tenant_create
from tenants.webhooks import endpoint_create
from tests.conftest import DEMO_MODEL, api_client, wait_for_job

pytestmark = pytest.mark.e2e

IDLE_MODEL = "autoglm-idle"  # configured for the tests, served by no worker
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))  # generated per operation, valid or not
FEW_TOKENS = 8
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
MANAGER_PATHS = (
    "/api/v1/keys",
    "/api/v1/usage",
    "/api/v1/webhooks",
)  # an owner's login, not an API key

# The objects the valid cases name, per path parameter: for one method, ("DELETE",
# "session_id"), or for any, ("*", "session_id"). The fixture makes them and maps each name to
# its id.
IDLE_SESSIONS = ["idle-session-1", "idle-session-2", "outsider-session"]
ENDED_JOBS = ["succeeded-job", "cancelled-job", "failed-job", "outsider-job"]
TARGETS = {
    ("*", "session_id"): [*IDLE_SESSIONS, "demo-session"],
    # Messages only to the idle model's sessions: nothing is generated.
    ("POST", "session_id"): IDLE_SESSIONS,
    ("DELETE", "session_id"): ["doomed-session-1", "doomed-session-2", "outsider-session"],
    ("*", "job_id"): [*ENDED_JOBS, "queued-job"],
    # A queued job's events never end: its stream would be read until the request timeout.
    ("GET", "job_id"): ENDED_JOBS,
    # Never the fuzzer's own key: revoking it would turn every later answer into a 401.
    ("*", "prefix"): ["spare-key", "outsider-key"],
    ("*", "model_id"): [DEMO_MODEL, IDLE_MODEL],
    ("*", "endpoint_id"): ["webhook-endpoint", "outsider-endpoint"],
    ("DELETE", "endpoint_id"): ["doomed-endpoint", "outsider-endpoint"],
}


def served_schema() -> dict:
    """The schema ``/api/schema/`` serves, built in-process so that pytest gets one test per
    operation (``test_it_fuzzes_the_schema_the_server_serves`` checks they are equal)."""
    raw = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(raw))


def aimed(raw: dict) -> dict:
    """The schema with each path parameter of ``TARGETS`` one of its targets, and the demo
    model as a completion's model (any other name is a 404 before anything deeper runs)."""
    raw = json.loads(json.dumps(raw))
    for operations in raw["paths"].values():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                name = parameter["name"]
                targets = TARGETS.get((method.upper(), name)) or TARGETS.get(("*", name))
                if parameter["in"] == "path" and targets:
                    parameter["schema"] = {"type": "string", "enum": targets}
    for request in ("ChatCompletionRequest", "CompletionRequest", "ResponseCreateRequest"):
        raw["components"]["schemas"][request]["properties"]["model"]["enum"] = [DEMO_MODEL]
    return raw


CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 14,
        "generation": {"max-examples": EXAMPLES},
        # An event stream is read until it ends or for this long.
        "request-timeout": 20,
    }
)
schema = schemathesis.openapi.from_dict(aimed(served_schema()), config=CONFIG)


def session_in(tenant, model: str = IDLE_MODEL) -> str:
    return str(ChatSession.objects.create(tenant=tenant, model=model).id)


def idle_job(client, tenant) -> str:
    """A job on the idle model: it stays queued until something ends it."""
    session_id = session_in(tenant)
    response = client.post(f"/api/v1/sessions/{session_id}/messages", {"content": "hi"}, "json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def ended_jobs(client, tenant) -> dict[str, str]:
    """A succeeded, a cancelled and a failed job: the three endings an event stream replays."""
    demo = session_in(tenant, DEMO_MODEL)
    message = {"content": "hi", "max_tokens": 4}
    posted = client.post(f"/api/v1/sessions/{demo}/messages", message, "json").json()
    assert wait_for_job(client, posted["id"])["status"] == ChatJob.Status.SUCCEEDED
    cancelled, failed = idle_job(client, tenant), idle_job(client, tenant)
    jobs.job_cancel(job=ChatJob.objects.get(pk=cancelled))
    jobs.job_fail(job=ChatJob.objects.get(pk=failed), reason="Failed for the fuzzer.")
    return {"succeeded-job": posted["id"], "cancelled-job": cancelled, "failed-job": failed}


def signed_in(username: str) -> tuple[dict[str, str], dict[str, str]]:
    """The session cookie of a signed-in user, and the CSRF cookie and header it posts with."""
    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    csrf = secrets.token_hex(16)
    return {"sessionid": client.cookies["sessionid"].value, "csrftoken": csrf}, {
        "X-CSRFToken": csrf
    }


def webhook_endpoint(tenant) -> str:
    with override_settings(AUTOGLM_OUTBOUND_ALLOW_PRIVATE=True):
        endpoint, _ = endpoint_create(
            tenant=tenant, url="http://127.0.0.1:9/", events=["job.failed"]
        )
    return str(endpoint.id)


def make_targets() -> dict:
    """The fuzzer's tenant (an owner, a key) and an outsider's, with the objects of ``TARGETS``."""
    tenant = tenant_create(slug="fuzz")
    membership_ensure(
        tenant=tenant, username="fuzz-owner", password="pw", role=Membership.Role.OWNER
    )
    outsider = tenant_create(slug="fuzz-outsider")
    key = api_key_create(tenant=tenant, name="fuzzer")[1]
    client, outsider_client = (
        api_client(key),
        api_client(api_key_create(tenant=outsider, name="o")[1]),
    )
    ids = {
        "idle-session-1": session_in(tenant),
        "idle-session-2": session_in(tenant),
        "demo-session": session_in(tenant, DEMO_MODEL),
        "doomed-session-1": session_in(tenant),
        "doomed-session-2": session_in(tenant),
        "outsider-session": session_in(outsider),
        "queued-job": idle_job(client, tenant),
        "outsider-job": idle_job(outsider_client, outsider),
        **ended_jobs(client, tenant),
        "spare-key": api_key_create(tenant=tenant, name="spare")[0].prefix,
        "outsider-key": api_key_create(tenant=outsider, name="spare")[0].prefix,
        "webhook-endpoint": webhook_endpoint(tenant),
        "doomed-endpoint": webhook_endpoint(tenant),
        "outsider-endpoint": webhook_endpoint(outsider),
    }
    jobs.job_cancel(job=ChatJob.objects.get(pk=ids["outsider-job"]))
    return {"ids": ids, "key": {"Authorization": f"Bearer {key}"}, "owner": signed_in("fuzz-owner")}


@pytest.fixture(scope="module")
def targets(live_server_url, django_db_blocker):
    """Made once for every operation, in the live server's database (committed, outside any test
    transaction), and flushed after the last, as a transactional test's data is."""
    with django_db_blocker.unblock():
        try:
            yield make_targets()
        finally:
            call_command("flush", interactive=False, verbosity=0)


def ask_for_few_tokens(case) -> None:
    """A completion asks for at most a few tokens, so the fuzzer never queues long generations
    (values that are wrong for other reasons stay wrong)."""
    body = case.body
    completions = ("/v1/chat/completions", "/v1/completions", "/v1/responses")
    if case.path not in completions or not isinstance(body, dict):
        return
    limits = ("max_tokens", "max_completion_tokens", "max_output_tokens")
    for name in limits:
        value = body.get(name)
        if type(value) is int and value > FEW_TOKENS:
            body[name] = FEW_TOKENS
    if all(body.get(name) is None for name in limits):  # not the server's default of 256
        body["max_output_tokens" if case.path == "/v1/responses" else "max_tokens"] = FEW_TOKENS


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_it_answers_every_input_as_documented(case, targets, live_server_url):
    ids = targets["ids"]
    case.path_parameters = {name: ids.get(v, v) for name, v in (case.path_parameters or {}).items()}
    ask_for_few_tokens(case)
    if case.path.startswith(MANAGER_PATHS):
        cookies, headers = targets["owner"]
        case.call_and_validate(
            base_url=live_server_url, headers=headers, cookies=cookies, checks=CHECKS
        )
    else:
        case.call_and_validate(base_url=live_server_url, headers=targets["key"], checks=CHECKS)


@pytest.mark.django_db
def test_it_fuzzes_the_schema_the_server_serves(live_server_url):
    served = httpx.get(f"{live_server_url}/api/schema/?format=json")
    assert served.status_code == 200
    assert served.json() == served_schema()
