from django.db import migrations

# The RA user search matches the start of a first or last name, case-insensitively (UPPER(x) LIKE
# 'TERM%'). On PostgreSQL these indexes serve it (text_pattern_ops, as the collation may not be C);
# without them the search scans every user (bench/admin_lists.py: 34 ms -> 1 ms at 100k users).
# SQLite (make run) has no operator classes and small tables: nothing to do there.
INDEXES = [
    ("user_last_name_upper_like", "last_name"),
    ("user_first_name_upper_like", "first_name"),
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name, column in INDEXES:
            schema_editor.execute(
                f'CREATE INDEX IF NOT EXISTS "{name}" ON "accounts_user" (UPPER("{column}") text_pattern_ops)'
            )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name, _column in INDEXES:
            schema_editor.execute(f'DROP INDEX IF EXISTS "{name}"')


class Migration(migrations.Migration):
    dependencies = [("accounts", "0005_user_external_id")]
    operations = [migrations.RunPython(create, drop)]
