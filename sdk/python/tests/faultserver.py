"""A scriptable fault-injecting HTTP server on a real 127.0.0.1 socket, for the SDK's tests.

Each test queues the answers, one per incoming request, and then reads back what the server saw
(``server.attempts``). Every answer closes its connection, so each attempt is a fresh one.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import autoglm

Action = Callable[["Handler"], None]


@dataclass
class Attempt:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultServerHTTP

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        fault = self.server.fault
        fault.attempts.append(
            Attempt(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        try:
            action = fault.script.popleft()
        except IndexError:
            action = respond(599, {"error": {"message": "unscripted request", "code": "test"}})
        self.close_connection = True
        action(self)

    do_GET = do_POST = do_PATCH = do_DELETE = _handle

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-request-id", f"req_test_{len(self.server.fault.attempts)}")
        self.send_header("connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class FaultServerHTTP(ThreadingHTTPServer):
    daemon_threads = True
    fault: FaultServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up on a slow answer is expected here


class FaultServer:
    """The server: ``url``, the ``script`` of answers to come, the ``attempts`` seen."""

    def __init__(self) -> None:
        self.script: deque[Action] = deque()
        self.attempts: list[Attempt] = []
        self._http = FaultServerHTTP(("127.0.0.1", 0), Handler)
        self._http.fault = self
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def then(self, *actions: Action) -> FaultServer:
        """Queue answers for the next requests, in order."""
        self.script.extend(actions)
        return self

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def error_body(message: str, code: str, type_: str = "invalid_request_error", param=None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def respond(status: int, payload: Any = None, headers: dict[str, str] | None = None) -> Action:
    """Answer with this status, JSON body and headers."""
    return lambda handler: handler.send_json(status, payload, headers)


def fail(status: int, code: str, type_: str = "server_error", **headers: str) -> Action:
    """Answer with an error in the server's shape (``retry_after="1"`` sets retry-after)."""
    extra = {name.replace("_", "-"): value for name, value in headers.items()}
    return respond(status, error_body(f"injected {status}", code, type_), extra)


def drop() -> Action:
    """Read the request, then close the connection without a word."""

    def action(handler: Handler) -> None:
        handler.wfile.flush()

    return action


def slow(seconds: float, then: Action) -> Action:
    """Wait before answering (to make the client time out)."""

    def action(handler: Handler) -> None:
        time.sleep(seconds)
        then(handler)

    return action


def sse(*frames: str | dict, end: bool = True, retry_ms: int | None = None) -> Action:
    """A 200 event stream, chunk by chunk: a dict is sent as ``data: <json>``, a string as it
    is; ``end=False`` drops the connection after the frames (no terminating chunk)."""

    def action(handler: Handler) -> None:
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream; charset=utf-8")
        handler.send_header("transfer-encoding", "chunked")
        handler.send_header("x-request-id", f"req_test_{len(handler.server.fault.attempts)}")
        handler.send_header("connection", "close")
        handler.end_headers()
        if retry_ms is not None:
            handler.send_chunk(f"retry: {retry_ms}\n\n".encode())
        for frame in frames:
            text = frame if isinstance(frame, str) else f"data: {json.dumps(frame)}\n\n"
            handler.send_chunk(text.encode())
        if end:
            handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()

    return action


def completion(content: str = "Hello there", finish_reason: str = "stop") -> dict:
    """A ``chat.completion`` body."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def chunk(content: str | None = None, finish_reason: str | None = None, **extra: Any) -> dict:
    """A ``chat.completion.chunk`` with one choice (or the usage chunk with ``choices=[]``)."""
    base = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "model": "test-model"}
    if "choices" in extra:
        return {**base, **extra}
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return {**base, "choices": [choice], **extra}


USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def chat_stream(*pieces: str, usage: dict | None = USAGE) -> Action:
    """A whole, well-formed chat stream of these text pieces."""
    frames: list[str | dict] = [chunk("")]
    frames += [chunk(p) for p in pieces[:-1]]
    frames.append(chunk(pieces[-1], "stop"))
    if usage:
        frames.append(chunk(choices=[], usage=usage))
    frames.append("data: [DONE]\n\n")
    return sse(*frames)


def client_options(server: FaultServer, **kwargs: Any) -> dict[str, Any]:
    """A client's arguments for the fault server, with short backoff unless told otherwise."""
    return {
        "api_key": "sk-test",
        "base_url": server.url,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
        **kwargs,
    }


def make_async_client(server: FaultServer, **kwargs: Any) -> autoglm.AsyncAutoGLMClient:
    return autoglm.AsyncAutoGLMClient(**client_options(server, **kwargs))
