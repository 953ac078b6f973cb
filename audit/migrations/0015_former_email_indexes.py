"""The former addresses of e-mail changes, indexed for those events only, so that the audit search finds a
person by an address they held before without reading every change. Built CONCURRENTLY on PostgreSQL,
as 0009 drops its indexes: events go on being written meanwhile, however long the trail."""

import django.db.models.fields.json
import django.db.models.functions.text
from django.conf import settings
from django.db import migrations, models

INDEXES = [
    models.Index(django.db.models.functions.text.Lower(django.db.models.fields.json.KeyTextTransform(
        'email', django.db.models.fields.json.KeyTextTransform('before', 'details'))),
        condition=models.Q(('event', 'user.changed')), name='audit_former_email_by_ra'),
    models.Index(django.db.models.functions.text.Lower(django.db.models.fields.json.KeyTextTransform(
        'before', 'details')), condition=models.Q(('event', 'email.primary_changed')), name='audit_former_email'),
]


def _concurrently(schema_editor) -> dict:
    return {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}


def _drop_if_there(model, index, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":  # DROP INDEX CONCURRENTLY IF EXISTS
        schema_editor.execute(index.remove_sql(model, schema_editor, concurrently=True))
    else:  # SQLite's (make run's) DROP INDEX has no IF EXISTS of Django's own
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(index.name)}")


def create_indexes(apps, schema_editor):
    """Each dropped first if it is there: a run that stopped part-way (not atomic) left the first built, or an
    INVALID one under the name of the build that failed, and running migrate again must finish the job."""
    model = apps.get_model("audit", "AuditEvent")
    for index in INDEXES:
        _drop_if_there(model, index, schema_editor)
        schema_editor.execute(index.create_sql(model, schema_editor, **_concurrently(schema_editor)))


def drop_indexes(apps, schema_editor):
    model = apps.get_model("audit", "AuditEvent")
    for index in INDEXES:
        _drop_if_there(model, index, schema_editor)


class Migration(migrations.Migration):
    atomic = False  # CREATE/DROP INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ('audit', '0014_readable_field_names'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name='auditevent', index=index) for index in INDEXES],
            database_operations=[migrations.RunPython(create_indexes, drop_indexes)],
        ),
    ]
