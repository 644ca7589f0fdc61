"""A conversation is a tree: editing (posting after an earlier message) starts a branch,
regenerating keeps earlier answers; the prompt is always the branch the message is on, and
clients that know nothing of branches see the linear history they always saw."""

import pytest

from chat.jobs import job_finish, job_prompt_messages, job_start
from chat.models import ChatJob, ChatSession, Message
from chat.services import session_regenerate
from tests.test_sessions_api import error_of

pytestmark = pytest.mark.django_db


def post(client, session_id, content, **extra):
    response = client.post(
        f"/api/v1/sessions/{session_id}/messages", {"content": content, **extra}, format="json"
    )
    assert response.status_code == 202, response.content
    return response.json()


def answer(job_id, text):
    """End a queued job as a worker would, with ``text`` as its answer."""
    job = job_finish(
        job=job_start(job_id=str(job_id), worker="test"),
        text=text,
        prompt_tokens=3,
        completion_tokens=2,
        finish_reason="stop",
    )
    return str(job.assistant_message_id)


def history(client, session_id, **query):
    response = client.get(f"/api/v1/sessions/{session_id}/messages", query)
    assert response.status_code == 200, response.content
    return response.json()["data"]


def prompt_of(job_id):
    return [
        (m["role"], m["content"]) for m in job_prompt_messages(job=ChatJob.objects.get(pk=job_id))
    ]


@pytest.fixture
def session_id(client_a):
    response = client_a.post("/api/v1/sessions", {"system_prompt": "Be brief."}, format="json")
    return response.json()["id"]


def test_a_linear_conversation_is_a_chain_and_the_history_old_clients_saw(client_a, session_id):
    first = post(client_a, session_id, "one")
    a1 = answer(first["id"], "answer one")
    second = post(client_a, session_id, "two")
    assert second["user_message_id"] and first["user_message_id"] != second["user_message_id"]
    a2 = answer(second["id"], "answer two")
    shown = history(client_a, session_id)
    assert [(m["role"], m["content"]) for m in shown] == [
        ("user", "one"),
        ("assistant", "answer one"),
        ("user", "two"),
        ("assistant", "answer two"),
    ]
    assert [m["parent_id"] for m in shown] == [
        None,
        first["user_message_id"],
        a1,
        second["user_message_id"],
    ]
    session = client_a.get(f"/api/v1/sessions/{session_id}").json()
    assert session["current_message_id"] == a2
    assert prompt_of(second["id"])[-1] == ("user", "two")


def test_an_edit_starts_a_branch_and_the_model_sees_only_that_branch(client_a, session_id):
    first = post(client_a, session_id, "one")
    a1 = answer(first["id"], "answer one")
    second = post(client_a, session_id, "two")
    answer(second["id"], "answer two")
    # "two" edited: a sibling of it, after the first answer.
    edited = post(client_a, session_id, "two, edited", parent_id=a1)
    assert prompt_of(edited["id"]) == [
        ("system", "Be brief."),
        ("user", "one"),
        ("assistant", "answer one"),
        ("user", "two, edited"),
    ]
    a3 = answer(edited["id"], "answer to the edit")
    assert [m["content"] for m in history(client_a, session_id)] == [
        "one",
        "answer one",
        "two, edited",
        "answer to the edit",
    ]
    tree = history(client_a, session_id, view="tree")
    assert len(tree) == 6
    siblings = [m["content"] for m in tree if m["parent_id"] == a1]
    assert siblings == ["two", "two, edited"]
    # The next message, parent left out, follows the branch shown.
    third = post(client_a, session_id, "three")
    assert prompt_of(third["id"])[-2:] == [("assistant", "answer to the edit"), ("user", "three")]
    assert Message.objects.get(pk=third["user_message_id"]).parent_id.hex == a3.replace("-", "")


def test_editing_the_first_message_starts_a_new_root(client_a, session_id):
    first = post(client_a, session_id, "one")
    answer(first["id"], "answer one")
    again = post(client_a, session_id, "one, edited", parent_id=None)
    assert prompt_of(again["id"]) == [("system", "Be brief."), ("user", "one, edited")]
    roots = [m for m in history(client_a, session_id, view="tree") if m["parent_id"] is None]
    assert [m["content"] for m in roots] == ["one", "one, edited"]


def test_switching_the_current_message_shows_that_branch(client_a, session_id):
    first = post(client_a, session_id, "one")
    a1 = answer(first["id"], "answer one")
    edited = post(client_a, session_id, "one, edited", parent_id=None)
    answer(edited["id"], "answer to the edit")
    response = client_a.patch(
        f"/api/v1/sessions/{session_id}", {"current_message_id": a1}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["current_message_id"] == a1
    assert [m["content"] for m in history(client_a, session_id)] == ["one", "answer one"]


def test_regenerate_keeps_answers_as_versions_and_answers_that_branch(
    tenant_a, client_a, session_id
):
    first = post(client_a, session_id, "one")
    a1 = answer(first["id"], "answer one")
    session = ChatSession.objects.get(pk=session_id)
    job, _ = session_regenerate(tenant=tenant_a, session=session, message_id=a1)
    assert str(job.user_message_id) == first["user_message_id"]
    assert prompt_of(job.id) == [("system", "Be brief."), ("user", "one")]
    a2 = answer(job.id, "answer one, again")
    versions = [m for m in history(client_a, session_id, view="tree") if m["role"] == "assistant"]
    assert [m["id"] for m in versions] == [a1, a2]
    assert {m["parent_id"] for m in versions} == {first["user_message_id"]}
    assert [m["content"] for m in history(client_a, session_id)] == ["one", "answer one, again"]


def test_an_answer_to_another_branch_does_not_move_the_branch_shown(client_a, session_id):
    first = post(client_a, session_id, "one")
    a1 = answer(first["id"], "answer one")
    second = post(client_a, session_id, "two")
    # The user looks at another branch while "two" is being answered.
    client_a.patch(f"/api/v1/sessions/{session_id}", {"current_message_id": a1}, format="json")
    answer(second["id"], "answer two")
    assert ChatSession.objects.get(pk=session_id).current_message_id.hex == a1.replace("-", "")


def test_bad_parents_and_branches_are_clear_errors(client_a, client_b, session_id):
    other = client_a.post("/api/v1/sessions", {}, format="json").json()["id"]
    elsewhere = post(client_a, other, "elsewhere")
    url = f"/api/v1/sessions/{session_id}/messages"
    for parent in (elsewhere["user_message_id"], "00000000-0000-0000-0000-000000000000"):
        response = client_a.post(url, {"content": "x", "parent_id": parent}, format="json")
        assert error_of(response, 404)["param"] == "parent_id"
    assert (
        error_of(client_a.post(url, {"content": "x", "parent_id": "nope"}, format="json"), 400)[
            "param"
        ]
        == "parent_id"
    )
    assert error_of(client_a.get(url, {"view": "sideways"}), 400)["param"] == "view"
    patch = client_a.patch(
        f"/api/v1/sessions/{session_id}",
        {"current_message_id": elsewhere["user_message_id"]},
        format="json",
    )
    assert error_of(patch, 404)["param"] == "current_message_id"
    # Another tenant cannot post into, or branch from, tenant A's session.
    response = client_b.post(
        f"/api/v1/sessions/{other}/messages",
        {"content": "x", "parent_id": elsewhere["user_message_id"]},
        format="json",
    )
    error_of(response, 404)
    assert Message.objects.filter(session_id=session_id).count() == 0
