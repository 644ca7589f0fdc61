"""The admin's Workers page: the live workers (their models, jobs, batch occupancy, KV cache
and last heartbeat), each model's queue, and this web process's plugins with their state.
Staff only; read from Redis at each view."""

from django.conf import settings
from django.contrib import admin
from django.template.response import TemplateResponse

from autoglm_site import plugins

from .capacity import max_queue_depth, queue_depth
from .worker_registry import live_workers, workers_serving


def workers_view(request):
    workers = live_workers()
    models = [
        {
            "name": model,
            "workers": len(workers_serving(model, workers)),
            "depth": queue_depth(model),
            "bound": max_queue_depth(model, workers),
        }
        for model in settings.AUTOGLM_MODELS
    ]
    rows = [
        {
            "id": info.id,
            "models": info.models,
            "running": sum(info.running.values()),
            "capacity": info.capacity,
            "batch": sorted(info.batch.items()),
            "max_batch": info.max_batch,
            "kv_cache": sorted((model, used * 100) for model, used in info.kv_cache.items()),
            "seconds_ago": info.seconds_since_beat,
        }
        for info in workers
    ]
    context = {**admin.site.each_context(request), "title": "Workers", "models": models}
    context["workers"] = rows
    context["plugins"] = plugins.host().plugins
    return TemplateResponse(request, "admin/chat/workers.html", context)
