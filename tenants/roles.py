"""Who may manage an organisation (its API keys, its usage): its owners and admins.

The one check behind the keys/usage API and their pages.
"""

from autoglm_site.errors import ApplicationError

from .auth import session_membership
from .models import Membership, Tenant

MANAGER_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)


class ManagerRequiredError(ApplicationError):
    status_code = 403
    type = "permission_error"
    code = "permission_denied"


def is_manager(membership: Membership) -> bool:
    return membership.role in MANAGER_ROLES


def membership_require_manager(
    membership: Membership,
    *,
    message: str = "Only the organisation's owners and admins may do this.",
) -> Membership:
    """``membership`` if it is an owner's or an admin's; 403 (``message``) for anyone else."""
    if not is_manager(membership):
        raise ManagerRequiredError(message)
    return membership


def manager_tenant(request) -> Tenant:
    """The tenant the signed-in owner or admin manages; 403 for anyone else."""
    user = request.user
    if not getattr(user, "is_authenticated", False) or not hasattr(user, "memberships"):
        raise ManagerRequiredError("Managing keys and usage needs an owner or admin login.")
    return membership_require_manager(session_membership(request)).tenant
