"""How a request's tools, and the tool calls and results of its history, reach the prompt.

``prepare(tokenizer, messages, tools)`` returns the messages and the ``tools`` argument to
hand to ``tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True)``.
Messages are OpenAI chat messages: system, user and assistant with string content; an
assistant message may have ``content: None`` and ``tool_calls`` (arguments a JSON string);
a ``tool`` message answers one call by its ``tool_call_id``.

Two cases, told apart as transformers tells them: a chat template supports tools when it reads
the ``tools`` variable (transformers passes ``tools`` to every template and a template that
does not read it ignores it, silently).

- The template reads ``tools`` (Qwen 2.5, Hermes 2 Pro, Llama 3.1 and most recent instruct
  models): tools and messages go through as Hugging Face templates expect them, tool-call
  arguments decoded from their JSON string into an object and each tool message given the
  ``name`` of the function it answers (some templates show it). The template writes the tools
  section its model was trained on.
- It does not (SmolLM2-135M-Instruct's ChatML template renders only role and content): the
  conversation is written in the Hermes form that chat/tool_calls.py parses. The tool
  definitions go into the system message, after the text of one the request has or as a new
  first one::

      You are a function calling AI model. You are provided with function signatures within
      <tools></tools> XML tags. ...
      <tools>
      {"type": "function", "function": {"name": "get_weather", ...}}
      </tools>
      For each function call return a json object with function name and arguments within
      <tool_call></tool_call> XML tags:
      <tool_call>
      {"name": <function-name>, "arguments": <args-json-object>}
      </tool_call>

  An assistant's earlier calls become its own ``<tool_call>`` blocks after its text. A tool
  result becomes ``<tool_response>\\n{content}\\n</tool_response>`` in a message of role
  ``tool`` when the template writes a message's role as it is (ChatML templates, SmolLM2's
  among them, render ``<|im_start|>tool``), else of role ``user`` (a template that refuses or
  drops roles it does not know). ``tools`` is then None: it is already in the messages.

A small model that was never taught tools will not call them well from this prompt alone; a
forced ``tool_choice`` (chat/grammars.py) makes it write well-formed blocks all the same.
"""

from __future__ import annotations

import json
from typing import Any

from chat.tool_calls import tool_call_text

_TOOLS_PROMPT = (
    "You are a function calling AI model. You are provided with function signatures within "
    "<tools></tools> XML tags. You may call one or more functions to assist with the user "
    "query. Don't make assumptions about what values to plug into functions.\n"
    "<tools>\n{tools}\n</tools>\n"
    "For each function call return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)
# Content for probing how a template writes a message of role "tool" (without that word).
_PROBE = "autoglm-role-probe-7f3a"


def prepare(
    tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages and ``tools`` to pass to ``tokenizer.apply_chat_template`` for a request
    with these ``tools`` (None or empty: none); see the module docstring. The caller's
    messages are not changed."""
    tools = tools or None
    if template_reads_tools(tokenizer, tools):
        return _for_template(messages), tools
    return _hermes_messages(tokenizer, messages, tools), None


def template_reads_tools(tokenizer: Any, tools: list[dict[str, Any]] | None = None) -> bool:
    """Whether the chat template transformers would pick for ``tools`` reads the ``tools``
    variable (a tokenizer with several templates has one named "tool_use" for this)."""
    template = tokenizer.get_chat_template(None, tools)
    return "tools" in _template_variables(template)


def _template_variables(template: str) -> frozenset[str]:
    """The variables a Jinja template reads, parsed as transformers compiles templates (its
    extensions, such as ``{% generation %}``, would not parse otherwise)."""
    try:
        from transformers.utils.chat_template_utils import _get_template_variables
    except ImportError:  # a transformers without it: Jinja's own parser, without extensions
        import jinja2
        from jinja2 import meta
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"])
        try:
            return frozenset(meta.find_undeclared_variables(env.parse(template)))
        except jinja2.TemplateSyntaxError:
            return frozenset({"tools"} if "tools" in template else ())
    return _get_template_variables(template)


def _decoded_arguments(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return arguments  # not JSON: the template shows the string as it is
    return arguments


def _for_template(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as Hugging Face templates read them: arguments as objects, and each tool
    message with the name of the function whose call it answers."""
    names: dict[str, str] = {}
    prepared = []
    for message in messages:
        message = dict(message)
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = dict(call.get("function") or {})
                function["arguments"] = _decoded_arguments(function.get("arguments", {}))
                calls.append({**call, "function": function})
                if call.get("id") and function.get("name"):
                    names[call["id"]] = function["name"]
            message["tool_calls"] = calls
        if message.get("role") == "tool" and "name" not in message:
            name = names.get(message.get("tool_call_id") or "")
            if name:
                message["name"] = name
        prepared.append(message)
    return prepared


def _hermes_messages(
    tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Messages for a template that knows only role and content (see the module docstring)."""
    tool_role = "tool" if _renders_tool_role(tokenizer) else "user"
    prepared: list[dict[str, Any]] = []
    last_holds_result = False  # the last turn written is a user turn holding a tool result
    for message in messages:
        role, content = message.get("role"), message.get("content") or ""
        is_result = role == "tool"
        if role == "assistant" and message.get("tool_calls"):
            blocks = tool_call_text(message["tool_calls"])
            content = f"{content}\n{blocks}" if content else blocks
        elif is_result:
            role, content = tool_role, f"<tool_response>\n{content}\n</tool_response>"
        joins = role == "user" and prepared and prepared[-1]["role"] == "user"
        if joins and (is_result or last_holds_result):
            # A template that refuses a tool role tends to refuse two user turns in a row too:
            # results share one turn with each other and with the user's next words.
            prepared[-1] = {"role": "user", "content": f"{prepared[-1]['content']}\n{content}"}
        else:
            prepared.append({"role": role, "content": content})
        last_holds_result = role == "user" and (is_result or bool(joins and last_holds_result))
    if tools:
        section = _TOOLS_PROMPT.format(
            tools="\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
        )
        if prepared and prepared[0]["role"] == "system" and prepared[0]["content"]:
            prepared[0] = {"role": "system", "content": f"{prepared[0]['content']}\n\n{section}"}
        elif prepared and prepared[0]["role"] == "system":
            prepared[0] = {"role": "system", "content": section}
        else:
            prepared.insert(0, {"role": "system", "content": section})
    return prepared


def _renders_tool_role(tokenizer: Any) -> bool:
    """Whether the template writes a "tool" message with its role and content (ChatML writes
    any role as it is) rather than refusing it, dropping it, or writing it as another role."""
    base = [{"role": "user", "content": "?"}]
    try:
        plain = tokenizer.apply_chat_template(base, tokenize=False)
        probed = tokenizer.apply_chat_template(
            [*base, {"role": "tool", "content": _PROBE}], tokenize=False
        )
    except Exception:  # templates refuse roles they do not know with any exception they like
        return False
    return _PROBE in probed and probed.count("tool") > plain.count("tool")
