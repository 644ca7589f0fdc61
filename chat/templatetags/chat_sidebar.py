"""The app shell's sidebar of conversations: every page of the shell (chat, and the
organisation's pages in tenants/) lists them, so the template asks for them here."""

from django import template

from chat import selectors

register = template.Library()

SIDEBAR_SESSIONS = 200  # the newest conversations listed in the sidebar (in each group)


@register.simple_tag
def sidebar_groups(tenant) -> dict:
    """The sidebar's groups, each newest first: ``pinned`` and ``recent`` (the others), both
    without the archived ones, then ``archived`` (shown on demand) and how many there are."""
    sessions = selectors.session_list(tenant=tenant, archived=False)
    archived = selectors.session_list(tenant=tenant, archived=True)
    return {
        "pinned": list(sessions.filter(pinned=True)[:SIDEBAR_SESSIONS]),
        "recent": list(sessions.filter(pinned=False)[:SIDEBAR_SESSIONS]),
        "archived": list(archived[:SIDEBAR_SESSIONS]),
        "archived_count": archived.count(),
    }
