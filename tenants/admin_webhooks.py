"""Operators' admin for webhooks: endpoints (the secret shown once, when one is added) and the
deliveries with every try, read-only."""

from django import forms
from django.contrib import admin, messages

from autoglm_site.outbound import OutboundURLError, check_outbound_url

from .models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from .webhooks import endpoint_create


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=2000, assume_scheme="https")
    events = forms.MultipleChoiceField(
        choices=WebhookEndpoint.Event.choices, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("tenant", "url", "events", "description", "is_active")

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        try:
            return check_outbound_url(url).url
        except OutboundURLError as exc:
            raise forms.ValidationError(exc.message) from exc


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ("url", "tenant", "events", "is_active", "disabled_reason", "created_at")
    list_filter = ("is_active", "tenant")
    search_fields = ("url", "tenant__slug", "description")
    readonly_fields = ("disabled_reason", "created_at")

    def get_readonly_fields(self, request, obj=None):
        # An endpoint stays with its tenant: moving it would hand its secret to another.
        return self.readonly_fields if obj is None else ("tenant", *self.readonly_fields)

    def get_fields(self, request, obj=None):
        fields = ("tenant", "url", "events", "description")
        return fields if obj is None else (*fields, "is_active", "disabled_reason", "created_at")

    def save_model(self, request, obj, form, change):
        if change:
            if obj.is_active:
                obj.disabled_reason = ""
            return super().save_model(request, obj, form, change)
        data = form.cleaned_data
        endpoint, secret = endpoint_create(
            tenant=data["tenant"],
            url=data["url"],
            events=data["events"],
            description=data.get("description", ""),
            created_by=request.user,
        )
        obj.pk = endpoint.pk
        # Shown once, in this message; it is stored sealed and never displayed again.
        messages.warning(
            request, f"Copy the endpoint's signing secret now; it will not be shown again: {secret}"
        )


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ("number", "status_code", "error", "latency_ms", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("webhook_id", "tenant", "event_type", "url", "status", "attempts", "created_at")
    list_filter = ("status", "event_type", "tenant")
    search_fields = ("url", "tenant__slug")
    date_hierarchy = "created_at"
    fields = (
        "webhook_id",
        "tenant",
        "endpoint",
        "url",
        "event_type",
        "status",
        "attempts",
        "next_attempt_at",
        "created_at",
        "ended_at",
        "body",
    )
    readonly_fields = fields
    inlines = (WebhookAttemptInline,)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
