"""Streaming CSV export of audit events, safe to open in a spreadsheet, recorded as it actually went."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator

from django.db import DatabaseError, transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import AuditEvent, Event, Outcome
from .record import record

logger = logging.getLogger(__name__)

COLUMNS = ["time", "event", "outcome", "actor_uid", "subject_uid", "subject_email", "ip", "user_agent", "method",
           "aal", "details", "id", "seq", "chain_hash", "written_mac"]
_FIELDS = ("at", "event", "outcome", "actor__uid", "subject__uid", "subject__email", "ip", "user_agent", "method",
           "aal", "details", "id", "seq", "chain_hash", "written_mac")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
STOPPED = "the download stopped before the end"


def neutralise(value: object) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


class _Echo:
    def write(self, value: str) -> str:
        return value


_TIME, _DETAILS = _FIELDS.index("at"), _FIELDS.index("details")


def _cells(values: tuple) -> list[str]:
    cells = list(values)
    cells[_TIME] = cells[_TIME].isoformat()
    # JSON an Auditor's tools can read, not Python's repr of the dict.
    cells[_DETAILS] = json.dumps(cells[_DETAILS], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return [neutralise(value) for value in cells]


def export_lines(events: QuerySet[AuditEvent], *, request: HttpRequest, filters: str) -> Iterator[str]:
    """The export's CSV lines, recorded in the trail as they go.

    The header goes out together with the first row, once the query has run: a WSGI server sends the
    status and headers with the first chunk, so until then a failing query still gets an error page
    (500) rather than a file cut off after its header. The trail gets audit.export_started when the
    stream begins, committed before any data leaves, and audit.exported when it ends: a success with
    the number of rows sent, or a failure with the rows handed to the web server before it stopped
    (the last of them may not have reached the person) and why.

    The query runs here, when the web server asks for the first chunk, not in the view: by then the
    middleware has saved the session outside this long transaction. Inside it, the session row's lock
    would be held to the end of the download, and every other page of the same person would wait.
    """
    started = record(Event.AUDIT_EXPORT_STARTED, request=request, filters=filters)
    writer = csv.writer(_Echo())
    sent, failure = 0, STOPPED
    try:
        # Inside a transaction QuerySet.iterator()'s server-side cursor is WITHOUT HOLD, so rows arrive
        # as the cursor reads them. In autocommit Django declares it WITH HOLD, and PostgreSQL runs the whole
        # query and keeps every row before the first is fetched: ~0.4 s for 130k events (bench/admin_lists.py).
        with transaction.atomic():
            rows = events.values_list(*_FIELDS).iterator(chunk_size=2000)
            first = next(rows, None)
            sent = 0 if first is None else 1
            yield writer.writerow(COLUMNS) + ("" if first is None else writer.writerow(_cells(first)))
            for values in rows:
                sent += 1
                yield writer.writerow(_cells(values))
        failure = ""
    except DatabaseError as error:
        failure = f"the database failed while reading the events ({type(error).__name__})"
        raise
    finally:
        _record_end(request=request, filters=filters, started=started, sent=sent, failure=failure)


def _record_end(*, request: HttpRequest, filters: str, started: AuditEvent, sent: int, failure: str) -> None:
    details = {"filters": filters, "rows": sent, "started_event": started.pk}
    try:
        if failure:
            record(Event.AUDIT_EXPORTED, request=request, outcome=Outcome.FAILURE, reason=failure, **details)
        else:
            record(Event.AUDIT_EXPORTED, request=request, **details)
    except DatabaseError:
        # The connection the export failed on may be gone; the started event is in the trail already.
        logger.exception("Could not record the end of audit export %s (%s rows, %s)", started.pk, sent,
                         failure or "complete")
