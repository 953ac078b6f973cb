"""Bulk onboarding: Care Identities from an HR export (CSV), and the export that is its inverse.

A run is one transaction, so an interrupted run leaves nothing behind and a re-run finishes the
job. The file is streamed once into a temporary staging table (COPY on PostgreSQL, batched
inserts on SQLite) with each row's own checks done on the way in. The checks that need the whole
file or the database (duplicates, existing Care Identities) are then set-based SQL over that
table, and the users, their e-mail addresses and their audit events are inserted from it with
INSERT ... SELECT. Memory stays flat whatever the size of the file: rows are never held in Python,
and the rows to report are read back a page at a time.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, Protocol, TextIO

from allauth.account.models import EmailAddress
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import DatabaseError, IntegrityError, connection, models, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models.fields import AutoFieldMixin

from audit.mac import written_mac
from audit.models import AuditEvent, Event, Outcome
from audit.record import record

from .emails import NOT_ON_ALLOW_LIST, normalise_email
from .models import AllowedEmailDomain, User, generate_uid
from .validators import VisibleText

logger = logging.getLogger(__name__)

COLUMNS = ("email", "title", "first_name", "last_name", "uid", "external_id")
REQUIRED_COLUMNS = ("email", "first_name", "last_name")
NEW, EXISTS, REJECTED = "new", "exists", "rejected"
INVITATIONS_PER_TASK = 500
NOT_UTF8 = "Contains bytes that are not UTF-8 text"

_LABELS = {"title": "Title", "first_name": "First name", "last_name": "Last name", "external_id": "External ID"}
_UID = re.compile(r"[1-9][0-9]{11}")
# surrogateescape decodes each byte that is not UTF-8 to one of these.
_UNDECODABLE_BYTE = re.compile(r"[\udc80-\udcff]")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_ESCAPED_FORMULA = re.compile(r"'+[=+\-@\t\r]")


class OnboardingError(Exception):
    """The file cannot be imported at all; nothing was written."""


class Progress(Protocol):
    def advance(self, rows: int, bytes_read: int) -> None: ...

    def phase(self, message: str) -> None: ...


class _Silent:
    def advance(self, rows: int, bytes_read: int) -> None:
        pass

    def phase(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class ReportedRow:
    """A row that was not created: rejected (with every reason) or already a Care Identity."""

    line: int
    outcome: str
    reason: str
    values: dict[str, str]


@dataclass
class Summary:
    read: int = 0
    new: int = 0  # valid rows that are not Care Identities yet (created unless refused or a dry run)
    exists: int = 0
    rejected: int = 0
    created: int = 0
    undecodable_lines: list[int] = field(default_factory=list)  # the first few only
    undecodable: int = 0
    refusal: str = ""  # why nothing was written although the file could be read
    to_invite: int = 0
    invitations_queued: int = 0
    invitations_not_queued: int = 0
    invitation_error: str = ""
    sha256: str = ""
    seconds: float = 0.0

    @property
    def valid(self) -> int:
        return self.new + self.exists

    @property
    def rows_per_second(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0


# --- CSV cells that a spreadsheet will not run -------------------------------------------------


def escape_cell(value: str) -> str:
    """A value a spreadsheet will not run as a formula (OWASP CSV injection): a leading quote.

    Unlike audit.export.neutralise this can be undone (unescape_cell): a value that already looks
    escaped gets one more quote, so an exported file edited and imported again keeps every value.
    """
    if value.startswith(_FORMULA_STARTS) or _ESCAPED_FORMULA.match(value):
        return "'" + value
    return value


def unescape_cell(value: str) -> str:
    return value[1:] if value.startswith("'") and _ESCAPED_FORMULA.match(value) else value


# --- reading the file ---------------------------------------------------------------------------


class _CountingReader(io.RawIOBase):
    """The source as read: bytes counted (progress) and hashed (the audit event names the exact file)."""

    def __init__(self, source: BinaryIO) -> None:
        self._read = getattr(source, "read1", source.read)
        self.bytes_read = 0
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._read(len(buffer))
        size = len(data)
        buffer[:size] = data
        self.bytes_read += size
        self.sha256.update(data)
        return size


def _records(text: TextIO, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first physical line, values) of each record that is not blank; a quoted line break
    inside a value still counts as a line, so numbers match what an editor shows."""
    reader = csv.reader(text, delimiter=delimiter, strict=True)
    lines_before = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            # Past a broken quote the reader cannot know where records start: stop, trust nothing.
            raise OnboardingError(f"Line {reader.line_num} is not valid CSV ({error}).") from None
        first_line, lines_before = lines_before + 1, reader.line_num
        if any(value.strip() for value in values):
            yield first_line, values


