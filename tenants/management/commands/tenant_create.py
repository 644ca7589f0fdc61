from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_slug

from tenants.services import tenant_create


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be >= 0")
    return number


class Command(BaseCommand):
    help = "Create a tenant (or update the limits of an existing one)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--rpm", type=_non_negative, help="Requests per minute.")
        parser.add_argument("--tpm", type=_non_negative, help="Tokens per minute.")
        parser.add_argument("--monthly-tokens", type=_non_negative, help="Tokens per month.")
        parser.add_argument("--max-concurrent", type=_non_negative, help="Concurrent jobs.")

    def handle(self, *args, slug, name, rpm, tpm, monthly_tokens, max_concurrent, **options):
        try:
            validate_slug(slug)
        except ValidationError:
            raise CommandError(
                f"{slug!r} is not a valid slug (letters, digits, '-', '_')"
            ) from None
        tenant = tenant_create(
            slug=slug,
            name=name,
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
            tokens_per_month=monthly_tokens,
            max_concurrent_jobs=max_concurrent,
        )
        self.stdout.write(f"tenant {tenant.slug} ({tenant.name})")
