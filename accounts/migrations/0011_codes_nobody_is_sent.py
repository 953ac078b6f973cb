"""A password reset journey always has a code row, e-mailed or not: `emailed` says which (a database default
too, so that the INSERTs of the release before, which do not name it, still work), and an unknown address's
row has no user."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0010_outbox_handed_over_at'),
    ]

    operations = [
        migrations.AddField(
            model_name='emailonetimepassword',
            name='emailed',
            field=models.BooleanField(db_default=True, default=True),
        ),
        migrations.AlterField(
            model_name='emailonetimepassword',
            name='user',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='email_codes', to=settings.AUTH_USER_MODEL),
        ),
    ]
