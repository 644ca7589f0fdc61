"""What clients see of a response (OpenAI's Responses API): the ``response`` object, its output
items (the answer's text as a ``message``, each tool call as a ``function_call``), and the typed
SSE events of a streamed one."""

import json
from collections.abc import AsyncIterator

from . import events
from .models import ChatJob
from .openai_stream import cancel_job, restart_error
from .presenters import job_usage, tool_call_prefix, tool_parser_for
from .responses import response_id
from .streaming import job_events


def _status(job: ChatJob) -> str:
    if job.status == ChatJob.Status.SUCCEEDED:
        return "incomplete" if job.finish_reason == "length" else "completed"
    return {
        ChatJob.Status.FAILED: "failed",
        ChatJob.Status.CANCELLED: "cancelled",
    }.get(job.status, "in_progress")


def message_item(job: ChatJob, text: str, status: str = "completed") -> dict:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {
        "type": "message",
        "id": f"msg_{job.id.hex}",
        "status": status,
        "role": "assistant",
        "content": [part] if text or status == "completed" else [],
    }


def call_item(job: ChatJob, index: int, call: dict, status: str = "completed") -> dict:
    return {
        "type": "function_call",
        "id": f"fc_{job.id.hex}_{index}",
        "call_id": call["id"],
        "name": call["function"]["name"],
        "arguments": call["function"]["arguments"],
        "status": status,
    }


def output_items(job: ChatJob) -> list[dict]:
    if not job.is_finished:
        return []
    text, calls = job.output, []
    parser = tool_parser_for(job)
    if parser is not None:
        content, calls = parser.parse(text, call_id_prefix=tool_call_prefix(job, 0))
        text = content or ""
    items = [message_item(job, text)] if text or not calls else []
    return items + [call_item(job, index, call) for index, call in enumerate(calls)]


