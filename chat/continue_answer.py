"""Continue an answer that max_tokens cut short: a new job that writes more of the same message.

The job's prompt is the conversation up to and including the partial answer, rendered so that
it ends inside that answer (the chat template's ``continue_final_message``: no end of turn after
it); when the job ends its text is appended to the answer (``jobs.job_finish``). Admission,
quotas and queueing are those of any job (``services.admit_and_create``).
"""

from typing import Any

from autoglm_site.errors import InvalidRequestError
from tenants import quotas
from tenants.models import ApiKey, Tenant

from . import jobs, pipeline, selectors, services
from .models import ChatJob, ChatSession, Message


def answer_continue(
    *,
    tenant: Tenant,
    session: ChatSession,
    message_id,
    params: dict[str, Any] | None = None,
    api_key: ApiKey | None = None,
    trace_id: str = "",
) -> tuple[ChatJob, quotas.Headers]:
    """Queue a job that writes more of the answer ``message_id``; returns it and the rate-limit
    headers. The answer must be an assistant message that ends the branch shown (400 else; a
    message of another session or tenant is a 404), and no other answer may be generating in
    the session (409). ``params`` override the session's sampling parameters for this job."""
    services.model_check(model=session.model, api_key=api_key)
    answer = selectors.message_get(
        tenant=tenant, session=session, message_id=message_id, param="message_id"
    )
    _check_continuable(tenant=tenant, session=session, answer=answer)
    merged = {**services._default_params(), **session.params, **(params or {})}
    # Nothing new is said in this turn: the plugins see no messages, only the parameters.
    _, merged = pipeline.before_admission(
        tenant=tenant, model=session.model, messages=[], params=merged
    )
    merged["continue_final_message"] = True
    prompt = jobs.session_prompt(session=session, history=jobs.continued_history(answer))

    def build() -> ChatJob:
        locked = services.session_lock_idle(tenant=tenant, session=session)
        _check_continuable(tenant=tenant, session=locked, answer=answer)  # still, under the lock
        return ChatJob(session=session, continued_message=answer)

    return services.admit_and_create(
        tenant=tenant,
        api_key=api_key,
        model=session.model,
        params=merged,
        prompt=prompt,
        trace_id=trace_id,
        build=build,
    )


def _check_continuable(*, tenant: Tenant, session: ChatSession, answer: Message) -> None:
    if answer.role != Message.Role.ASSISTANT:
        raise InvalidRequestError(
            "Only an answer of the assistant can be continued.", param="message_id"
        )
    shown = selectors.message_path_ids(tenant=tenant, session=session)
    if not shown or shown[-1] != answer.pk:
        raise InvalidRequestError(
            "Only the last message of the conversation can be continued.", param="message_id"
        )
