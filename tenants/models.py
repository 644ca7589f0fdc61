from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey, BaseAPIKeyManager

KEY_PREFIX = "sk-"


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
    """An API key's allowed models are a list of names (a lone JSON string is a typo)."""
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise ValidationError('Enter a list of model names, e.g. ["autoglm-demo"], or [] for all.')


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
