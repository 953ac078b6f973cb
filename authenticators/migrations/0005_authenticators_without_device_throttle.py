"""django-otp's ThrottlingMixin is gone from the authenticator models (the account's throttle is the one
people meet). The processes of the release before still read and write its two columns while this one
starts, so the columns stay in the database for now: out of Django's state, with a database default for
the count so that this release's INSERTs need not name it. A later release drops them."""

from django.db import migrations, models

MODELS = ["authenticatorapp", "ipad", "passkey", "securitykey", "windowshello"]
FIELDS = ["throttling_failure_count", "throttling_failure_timestamp"]


class Migration(migrations.Migration):

    dependencies = [
        ('authenticators', '0004_invitations_give_fresh_links'),
    ]

    operations = [
        *[migrations.AlterField(model_name=model, name="throttling_failure_count",
                                field=models.PositiveIntegerField(default=0, db_default=0,
                                                                  help_text="Number of successive failed attempts."))
          for model in MODELS],
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.RemoveField(model_name=model, name=field) for model in MODELS for field in FIELDS],
        ),
    ]
