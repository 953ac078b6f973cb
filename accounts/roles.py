"""Registration authority roles: Django groups with exactly the permissions they need.

The data migration (0004_ra_roles) creates the groups from ROLES; the admin asks these helpers
and never names a permission itself.
"""

from __future__ import annotations

from django.contrib.auth.models import Permission
from django.db.models import Q, QuerySet

RA_MANAGER = "RA Manager"
RA_AGENT = "RA Agent"
AUDITOR = "Auditor"

_RA_AGENT_PERMISSIONS = [
    "accounts.view_user",
    "accounts.add_user",
    "accounts.change_user",
    "accounts.issue_registration_link",
    "accounts.suspend_user",
    "accounts.close_user",
    "accounts.unlock_user",
    "accounts.remove_authenticator",
    "audit.view_auditevent",  # their own actions' events only (audit.admin)
]

ROLES: dict[str, list[str]] = {
    RA_AGENT: _RA_AGENT_PERMISSIONS,
    RA_MANAGER: [
        *_RA_AGENT_PERMISSIONS,
        "accounts.manage_ra_agents",
        "audit.view_all_auditevents",
        "audit.export_auditevent",
        "accounts.view_allowedemaildomain",
        "accounts.add_allowedemaildomain",
        "accounts.change_allowedemaildomain",
        "accounts.delete_allowedemaildomain",
    ],
    AUDITOR: ["audit.view_auditevent", "audit.view_all_auditevents", "audit.export_auditevent"],
}

# The roles that act on people (an Auditor only reads).
RA_ROLES = (RA_MANAGER, RA_AGENT)

# Fields no RA form ever binds: a crafted POST naming one is refused and audited.
PRIVILEGE_FIELDS = ("groups", "user_permissions", "is_staff", "is_superuser", "status", "uid", "password")


def roles_of(user) -> set[str]:
    return {group.name for group in user.groups.all()}


def permissions_of(user) -> set[str]:
    """Every permission the person holds, directly or through a group, whatever their status: Django's
    get_all_permissions() answers none for a suspended person, whose permissions come back with them."""
    held = Permission.objects.filter(Q(user=user) | Q(group__user=user)).values_list("content_type__app_label",
                                                                                   "codename").distinct()
    return {f"{app_label}.{codename}" for app_label, codename in held}


def registration_authorities(users: QuerySet) -> QuerySet:
    """Those of `users` who act on people as a registration authority: superusers, and staff holding
    an RA role. Anyone else who is an event's actor (a colleague signed in at the browser where
    someone tried the person's address, say) acted in no such capacity."""
    return users.filter(Q(is_superuser=True) | Q(is_staff=True, groups__name__in=RA_ROLES)).distinct()


def is_protected_from(target, actor) -> bool:
    """Whom `actor` may not change or act on.

    Their own account (separation of duties: no RA issues themselves a link or unlocks themselves);
    superusers, unless the actor is one; anyone holding a permission the actor lacks (a platform
    operator who registers relying services, say); for an RA Manager also other RA Managers and
    Auditors; for an RA Agent every holder of an RA role and all staff. Whoever may change a
    person's e-mail or issue them a link can take over their Care Identity and act in their name,
    so nobody may gain, through someone else's account, more than they hold themselves.
    """
    if target.pk == actor.pk:
        return True
    if actor.is_superuser:
        return False
    if target.is_superuser or permissions_of(target) - actor.get_all_permissions():
        return True
    held = roles_of(target)
    if actor.has_perm("accounts.manage_ra_agents"):
        return bool(held & {RA_MANAGER, AUDITOR})
    return bool(held) or target.is_staff


def assignable_roles(actor) -> list[str]:
    """Roles this person may give or take: superusers all, RA Managers the RA Agent role only."""
    if actor.is_superuser:
        return [RA_MANAGER, RA_AGENT, AUDITOR]
    if actor.has_perm("accounts.manage_ra_agents"):
        return [RA_AGENT]
    return []
