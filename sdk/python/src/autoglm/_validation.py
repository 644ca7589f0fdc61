"""Client-side checks of the parameters whose rules the server documents.

A value that breaks a rule raises :class:`~autoglm.ValidationError` (a ``BadRequestError`` and a
``ValueError``) naming the parameter, before any request is sent. Rules that depend on the
server's configuration (the largest ``max_tokens``, the model names) are left to the server.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ._exceptions import ValidationError

ROLES = ("system", "developer", "user", "assistant")
MAX_STOP_SEQUENCES = 4


def _fail(param: str, message: str) -> ValidationError:
    return ValidationError(message, param=param, code="invalid_request_error")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_temperature(value: Any, param: str = "temperature") -> None:
    """``temperature`` is a number from 0 to 2."""
    if not _is_number(value) or not math.isfinite(value):
        raise _fail(param, f"{param} must be a number.")
    if not 0 <= value <= 2:
        raise _fail(param, f"{param} must be between 0 and 2, got {value!r}.")


def check_top_p(value: Any, param: str = "top_p") -> None:
    """``top_p`` is a number greater than 0 and at most 1."""
    if not _is_number(value) or not math.isfinite(value):
        raise _fail(param, f"{param} must be a number.")
    if not 0 < value <= 1:
        raise _fail(param, f"{param} must be greater than 0 and at most 1, got {value!r}.")


def check_max_tokens(value: Any, param: str = "max_tokens") -> None:
    """``max_tokens`` is a whole number of at least 1."""
    if not _is_int(value):
        raise _fail(param, f"{param} must be a whole number.")
    if value < 1:
        raise _fail(param, f"{param} must be at least 1, got {value!r}.")


def check_seed(value: Any, param: str = "seed") -> None:
    """``seed`` is a whole number."""
    if not _is_int(value):
        raise _fail(param, f"{param} must be a whole number.")


def check_stop(value: Any) -> None:
    """``stop`` is a non-empty string or a list of 1 to 4 of them."""
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, Sequence)
        or isinstance(stops, (bytes, bytearray))
        or not 1 <= len(stops) <= MAX_STOP_SEQUENCES
    ):
        raise _fail("stop", "stop must be a string or a list of 1 to 4 strings.")
    if not all(isinstance(s, str) and s for s in stops):
        raise _fail("stop", "Each stop sequence must be a non-empty string.")


def check_text(value: Any, param: str) -> None:
    """A required text field: a string with something in it."""
    if not isinstance(value, str):
        raise _fail(param, f"{param} must be a string.")
    if not value.strip():
        raise _fail(param, f"{param} must not be blank.")


def check_messages(messages: Any) -> None:
    """``messages`` is a non-empty list of ``{"role", "content"}`` mappings with known roles."""
    if (
        isinstance(messages, (str, bytes, Mapping))
        or not isinstance(messages, Sequence)
        or not messages
    ):
        raise _fail("messages", "messages must be a non-empty list of messages.")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise _fail(where, f"{where} must be a mapping with a role and a content.")
        if message.get("role") not in ROLES:
            raise _fail(f"{where}.role", f"{where}.role must be one of {', '.join(ROLES)}.")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list) or not content:
            raise _fail(
                f"{where}.content",
                f"{where}.content must be a string or a list of text parts.",
            )
        for part in content:
            if (
                not isinstance(part, Mapping)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise _fail(
                    f"{where}.content",
                    f'{where}.content parts must be {{"type": "text", "text": "..."}}.',
                )


def sampling_params(
    *,
    temperature: Any = None,
    top_p: Any = None,
    max_tokens: Any = None,
    seed: Any = None,
    stop: Any = None,
) -> dict[str, Any]:
    """Check the sampling parameters given and return those that are not ``None``."""
    params: dict[str, Any] = {}
    if temperature is not None:
        check_temperature(temperature)
        params["temperature"] = temperature
    if top_p is not None:
        check_top_p(top_p)
        params["top_p"] = top_p
    if max_tokens is not None:
        check_max_tokens(max_tokens)
        params["max_tokens"] = max_tokens
    if seed is not None:
        check_seed(seed)
        params["seed"] = seed
    if stop is not None:
        check_stop(stop)
        params["stop"] = stop if isinstance(stop, str) else list(stop)
    return params


def chat_body(
    *,
    messages: Any,
    model: Any,
    temperature: Any,
    max_tokens: Any,
    top_p: Any,
    stop: Any,
    seed: Any,
    user: Any,
    stream: bool,
    extra_body: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The checked JSON body of ``POST /v1/chat/completions``.

    ``extra_body`` is merged last and unchecked: the way to send a field the SDK does not know
    (or a value it would refuse).
    """
    check_text(model, "model")
    check_messages(messages)
    body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages]}
    body.update(
        sampling_params(
            temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed, stop=stop
        )
    )
    if user is not None:
        if not isinstance(user, str):
            raise _fail("user", "user must be a string.")
        body["user"] = user
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if extra_body:
        body.update(extra_body)
    return body
