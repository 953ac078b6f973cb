"""authenticators 0007 drops the columns of django-otp's throttle that 0005 left behind for the release before."""

from __future__ import annotations

from django.db import connection


def test_no_authenticator_table_keeps_the_old_throttle_columns(db):
    with connection.cursor() as cursor:
        tables = [table for table in connection.introspection.table_names(cursor)
                  if table in ("authenticators_authenticatorapp", "authenticators_ipad", "authenticators_passkey",
                               "authenticators_securitykey", "authenticators_windowshello")]
        columns = {table: {column.name for column in connection.introspection.get_table_description(cursor, table)}
                   for table in tables}
    assert len(columns) == 5
    assert {table: names & {"throttling_failure_count", "throttling_failure_timestamp"}
            for table, names in columns.items()} == {table: set() for table in columns}
