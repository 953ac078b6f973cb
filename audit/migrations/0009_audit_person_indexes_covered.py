"""The actor's and the subject's own indexes go: audit_actor_at and audit_subject_at lead with the same
columns and serve every look-up by person (a person's events, PROTECT's check when a user is deleted),
while each index is written again by every event and by every seal.

State only for the fields (Django's AlterField would drop and re-add both foreign keys, which on a long
trail checks every row under a lock that stops sign-ins); in the database, DROP INDEX CONCURRENTLY on
PostgreSQL, so that events go on being written meanwhile.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

INDEXES = ("audit_auditevent_actor_id_270bb4b7", "audit_auditevent_subject_id_1173988d")


def drop_indexes(apps, schema_editor):
    concurrently = " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""
    for name in INDEXES:
        schema_editor.execute(f'DROP INDEX{concurrently} IF EXISTS "{name}"')


def create_indexes(apps, schema_editor):
    concurrently = " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""
    for name, column in zip(INDEXES, ("actor_id", "subject_id"), strict=True):
        schema_editor.execute(f'CREATE INDEX{concurrently} IF NOT EXISTS "{name}" ON "audit_auditevent" ("{column}")')


class Migration(migrations.Migration):
    atomic = False  # CREATE/DROP INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("audit", "0008_alter_auditevent_event"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="auditevent",
                    name="actor",
                    field=models.ForeignKey(blank=True, db_index=False, null=True,
                                            on_delete=django.db.models.deletion.PROTECT, related_name="+",
                                            to=settings.AUTH_USER_MODEL),
                ),
                migrations.AlterField(
                    model_name="auditevent",
                    name="subject",
                    field=models.ForeignKey(blank=True, db_index=False, null=True,
                                            on_delete=django.db.models.deletion.PROTECT, related_name="audit_events",
                                            to=settings.AUTH_USER_MODEL),
                ),
            ],
            database_operations=[migrations.RunPython(drop_indexes, create_indexes)],
        ),
    ]
