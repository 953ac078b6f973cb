"""audit 0015 builds its indexes CONCURRENTLY, outside a transaction: a run that stopped part-way leaves the
first index (or an INVALID one) behind, and running migrate again finishes the job; and it runs on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.db import connection

from .conftest import require
from .migrations import migrate, migrate_to_latest

NAMES = ("audit_former_email_by_ra", "audit_former_email")


@pytest.fixture
def at_latest(transactional_db):
    require(connection.vendor == "postgresql", "PostgreSQL (CONCURRENTLY)")
    yield
    migrate_to_latest()


def indexes() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE indexname = ANY(%s)", [list(NAMES)])
        return {name for (name,) in cursor.fetchall()}


def test_0015_runs_again_after_a_build_that_stopped_part_way(at_latest):
    migrate(("audit", "0014_readable_field_names"))
    assert indexes() == set()
    with connection.cursor() as cursor:  # what the first run left: its first index built, the second not
        cursor.execute("""CREATE INDEX CONCURRENTLY "audit_former_email_by_ra" ON "audit_auditevent"
                          (LOWER((("details" -> 'before') ->> 'email'))) WHERE "event" = 'user.changed'""")
    migrate(("audit", "0015_former_email_indexes"))
    assert indexes() == set(NAMES)


def test_a_new_sqlite_database_migrates_to_the_end(tmp_path):
    """`make run`'s database: SQLite, created from nothing. Its DROP INDEX has no IF EXISTS of its own, so 0015's
    clean-up of a part-way run must say so itself."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    done = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=settings.BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Applying audit.0015_former_email_indexes... OK" in done.stdout
