from django.db import migrations

# The roles as they were when this migration was written (accounts.roles holds the current ones).
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
    "RA Agent": _RA_AGENT_PERMISSIONS,
    "RA Manager": [
        *_RA_AGENT_PERMISSIONS,
        "accounts.manage_ra_agents",
        "audit.view_all_auditevents",
        "audit.export_auditevent",
        "accounts.view_allowedemaildomain",
        "accounts.add_allowedemaildomain",
        "accounts.change_allowedemaildomain",
        "accounts.delete_allowedemaildomain",
    ],
    "Auditor": ["audit.view_auditevent", "audit.view_all_auditevents", "audit.export_auditevent"],
}


def create_roles(apps, schema_editor):
    # Permissions are normally created after all migrations (post_migrate); the roles need them now.
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        permissions = []
        for dotted in codenames:
            app_label, codename = dotted.split(".")
            permissions.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        group.permissions.set(permissions)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=list(ROLES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_ra_permissions"),
        ("audit", "0002_ra_permissions"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_roles, remove_roles)]
