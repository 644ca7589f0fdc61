from django.contrib import admin

from .models import ChatJob, ChatSession, Message


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ("role", "content", "created_at")
    readonly_fields = ("created_at",)


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    list_display = ("id", "tenant", "title", "model", "created_at")
    list_filter = ("tenant", "model")
    search_fields = ("title", "id")
    inlines = (MessageInline,)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "tenant", "session", "role", "created_at")
    list_filter = ("role", "tenant")


@admin.register(ChatJob)
class ChatJobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "tenant",
        "model",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "tenant", "model")
    readonly_fields = ("created_at", "started_at", "finished_at")
