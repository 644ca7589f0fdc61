import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey, BaseAPIKeyManager

KEY_PREFIX = "sk-"


def validate_names(value, *, what: str, example: str) -> None:
    """A list of names (a lone JSON string is a typo)."""
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise ValidationError(f"Enter a list of {what} names, e.g. {example}, or [] for all.")


def validate_plugin_names(value) -> None:
    validate_names(value, what="plugin", example='["guardrail"]')


class Limits(models.Model):
    """Rate limits and quotas; empty means unlimited. Enforced atomically in Redis."""

    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    max_concurrent_jobs = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        abstract = True


class Tenant(Limits):
    """An organisation: owns its members, keys, chats and quotas (the Limits fields)."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(
        default=True,
        help_text="A suspended tenant's keys and users are refused; nothing is deleted.",
    )
    plugin_stages = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_plugin_names],
        help_text=(
            "The plugins whose stages this organisation's requests go through, in this order, "
            'as a JSON list (["guardrail"]); empty: every running plugin, in start order.'
        ),
    )
    # Signs the deliveries to its jobs' callback_url (autoglm_site.sealing); made when first used.
    callback_secret_sealed = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("slug",)

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"


class ApiKeyManager(BaseAPIKeyManager):
    def get_usable_keys(self) -> models.QuerySet:
        return super().get_usable_keys().select_related("tenant")


def validate_model_names(value) -> None:
    """An API key's allowed models are a list of names."""
    validate_names(value, what="model", example='["autoglm-demo"]')


class ApiKey(AbstractAPIKey, Limits):
    """A tenant's API key: ``sk-<prefix>.<secret>``, stored as a SHA-512 hash only.

    djangorestframework-api-key generates, hashes and verifies (constant-time) the
    ``<prefix>.<secret>`` part; we add the ``sk-`` marker that OpenAI-style clients expect.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    allowed_models = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_model_names],
        help_text='Model names this key may use, as a JSON list (["a", "b"]); empty means all.',
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    objects = ApiKeyManager()

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def __str__(self) -> str:
        return f"{self.name} ({self.masked})"

    @property
    def masked(self) -> str:
        return f"{KEY_PREFIX}{self.prefix}.{'*' * 8}"

    def allows_model(self, model: str) -> bool:
        allowed = self.allowed_models
        if not allowed:
            return True
        # Anything but a list (a value stored before the validator) allows nothing: `in` on a
        # string would be a substring match.
        return isinstance(allowed, list) and model in allowed

    def touch(self) -> None:
        """Record use, at most once a minute per key so busy keys do not write on every call."""
        now = timezone.now()
        if self.last_used_at and (now - self.last_used_at).total_seconds() < 60:
            return
        type(self).objects.filter(pk=self.pk).update(last_used_at=now)
        self.last_used_at = now


class UsageRecord(models.Model):
    """The ledger: one row per finished, failed or cancelled job. Monthly totals sum these."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="usage")
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="usage"
    )
    job_id = models.UUIDField(unique=True)
    model = models.CharField(max_length=100)
    status = models.CharField(max_length=16)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["tenant", "created_at"])]

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.model}: {self.total_tokens} tokens"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def validate_webhook_events(value) -> None:
    if not isinstance(value, list) or not value:
        raise ValidationError("Enter a list of at least one event.")
    unknown = [event for event in value if event not in WebhookEndpoint.Event.values]
    if unknown:
        raise ValidationError(
            f"Unknown event(s) {unknown}; known: {', '.join(WebhookEndpoint.Event.values)}."
        )


class WebhookEndpoint(models.Model):
    """Where a tenant wants its events sent, signed (Standard Webhooks) with its own secret.

    The secret is shown once, when the endpoint is made; it is kept sealed (autoglm_site.sealing)
    because every delivery is signed with it.
    """

    class Event(models.TextChoices):
        JOB_SUCCEEDED = "job.succeeded"
        JOB_FAILED = "job.failed"
        JOB_CANCELLED = "job.cancelled"
        QUOTA_THRESHOLD = "quota.threshold"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    events = models.JSONField(validators=[validate_webhook_events])
    description = models.CharField(max_length=200, blank=True)
    secret_sealed = models.TextField(editable=False)
    is_active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ("-created_at",)
        verbose_name = "webhook endpoint"

    def __str__(self) -> str:
        return f"{self.tenant_id}: {self.url}"


class WebhookDelivery(models.Model):
    """One event on its way to one URL (an endpoint's, or a job's ``callback_url``): its body
    is fixed when it is made, so every try sends the same bytes under the same webhook-id."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # out of tries, or the receiver answered 410 Gone

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    endpoint = models.ForeignKey(
        WebhookEndpoint,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="deliveries",
        help_text="Empty for a job's callback_url.",
    )
    url = models.URLField(max_length=2000)
    event_type = models.CharField(max_length=40)
    body = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.webhook_id} {self.event_type} -> {self.url}"

    @property
    def webhook_id(self) -> str:
        return f"msg_{self.id.hex}"


class WebhookAttempt(models.Model):
    """One try of a delivery: what the receiver answered (or why nothing came) and how fast."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="tries")
    number = models.PositiveSmallIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("number",)

    def __str__(self) -> str:
        return f"try {self.number}: {self.status_code or self.error}"
