"""The audit trail's PostgreSQL triggers, which refuse whatever the session has set.

django-pgtrigger's triggers step aside for a session that names them in its `pgtrigger.ignore` setting (what
its `pgtrigger.ignore()` sets), and PostgreSQL lets any role set a setting of that kind: the application's own
role, neither superuser nor the table's owner, could UPDATE and DELETE events, and insert one already sealed.
careid never asks these triggers to step aside, so theirs are compiled without that check. No model here:
migrations reference UnconditionalTriggerSql by its path.
"""

from __future__ import annotations

import pgtrigger
from pgtrigger import compiler


class UnconditionalTriggerSql(compiler.UpsertTriggerSql):
    """django-pgtrigger's installation template (its v1) without the `pgtrigger.ignore` check. Migrations use it
    as written: never edit it, add a new class for a new template."""

    def get_template(self) -> str:
        return """
            CREATE OR REPLACE FUNCTION {pgid}()
            RETURNS TRIGGER AS $$
                {declare}
                BEGIN
                    {func}
                END;
            $$ LANGUAGE plpgsql;

            DROP TRIGGER IF EXISTS {pgid} ON {table};
            CREATE {constraint} TRIGGER {pgid}
                {when} {operation} ON {table}
                {timing}
                {referencing}
                FOR EACH {level} {condition}
                EXECUTE PROCEDURE {execute};

            COMMENT ON TRIGGER {pgid} ON {table} IS '{hash}';
        """


class _Unconditional:
    """A trigger that no session setting turns off (only a superuser, or the table's owner, can)."""

    def compile(self, model) -> compiler.Trigger:
        compiled = super().compile(model)
        return compiler.Trigger(name=compiled.name, sql=UnconditionalTriggerSql(**compiled.sql.kwargs))


class Refuse(_Unconditional, pgtrigger.Protect):
    """pgtrigger.Protect, unconditionally."""


class Check(_Unconditional, pgtrigger.Trigger):
    """A trigger of our own (its `func`), unconditionally."""
