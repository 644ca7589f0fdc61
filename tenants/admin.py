from django.contrib import admin

from .models import ApiKey, Membership, Tenant


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
        "tokens_per_month",
        "created_at",
    )
    list_filter = ("is_active",)
    search_fields = ("slug", "name")
    inlines = (MembershipInline,)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "tenant", "masked", "created", "expiry_date", "revoked", "last_used_at")
    list_filter = ("revoked", "tenant")
    search_fields = ("name", "prefix", "tenant__slug")
    readonly_fields = ("prefix", "masked", "created", "last_used_at", "revoked_at")
    fields = (
        "tenant",
        "name",
        "masked",
        "allowed_models",
        "expiry_date",
        "revoked",
        "created",
        "last_used_at",
        "revoked_at",
    )

    def has_add_permission(self, request):
        # Keys are issued by `manage.py apikey_create` so the secret is shown once, to its owner.
        return False


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("role", "tenant")
