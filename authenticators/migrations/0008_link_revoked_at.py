"""A link ended early by a suspension or closure says so (RegistrationLink.revoked_at), instead of being told
from one that ran out its time by its lifetime against today's settings (wrong once they changed). The column
alone: the links revoked before it are marked by 0009, in a transaction of its own, so that this one's lock on
the table (ACCESS EXCLUSIVE, brief for a nullable column) is not held while every link is read."""

from django.db import migrations, models


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
    ]
