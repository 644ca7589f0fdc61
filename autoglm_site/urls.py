from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView


def healthz(request):
    """200 while the process answers at all: no dependency is asked (``/readyz`` asks them)."""
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("admin/", include("chat.admin_urls")),  # the operator's Workers page
    path("admin/", admin.site.urls),
    path("api/v1/", include("chat.urls")),
    path("api/v1/", include("tenants.urls")),
    path("v1/", include("chat.openai_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", healthz, name="healthz"),
    path("", include("chat.operations_urls")),  # /readyz, /metrics
    path("", include("chat.ui_urls")),  # the browser UI
    path("", include("tenants.ui_urls")),  # its organisation pages
]

handler404 = "autoglm_site.errors.handler404"
handler500 = "autoglm_site.errors.handler500"
