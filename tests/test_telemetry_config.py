"""Tracing is on only where the standard OTEL_* variables ask for an exporter; otherwise a
process installs nothing, and its spans are the API's no-ops."""

import os
import subprocess
import sys

import pytest

from autoglm_site.telemetry import tracing_wanted
from devtools.processes import ROOT

ENDPOINT = "http://127.0.0.1:9"

PROBE = (
    "import autoglm_site.asgi;"
    "from django.conf import settings;"
    "from opentelemetry import trace;"
    "print(type(trace.get_tracer_provider()).__name__,"
    " any('opentelemetry' in m for m in settings.MIDDLEWARE))"
)


def web_installs(**otel: str) -> list[str]:
    """The tracer provider a web process has once its ASGI app is loaded, and whether Django's
    instrumentation is in its middleware, with these OTEL_* variables and no others."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env.update(AUTOGLM_DEBUG="1", **otel)
    env.pop("SECRET_KEY", None)
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.parametrize(
    "otel, wanted",
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "named-only"}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{ENDPOINT}/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ],
)
def test_it_wants_traces_only_where_an_exporter_is_configured(otel, wanted):
    assert tracing_wanted(otel) is wanted


def test_it_installs_nothing_in_a_web_process_without_otel_settings():
    assert web_installs() == ["ProxyTracerProvider", "False"]
    assert web_installs(OTEL_TRACES_EXPORTER="none", OTEL_EXPORTER_OTLP_ENDPOINT=ENDPOINT) == [
        "ProxyTracerProvider",
        "False",
    ]


def test_it_installs_the_provider_and_django_instrumentation_for_an_otlp_endpoint():
    assert web_installs(OTEL_EXPORTER_OTLP_ENDPOINT=ENDPOINT) == ["TracerProvider", "True"]
