"""``POST /api/v1/sessions/{id}/messages/{message_id}/continue``: write more of an answer that
max_tokens cut short (chat/continue_answer.py). The browser UI calls it too."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.response import Response

from autoglm_site.schema import ERROR_REF, ERRORS
from tenants.apiviews import ApiView
from tenants.auth import request_tenant
from tenants.idempotency import IN_FLIGHT, caller_scope, idempotency_schema, idempotent

from . import selectors
from .continue_answer import answer_continue
from .presenters import JobOutput, job_accepted
from .sampling import SamplingInput


class MessageContinueApi(ApiView):
    Input = SamplingInput

    @extend_schema(
        request=Input,
        summary="Continue an answer (cut by max_tokens): 202 with the job that writes more of it",
        description="The job's text is appended to the same message (no new message); its "
        "`done` event names that message. Only the last message of the conversation, an "
        "answer, can be continued (else 400).",
        **idempotency_schema(
            {
                202: JobOutput,
                409: OpenApiResponse(
                    ERROR_REF,
                    description="Another answer of the session is still queued or generating "
                    "(`conflict`). Or: " + IN_FLIGHT,
                ),
                429: OpenApiResponse(ERROR_REF, description=ERRORS["429"]),
            }
        ),
    )
    def post(self, request, session_id, message_id):
        tenant = request_tenant(request)
        session = selectors.session_get(tenant=tenant, session_id=session_id)
        scope = caller_scope(tenant, request.auth, request.user)

        def create() -> Response:
            data = self.Input(data=request.data or {})
            data.is_valid(raise_exception=True)
            job, limits = answer_continue(
                tenant=tenant,
                session=session,
                message_id=message_id,
                params=dict(data.validated_data),
                api_key=request.auth,
                trace_id=request.request_id,
            )
            return job_accepted(request, job, limits)

        return idempotent(request, scope=scope, create=create)
