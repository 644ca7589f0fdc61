"""``GET /api/v1/search``: search the organisation's conversations (chat/search.py)."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from autoglm_site.schema import list_of
from tenants.apiviews import ApiView
from tenants.auth import request_tenant

from . import search


class SearchInput(serializers.Serializer):
    # Checked by ``search.search_query_clean``, for one message whether q is missing or blank.
    q = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=50, default=20)


class SearchHitOutput(serializers.Serializer):
    object = serializers.SerializerMethodField()
    session_id = serializers.UUIDField()
    session_title = serializers.CharField()
    archived = serializers.BooleanField(help_text="Whether the conversation is archived.")
    message_id = serializers.UUIDField(
        allow_null=True, help_text="The message that matched; null when the title matched."
    )
    role = serializers.CharField(allow_null=True, help_text="The message's; null for a title.")
    snippet = serializers.CharField(
        help_text="Plain text (never HTML): an excerpt of the text around its first match."
    )
    highlights = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField(), min_length=2, max_length=2),
        help_text="The matches in the snippet, as [start, end) offsets in Unicode code points.",
    )
    created_at = serializers.DateTimeField()

    def get_object(self, hit) -> str:
        return "chat.search_hit"


class SearchApi(ApiView):
    @extend_schema(
        parameters=[
            OpenApiParameter("q", str, required=True, description="1 to 200 characters"),
            OpenApiParameter("limit", int, description="1 to 50, default 20"),
        ],
        responses=list_of(SearchHitOutput, name="SearchHitList", paged=False),
        operation_id="api_v1_search",
        summary="Search the titles and messages of the organisation's conversations",
        description="Every message on every branch, archived conversations too (marked). "
        "Best matches first, then the newest. Full-text (web-search syntax: words in any "
        'order, "a phrase", or, -word) and plain substrings on PostgreSQL; substrings only '
        "on SQLite.",
    )
    def get(self, request):
        data = SearchInput(data=request.query_params)
        data.is_valid(raise_exception=True)
        hits = search.search(
            tenant=request_tenant(request),
            q=data.validated_data.get("q"),
            limit=data.validated_data["limit"],
        )
        return Response({"object": "list", "data": SearchHitOutput(hits, many=True).data})
