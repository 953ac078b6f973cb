"""Links revoked before 0008 are marked as the outbox told them until then, the best there is for them: an unused
link that stopped before its lifetime, by the settings of the process that runs this migration, was ended by a
suspension or closure. So an e-mail still owed for one is dropped, not failed, after the upgrade as before it.
Only links that have stopped: one still working was not revoked, whatever the settings. Journeys are left alone:
one lasts minutes, and no e-mail waits on it."""

from django.conf import settings
from django.db import migrations
from django.db.models import F
from django.utils import timezone


def mark_links_revoked_before(apps, schema_editor):
    links = apps.get_model("authenticators", "RegistrationLink").objects
    now = timezone.now()
    ttls = {"invitation": settings.CAREID_INVITATION_LINK_TTL, "emailed": settings.CAREID_INVITATION_LINK_TTL,
            "presence": settings.CAREID_REGISTRATION_LINK_TTL}
    for purpose, ttl in ttls.items():
        links.filter(purpose=purpose, used_at__isnull=True, revoked_at__isnull=True, expires_at__lte=now,
                     expires_at__lt=F("created_at") + ttl).update(revoked_at=F("expires_at"))


class Migration(migrations.Migration):

    dependencies = [
        ('authenticators', '0008_link_revoked_at'),
    ]

    operations = [
        migrations.RunPython(mark_links_revoked_before, migrations.RunPython.noop),
    ]
