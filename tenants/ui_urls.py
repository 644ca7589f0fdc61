"""URLs of the organisation's pages in the browser UI (chat/ui_urls.py has the others)."""

from django.urls import path

from . import ui, ui_webhooks

urlpatterns = [
    path("org/switch/", ui.tenant_switch, name="ui-tenant-switch"),
    path("org/keys/", ui.keys_page, name="ui-keys"),
    path("org/usage/", ui.usage_page, name="ui-usage"),
    path("org/webhooks/", ui_webhooks.webhooks_page, name="ui-webhooks"),
]
