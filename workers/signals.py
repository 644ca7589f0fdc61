"""Worker start-up: load the worker's models once, before it consumes its queues.

``worker_init`` runs in the worker's main process before the pool starts; with
``--pool threads`` that is the process that serves jobs, and it has no 4-second limit (unlike
``worker_process_init`` in prefork children).
"""

import logging

from celery.signals import worker_init, worker_shutdown

logger = logging.getLogger(__name__)

# The models this process serves: set by the ``worker`` command before it starts Celery in the
# same process. Empty in every other process that loads the Celery app (web, manage.py).
_serving: list[str] = []


def models_serve(models: list[str]) -> None:
    """Make this process a worker for ``models``: they load when Celery's worker starts."""
    _serving[:] = models


@worker_init.connect
def load_models(**kwargs) -> None:
    if not _serving:
        return
    from .runtime import preload

    preload(list(_serving))


@worker_shutdown.connect
def stop_engines(**kwargs) -> None:
    """Celery's warm shutdown (SIGTERM) has let running tasks finish; stop the engines."""
    if not _serving:
        return
    from .runtime import shutdown

    shutdown()
