"""Export and import of conversations: ``GET /api/v1/sessions/{id}/export``, ``GET
/api/v1/export`` (all of the organisation's) and ``POST /api/v1/import``. Thin views over
``chat.transfer_export`` and ``chat.transfer_import``."""

import json

from django.http import HttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from autoglm_site.json_body import StrictJSONParser, json_loads
from autoglm_site.schema import ERROR_REF
from tenants.apiviews import ApiView
from tenants.auth import request_tenant
from tenants.idempotency import (
    Replay,
    caller_scope,
    idempotency_begin,
    idempotency_finish,
    idempotency_release,
    idempotency_schema,
    replayed_response,
)

from . import selectors
from . import transfer_drafts as drafts
from . import transfer_export as export
from . import transfer_import as importer
from .models import Message


class ExportQuery(serializers.Serializer):
    format = serializers.ChoiceField(choices=export.FORMATS, required=False, default="json")


class OneRendererOnly(DefaultContentNegotiation):
    """JSON for errors, whatever ``?format=`` says: here it names the export's format, not a
    DRF renderer (which would answer an unknown one with a 404)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def export_response(request, *, tenant, sessions, session=None) -> HttpResponse:
    query = ExportQuery(data=request.query_params)
    query.is_valid(raise_exception=True)
    file_format = query.validated_data["format"]
    if file_format == "markdown":
        body = export.export_markdown(tenant=tenant, sessions=sessions)
        content_type = "text/markdown; charset=utf-8"
    else:
        document = export.export_document(tenant=tenant, sessions=sessions)
        body = json.dumps(document, ensure_ascii=False, indent=2)
        content_type = "application/json"
    filename = export.export_filename(session=session, tenant=tenant, file_format=file_format)
    response = HttpResponse(body.encode(), content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response


ROLE = {"type": "string", "enum": list(Message.Role.values)}
EXPORT_MESSAGE = {
    "type": "object",
    "required": ["id", "parent_id", "role", "content"],
    "properties": {
        "id": {"type": "string"},
        "parent_id": {"type": "string", "nullable": True},
        "role": ROLE,
        "content": {"type": "string"},
        "attachments": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "text"],
                "properties": {"name": {"type": "string"}, "text": {"type": "string"}},
            },
        },
        "created_at": {"type": "string", "format": "date-time", "nullable": True},
    },
}
EXPORT_CONVERSATION = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "title": {"type": "string"},
        "model": {"type": "string"},
        "system_prompt": {"type": "string"},
        "params": {"type": "object"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "pinned": {"type": "boolean"},
        "archived": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time", "nullable": True},
        "current_message_id": {"type": "string", "nullable": True},
        "messages": {"type": "array", "items": EXPORT_MESSAGE},
    },
}
EXPORT = {
    "type": "object",
    "required": ["format", "version", "conversations"],
    "properties": {
        "format": {"type": "string", "enum": [export.FORMAT]},
        "version": {"type": "integer", "enum": [export.VERSION]},
        "exported_at": {"type": "string", "format": "date-time"},
        "conversations": {"type": "array", "items": EXPORT_CONVERSATION},
    },
}
CHATGPT = {
    "type": "array",
    "description": "ChatGPT's conversations.json (Settings > Data controls > Export).",
    "items": {
        "type": "object",
        "required": ["mapping"],
        "properties": {
            "title": {"type": "string", "nullable": True},
            "create_time": {"type": "number", "nullable": True},
            "current_node": {"type": "string", "nullable": True},
            "mapping": {"type": "object", "additionalProperties": {"type": "object"}},
        },
    },
}
EXPORT_SCHEMA = {
    "parameters": [
        OpenApiParameter(
            "format",
            str,
            enum=list(export.FORMATS),
            description="json (default: every branch, to import again) or markdown (the "
            "branch shown, to read)",
        )
    ],
    "responses": {
        (200, "application/json"): OpenApiResponse(EXPORT, description="A file to save."),
        (200, "text/markdown"): OpenApiResponse(OpenApiTypes.STR, description="A file to save."),
    },
}


class SessionExportApi(ApiView):
    content_negotiation_class = OneRendererOnly

    @extend_schema(summary="Export a conversation as JSON or Markdown", **EXPORT_SCHEMA)
    def get(self, request, session_id):
        tenant = request_tenant(request)
        session = selectors.session_get(tenant=tenant, session_id=session_id)
        return export_response(request, tenant=tenant, sessions=[session], session=session)


class ExportApi(ApiView):
    content_negotiation_class = OneRendererOnly

    @extend_schema(summary="Export all of the organisation's conversations", **EXPORT_SCHEMA)
    def get(self, request):
        tenant = request_tenant(request)
        return export_response(
            request, tenant=tenant, sessions=selectors.session_list(tenant=tenant)
        )


class ImportJSONParser(StrictJSONParser):
    """The import's JSON body, up to the import's own cap (larger than other requests')."""

    def parse(self, stream, media_type=None, parser_context=None):
        if stream is None:
            return json_loads(b"")
        raw = stream.read(drafts.max_bytes() + 1)
        if len(raw) > drafts.max_bytes():
            raise drafts.too_large()
        return json_loads(raw)


class ImportMultiPartParser(MultiPartParser):
    """A file uploaded as ``file`` (a form of the browser UI, or ``curl -F file=@...``)."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if length > drafts.max_bytes() + 64 * 1024:  # room for the form's own parts
            raise drafts.too_large()
        return super().parse(stream, media_type, parser_context)


def import_data(request):
    """The parsed JSON to import: the body, or the uploaded file's content."""
    if request.content_type.startswith("multipart/"):
        upload = request.FILES.get("file")
        if upload is None:
            raise drafts.invalid("Upload the file as the form field 'file'.", "file")
        if upload.size > drafts.max_bytes():
            raise drafts.too_large()
        return json_loads(upload.read())
    return request.data


class ImportedOutput(serializers.Serializer):
    id = serializers.UUIDField()
    title = serializers.CharField()
    model = serializers.CharField()
    messages = serializers.IntegerField(source="message_count")


class ImportResultOutput(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = ImportedOutput(many=True)


class ImportApi(ApiView):
    parser_classes = [ImportJSONParser, ImportMultiPartParser]

    @extend_schema(
        request={
            "application/json": {"oneOf": [EXPORT, CHATGPT]},
            "multipart/form-data": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            },
        },
        summary="Import conversations: an autoglm export or ChatGPT's conversations.json",
        description="Each becomes a new conversation (new ids; the default model where its own "
        "is not served here), in one transaction: all of the file or nothing.",
        **idempotency_schema(
            {
                201: ImportResultOutput,
                413: OpenApiResponse(ERROR_REF, description="Over the import's size cap."),
            }
        ),
    )
    def post(self, request):
        tenant = request_tenant(request)
        data = import_data(request)
        outcome = idempotency_begin(
            request, scope=caller_scope(tenant, request.auth, request.user), data=data
        )
        if isinstance(outcome, Replay):
            return replayed_response(outcome)
        try:
            drafts = importer.drafts_read(data)
            sessions = importer.conversations_import(
                tenant=tenant, drafts=drafts, api_key=request.auth
            )
        except BaseException:
            if outcome is not None:
                idempotency_release(outcome)
            raise
        body = ImportResultOutput({"object": "list", "data": sessions}).data
        if outcome is not None:
            idempotency_finish(outcome, status=201, body=body)
        return Response(body, status=status.HTTP_201_CREATED)
