"""Python SDK of autoglm: chat completions, sessions and jobs, sync and async.

>>> import autoglm
>>> client = autoglm.AutoGLMClient(api_key="sk-...", base_url="http://127.0.0.1:8000")
>>> response = client.chat(messages=[{"role": "user", "content": "Hi"}], model="autoglm-demo")
>>> print(response["content"])
"""

from ._async_client import (
    AsyncAutoGLMClient,
    AsyncChatStream,
    AsyncJobs,
    AsyncModels,
    AsyncSessions,
)
from ._client import AutoGLMClient, ChatStream, Jobs, Models, Sessions
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
from ._types import ChatMessage, ChatResponse, JobEvent, Usage
from ._version import __version__

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncAutoGLMClient",
    "AsyncChatStream",
    "AsyncJobs",
    "AsyncModels",
    "AsyncSessions",
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
    "Usage",
    "ValidationError",
    "__version__",
]
