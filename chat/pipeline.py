"""The plugins' stages around a request (``autoglm_site.plugins`` defines the hook points):
before admission, and when a job ends. The answer's stage runs on the worker
(``workers.answer_stages``). A stage that breaks fails its request, never the process."""

from __future__ import annotations

import logging

from autoglm_site import plugins
from autoglm_site.errors import ApplicationError
from tenants.models import Tenant

from .models import ChatJob

logger = logging.getLogger(__name__)


class PluginRefusedError(ApplicationError):
    """A plugin refused the request (its own code, e.g. ``guardrail_refused``)."""


class PluginFailedError(ApplicationError):
    status_code = 500
    type = "server_error"
    code = "plugin_error"


def before_admission(*, tenant: Tenant, model: str, messages: list[dict], params: dict):
    """The request's messages and parameters after the ``before_admission`` of each of the
    tenant's stages (``PluginHost.stages``)."""
    admission = plugins.Admission(tenant=tenant.slug, model=model, messages=messages, params=params)
    for plugin in plugins.host().stages(tenant.plugin_stages):
        hook = getattr(plugin, "before_admission", None)
        if hook is None:
            continue
        try:
            admission = hook(admission) or admission
        except plugins.PluginRefusal as refusal:
            raise PluginRefusedError(refusal.message, code=refusal.code) from refusal
        except Exception as exc:
            logger.exception("plugin stage failed", extra={"plugin": plugin.name})
            raise PluginFailedError(
                f"The plugin {plugin.name!r} failed on this request.", code="plugin_error"
            ) from exc
    return admission.messages, admission.params


def job_ended(job: ChatJob) -> None:
    """Tell the running plugins that ``job`` ended; a plugin that raises is logged only."""
    event = plugins.JobEnded(
        job_id=str(job.id),
        tenant=job.tenant.slug,
        model=job.model,
        status=job.status,
        finish_reason=job.ending_reason,
        prompt_tokens=job.prompt_tokens or 0,
        completion_tokens=job.completion_tokens or 0,
        session_id=str(job.session_id) if job.session_id else None,
        callback_url=job.callback_url,
        error=job.error if job.status == ChatJob.Status.FAILED else "",
    )
    for plugin in plugins.host().running():
        hook = getattr(plugin, "job_ended", None)
        if hook is None:
            continue
        try:
            hook(event)
        except Exception:
            logger.exception("plugin job_ended failed", extra={"plugin": plugin.name})
