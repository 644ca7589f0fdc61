"""The plugins' answer stages on the worker: the text the engine generates goes through each
running plugin's ``answer_stage`` in turn, chunk by chunk, before it is streamed; what a stage
holds back comes out when the answer ends. The stored answer is what the stages gave out."""

from __future__ import annotations

import logging

from autoglm_site import plugins
from chat.models import ChatJob

logger = logging.getLogger(__name__)


class PluginStageError(Exception):
    """A plugin's answer stage raised: the job fails as plugin_error, naming the plugin."""


class AnswerPipeline:
    def __init__(self, job: ChatJob) -> None:
        context = plugins.AnswerContext(job_id=str(job.id), tenant=job.tenant.slug, model=job.model)
        self.stages = []
        for plugin in plugins.host().stages(job.tenant.plugin_stages):
            make = getattr(plugin, "answer_stage", None)
            stage = self._call(plugin.name, make, context) if make else None
            if stage is not None:
                self.stages.append((plugin.name, stage))
        self.given_out: list[str] = []

    @property
    def active(self) -> bool:
        return bool(self.stages)

    def feed(self, text: str) -> str:
        for name, stage in self.stages:
            text = self._call(name, stage.feed, text)
        self.given_out.append(text)
        return text

    def finish(self) -> str:
        """What the stages still hold, each one's rest fed through the stages after it."""
        rest = ""
        for name, stage in self.stages:
            rest = self._call(name, stage.feed, rest) + self._call(name, stage.finish)
        self.given_out.append(rest)
        return rest

    @property
    def text(self) -> str:
        return "".join(self.given_out)

    @staticmethod
    def _call(name: str, method, *args):
        try:
            return method(*args)
        except Exception as exc:
            logger.exception("plugin answer stage failed", extra={"plugin": name})
            raise PluginStageError(f"The plugin {name!r} failed on this answer.") from exc
