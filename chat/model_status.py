"""Which configured models a worker refused to serve, and why: a Redis hash every process sees.

A worker that cannot load a model when it starts records the reason and does not consume the
model's queue; a worker that loads it clears the record. The web answers a request for a refused
model ``503 model_unavailable`` up front, instead of queueing a job that no worker will take.
"""

from autoglm_site.errors import ModelUnavailableError
from autoglm_site.redisconn import redis_client

_REFUSED = "autoglm:models:refused"
# A refused model stays refused until a worker that can load it starts: not soon.
REFUSED_RETRY_AFTER_S = 60


def model_refused(*, model: str, reason: str) -> None:
    redis_client().hset(_REFUSED, model, reason)


def model_served(*, model: str) -> None:
    redis_client().hdel(_REFUSED, model)


def model_refusal(*, model: str) -> str | None:
    """Why the workers refused ``model``, or None when none did (or one has loaded it since)."""
    return redis_client().hget(_REFUSED, model)


def model_serving_check(*, model: str) -> None:
    """Refuse a request for a model the workers refused, naming their reason."""
    reason = model_refusal(model=model)
    if reason is not None:
        raise ModelUnavailableError(
            f"The model '{model}' is unavailable: the worker could not load it ({reason}).",
            retry_after=REFUSED_RETRY_AFTER_S,
        )
