"""Drops the two columns of django-otp's ThrottlingMixin that 0005 left in the database (out of Django's
state) while processes of the release before it still wrote them. No release since reads them.

They come back into Django's state for a moment, as 0005 left them, so that RemoveField drops them
and, unapplied, adds them again as 0005 expects to find them."""

from django.db import migrations, models

MODELS = ["authenticatorapp", "ipad", "passkey", "securitykey", "windowshello"]


def _fields():
    return [
        ("throttling_failure_count",
         models.PositiveIntegerField(default=0, db_default=0, help_text="Number of successive failed attempts.")),
        ("throttling_failure_timestamp",
         models.DateTimeField(blank=True, default=None, null=True, help_text="A timestamp of the last failed "
                                                                              "verification attempt. Null if last attempt succeeded.")),
    ]


class Migration(migrations.Migration):

    dependencies = [
        ('authenticators', '0006_password_reset_wait'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddField(model_name=model, name=name, field=field)
                              for model in MODELS for name, field in _fields()],
        ),
        *[migrations.RemoveField(model_name=model, name=name) for model in MODELS for name, _field in _fields()],
    ]
