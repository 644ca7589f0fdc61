"""The guardrail plugin (issue 16): refuses and masks configured patterns on real input, in the
native API and the OpenAI one, and masks answers chunk by chunk on a real worker (streams and
the stored answer)."""

import asyncio
import json

import pytest

from autoglm_plugins.guardrail import Guardrail
from autoglm_site import plugins
from autoglm_site.env import ConfigError
from chat.models import ChatJob, Message

from .conftest import DEMO_MODEL, WorkerProcess, wait_for_job

LETTER = (
    "Hi, please update my details: write to jane.doe+billing@example.co.uk or "
    "j.doe@mail.example.com, and charge 4111 1111 1111 1111 (or 5500-0000-0000-0004)."
)


def guardrail(config: dict) -> Guardrail:
    plugin = Guardrail()
    plugin.configure(config)
    return plugin


def test_it_masks_emails_and_card_numbers_in_real_text():
    masked = guardrail({"mask": ["email", "card"]}).masked(LETTER)
    assert masked == (
        "Hi, please update my details: write to [masked] or [masked], and charge [masked] "
        "(or [masked])."
    )
    assert guardrail({"mask": ["card"]}).masked("order 12345, call 555-0100") == (
        "order 12345, call 555-0100"  # short numbers are no cards
    )


@pytest.mark.parametrize("size", [1, 3, 7, 64, 1000])
def test_its_answer_stage_masks_matches_split_across_chunks(size):
    stage = guardrail({"mask": ["email", "card"]}).answer_stage(None)
    chunks = [LETTER[i : i + size] for i in range(0, len(LETTER), size)]
    out = "".join(stage.feed(chunk) for chunk in chunks) + stage.finish()
    assert out == guardrail({"mask": ["email", "card"]}).masked(LETTER)


@pytest.mark.parametrize(
    "config", [{}, {"mask": "email"}, {"mask": ["(unclosed"]}, {"mask": ["email"], "x": 1}]
)
def test_a_bad_configuration_is_refused(config):
    host = plugins.PluginHost()
    host.register(Guardrail(), "test")
    with pytest.raises(ConfigError, match="guardrail"):
        host.initialize({"AUTOGLM_PLUGIN_GUARDRAIL": json.dumps(config)})


@pytest.fixture
def guarded(monkeypatch):
    """This (web) process runs the guardrail: cards refused, e-mail addresses masked."""
    host = plugins.PluginHost()
    host.register(Guardrail(), "autoglm_plugins.guardrail:Guardrail")
    host.initialize({"AUTOGLM_PLUGIN_GUARDRAIL": '{"refuse": ["card"], "mask": ["email"]}'})
    host.start()
    monkeypatch.setattr(plugins, "_host", host)


@pytest.mark.django_db
def test_it_refuses_in_both_apis_and_stores_nothing(client_a, guarded):
    content = "my card is 4111 1111 1111 1111"
    completion = client_a.post(
        "/v1/chat/completions",
        {"model": "autoglm-idle", "messages": [{"role": "user", "content": content}]},
        format="json",
    )
    assert completion.status_code == 400, completion.content
    assert completion.json()["error"]["code"] == "guardrail_refused"
    assert "card" in completion.json()["error"]["message"]
    session = client_a.post("/api/v1/sessions", {"model": "autoglm-idle"}, format="json").json()
    message = client_a.post(
        f"/api/v1/sessions/{session['id']}/messages", {"content": content}, format="json"
    )
    assert message.status_code == 400 and message.json()["error"]["code"] == "guardrail_refused"
    assert not ChatJob.objects.exists() and not Message.objects.exists()


@pytest.mark.django_db
def test_it_masks_what_is_stored_and_prompted_in_both_apis(client_a, guarded):
    session = client_a.post("/api/v1/sessions", {"model": "autoglm-idle"}, format="json").json()
    sent = client_a.post(
        f"/api/v1/sessions/{session['id']}/messages",
        {"content": "mail me at jane@example.com"},
        format="json",
    )
    assert sent.status_code == 202, sent.content
    assert Message.objects.get(role="user").content == "mail me at [masked]"
    response = client_a.post(
        "/v1/chat/completions",
        {
            "model": "autoglm-idle",
            "stream": True,
            "messages": [{"role": "user", "content": "from bob@example.org"}],
        },
        format="json",
    )
    assert response.status_code == 200
    job = ChatJob.objects.filter(session__isnull=True).get()
    assert job.params["messages"] == [{"role": "user", "content": "from [masked]"}]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_worker_s_answers_go_through_the_stage_streamed_and_stored(
    celery_worker, client_a, settings, tmp_path
):
    """Every word of the demo model's answer is masked by the worker's stage, in the stream
    and in the stored answer (its own queue: the suite's worker runs no guardrail)."""
    settings.AUTOGLM_QUEUE_PREFIX = "guarded."
    env = {
        **celery_worker.env,
        "AUTOGLM_QUEUE_PREFIX": "guarded.",
        "AUTOGLM_PLUGINS": "autoglm_plugins.guardrail:Guardrail",
        "AUTOGLM_PLUGIN_GUARDRAIL": json.dumps({"mask": [r"\S+"], "mask_with": "#"}),
    }
    worker = WorkerProcess(tmp_path / "worker.log", env).start()
    try:
        body = {
            "model": DEMO_MODEL,
            "max_tokens": 12,
            "temperature": 0,
            "stream": True,
            "messages": [{"role": "user", "content": "Tell me something"}],
        }
        response = client_a.post("/v1/chat/completions", body, format="json")

        async def read() -> bytes:
            return b"".join([chunk async for chunk in response.streaming_content])

        frames = asyncio.run(read()).decode().split("\n\n")
        texts = [
            choice["delta"].get("content", "")
            for frame in frames
            if frame.startswith("data: {")
            for choice in json.loads(frame[6:])["choices"]
        ]
        streamed = "".join(texts)
        assert streamed.strip(), frames
        assert set(streamed) <= {"#", " ", "\n", "\t"}, streamed
        job = ChatJob.objects.get(model=DEMO_MODEL)
        assert wait_for_job(client_a, str(job.id))["status"] == "succeeded"
        job.refresh_from_db()
        assert job.output == streamed
        assert "plugin running" in worker.log_text()
    finally:
        worker.stop()
