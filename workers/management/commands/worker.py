from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from autoglm_site.celery import app
from autoglm_site.plugins import start_plugins
from autoglm_site.telemetry import configure_tracing
from chat.jobs import model_queue
from workers.signals import models_serve


class Command(BaseCommand):
    help = (
        "Run a Celery GPU worker for one or more models: --pool threads (one model copy per "
        "process), one queue per model, the models loaded before the first job."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--models", default="", help="Comma-separated model names (default: all configured)."
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=settings.AUTOGLM_WORKER_CONCURRENCY,
            help="Jobs in flight per process (threads); default: the engine's max batch size.",
        )
        parser.add_argument("--hostname", default="", help="Celery node name.")
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args, models: str, concurrency: int, hostname: str, loglevel: str, **opts):
        names = [m.strip() for m in models.split(",") if m.strip()] or list(settings.AUTOGLM_MODELS)
        unknown = [m for m in names if m not in settings.AUTOGLM_MODELS]
        if unknown:
            raise CommandError(
                f"Unknown model(s) {unknown}; configured: {list(settings.AUTOGLM_MODELS)}"
            )
        concurrency = concurrency or settings.AUTOGLM_MAX_BATCH_SIZE
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1")
        models_serve(names, concurrency)
        configure_tracing("worker")  # before Celery starts: its instrumentation hooks its signals
        start_plugins()  # stopped at the worker's shutdown (workers/signals.py)
        argv = [
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency}",
            # Its models' queues, and the webhooks' (their tries are short HTTP calls).
            f"--queues={','.join([*map(model_queue, names), settings.AUTOGLM_WEBHOOK_QUEUE])}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
        ]
        if hostname:
            argv.append(f"--hostname={hostname}")
        app.worker_main(argv)
