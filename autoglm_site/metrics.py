"""The Prometheus metrics every process records (names after vLLM's, with an ``autoglm_``
prefix). Each process records into its own registry: the web processes share a multiprocess
directory (``autoglm_site.asgi``), the workers publish theirs through Redis
(``chat.worker_metrics``), and ``GET /metrics`` shows them all (``chat.metrics_view``).

Series labelled ``tenant`` are a tenant's own figures (its slug); every worker series also
gets a ``worker`` label when the web shows it. Gauges that are read at scrape time (queue
depth, live workers) are not here: ``chat.metrics_view`` computes them.
"""

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# One sample per counter and histogram, not a second "_created" one beside it.
disable_created_metrics()

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 12, 20, 30, 60, 120, 300, 600)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 3, 5, 10, 20, 60, 120)
_TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)
_ADMISSION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

# -- the worker's: what its engines and job threads do ----------------------------------------
REQUESTS_RUNNING = Gauge(
    "autoglm_num_requests_running",
    "Jobs this worker has claimed and not ended (in the engine's batch or waiting for a place).",
    ["model"],
)
ENGINE_BATCH_SIZE = Gauge(
    "autoglm_engine_batch_size", "Sequences in the engine's running batch.", ["model"]
)
ENGINE_BATCH_CAPACITY = Gauge(
    "autoglm_engine_batch_capacity", "The engine's most sequences per batch.", ["model"]
)
KV_CACHE_USAGE = Gauge(
    "autoglm_kv_cache_usage_ratio",
    "KV cache in use, as a fraction of the engine's budget (AUTOGLM_KV_CACHE_MB).",
    ["model"],
)
TIME_TO_FIRST_TOKEN = Histogram(
    "autoglm_time_to_first_token_seconds",
    "From the request's admission to its first generated token.",
    ["model"],
    buckets=_TTFT_BUCKETS,
)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "autoglm_time_per_output_token_seconds",
    "Decode time per token after the first.",
    ["model"],
    buckets=_TPOT_BUCKETS,
)
QUEUE_TIME = Histogram(
    "autoglm_request_queue_time_seconds",
    "From the job being queued to a worker claiming it.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
E2E_LATENCY = Histogram(
    "autoglm_e2e_request_latency_seconds",
    "From the request's admission to the job's end.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)

# -- wherever a job ends (the worker, or the web for a job cancelled while queued) -------------
PROMPT_TOKENS = Counter(
    "autoglm_prompt_tokens", "Prompt tokens of ended jobs.", ["model", "tenant"]
)
GENERATION_TOKENS = Counter(
    "autoglm_generation_tokens", "Generated tokens of ended jobs.", ["model", "tenant"]
)
REQUESTS_FINISHED = Counter(
    "autoglm_request_finished",
    "Ended jobs by why they ended: stop, length, cancelled, or the error code of a failed one.",
    ["model", "finish_reason"],
)

# -- the web's ---------------------------------------------------------------------------------
REQUESTS_REJECTED = Counter(
    "autoglm_requests_rejected",
    "Generation requests refused at admission, by error code (rate_limit_exceeded, "
    "insufficient_quota, server_overloaded, model_unavailable).",
    ["model", "tenant", "code"],
)
ADMISSION_TIME = Histogram(
    "autoglm_admission_seconds",
    "Time to admit a generation request: quota checks, storing and queueing the job.",
    ["model"],
    buckets=_ADMISSION_BUCKETS,
)
HTTP_REQUESTS = Counter(
    "autoglm_http_requests", "HTTP requests by route and status.", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "autoglm_http_request_duration_seconds",
    "Time to the response's headers (a stream's body is not counted).",
    ["route", "method"],
)
