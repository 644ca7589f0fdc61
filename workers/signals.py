"""Worker start-up: load the worker's models once, before it consumes its queues.

``worker_init`` runs in the worker's main process before the pool starts; with
``--pool threads`` that is the process that serves jobs, and it has no 4-second limit (unlike
``worker_process_init`` in prefork children).
"""

import logging
import os

from celery.signals import worker_init, worker_shutdown

logger = logging.getLogger(__name__)


@worker_init.connect
def load_models(**kwargs) -> None:
    models = [m for m in os.environ.get("AUTOGLM_WORKER_MODELS", "").split(",") if m]
    if not models:
        return
    from .runtime import preload

    preload(models)


@worker_shutdown.connect
def stop_engines(**kwargs) -> None:
    """Celery's warm shutdown (SIGTERM) has let running tasks finish; stop the engines."""
    if not os.environ.get("AUTOGLM_WORKER_MODELS"):
        return
    from .runtime import shutdown

    shutdown()
