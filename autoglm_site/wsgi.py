import atexit
import os

from django.core.wsgi import get_wsgi_application

from autoglm_site.plugins import start_plugins, stop_plugins
from autoglm_site.telemetry import configure_tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "autoglm_site.settings")

# Before the app loads its middleware: Django's instrumentation adds its own to the list.
configure_tracing("web")
application = get_wsgi_application()
atexit.register(stop_plugins)
start_plugins()