def _usage(job: ChatJob) -> dict | None:
    usage = job_usage(job)
    if usage is None:
        return None
    return {
        "input_tokens": usage["prompt_tokens"],
        "input_tokens_details": usage["prompt_tokens_details"],
        "output_tokens": usage["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage["total_tokens"],
    }


def response_tools(job: ChatJob) -> list[dict]:
    """The job's tools as the Responses API writes them (flat: name and parameters beside type)."""
    return [{"type": "function", **tool["function"]} for tool in job.params.get("tools") or ()]


def _tool_choice(job: ChatJob):
    choice = job.params.get("tool_choice", "auto")
    if isinstance(choice, dict):
        return {"type": "function", "name": choice["function"]["name"]}
    return choice


def response_body(job: ChatJob) -> dict:
    meta = job.params.get("response", {})
    status = _status(job)
    error = None
    if status == "failed":
        error = {"code": job.error_code or "server_error", "message": job.error}
    return {
        "id": response_id(job),
        "object": "response",
        "created_at": int(job.created_at.timestamp()),
        "status": status,
        "model": job.model,
        "output": output_items(job),
        "usage": _usage(job),
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": meta.get("instructions"),
        "metadata": meta.get("metadata") or {},
        "previous_response_id": meta.get("previous_response_id"),
        "store": meta.get("store", True),
        "max_output_tokens": job.params.get("max_tokens"),
        "temperature": job.params.get("temperature"),
        "top_p": job.params.get("top_p"),
        "tools": response_tools(job),
        "tool_choice": _tool_choice(job),
        "parallel_tool_calls": job.params.get("parallel_tool_calls", True),
        "text": {"format": meta.get("format") or {"type": "text"}},
        "truncation": "disabled",
    }


class _Events:
    """Numbers the events of one stream, as SSE frames (``event:`` line and JSON data)."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, type_: str, **data) -> bytes:
        payload = {"type": type_, "sequence_number": self.sequence, **data}
        self.sequence += 1
        body = json.dumps(payload, separators=(",", ":"))
        return f"event: {type_}\ndata: {body}\n\n".encode()


async def response_events(job: ChatJob, *, cancel: bool = True) -> AsyncIterator[bytes]:
    """The response's typed events: created, in_progress, then its message's text deltas and
    its function calls as they come, then completed (or failed, or incomplete) with the whole
    response. A client that hangs up before the end cancels the job."""
    event = _Events()
    parser = tool_parser_for(job)
    tools = parser.stream(tool_call_prefix(job, 0)) if parser is not None else None
    message_id, text, message_open = f"msg_{job.id.hex}", "", False
    outputs = 0  # output items so far
    ended = False
    try:
        yield event("response.created", response=response_body(job))
        yield event("response.in_progress", response=response_body(job))
        async for item in job_events(job, keepalive=True):
            if item is None:
                yield b": keep-alive\n\n"
                continue
            if item.type == events.TOKEN:
                deltas = (
                    tools.feed(item.data["text"]) if tools else [{"content": item.data["text"]}]
                )
            elif item.type in events.FINAL:
                deltas = tools.finish() if tools else []
            elif text or outputs:  # a restart after output went out: the client must retry
                ended = True
                await cancel_job(job)
                error = restart_error()["error"]
                yield event("error", code=error["code"], message=error["message"], param=None)
                break
            else:  # a restart before anything went out: start over
                tools = parser.stream(tool_call_prefix(job, 0)) if parser is not None else None
                deltas = []
            for delta in deltas:
                if delta.get("content"):
                    if not message_open:
                        message_open = True
                        yield event(
                            "response.output_item.added",
                            output_index=outputs,
                            item=message_item(job, "", "in_progress"),
                        )
                        yield event(
                            "response.content_part.added",
                            item_id=message_id,
                            output_index=outputs,
                            content_index=0,
                            part={"type": "output_text", "text": "", "annotations": []},
                        )
                    text += delta["content"]
                    yield event(
                        "response.output_text.delta",
                        item_id=message_id,
                        output_index=outputs,
                        content_index=0,
                        delta=delta["content"],
                        logprobs=[],
                    )
                for call in delta.get("tool_calls", ()):
                    if message_open:
                        for frame in _close_message(event, job, outputs, text):
                            yield frame
                        message_open, outputs = False, outputs + 1
                    for frame in _call_events(event, job, outputs, call):
                        yield frame
                    outputs += 1
            if item.type in events.FINAL:
                if message_open:
                    for frame in _close_message(event, job, outputs, text):
                        yield frame
                ended = True
                final = await ChatJob.objects.aget(pk=job.pk)
                body = response_body(final)
                kind = {"completed": "completed", "incomplete": "incomplete"}.get(
                    body["status"], "failed"
                )
                yield event(f"response.{kind}", response=body)
                break
    finally:
        if not ended and cancel:
            await cancel_job(job)


def _close_message(event: _Events, job: ChatJob, index: int, text: str) -> list[bytes]:
    message_id = f"msg_{job.id.hex}"
    part = {"type": "output_text", "text": text, "annotations": []}
    return [
        event(
            "response.output_text.done",
            item_id=message_id,
            output_index=index,
            content_index=0,
            text=text,
            logprobs=[],
        ),
        event(
            "response.content_part.done",
            item_id=message_id,
            output_index=index,
            content_index=0,
            part=part,
        ),
        event("response.output_item.done", output_index=index, item=message_item(job, text)),
    ]


def _call_events(event: _Events, job: ChatJob, index: int, call: dict) -> list[bytes]:
    position = call["index"]
    item = call_item(job, position, call)
    return [
        event(
            "response.output_item.added",
            output_index=index,
            item={**item, "arguments": "", "status": "in_progress"},
        ),
        event(
            "response.function_call_arguments.delta",
            item_id=item["id"],
            output_index=index,
            delta=item["arguments"],
        ),
        event(
            "response.function_call_arguments.done",
            item_id=item["id"],
            output_index=index,
            arguments=item["arguments"],
        ),
        event("response.output_item.done", output_index=index, item=item),
    ]
