from django.contrib import admin
from django.db import connection
from django.http import JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from .errors import OUTAGES
from .redisconn import redis_client


def healthz(request):
    """200 when PostgreSQL and Redis answer; 503 naming the one that does not."""
    checks = {"database": _check(_database_ping), "redis": _check(_redis_ping)}
    healthy = all(state == "ok" for state in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503
    )


def _check(ping) -> str:
    try:
        ping()
    except OUTAGES as exc:
        return f"down: {type(exc).__name__}"
    return "ok"


def _database_ping() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis_ping() -> None:
    redis_client().ping()


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("chat.urls")),
    path("api/v1/", include("tenants.urls")),
    path("v1/", include("chat.openai_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", healthz, name="healthz"),
    path("", include("chat.ui_urls")),  # the browser UI
    path("", include("tenants.ui_urls")),  # its organisation pages
]

handler404 = "autoglm_site.errors.handler404"
handler500 = "autoglm_site.errors.handler500"
