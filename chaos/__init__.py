"""`make chaos`: the fault runs of issue 14, too long for the suite, against the whole stack.

Real PostgreSQL, Redis, uvicorn and two Celery workers on the demo model, all on loopback:

- faults: jobs over two workers on one queue while one worker is SIGKILLed three times, Redis
  restarts once (losing its data: no persistence) and PostgreSQL restarts once;
- streams: OpenAI streams cut after their first chunk;
- soak: many short jobs, with the processes' resources measured before and after.

Each prints what it checked; the run ends with one table and exits non-zero on any loss.
"""
