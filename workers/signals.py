"""Worker start-up: load the worker's models once, before it consumes its queues.

``worker_init`` runs in the worker's main process before the pool starts; with
``--pool threads`` that is the process that serves jobs, and it has no 4-second limit (unlike
``worker_process_init`` in prefork children).
"""

import logging

from celery.signals import worker_init, worker_shutdown

from autoglm_site.plugins import stop_plugins

from .heartbeat import WorkerHeartbeat

logger = logging.getLogger(__name__)

# The models this process serves: set by the ``worker`` command before it starts Celery in the
# same process. Empty in every other process that loads the Celery app (web, manage.py).
_serving: list[str] = []
_capacity: list[int] = [0]  # its job threads
_heartbeat: list[WorkerHeartbeat] = []  # this worker's, once it serves


def models_serve(models: list[str], concurrency: int) -> None:
    """Make this process a worker for ``models`` with ``concurrency`` job threads: the models
    load when Celery's worker starts."""
    _serving[:] = models
    _capacity[0] = concurrency


@worker_init.connect
def load_models(sender, **kwargs) -> None:
    """Load the models; the queue of one that cannot be served is not consumed, and a worker
    that can serve none of its models exits (Celery has chosen the queues but not yet started
    consuming when this runs)."""
    if not _serving:
        return
    from chat.jobs import model_queue

    from .runtime import preload, worker_status

    served = preload(list(_serving))
    refused = [name for name in _serving if name not in served]
    if not served:
        # SystemExit passes through Celery's signal dispatch, which logs other exceptions and
        # carries on.
        raise SystemExit(f"worker: none of its models can be served ({', '.join(refused)})")
    sender.app.amqp.queues.deselect([model_queue(name) for name in refused])
    _heartbeat.append(WorkerHeartbeat(served, status=lambda: worker_status(_capacity[0])))
    _heartbeat[0].start()


@worker_shutdown.connect
def stop_engines(**kwargs) -> None:
    """Celery's warm shutdown (SIGTERM) has let running tasks finish; stop the engines."""
    if not _serving:
        return
    from .runtime import shutdown

    shutdown()
    for heartbeat in _heartbeat:
        heartbeat.stop()
    stop_plugins()
