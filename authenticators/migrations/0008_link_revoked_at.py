"""A link ended early by a suspension or closure says so (RegistrationLink.revoked_at), instead of being told
from one that ran out its time by its lifetime against today's settings (wrong once they changed).

Links revoked before this are marked as that guess told them, the best there is for them, so that an e-mail
still owed for one is dropped, not failed, after the upgrade as before it."""

from django.conf import settings
from django.db import migrations, models
from django.db.models import F
from django.utils import timezone


def mark_links_revoked_before(apps, schema_editor):
    links = apps.get_model("authenticators", "RegistrationLink").objects
    now = timezone.now()  # only links that have stopped: one still working was not revoked, whatever the settings
    ttls = {"invitation": settings.CAREID_INVITATION_LINK_TTL, "emailed": settings.CAREID_INVITATION_LINK_TTL,
            "presence": settings.CAREID_REGISTRATION_LINK_TTL}
    for purpose, ttl in ttls.items():
        links.filter(purpose=purpose, used_at__isnull=True, expires_at__lte=now,
                     expires_at__lt=F("created_at") + ttl).update(revoked_at=F("expires_at"))
    links.filter(used_at__isnull=False, completed_at__isnull=True, journey_expires_at__lte=now,
                 journey_expires_at__lt=F("used_at") + settings.CAREID_REGISTRATION_JOURNEY_TTL,
                 ).update(revoked_at=F("journey_expires_at"))


class Migration(migrations.Migration):

    dependencies = [
        ('authenticators', '0007_drop_old_device_throttle_columns'),
    ]

    operations = [
        migrations.AddField(
            model_name='registrationlink',
            name='revoked_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(mark_links_revoked_before, migrations.RunPython.noop),
    ]
