import json

from django.conf import settings
from django.core.management.base import BaseCommand

from tenants.models import Membership
from tenants.services import api_key_create, membership_ensure, tenant_create

DEMO_TENANT = "demo"
DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"


class Command(BaseCommand):
    help = (
        "Create the demo tenant, its owner and a fresh API key. Idempotent, except that each run "
        "issues a new key."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", dest="as_json", action="store_true")

    def handle(self, *args, as_json: bool, **options):
        tenant = tenant_create(slug=DEMO_TENANT, name="Demo organisation")
        membership = membership_ensure(
            tenant=tenant, username=DEMO_USER, password=DEMO_PASSWORD, role=Membership.Role.OWNER
        )
        # The demo owner also operates the demo install, so it may enter the Django admin.
        user = membership.user
        if not (user.is_staff and user.is_superuser):
            user.is_staff = user.is_superuser = True
            user.save(update_fields=["is_staff", "is_superuser"])
        _, key = api_key_create(tenant=tenant, name="demo")
        result = {
            "tenant": tenant.slug,
            "username": DEMO_USER,
            "password": DEMO_PASSWORD,
            "api_key": key,
        }
        if as_json:
            self.stdout.write(json.dumps(result))
            return
        self.stdout.write(
            f"tenant: {tenant.slug}\nlogin: {DEMO_USER} / {DEMO_PASSWORD}\napi key: {key}\n"
            f"model: {settings.AUTOGLM_DEFAULT_MODEL}"
        )
