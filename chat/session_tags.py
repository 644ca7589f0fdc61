"""The labels of a conversation (``ChatSession.tags``): what the API accepts, and the filters of
the session list by them."""

from rest_framework import serializers

from autoglm_site.fields import StrictCharField

MAX_TAGS = 10
MAX_TAG_CHARS = 32


class TagListField(serializers.ListField):
    """Up to 10 tags of 1 to 32 characters (surrounding spaces trimmed). A tag given twice,
    in any case, is kept once, as first spelt; the order is kept."""

    def __init__(self, **kwargs):
        messages = {
            "blank": "A tag cannot be empty.",
            "max_length": f"A tag has at most {MAX_TAG_CHARS} characters.",
            "invalid": "A tag is a string.",
        }
        kwargs.setdefault(
            "child", StrictCharField(max_length=MAX_TAG_CHARS, error_messages=messages)
        )
        kwargs.setdefault("allow_empty", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        tags, seen = [], set()
        for tag in super().to_internal_value(data):
            if tag.casefold() not in seen:
                seen.add(tag.casefold())
                tags.append(tag)
        if len(tags) > MAX_TAGS:
            raise serializers.ValidationError(f"At most {MAX_TAGS} tags.")
        return tags


class SessionFilterInput(serializers.Serializer):
    """``GET /api/v1/sessions`` filters: none given lists every session, as before."""

    archived = serializers.ChoiceField(choices=["true", "false"], required=False)
    tag = serializers.CharField(required=False, max_length=MAX_TAG_CHARS)

    def filters(self) -> dict:
        data = self.validated_data
        found = {}
        if "archived" in data:
            found["archived"] = data["archived"] == "true"
        if data.get("tag"):
            found["tag"] = data["tag"]
        return found
