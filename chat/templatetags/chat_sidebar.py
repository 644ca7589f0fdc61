"""The app shell's sidebar of conversations: every page of the shell (chat, and the
organisation's pages in tenants/) lists them, so the template asks for them here."""

from django import template

from chat import selectors

register = template.Library()

SIDEBAR_SESSIONS = 200  # the newest conversations listed in the sidebar


@register.simple_tag
def sidebar_sessions(tenant):
    """The tenant's newest conversations, newest first (``{% sidebar_sessions tenant as s %}``)."""
    return selectors.session_list(tenant=tenant)[:SIDEBAR_SESSIONS]
