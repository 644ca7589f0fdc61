"""One retry loop for the writes that must not be lost to an outage: a job's final database
write (the worker) and its after-commit Redis writes (settlement, final event)."""

import time
from collections.abc import Callable

from django.conf import settings


def retry_through_outage(
    write: Callable[[], object],
    *,
    errors: tuple[type[BaseException], ...],
    before_retry: Callable[[BaseException, float], None] = lambda exc, delay: None,
) -> None:
    """Run ``write`` (idempotent) until it stops raising ``errors``, backing off from 0.25 s to
    5 s, for up to AUTOGLM_FINAL_WRITE_RETRY_S; then the last error is raised.
    ``before_retry(error, delay)`` runs before each wait (to log, to drop a broken connection)."""
    deadline = time.monotonic() + settings.AUTOGLM_FINAL_WRITE_RETRY_S
    delay = 0.25
    while True:
        try:
            write()
            return
        except errors as exc:
            if time.monotonic() + delay > deadline:
                raise
            before_retry(exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
