"""Signed-in browser users on the native API: session cookie plus CSRF token instead of a key,
acting in the tenant of their membership, with the same tenant isolation as API keys."""

import json

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat.models import ChatJob, ChatSession
from chat.services import message_submit, session_create
from tenants.models import Membership
from tenants.services import membership_ensure, tenant_create

from .conftest import wait_for_job


def sign_in(username: str, password: str) -> tuple[Client, str]:
    """Sign in through the real login form (CSRF enforced); returns the client and its token."""
    client = Client(enforce_csrf_checks=True)
    client.get("/login/")
    response = client.post(
        "/login/",
        {
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
        },
    )
    assert response.status_code == 302, response.content.decode()[:500]
    return client, client.cookies["csrftoken"].value


def post_json(client: Client, url: str, body: dict | None = None, csrf: str | None = None):
    headers = {"HTTP_X_CSRFTOKEN": csrf} if csrf else {}
    return client.post(url, json.dumps(body or {}), content_type="application/json", **headers)


def job_in(tenant, *, model: str = "autoglm-demo") -> ChatJob:
    session = session_create(tenant=tenant, model=model, title="secret plans")
    job, _ = message_submit(tenant=tenant, session=session, content="hi", params={"max_tokens": 2})
    return job


@pytest.mark.django_db
class TestSignedInUsersUseTheNativeApi:
    def test_they_list_create_and_post_messages_with_the_csrf_token(self, tenant_a):
        alice, csrf = sign_in("alice", "alice-pw")
        created = post_json(
            alice,
            "/api/v1/sessions",
            {"title": "from the browser", "params": {"temperature": 0.5, "max_tokens": 8}},
            csrf,
        )
        assert created.status_code == 201, created.content
        session = created.json()
        assert ChatSession.objects.get(pk=session["id"]).tenant == tenant_a
        listed = alice.get("/api/v1/sessions").json()["data"]
        assert [s["id"] for s in listed] == [session["id"]]
        posted = post_json(
            alice, f"/api/v1/sessions/{session['id']}/messages", {"content": "Hi"}, csrf
        )
        assert posted.status_code == 202, posted.content
        job = posted.json()
        assert job["status"] == "queued" and job["links"]["events"].endswith("/events")
        stored = ChatJob.objects.get(pk=job["id"])
        assert stored.tenant == tenant_a and stored.api_key is None  # quotas at tenant level
        assert stored.params["max_tokens"] == 8
        renamed = alice.patch(
            f"/api/v1/sessions/{session['id']}",
            json.dumps({"title": "renamed"}),
            content_type="application/json",
            HTTP_X_CSRFTOKEN=csrf,
        )
        assert renamed.status_code == 200 and renamed.json()["title"] == "renamed"
        assert alice.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "queued"
        cancelled = post_json(alice, f"/api/v1/jobs/{job['id']}/cancel", csrf=csrf)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        deleted = alice.delete(f"/api/v1/sessions/{session['id']}", HTTP_X_CSRFTOKEN=csrf)
        assert deleted.status_code == 204
        assert not ChatSession.objects.filter(pk=session["id"]).exists()

    def test_a_write_without_the_csrf_token_is_refused(self, tenant_a):
        alice, csrf = sign_in("alice", "alice-pw")
        session = session_create(tenant=tenant_a, title="keep")
        refused = [
            post_json(alice, "/api/v1/sessions", {"title": "forged"}),
            post_json(alice, f"/api/v1/sessions/{session.id}/messages", {"content": "forged"}),
            alice.patch(
                f"/api/v1/sessions/{session.id}",
                json.dumps({"title": "forged"}),
                content_type="application/json",
            ),
            alice.delete(f"/api/v1/sessions/{session.id}"),
            post_json(alice, f"/api/v1/sessions/{session.id}/regenerate"),
            post_json(alice, "/api/v1/keys", {"name": "forged"}),
            post_json(alice, "/api/v1/sessions", {"title": "forged"}, csrf="wrong" * 8),
        ]
        for response in refused:
            assert response.status_code == 403, response.content
            assert response.json()["error"]["type"] == "permission_error"
            assert "CSRF" in response.json()["error"]["message"]
        session.refresh_from_db()
        assert session.title == "keep"
        assert list(ChatSession.objects.values_list("title", flat=True)) == ["keep"]
        assert not session.messages.exists()
        # The switcher and logout forms are CSRF-protected too.
        assert alice.post("/org/switch/", {"tenant": tenant_a.id}).status_code == 403
        assert alice.post("/logout/").status_code == 403

    def test_an_api_key_needs_no_csrf_token_and_wins_over_a_session(
        self, tenant_a, tenant_b, key_b
    ):
        alice, _ = sign_in("alice", "alice-pw")
        response = alice.post(
            "/api/v1/sessions",
            json.dumps({"title": "with a key"}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {key_b}",
        )
        assert response.status_code == 201
        assert ChatSession.objects.get(pk=response.json()["id"]).tenant == tenant_b

    def test_another_tenants_user_finds_nothing(self, tenant_a, tenant_b):
        job = job_in(tenant_a)
        session_id = job.session_id
        charlie, csrf = sign_in("charlie", "charlie-pw")
        answers = [
            charlie.get(f"/api/v1/sessions/{session_id}"),
            charlie.get(f"/api/v1/sessions/{session_id}/messages"),
            charlie.patch(
                f"/api/v1/sessions/{session_id}",
                json.dumps({"title": "mine now"}),
                content_type="application/json",
                HTTP_X_CSRFTOKEN=csrf,
            ),
            charlie.delete(f"/api/v1/sessions/{session_id}", HTTP_X_CSRFTOKEN=csrf),
            post_json(charlie, f"/api/v1/sessions/{session_id}/messages", {"content": "x"}, csrf),
            charlie.get(f"/api/v1/jobs/{job.id}"),
            post_json(charlie, f"/api/v1/jobs/{job.id}/cancel", csrf=csrf),
            charlie.get(f"/api/v1/jobs/{job.id}/events"),
            charlie.get(f"/ui/jobs/{job.id}/state"),
            post_json(charlie, f"/api/v1/sessions/{session_id}/regenerate", csrf=csrf),
        ]
        for response in answers:
            assert response.status_code == 404, response.content
            assert response.json()["error"]["code"] == "not_found"
        assert charlie.get(f"/chat/{session_id}/").status_code == 404
        assert "secret plans" not in charlie.get("/chat/").content.decode()
        assert charlie.get("/api/v1/sessions").json()["data"] == []
        job.refresh_from_db()
        assert (
            job.status == "queued"
            and ChatSession.objects.get(pk=session_id).title == "secret plans"
        )

    def test_a_suspended_tenants_user_is_refused(self, tenant_a):
        job = job_in(tenant_a)
        alice, csrf = sign_in("alice", "alice-pw")
        tenant_a.is_active = False
        tenant_a.save()
        for response in [
            alice.get("/api/v1/sessions"),
            post_json(alice, "/api/v1/sessions", {"title": "x"}, csrf),
            alice.get(f"/api/v1/jobs/{job.id}"),
            alice.get(f"/api/v1/jobs/{job.id}/events"),
            alice.get(f"/ui/jobs/{job.id}/state"),
        ]:
            assert response.status_code == 403, response.content
            assert response.json()["error"]["code"] == "tenant_suspended"
        page = alice.get("/chat/")
        assert page.status_code == 403 and "suspended" in page.content.decode()

    def test_anonymous_callers_are_refused(self, tenant_a):
        job = job_in(tenant_a)
        anonymous = Client(enforce_csrf_checks=True)
        assert anonymous.get("/api/v1/sessions").status_code == 401
        assert anonymous.get(f"/api/v1/jobs/{job.id}").status_code == 401
        assert anonymous.get(f"/api/v1/jobs/{job.id}/events").status_code == 401
        assert post_json(anonymous, "/api/v1/sessions", {"title": "x"}).status_code == 401
        assert anonymous.get(f"/ui/jobs/{job.id}/state").status_code in (401, 403)
        for page in ("/chat/", f"/chat/{job.session_id}/", "/org/keys/", "/org/usage/"):
            response = anonymous.get(page)
            assert response.status_code == 302 and response["Location"].startswith("/login/")
        assert anonymous.get("/").status_code == 302

    def test_a_user_without_membership_is_refused(self, tenant_a):
        get_user_model().objects.create_user("dora", password="dora-pw")
        dora, csrf = sign_in("dora", "dora-pw")
        response = dora.get("/api/v1/sessions")
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "no_membership"
        assert post_json(dora, "/api/v1/sessions", {}, csrf).status_code == 403
        assert dora.get("/chat/").status_code == 403

    def test_the_openai_surface_takes_keys_only(self, tenant_a):
        alice, _ = sign_in("alice", "alice-pw")
        assert alice.get("/v1/models").status_code == 401


@pytest.mark.django_db
class TestTheTenantSwitcher:
    def test_a_member_of_two_tenants_acts_in_the_one_chosen(self, tenant_a, tenant_b):
        membership_ensure(tenant=tenant_b, username="alice", role=Membership.Role.MEMBER)
        outsider = tenant_create(slug="tenant-c", name="Tenant C")
        alice, csrf = sign_in("alice", "alice-pw")
        in_a = post_json(alice, "/api/v1/sessions", {"title": "in a"}, csrf).json()
        page = alice.get("/chat/").content.decode()
        assert 'id="tenant-select"' in page and "Tenant B" in page

        switched = alice.post("/org/switch/", {"tenant": tenant_b.id, "csrfmiddlewaretoken": csrf})
        assert switched.status_code == 302
        in_b = post_json(alice, "/api/v1/sessions", {"title": "in b"}, csrf).json()
        assert ChatSession.objects.get(pk=in_b["id"]).tenant == tenant_b
        assert [s["id"] for s in alice.get("/api/v1/sessions").json()["data"]] == [in_b["id"]]
        assert alice.get(f"/api/v1/sessions/{in_a['id']}").status_code == 404
        # Alice is only a member in tenant B: no keys or usage there.
        assert alice.get("/api/v1/keys").status_code == 403
        assert alice.get("/org/keys/").status_code == 403

        # Not a member of tenant C: refused, and she stays in tenant B.
        refused = alice.post("/org/switch/", {"tenant": outsider.id, "csrfmiddlewaretoken": csrf})
        assert refused.status_code == 404
        assert [s["id"] for s in alice.get("/api/v1/sessions").json()["data"]] == [in_b["id"]]
        alice.post("/org/switch/", {"tenant": tenant_a.id, "csrfmiddlewaretoken": csrf})
        assert [s["id"] for s in alice.get("/api/v1/sessions").json()["data"]] == [in_a["id"]]


@pytest.mark.django_db
class TestUiEndpoints:
    def test_the_queue_position_counts_the_models_queued_jobs_ahead(self, tenant_a, tenant_b):
        first = job_in(tenant_b, model="autoglm-idle")
        mine = job_in(tenant_a, model="autoglm-idle")
        alice, _ = sign_in("alice", "alice-pw")
        state = alice.get(f"/ui/jobs/{mine.id}/state").json()
        assert state == {"id": str(mine.id), "status": "queued", "queue_position": 2}
        ChatJob.objects.filter(pk=first.pk).update(status="cancelled")
        assert alice.get(f"/ui/jobs/{mine.id}/state").json()["queue_position"] == 1

    def test_regenerate_keeps_the_last_answer_as_an_earlier_version(self, tenant_a):
        job = job_in(tenant_a)
        alice, csrf = sign_in("alice", "alice-pw")
        busy = post_json(alice, f"/api/v1/sessions/{job.session_id}/regenerate", csrf=csrf)
        assert busy.status_code == 409  # still generating
        from chat.jobs import job_finish, job_start

        job_finish(
            job=job_start(job_id=str(job.id), worker="test"),
            text="old answer",
            prompt_tokens=3,
            completion_tokens=2,
            finish_reason="stop",
        )
        response = post_json(alice, f"/api/v1/sessions/{job.session_id}/regenerate", csrf=csrf)
        assert response.status_code == 202, response.content
        new_job = ChatJob.objects.get(pk=response.json()["id"])
        messages = f"/api/v1/sessions/{job.session_id}/messages"
        history = alice.get(messages).json()["data"]
        assert [(m["role"], m["content"]) for m in history] == [("user", "hi")]
        assert new_job.user_message.content == "hi" and new_job.status == "queued"
        tree = alice.get(messages, {"view": "tree"}).json()["data"]
        assert [(m["role"], m["content"], m["parent_id"]) for m in tree] == [
            ("user", "hi", None),
            ("assistant", "old answer", str(new_job.user_message_id)),
        ]

    def test_regenerate_needs_a_message(self, tenant_a):
        session = session_create(tenant=tenant_a)
        alice, csrf = sign_in("alice", "alice-pw")
        response = post_json(alice, f"/api/v1/sessions/{session.id}/regenerate", csrf=csrf)
        assert response.status_code == 400

    def test_pages_send_a_content_security_policy(self, tenant_a):
        alice, _ = sign_in("alice", "alice-pw")
        for url in ("/chat/", "/org/keys/", "/org/usage/", "/login/"):
            policy = alice.get(url)["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy

    def test_members_see_no_organisation_pages(self, tenant_a):
        bob, _ = sign_in("bob", "bob-pw")
        page = bob.get("/chat/").content.decode()
        assert "/org/keys/" not in page and "/org/usage/" not in page
        assert bob.get("/org/keys/").status_code == 403
        assert bob.get("/org/usage/").status_code == 403


@pytest.mark.django_db(transaction=True)
@pytest.mark.e2e
def test_a_signed_in_user_streams_job_events_with_the_session_cookie(
    live_server_url, tenant_a, tenant_b
):
    alice, csrf = sign_in("alice", "alice-pw")
    session = post_json(alice, "/api/v1/sessions", {"title": "stream"}, csrf).json()
    cookies = {"sessionid": alice.cookies["sessionid"].value, "csrftoken": csrf}
    with httpx.Client(base_url=live_server_url, cookies=cookies, timeout=60) as http:
        posted = http.post(
            f"/api/v1/sessions/{session['id']}/messages",
            json={"content": "Hello", "max_tokens": 12, "temperature": 0},
            headers={"X-CSRFToken": csrf, "Referer": live_server_url + "/chat/"},
        )
        assert posted.status_code == 202, posted.text
        job = posted.json()
        events = []
        with http.stream("GET", f"/api/v1/jobs/{job['id']}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("event:"):
                    events.append(line.split(":", 1)[1].strip())
                if line.startswith("data:") and events and events[-1] in ("done", "error"):
                    final = json.loads(line.split(":", 1)[1])
                    break
        assert events[-1] == "done" and "token" in events
        assert final["status"] == "succeeded" and final["message_id"]
        done = wait_for_job(http, job["id"])
        assert done["message"]["id"] == final["message_id"]
    charlie, _ = sign_in("charlie", "charlie-pw")
    stranger = {"sessionid": charlie.cookies["sessionid"].value}
    response = httpx.get(f"{live_server_url}/api/v1/jobs/{job['id']}/events", cookies=stranger)
    assert response.status_code == 404
