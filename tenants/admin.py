"""Operators' admin: tenants with members and limits, keys (secret shown once), usage, jobs;
webhooks in admin_webhooks (imported here, so the admin finds them)."""

from django import forms
from django.contrib import admin, messages
from django.db.models import Sum

from . import admin_webhooks, selectors
from .charts import usage_chart
from .models import ApiKey, Membership, Tenant, UsageRecord
from .services import api_key_create, api_key_revoke

__all__ = ["admin_webhooks"]

LIMIT_FIELDS = (
    "requests_per_minute",
    "tokens_per_minute",
    "tokens_per_month",
    "max_concurrent_jobs",
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = (
        "slug",
        "name",
        "is_active",
        "requests_per_minute",
        "tokens_per_minute",
        "tokens_per_month",
        "max_concurrent_jobs",
        "created_at",
    )
    list_filter = ("is_active",)
    search_fields = ("slug", "name")
    fieldsets = (
        (None, {"fields": ("slug", "name", "is_active")}),
        ("Quotas and rate limits (empty = unlimited)", {"fields": LIMIT_FIELDS}),
        ("Plugins", {"fields": ("plugin_stages",)}),
    )
    inlines = (MembershipInline,)
    change_form_template = "admin/tenants/tenant/change_form.html"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        tenant = self.get_object(request, object_id)
        if tenant is not None:
            daily = selectors.usage_daily(tenant=tenant, days=30)
            extra_context = {
                **(extra_context or {}),
                "usage_chart": usage_chart(daily),
                "usage_month": selectors.usage_month(tenant=tenant),
            }
        return super().change_view(request, object_id, form_url, extra_context)


class ApiKeyCreationForm(forms.ModelForm):
    expires_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=3650,
        help_text="Leave empty for a key that does not expire.",
    )

    class Meta:
        model = ApiKey
        fields = ("tenant", "name", "allowed_models", *LIMIT_FIELDS)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "tenant", "masked", "created", "expiry_date", "revoked", "last_used_at")
    list_filter = ("revoked", "tenant")
    search_fields = ("name", "prefix", "tenant__slug")
    readonly_fields = (
        "tenant",
        "masked",
        "created",
        "last_used_at",
        "revoked",
        "revoked_at",
        "created_by",
    )
    fields = (
        "tenant",
        "name",
        "masked",
        "allowed_models",
        *LIMIT_FIELDS,
        "expiry_date",
        "revoked",
        "revoked_at",
        "created",
        "last_used_at",
        "created_by",
    )
    actions = ("revoke_keys",)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreationForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("tenant", "name", "expires_days", "allowed_models", *LIMIT_FIELDS)
        return self.fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        data = form.cleaned_data
        api_key, secret = api_key_create(
            tenant=data["tenant"],
            name=data["name"],
            expires_days=data.get("expires_days"),
            allowed_models=data.get("allowed_models") or [],
            created_by=request.user,
            **{field: data.get(field) for field in LIMIT_FIELDS},
        )
        obj.pk = api_key.pk
        # Shown once, in this message; only the hash is stored.
        messages.warning(
            request,
            f"Copy the new API key now; it will not be shown again: {secret}",
        )

    def save_related(self, request, form, formsets, change):
        if change:
            super().save_related(request, form, formsets, change)

    @admin.action(description="Revoke selected API keys (final)")
    def revoke_keys(self, request, queryset):
        count = 0
        for api_key in queryset.filter(revoked=False):
            api_key_revoke(api_key=api_key)
            count += 1
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("role", "tenant")


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "tenant",
        "api_key",
        "model",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
    )
    list_filter = ("tenant", "model", "status")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in UsageRecord._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        try:
            queryset = response.context_data["cl"].queryset
        except (AttributeError, KeyError):
            return response
        totals = queryset.aggregate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"))
        response.context_data["title"] = (
            f"Usage: {(totals['p'] or 0) + (totals['c'] or 0)} tokens in this selection"
        )
        return response
