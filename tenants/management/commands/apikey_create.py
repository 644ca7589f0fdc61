import json

from django.core.management.base import BaseCommand, CommandError

from tenants.models import Tenant
from tenants.services import api_key_create


class Command(BaseCommand):
    help = "Issue an API key for a tenant. The key is printed once and never stored."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="The tenant's slug.")
        parser.add_argument("--name", default="cli", help="A name to recognise the key by.")
        parser.add_argument("--expires-days", type=int, default=None)
        parser.add_argument(
            "--json", dest="as_json", action="store_true", help='Print {"api_key", "prefix"}.'
        )

    def handle(self, *args, slug, name, expires_days, as_json: bool, **options):
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"No tenant {slug!r}; create it with tenant_create first.")
        if expires_days is not None and expires_days < 1:
            raise CommandError("--expires-days must be at least 1")
        api_key, key = api_key_create(tenant=tenant, name=name, expires_days=expires_days)
        if as_json:
            self.stdout.write(json.dumps({"api_key": key, "prefix": api_key.prefix}))
        else:
            self.stdout.write(f"API key for {tenant.slug} (shown once): {key}")
