"""Registration authority roles: Django groups with exactly the permissions they need.

The data migration (0004_ra_roles) creates the groups from ROLES; the admin asks these helpers
and never names a permission itself.
"""

from __future__ import annotations

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

# Fields no RA form ever binds: a crafted POST naming one is refused and audited.
PRIVILEGE_FIELDS = ("groups", "user_permissions", "is_staff", "is_superuser", "status", "uid", "password")


def roles_of(user) -> set[str]:
    return {group.name for group in user.groups.all()}


def is_protected_from(target, actor) -> bool:
    """Whom `actor` may not change or act on.

    Their own account (separation of duties: no RA issues themselves a link or unlocks themselves)
    and superusers; for an RA Manager also other RA Managers and Auditors; for an RA Agent every
    holder of an RA role. Otherwise one RA could take over another's Care Identity (change its
    e-mail, issue it a link) and act in their name.
    """
    if actor.is_superuser:
        return False
    if target.pk == actor.pk or target.is_superuser:
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
