import secrets
import uuid

from django.conf import settings
from django.db import models

from tenants.models import ApiKey, Tenant


class ChatSession(models.Model):
    """A conversation: a tree of messages (each has a parent), of which one path, from the
    first message to ``current_message``, is the conversation shown and the next prompt."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="chat_sessions")
    title = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=100)
    system_prompt = models.TextField(blank=True)
    params = models.JSONField(
        default=dict, blank=True, help_text="Default sampling parameters of the session's jobs."
    )
    current_message = models.ForeignKey(
        "Message",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The last message of the branch shown; the next message follows it.",
    )
    pinned = models.BooleanField(default=False)
    archived = models.BooleanField(default=False)
    tags = models.JSONField(default=list, blank=True, help_text="Short labels, for the sidebar.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["tenant", "-created_at"])]

    def __str__(self) -> str:
        return self.title or str(self.id)


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        ASSISTANT = "assistant"
        TOOL = "tool"  # a tool's result, answering the assistant's call (the Responses API)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages")
    # The message it follows: an edited message or a regenerated answer is a sibling of the
    # one it replaces (same parent), so earlier versions stay. None: a first message.
    parent = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="children"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField()
    attachments = models.JSONField(
        default=list, blank=True, help_text="Text files sent with it: [{name, text}]."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("created_at", "id")
        indexes = [models.Index(fields=["session", "created_at"])]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"


class ChatJob(models.Model):
    """One generation: queued for a model's workers, then run, then ended one way or another.

    A job answers either the last message of a session (native API) or the messages sent with
    an OpenAI-style completion request (no session; the messages are in ``params``).
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    class ErrorCode(models.TextChoices):
        """Why a job failed: written by the worker, mapped to HTTP by ``chat.presenters``."""

        CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
        INVALID_REQUEST = "invalid_request_error"
        INSUFFICIENT_QUOTA = "insufficient_quota"
        TIMEOUT = "timeout"
        ENGINE_ERROR = "engine_error"
        MODEL_UNAVAILABLE = "model_unavailable"
        WORKER_CRASHED = "worker_crashed"
        PLUGIN_ERROR = "plugin_error"
        INTERNAL_ERROR = "internal_error"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="chat_jobs")
    # A deleted session's jobs stay (marked, their answers cleared): a job may still be
    # generating, and its ending must write the usage row that bills it (``chat.jobs``).
    session = models.ForeignKey(
        ChatSession, on_delete=models.SET_NULL, null=True, blank=True, related_name="jobs"
    )
    session_deleted_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When its session was deleted: kept for the usage ledger, gone from the API.",
    )
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    model = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    params = models.JSONField(default=dict, blank=True)
    user_message = models.ForeignKey(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    assistant_message = models.OneToOneField(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    continued_message = models.ForeignKey(
        Message,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The answer (cut by max_tokens) this job writes more of, instead of a new one.",
    )
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    cached_tokens = models.PositiveIntegerField(
        default=0, help_text="Prompt tokens whose KV the worker's prefix cache already held."
    )
    output = models.TextField(blank=True, help_text="The generated text, partial if cancelled.")
    choices = models.JSONField(
        default=list,
        blank=True,
        help_text="Every answer (n > 1) with its finish reason and logprobs, when it has several "
        "or kept logprobs; the first is also the output.",
    )
    finish_reason = models.CharField(max_length=16, blank=True)
    dropped_messages = models.PositiveIntegerField(
        default=0, help_text="Oldest session messages left out to fit the context window."
    )
    error = models.TextField(blank=True)
    error_code = models.CharField(max_length=64, blank=True, choices=ErrorCode.choices)
    trace_id = models.CharField(max_length=128, blank=True)
    callback_url = models.URLField(
        max_length=2000, blank=True, help_text="Told (a signed webhook) when the job ends."
    )
    attempts = models.PositiveIntegerField(default=0)
    queue = models.CharField(
        max_length=200, blank=True, help_text="The broker queue its messages are sent to."
    )
    worker = models.CharField(
        max_length=200, blank=True, help_text="The worker process running the job (its claim)."
    )
    queued_at = models.DateTimeField(
        null=True, blank=True, help_text="When the job (last) entered the queue."
    )
    sent_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the broker took its latest message; empty: still to be sent (outbox).",
    )
    reserved_tokens = models.PositiveIntegerField(
        default=0, help_text="Tokens held against the quotas at admission; settled at the end."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    first_token_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            models.Index(fields=["tenant", "-created_at"]),
            models.Index(fields=["status"]),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def ttft_ms(self) -> int | None:
        """How long its caller waited for the first token, in ms: from admission (time queued
        included) to the first token; None when none came."""
        if self.first_token_at is None or self.created_at is None:
            return None
        return max(round((self.first_token_at - self.created_at).total_seconds() * 1000), 0)

    @property
    def ending_reason(self) -> str:
        """Why an ended job ended: its finish reason (stop, length, cancelled), or a failed
        one's error code (metrics and plugins label endings with it)."""
        reason = self.error_code if self.status == self.Status.FAILED else self.finish_reason
        return reason or self.status


def _share_token() -> str:
    return secrets.token_urlsafe(24)


class ShareLink(models.Model):
    """A read-only snapshot of a conversation's branch, opened at ``/share/{token}/`` by
    signed-in members of the same organisation only; revoked links are gone (404)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="shares")
    token = models.CharField(max_length=64, unique=True, default=_share_token, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    title = models.CharField(max_length=200, blank=True)
    messages = models.JSONField(default=list, help_text="The snapshot: [{role, content, ...}].")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"share of {self.session_id}"
