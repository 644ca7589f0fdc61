"""The real SmolLM2-135M-Instruct through the whole stack, asked what a 135M model can answer.

Greedy decoding, so each answer is fixed; what is asserted is what the answer means (a fact,
the system prompt's name, a word from an earlier turn), not its exact wording. Few tokens each:
the model decodes at tens of tokens a second on two CPU cores.
"""

import openai
import pytest

from chat.models import ChatJob

from .conftest import REAL_MODEL, wait_for_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
COLORS = [{"role": "user", "content": "Name three colors."}]


@pytest.fixture
def client(real_model_worker, live_server_url, key_a) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=key_a, max_retries=0)


def ask(client: openai.OpenAI, messages: list[dict], **params):
    params = {"max_tokens": 24, "temperature": 0, **params}
    return client.chat.completions.create(model=REAL_MODEL, messages=messages, **params)


def test_it_knows_the_capital_of_france_streamed_or_not(client):
    whole = ask(client, FRANCE)
    assert "Paris" in whole.choices[0].message.content
    assert whole.choices[0].finish_reason == "stop"

    chunks = list(
        client.chat.completions.create(
            model=REAL_MODEL, messages=FRANCE, max_tokens=24, temperature=0, stream=True
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content


def test_it_obeys_the_system_prompt(client):
    answer = ask(
        client,
        [
            {"role": "system", "content": "Your name is Zork."},
            {"role": "user", "content": "What is your name?"},
        ],
    )
    assert "Zork" in answer.choices[0].message.content
    # Without the system prompt, the chat template's default one names it SmolLM.
    default = ask(client, [{"role": "user", "content": "What is your name?"}])
    assert "Zork" not in default.choices[0].message.content


def test_a_session_remembers_an_earlier_turn(real_model_worker, client_a):
    session = client_a.post("/api/v1/sessions", {"model": REAL_MODEL}, format="json").json()

    def say(content: str) -> str:
        job = client_a.post(
            f"/api/v1/sessions/{session['id']}/messages",
            {"content": content, "max_tokens": 24, "temperature": 0},
            format="json",
        ).json()
        done = wait_for_job(client_a, job["id"], timeout=120)
        assert done["status"] == "succeeded", done
        return done["message"]["content"]

    say("The secret word is banana. Remember it.")
    assert "banana" in say("What is the secret word?").lower()


def test_a_stop_sequence_cuts_the_answer_where_it_appears(client):
    full = ask(client, COLORS).choices[0].message.content
    assert "3." in full, full  # "1. Red\n2. Blue\n3. Green"
    cut = ask(client, COLORS, stop=["3."])
    assert cut.choices[0].message.content == full[: full.index("3.")]
    assert cut.choices[0].finish_reason == "stop"


def test_max_tokens_finish_reason_and_usage_agree(client):
    short = ask(client, COLORS, max_tokens=3)
    assert short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 3
    job = ChatJob.objects.get(pk=short.id.removeprefix("chatcmpl-"))
    assert (job.prompt_tokens, job.completion_tokens) == (
        short.usage.prompt_tokens,
        short.usage.completion_tokens,
    )

    whole = ask(client, COLORS, max_tokens=40)
    assert whole.choices[0].finish_reason == "stop"
    assert 3 < whole.usage.completion_tokens < 40
    assert whole.choices[0].message.content.startswith(short.choices[0].message.content)
