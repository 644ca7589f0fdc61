"""What every page of the browser UI shares: its security headers, the error page, the
signed-in page decorator and the app shell's context (organisation switcher, account, nav).

The conversations in the shell's sidebar are the chat app's: app.html asks for them itself
(``{% sidebar_groups %}``, chat/templatetags), so nothing here needs chat.
"""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render

from autoglm_site.errors import ApplicationError, NotFoundError

from .auth import SESSION_TENANT_KEY, session_membership
from .models import Membership
from .roles import is_manager
from .services import TenantSuspendedError

# Every page: scripts, styles, images and connections from this origin only. Nothing a model or
# a user writes can run even if it slipped past the Markdown sanitizer (no inline script).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def secure(response: HttpResponse) -> HttpResponse:
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Referrer-Policy"] = "same-origin"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def error_page(request, status_code: int, title: str, message: str) -> HttpResponse:
    memberships = []
    if request.user.is_authenticated:
        memberships = list(
            Membership.objects.select_related("tenant").filter(user=request.user).order_by("id")
        )
    context = {
        "title": title,
        "message": message,
        "memberships": memberships,
        "current_tenant_id": request.session.get(SESSION_TENANT_KEY),
    }
    return secure(render(request, "ui/error.html", context, status=status_code))


def ui_page(view):
    """A signed-in page: resolves the membership the user acts through (passed to the view)
    and turns the API's errors into HTML pages (403 no membership or suspended, 404)."""

    @wraps(view)
    @login_required
    def wrapper(request, *args, **kwargs):
        try:
            membership = session_membership(request)
            response = view(request, membership, *args, **kwargs)
        except TenantSuspendedError:
            return error_page(
                request,
                403,
                "Organisation suspended",
                "This organisation is suspended. Its conversations and keys are kept; ask "
                "the operator of this service to reactivate it.",
            )
        except NotFoundError:
            return error_page(
                request, 404, "Not found", "There is nothing here, or it is not yours to see."
            )
        except ApplicationError as exc:
            return error_page(request, exc.status_code, "Not allowed", exc.message)
        return secure(response)

    return wrapper


def shell_context(request, membership: Membership) -> dict:
    """What every page of the app shell shows: the organisation switcher and the account."""
    memberships = Membership.objects.select_related("tenant").filter(user=request.user)
    return {
        "membership": membership,
        "tenant": membership.tenant,
        "is_manager": is_manager(membership),
        "memberships": memberships.order_by("tenant__name", "id"),
    }
