"""Python SDK of autoglm: chat completions, sessions and jobs, sync and async.

>>> import autoglm
>>> client = autoglm.AutoGLMClient(api_key="sk-...", base_url="http://127.0.0.1:8000")
>>> response = client.chat(messages=[{"role": "user", "content": "Hi"}], model="autoglm-demo")
>>> print(response["content"])
"""

from ._async.client import AsyncAutoGLMClient
from ._async.resources import AsyncJobs, AsyncModels, AsyncSessions, AsyncShares
from ._async.stream import AsyncChatStream
from ._core import RetryPolicy
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    AutoGLMError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from ._sync.client import AutoGLMClient
from ._sync.resources import Jobs, Models, Sessions, Shares
from ._sync.stream import ChatStream
from ._types import ChatMessage, ChatResponse, JobEvent, Usage
from ._version import __version__
from .webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "verify_webhook",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncAutoGLMClient",
    "AsyncChatStream",
    "AsyncJobs",
    "AsyncModels",
    "AsyncSessions",
    "AsyncShares",
    "AuthenticationError",
    "AutoGLMClient",
    "AutoGLMError",
    "BadRequestError",
    "ChatMessage",
    "ChatResponse",
    "ChatStream",
    "ConflictError",
    "JobEvent",
    "Jobs",
    "Models",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "Sessions",
    "Shares",
    "Usage",
    "ValidationError",
    "WebhookVerificationError",
    "__version__",
]