def _column_positions(records: Iterator[tuple[int, list[str]]]) -> dict[str, int]:
    first = next(records, None)
    if first is None:
        raise OnboardingError(
            "The file is empty: the first line must name the columns, at least " + ", ".join(REQUIRED_COLUMNS) + "."
        )
    line, names = first
    if _UNDECODABLE_BYTE.search("".join(names)):
        raise OnboardingError(f"Line {line} (the header) is not UTF-8 text. Save the file as CSV UTF-8.")
    names = [name.strip().lower() for name in names]
    problems = []
    unknown = [_shown(name) or f"(column {position} has no name)" for position, name in enumerate(names, 1)
               if name not in COLUMNS]
    if unknown:
        shown = ", ".join(unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        problems.append(f"unknown column{'s' if len(unknown) > 1 else ''} {shown}")
    repeated = sorted(name for name, count in Counter(names).items() if count > 1 and name in COLUMNS)
    if repeated:
        problems.append(f"column{'s' if len(repeated) > 1 else ''} {', '.join(repeated)} more than once")
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        problems.append(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if problems:
        raise OnboardingError(
            f"Line {line} (the header): {'; '.join(problems)}. The columns are {', '.join(COLUMNS)} "
            f"({', '.join(REQUIRED_COLUMNS)} required)."
        )
    return {name: position for position, name in enumerate(names)}


def _shown(name: str) -> str:
    """A name from the file as it may be printed on the operator's terminal: no escape sequences."""
    name = "".join(character if character.isprintable() else "?" for character in name)
    return name if len(name) <= 40 else name[:40] + "..."


def _readable(value: str) -> str:
    """What a rejected value can be stored and reported as: bytes that were not UTF-8 and NUL
    (which PostgreSQL text cannot hold) become U+FFFD."""
    if _UNDECODABLE_BYTE.search(value):
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value.replace("\x00", "\ufffd")


class _RowChecker:
    """Every check on a row that needs neither the rest of the file nor the database (the allow
    list is read once, before the file)."""

    def __init__(self, positions: dict[str, int], allows: Callable[[str], bool], summary: Summary) -> None:
        self._positions = positions
        self._width = len(positions)
        # An optional column the file does not have reads the "" appended to every row (position -1).
        self._at = {name: positions.get(name, -1) for name in COLUMNS}
        self._allows = allows
        self._allowed_by_domain: dict[str, bool] = {}
        self._summary = summary
        self._max_length = {name: User._meta.get_field(name).max_length for name in COLUMNS}
        self._visible = {name: VisibleText(label) for name, label in _LABELS.items()}

    def staged_row(self, line: int, values: list[str]) -> tuple:
        if len(values) != self._width:
            problem = f"Expected {self._width} values, as in the header, found {len(values)}"
            return self._rejected(line, values, [problem])
        joined = "".join(values)
        if _UNDECODABLE_BYTE.search(joined):
            self._summary.undecodable += 1
            if len(self._summary.undecodable_lines) < 10:
                self._summary.undecodable_lines.append(line)
            return self._rejected(line, values, [NOT_UTF8])
        cells = [unescape_cell(value) for value in values] if "'" in joined else values[:]
        cells.append("")
        at = self._at
        problems: list[str] = []
        email = self._email(cells[at["email"]], problems)
        title = self._name(cells[at["title"]], "title", problems, required=False)
        first_name = self._name(cells[at["first_name"]], "first_name", problems, required=True)
        last_name = self._name(cells[at["last_name"]], "last_name", problems, required=True)
        uid = cells[at["uid"]].strip()
        if uid and not _UID.fullmatch(uid):
            problems.append("UID must be 12 digits, not starting with 0")
        external_id = self._external_id(cells[at["external_id"]], problems)
        if problems:
            return self._rejected(line, values, problems)
        return (line, NEW, "", email, title, first_name, last_name, uid or generate_uid(), bool(uid), external_id)

    def _email(self, value: str, problems: list[str]) -> str:
        if not value.strip():
            problems.append("Enter an email address")
            return ""
        try:
            email = normalise_email(value)
        except ValidationError as error:
            problems.append(error.messages[0])
            return ""
        if len(email) > self._max_length["email"]:
            problems.append(f"Email address must be {self._max_length['email']} characters or fewer")
        elif not self._domain_allowed(email):
            problems.append(NOT_ON_ALLOW_LIST)
        return email

    def _domain_allowed(self, email: str) -> bool:
        domain = email.rpartition("@")[2]
        allowed = self._allowed_by_domain.get(domain)
        if allowed is None:
            if len(self._allowed_by_domain) >= 10_000:  # a file of made-up domains: memory stays flat
                self._allowed_by_domain.clear()
            allowed = self._allowed_by_domain[domain] = self._allows(email)
        return allowed

    def _name(self, value: str, name: str, problems: list[str], *, required: bool) -> str:
        # Line breaks and tabs inside a quoted value (a cell edited in a spreadsheet) are spacing.
        value = " ".join(value.split())
        label = _LABELS[name]
        if not value:
            if required:
                problems.append(f"Enter a {label.lower()}")
        elif len(value) > self._max_length[name]:
            problems.append(f"{label} must be {self._max_length[name]} characters or fewer")
        else:
            self._check_visible(value, name, problems)
        return value

    def _external_id(self, value: str, problems: list[str]) -> str:
        value = value.strip()
        if len(value) > self._max_length["external_id"]:
            problems.append(f"External ID must be {self._max_length['external_id']} characters or fewer")
        else:
            self._check_visible(value, "external_id", problems)
        return value

    def _check_visible(self, value: str, name: str, problems: list[str]) -> None:
        try:
            self._visible[name](value)
        except ValidationError as error:
            problems.append(error.messages[0])

    def _rejected(self, line: int, values: list[str], problems: list[str]) -> tuple:
        def raw(name: str) -> str:
            position = self._positions.get(name)
            return _readable(values[position]) if position is not None and position < len(values) else ""

        uid = raw("uid")
        return (line, REJECTED, "; ".join(problems), raw("email"), raw("title"), raw("first_name"),
                raw("last_name"), uid, bool(uid.strip()), raw("external_id"))


def _staged_rows(
    source: _CountingReader, delimiter: str, allows: Callable[[str], bool], summary: Summary, progress: Progress
) -> Iterator[tuple]:
    text = io.TextIOWrapper(
        io.BufferedReader(source, buffer_size=1 << 16), encoding="utf-8-sig", errors="surrogateescape", newline=""
    )
    records = _records(text, delimiter)
    checker = _RowChecker(_column_positions(records), allows, summary)
    for line, values in records:
        yield checker.staged_row(line, values)
        summary.read += 1
        if not summary.read % 2000:
            progress.advance(summary.read, source.bytes_read)
    progress.advance(summary.read, source.bytes_read)


# --- the staging table and the set-based steps --------------------------------------------------

_STAGING_COLUMNS = "line, status, reason, email, title, first_name, last_name, uid, uid_given, external_id"

_CREATE = """
CREATE TEMPORARY TABLE {rows} (
    line integer PRIMARY KEY,
    status varchar(8) NOT NULL,
    reason text NOT NULL,
    email text NOT NULL,
    title text NOT NULL,
    first_name text NOT NULL,
    last_name text NOT NULL,
    uid text NOT NULL,
    uid_given boolean NOT NULL,
    external_id text NOT NULL,
    user_id bigint
)"""
# The MAC of each new row's user.onboarded event (audit/mac.written_mac), computed in Python where the key is.
_CREATE_MACS = "CREATE TEMPORARY TABLE {macs} (line integer NOT NULL, mac text NOT NULL)"

# Later lines repeating an e-mail, a given UID or an external ID of an earlier valid line.
_REJECT_DUPLICATES = """
UPDATE {rows} SET status = 'rejected', reason = substr(
       CASE WHEN d.email_first < d.line THEN '; Same email address as line ' || d.email_first ELSE '' END
    || CASE WHEN d.uid_first < d.line THEN '; Same UID as line ' || d.uid_first ELSE '' END
    || CASE WHEN d.external_first < d.line THEN '; Same external ID as line ' || d.external_first ELSE '' END, 3)
FROM (
    SELECT line,
           min(line) OVER (PARTITION BY email) AS email_first,
           CASE WHEN uid_given THEN min(line) OVER (PARTITION BY uid_given, uid) END AS uid_first,
           CASE WHEN external_id <> '' THEN min(line) OVER (PARTITION BY external_id) END AS external_first
    FROM {rows} WHERE status = 'new'
) AS d
WHERE {rows}.line = d.line AND (d.email_first < d.line OR d.uid_first < d.line OR d.external_first < d.line)"""

# The import never changes an existing Care Identity: what differs is said, not applied.
_MATCH_EMAIL = """
UPDATE {rows} SET status = 'exists', user_id = u.id,
       reason = 'A Care Identity with this email address already exists (UID ' || u.uid || ')'
                || CASE WHEN {rows}.uid_given AND {rows}.uid <> u.uid THEN ', not UID ' || {rows}.uid ELSE '' END
FROM {users} u
WHERE {rows}.status = 'new' AND lower(u.email) = {rows}.email"""

_MATCH_UID = """
UPDATE {rows} SET
    status = CASE WHEN {rows}.status = 'new' THEN 'exists' ELSE 'rejected' END,
    user_id = COALESCE({rows}.user_id, u.id),
    reason = CASE WHEN {rows}.status = 'new'
        THEN 'A Care Identity with this UID already exists, with another email address'
        ELSE 'The email address belongs to Care Identity '
             || (SELECT e.uid FROM {users} e WHERE e.id = {rows}.user_id) || ' but the UID to another' END
FROM {users} u
WHERE {rows}.uid_given AND {rows}.status IN ('new', 'exists') AND u.uid = {rows}.uid
  AND ({rows}.user_id IS NULL OR {rows}.user_id <> u.id)"""

_MATCH_EXTERNAL_ID = """
UPDATE {rows} SET status = 'rejected', reason = 'External ID already belongs to Care Identity ' || u.uid
FROM {users} u
WHERE {rows}.external_id <> '' AND {rows}.status IN ('new', 'exists')
  AND u.external_id = {rows}.external_id AND u.external_id <> ''
  AND ({rows}.user_id IS NULL OR {rows}.user_id <> u.id)"""

# A new primary address could never be verified there (allauth: one verified owner per address).
# With _MATCH_EMAIL this is User.objects.holding_email, set-based: an address belongs to one Care Identity.
_MATCH_VERIFIED_ELSEWHERE = """
UPDATE {rows} SET status = 'rejected',
       reason = 'This email address is verified on another Care Identity (UID ' || u.uid || ')'
FROM {addresses} a JOIN {users} u ON u.id = a.user_id
WHERE {rows}.status = 'new' AND a.email = {rows}.email AND a.verified"""

# A generated UID must be free: not a user's, and not given or generated on another line of the file,
# rejected lines included (once such a line is corrected and imported, its UID must still be free).
_CLASHING_GENERATED_UIDS = """
SELECT s.line FROM {rows} s
WHERE s.status = 'new' AND NOT s.uid_given AND (
    EXISTS (SELECT 1 FROM {users} u WHERE u.uid = s.uid)
    OR s.uid IN (SELECT uid FROM {rows} GROUP BY uid HAVING count(*) > 1))"""

_REPORTED_PAGE = """
SELECT line, status, reason, email, title, first_name, last_name, CASE WHEN uid_given THEN uid ELSE '' END,
       external_id
FROM {rows} WHERE status IN (%s, %s) AND line > %s ORDER BY line LIMIT %s"""

_UNINVITED = """
FROM {rows} s JOIN {users} u ON u.id = s.user_id
WHERE s.status <> 'rejected' AND u.invited_at IS NULL AND u.status = %s"""


class _Staging(ABC):
    """The run's rows in a temporary table of the run's own database connection."""

    table = "onboarding_rows"
    macs_table = "onboarding_event_macs"
    json_object = "json_object"
    random_unusable_password = "'!' || lower(hex(randomblob(20)))"
    page_size = 2000
    mac_page_size = 10_000
    EVENT = {"event": Event.USER_ONBOARDED, "outcome": Outcome.SUCCESS}  # each row's audit event, with its own subject

    def __init__(self, cursor: CursorWrapper) -> None:
        self.cursor = cursor
        quote = connection.ops.quote_name
        self._names = {"rows": self.table, "macs": self.macs_table, "users": quote(User._meta.db_table),
                       "addresses": quote(EmailAddress._meta.db_table)}

    def sql(self, template: str) -> str:
        return template.format(**self._names)

    def execute(self, template: str, params: Sequence[Any] = ()) -> int:
        self.cursor.execute(self.sql(template), params)
        return self.cursor.rowcount

    def fetch(self, template: str, params: Sequence[Any] = ()) -> list[tuple]:
        self.cursor.execute(self.sql(template), params)
        return self.cursor.fetchall()

    def begin(self, progress: Progress) -> None:  # noqa: B027 (a hook: most databases need no preparation)
        return None

    def create(self) -> None:
        self.drop()
        self.execute(_CREATE)
        self.execute(_CREATE_MACS)

    def drop(self) -> None:
        self.execute("DROP TABLE IF EXISTS {rows}")
        self.execute("DROP TABLE IF EXISTS {macs}")

    @abstractmethod
    def load(self, rows: Iterable[tuple]) -> None:
        """Put the checked rows into the staging table, the fastest way the database has."""

    def classify(self) -> None:
        for step in (_REJECT_DUPLICATES, _MATCH_EMAIL, _MATCH_UID, _MATCH_EXTERNAL_ID, _MATCH_VERIFIED_ELSEWHERE):
            self.execute(step)
        self._replace_clashing_generated_uids()

    def _replace_clashing_generated_uids(self) -> None:
        # About one clash in a million-row file with a million users already: rare, but possible.
        for _attempt in range(20):
            clashing = self.fetch(_CLASHING_GENERATED_UIDS)
            if not clashing:
                return
            for (line,) in clashing:
                self.execute("UPDATE {rows} SET uid = %s WHERE line = %s", [generate_uid(), line])
        raise RuntimeError("Could not generate free UIDs")

    def counts(self) -> dict[str, int]:
        return dict(self.fetch("SELECT status, count(*) FROM {rows} GROUP BY status"))

    def reported_rows(self, *, existing: bool) -> Iterator[ReportedRow]:
        statuses = [REJECTED, EXISTS] if existing else [REJECTED, REJECTED]
        after = 0
        while page := self.fetch(_REPORTED_PAGE, [*statuses, after, self.page_size]):
            for line, status, reason, *values in page:
                yield ReportedRow(line, status, reason, dict(zip(COLUMNS, values, strict=True)))
            after = page[-1][0]

    def count_uninvited(self) -> int:
        return self.fetch("SELECT count(DISTINCT s.user_id) " + _UNINVITED, [User.Status.ACTIVE])[0][0]

    def uninvited_page(self, after: int, size: int) -> list[int]:
        sql = "SELECT DISTINCT s.user_id " + _UNINVITED + " AND s.user_id > %s ORDER BY s.user_id LIMIT %s"
        return [user_id for (user_id,) in self.fetch(sql, [User.Status.ACTIVE, after, size])]

    def remember_new_user_ids(self) -> None:
        self.execute("UPDATE {rows} SET user_id = u.id FROM {users} u "
                     "WHERE {rows}.status = 'new' AND u.uid = {rows}.uid")
        self.execute("CREATE INDEX onboarding_rows_user_id ON {rows} (user_id)")

    def write(self, *, run_id: int, now: datetime) -> int:
        new_rows = "FROM {rows} s WHERE s.status = 'new' ORDER BY s.line"
        created = self._insert_select(User, new_rows, expressions={
            "password": self.random_unusable_password, "uid": "s.uid", "title": "s.title",
            "first_name": "s.first_name", "last_name": "s.last_name", "email": "s.email",
            "external_id": "s.external_id",
        }, values={"date_joined": now})
        with_user = "FROM {rows} s JOIN {users} u ON u.uid = s.uid WHERE s.status = 'new'"
        self._insert_select(EmailAddress, with_user, expressions={"user_id": "u.id", "email": "s.email"},
                            values={"verified": False, "primary": True})
        self._write_event_macs(with_user, run_id=run_id, now=now)
        # In the file's order: the events' ids (and so their place in the audit chain) follow its lines.
        with_mac = ("FROM {rows} s JOIN {users} u ON u.uid = s.uid JOIN {macs} m ON m.line = s.line "
                    "WHERE s.status = 'new' ORDER BY s.line")
        self._insert_select(AuditEvent, with_mac, expressions={
            "subject_id": "u.id",
            "details": f"{self.json_object}('run', {int(run_id)}, 'line', s.line, 'email', s.email)",
            "written_mac": "m.mac",
        }, values={"at": now, **self.EVENT, "seq": None})  # sealed later
        return created

    def _write_event_macs(self, with_user: str, *, run_id: int, now: datetime) -> None:
        """The MAC of each row's user.onboarded event (audit/mac.written_mac), computed here, where the key
        is, a page at a time, into a table of their own the events are then inserted from (appended, not
        updated in place: an UPDATE of every staged row cost more than the rest of the write)."""
        event = AuditEvent(at=now, **self.EVENT).written_content()  # the columns _insert_select leaves to defaults
        for page in self.pages(f"SELECT s.line, u.id, s.email {with_user}"):
            self.add_event_macs([(line, written_mac({
                **event, "subject_id": user_id, "details": {"run": run_id, "line": line, "email": email},
            })) for line, user_id, email in page])

    def pages(self, template: str) -> Iterator[list[tuple]]:
        """The rows of one query, mac_page_size at a time, read once (pages by key would each join the whole
        staging table again)."""
        cursor = connection.connection.cursor()  # its own: the pages are written meanwhile
        try:
            cursor.execute(self.sql(template))
            while page := cursor.fetchmany(self.mac_page_size):
                yield page
        finally:
            cursor.close()

    def add_event_macs(self, macs: list[tuple[int, str]]) -> None:
        self.cursor.executemany(self.sql("INSERT INTO {macs} (line, mac) VALUES (%s, %s)"), macs)

    def _insert_select(self, model: type[models.Model], source: str, *, expressions: dict[str, str],
                       values: dict[str, Any]) -> int:
        """INSERT INTO the model's table SELECT ... `source`: each column from `expressions`, or
        `values`, or else its field default (one value for all rows, so it must not need to be unique)."""
        columns, selected, params = [], [], []
        for model_field in model._meta.concrete_fields:
            if isinstance(model_field, AutoFieldMixin):
                continue
            columns.append(connection.ops.quote_name(model_field.column))
            if model_field.attname in expressions:
                selected.append(expressions[model_field.attname])
                continue
            if model_field.attname in values:
                value = values[model_field.attname]
            else:
                if model_field.unique or (model_field.null is False and not model_field.has_default()
                                          and not model_field.empty_strings_allowed):
                    raise ImproperlyConfigured(
                        f"Bulk onboarding does not know what to store in {model.__name__}.{model_field.name}"
                    )
                value = model_field.get_default()
            selected.append("%s")
            params.append(model_field.get_db_prep_save(value, connection))
        table = connection.ops.quote_name(model._meta.db_table)
        sql = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(selected)} {source}"
        return self.execute(sql, params)


class _PostgresStaging(_Staging):
    json_object = "jsonb_build_object"
    random_unusable_password = "'!' || replace(gen_random_uuid()::text, '-', '')"
    # Any number: runs on one database wait for each other, so each sees what the previous created.
    advisory_lock = 4_020_011_001

    def begin(self, progress: Progress) -> None:
        # Sorts and hashes over the whole file (duplicates, joins) fit in memory for this run only.
        self.execute("SET LOCAL work_mem = '64MB'")
        if not self.fetch("SELECT pg_try_advisory_xact_lock(%s)", [self.advisory_lock])[0][0]:
            progress.phase("Waiting for another onboarding run to finish")
            self.execute("SELECT pg_advisory_xact_lock(%s)", [self.advisory_lock])

    def pages(self, template: str) -> Iterator[list[tuple]]:
        with connection.wrap_database_errors, connection.connection.cursor(name="onboarding_pages") as cursor:
            cursor.execute(self.sql(template))  # a server-side cursor: the rows stay in PostgreSQL
            while page := cursor.fetchmany(self.mac_page_size):
                yield page

    def add_event_macs(self, macs: list[tuple[int, str]]) -> None:
        with connection.wrap_database_errors, self.cursor.copy(f"COPY {self.macs_table} (line, mac) FROM STDIN") as copy:
            for row in macs:
                copy.write_row(row)

    def load(self, rows: Iterable[tuple]) -> None:
        with connection.wrap_database_errors, self.cursor.copy(
            f"COPY {self.table} ({_STAGING_COLUMNS}) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        # Autovacuum never analyses temporary tables; the joins below need the row count.
        self.execute("ANALYZE {rows}")


class _SQLiteStaging(_Staging):
    batch_size = 1000

    def load(self, rows: Iterable[tuple]) -> None:
        placeholders = ", ".join(["%s"] * len(_STAGING_COLUMNS.split(",")))
        insert = f"INSERT INTO {self.table} ({_STAGING_COLUMNS}) VALUES ({placeholders})"
        batch: list[tuple] = []
        for row in rows:
            batch.append(row)
            if len(batch) == self.batch_size:
                self.cursor.executemany(insert, batch)
                batch.clear()
        if batch:
            self.cursor.executemany(insert, batch)


def _staging(cursor: CursorWrapper) -> _Staging:
    return _PostgresStaging(cursor) if connection.vendor == "postgresql" else _SQLiteStaging(cursor)


# --- the run ----------------------------------------------------------------------------------


def onboard_users(
    source: BinaryIO,
    *,
    file_name: str,
    operator: str,
    delimiter: str = ",",
    dry_run: bool = False,
    skip_invalid: bool = False,
    invite: bool = False,
    report: Callable[[ReportedRow], None] = lambda row: None,
    report_existing: bool = True,
    progress: Progress | None = None,
) -> Summary:
    """Create a Care Identity for each new valid row of the CSV `source`, all or nothing.

    `report` receives, in line order, every row that was rejected and, with `report_existing`, every
    row that is already a Care Identity (a re-run of a big file has a great many). Raises
    OnboardingError (nothing written) when the file cannot be read as a whole; rejected rows
    instead set `refusal` (unless `skip_invalid`) and nothing is written either.
    """
    progress = progress or _Silent()
    summary = Summary()
    started = time.monotonic()
    source_reader = _CountingReader(source)
    details = {"operator": operator, "file": file_name, "skip_invalid": skip_invalid, "invite": invite}
    written = False

    def audit_failure(reason: str) -> None:
        if not dry_run:  # a dry run writes nothing, not even this
            _record_failure(details, summary, reason)

    try:
        allows = AllowedEmailDomain.objects.allows_many()
        with transaction.atomic(), connection.cursor() as cursor:
            staging = _staging(cursor)
            staging.begin(progress)
            staging.create()
            staging.load(_staged_rows(source_reader, delimiter, allows, summary, progress))
            summary.sha256 = source_reader.sha256.hexdigest()
            progress.phase("Checking for duplicates and existing Care Identities")
            staging.classify()
            counts = staging.counts()
            summary.new, summary.exists = counts.get(NEW, 0), counts.get(EXISTS, 0)
            summary.rejected = counts.get(REJECTED, 0)
            for row in staging.reported_rows(existing=report_existing):
                report(row)
            if invite:
                summary.to_invite = summary.new + staging.count_uninvited()
            summary.refusal = _refusal(summary, skip_invalid)
            if summary.refusal or dry_run:
                transaction.set_rollback(True)
            else:
                progress.phase(f"Writing {summary.new:,} Care Identities")
                run = record(Event.ONBOARDING_RUN, **details, **_counts(summary), sha256=summary.sha256)
                summary.created = staging.write(run_id=run.pk, now=run.at)
                if summary.created != summary.new:  # the audit event says how many: it must be true
                    raise DatabaseError(f"{summary.created} users inserted where {summary.new} were new")
                if invite:
                    staging.remember_new_user_ids()
                written = True
    except KeyboardInterrupt:
        audit_failure("interrupted")
        raise
    except OnboardingError as error:
        audit_failure(str(error))
        raise
    except IntegrityError as error:
        # Only a Care Identity created by another process since the checks can clash here.
        message = ("A Care Identity with one of these email addresses, UIDs or external IDs was created while "
                   "this run was checking the file. Run the command again.")
        audit_failure(message)
        raise OnboardingError(message) from error
    except DatabaseError as error:
        message = f"The database failed: {error}".strip()
        audit_failure(message)
        raise OnboardingError(message) from error
    if summary.refusal:
        audit_failure(summary.refusal)
    with connection.cursor() as cursor:
        staging = _staging(cursor)
        if written and invite:
            _queue_invitations(staging, summary, progress)
        staging.drop()
    summary.seconds = time.monotonic() - started
    return summary


def _refusal(summary: Summary, skip_invalid: bool) -> str:
    if summary.undecodable:
        lines = ", ".join(map(str, summary.undecodable_lines)) + (", ..." if summary.undecodable > 10 else "")
        return (f"The file is not UTF-8 text (line {lines}). Save it as CSV UTF-8 and run the command again; "
                "nothing was written.")
    if summary.rejected and not skip_invalid:
        rows = "1 row was" if summary.rejected == 1 else f"{summary.rejected:,} rows were"
        return (f"{rows} rejected, so nothing was written. Correct the file and run the command again, "
                "or use --skip-invalid to import only the valid rows.")
    return ""


def _counts(summary: Summary) -> dict[str, int]:
    return {"read": summary.read, "valid": summary.valid, "created": summary.new, "exists": summary.exists,
            "rejected": summary.rejected}


def _record_failure(details: dict[str, Any], summary: Summary, reason: str) -> None:
    """The failed run in the audit trail, after its transaction was rolled back."""
    try:
        with transaction.atomic():
            record(Event.ONBOARDING_RUN, outcome=Outcome.FAILURE, **details, **{**_counts(summary), "created": 0},
                   sha256=summary.sha256, reason=reason)
    except DatabaseError:
        logger.exception("Could not record the failed onboarding run")


def _queue_invitations(staging: _Staging, summary: Summary, progress: Progress) -> None:
    """Invitations in chunks, once the users are committed. A chunk that cannot be queued leaves
    its users never invited, so a re-run with --invite queues them again."""
    from .tasks import send_invitations_task

    progress.phase("Queuing invitations")
    after = 0
    while user_ids := staging.uninvited_page(after, INVITATIONS_PER_TASK):
        try:
            send_invitations_task.delay(user_ids)
        except Exception as error:  # the broker (or, in-process, the task) failed: nothing is lost
            logger.exception("Could not queue invitations")
            summary.invitation_error = str(error) or error.__class__.__name__
            summary.invitations_not_queued = staging.count_uninvited()
            return
        summary.invitations_queued += len(user_ids)
        after = user_ids[-1]


# --- export: the inverse of the import ----------------------------------------------------------


def export_users(destination: TextIO, *, statuses: Sequence[str], operator: str, file_name: str) -> int:
    """Write Care Identities as a CSV the import reads back (formula-safe); returns how many."""
    users = User.objects.order_by("pk")
    if statuses:
        users = users.filter(status__in=statuses)
    writer = csv.writer(destination, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    # A server-side cursor on PostgreSQL: a million users stream without being loaded at once.
    for values in users.values_list(*COLUMNS).iterator(chunk_size=2000):
        writer.writerow([escape_cell(value) for value in values])
        count += 1
    record(Event.USERS_EXPORTED, operator=operator, file=file_name, count=count, statuses=sorted(statuses))
    return count
