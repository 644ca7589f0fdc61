import subprocess
import sys

from devtools.processes import ROOT


def test_it_serves_the_api_without_importing_torch():
    """Web processes stay light: loading every URL, view and task module must not pull torch."""
    code = (
        "import django, sys; django.setup();"
        "from django.urls import get_resolver; get_resolver().url_patterns;"
        "import autoglm_site.asgi, chat.api, workers.tasks;"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={
            "DJANGO_SETTINGS_MODULE": "autoglm_site.settings",
            "AUTOGLM_DEBUG": "1",
            "PATH": "/usr/bin:/bin",
        },
    )
    assert result.stdout.split() == ["False", "False"]
