"""Latency of the RA back office's lists with 100,000 Care Identities and 1,000,000 audit events.

1. Fills a PostgreSQL bench database (created and migrated when missing; reused while it holds the
   requested numbers, recreated when not) with COPY, then VACUUM ANALYZE: users with their allauth
   e-mail address, most with an authenticator app, and audit events over 90 days.
2. Makes one RA Manager with a known password and TOTP secret and signs them in through the real
   CIS2 pages over HTTP (e-mail and password, then the 6-digit code), as the admin requires (AAL2).
3. Serves careid with gunicorn (2 sync workers, DEBUG off, persistent connections) on 127.0.0.1 and
   times each page one request at a time: p50/p95 of the user list and searches, the audit list,
   filters and search, and the first byte (and first data row) of a filtered CSV export.
   Target (issue 3): p50 <= 100 ms for the lists on this 2-core machine.
4. For each list that misses the target (every case with --explain) shows the SQL the admin ran,
   captured in-process through Django's test client on the same signed-in session, and
   EXPLAIN (ANALYZE, BUFFERS) of its slowest statement.

Run from the project root:  .venv/bin/python bench/admin_lists.py [--users N] [--events N] [--requests N]
    [--warmups N] [--explain] [--export-all] [--database-url postgres://...bench...]
"""

from __future__ import annotations

import argparse
import http.cookiejar
import ipaddress
import json
import math
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.client import HTTPException, HTTPResponse
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))  # run as bench/admin_lists.py: the project's packages

from bench.signin_page import WORKERS, free_port, gunicorn, wait_for_workers, wait_until_serving  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/careid_bench_admin"
TARGET_P50_MS = 100.0
FILL_TABLE = "careid_bench_fill"  # what the bench database holds (not a Django model)
SEED = 20261125
AUDIT_DAYS = 90
RA_ACTOR_POOL = 50  # staff who did the RA actions in the trail
STAFF_EMAIL = "bench.ra.manager@nhs.net"
LOOPBACK_NAMES = {"localhost", ""}  # "" is a Unix socket

# Production settings (DEBUG off, secure cookies, persistent connections), plain http on loopback.
BENCH_SETTINGS = {
    "DJANGO_SETTINGS_MODULE": "careid.settings",
    "SECRET_KEY": "bench-only-secret-key-not-used-anywhere-else",
    "CAREID_AUDIT_CHAIN_KEY": "bench-only-audit-chain-key-not-used-anywhere-else",
    "DEBUG": "false",
    "ALLOWED_HOSTS": "127.0.0.1",
    "CAREID_SSL_REDIRECT": "false",
    "CAREID_CONN_MAX_AGE": "60",
    "CACHE_URL": "redis://127.0.0.1:6379/15",
}

FIRST_NAMES = (
    "Amelia Olivia Isla Ava Mia Ivy Lily Isabella Rosie Sophia Grace Freya Willow Florence Emily Ella Poppy Evie "
    "Elsie Charlotte Evelyn Sienna Sofia Daisy Phoebe Harper Alice Matilda Ruby Emilia Maya Millie Oliver Noah George "
    "Arthur Muhammad Leo Harry Oscar Archie Henry Theodore Freddie Jack Charlie Theo Alfie Jacob Thomas Finley "
    "Arlo William Lucas Roman Tommy Isaac Teddy Alexander Luca Edward James Joshua Albert Mohammed Priya Aisha "
    "Fatima Zara Amara Chidi Tunde Kwame Wei Mei Hiroshi Anika Rahul Sanjay Deepa Niamh Siobhan Ciaran Eilidh Rhys "
    "Carys Dylan Megan Bethan Owen Gareth Hamish Fiona Morag Callum"
).split()
LAST_NAMES = (
    "Smith Jones Taylor Brown Williams Wilson Johnson Davies Patel Robinson Wright Thompson Evans Walker White Roberts "
    "Green Hall Thomas Clarke Jackson Wood Harris Edwards Turner Martin Cooper Hill Ward Hughes Moore Clark King "
    "Harrison Lewis Baker Lee Allen Morris Khan Scott Watson Davis Parker James Bennett Young Phillips Richardson "
    "Mitchell Bailey Carter Cook Singh Shaw Bell Collins Morgan Kelly Begum Miller Cox Marshall Simpson Anderson "
    "Ellis Adams Wilkinson Ali Mason Webb Richards Hunt Price Chapman Russell Stevens Mills Lloyd Ahmed Palmer Gray "
    "Griffiths Hussain Murphy Campbell Holmes Fisher Barnes Knight Harvey Lloyd Butler Rose Dixon Owen Stewart "
    "Chen Wang Okafor Adeyemi Mensah Nowak Kowalski Sharma Gupta Das Rahman Chowdhury Nightingale Seacole Cavell "
    "Fry Jex-Blake Anderson Garrett O'Brien MacDonald Fraser Reid Murray Ross Paterson Morrison Robertson Hamilton"
).split()
EMAIL_DOMAINS = ("nhs.net",) * 8 + ("leedsth.nhs.uk", "gstt.nhs.uk", "nhs.scot", "wales.nhs.uk")
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36 Edg/131.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
)
# Relative frequency of each event type in the trail: sign-ins dominate, RA actions are rare.
# Types not listed (added later to audit.models.Event) get weight 1.
EVENT_WEIGHTS = {
    "signin.succeeded": 380, "signout": 190, "signin.failed": 110, "otp.sent": 45, "otp.failed": 15,
    "signin.throttled": 12, "email.verified": 20, "email.added": 10, "password.set": 20, "link.issued": 25,
    "link.used": 20, "user.invited": 20, "user.created": 20, "authenticator.registered": 20, "user.changed": 15,
    "sessions.ended": 8, "authenticator.removed": 5, "user.suspended": 4, "link.expired": 4,
    "account.locked": 3, "account.unlocked": 3, "password.refused": 3,
}
RA_EVENTS = {
    "user.invited", "user.created", "link.issued", "user.changed", "user.suspended", "user.reinstated", "user.closed",
    "authenticator.removed", "account.unlocked", "sessions.ended", "roles.changed", "ra.refused", "audit.exported",
}
FAILURE_EVENTS = {"signin.failed", "signin.throttled", "otp.failed", "link.expired", "link.refused", "email.refused",
                  "password.refused", "authenticator.registration_failed", "ra.refused", "account.locked"}
RA_REASONS = ("Requested by line manager", "Lost phone, identity checked in person", "Left the trust",
              "Returned from leave", "Name change (marriage certificate seen)")


# --- the bench database ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Fill:
    users: int
    events: int
    seed: int


def database_name(database_url: str) -> str:
    params = conninfo_to_dict(database_url)
    return str(params.get("dbname") or urlsplit(database_url).path.lstrip("/"))


def check_loopback(database_url: str) -> None:
    """The benchmark drops and fills databases: only a bench database on this machine."""
    host = str(conninfo_to_dict(database_url).get("host") or "")
    loopback = host in LOOPBACK_NAMES or host.startswith("/")
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise SystemExit(f"the bench database must be on loopback, not {host!r}")
    if "bench" not in database_name(database_url):
        raise SystemExit(f"refusing to fill {database_name(database_url)!r}: the name must contain 'bench'")


def recorded_fill(database_url: str) -> Fill | None:
    with psycopg.connect(database_url) as connection:
        if connection.execute("SELECT to_regclass(%s)", (FILL_TABLE,)).fetchone() == (None,):
            return None
        row = connection.execute(sql.SQL("SELECT users, events, seed FROM {}").format(sql.Identifier(FILL_TABLE))).fetchone()
    return Fill(*row) if row else None


def prepare_database(database_url: str, wanted: Fill) -> bool:
    """Create the bench database, or recreate it when it holds other numbers; True when it needs filling."""
    name = database_name(database_url)
    with psycopg.connect(make_conninfo(database_url, dbname="postgres"), autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            held = recorded_fill(database_url)
            if held == wanted:
                print(f"reusing {name}: {held.users:,} users, {held.events:,} audit events (seed {held.seed})")
                return False
            what = f"{held.users:,} users and {held.events:,} events" if held else "no complete fill"
            print(f"{name} holds {what}: recreating it")
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        print(f"created database {name}")
    return True


def setup_django(environment: dict[str, str]) -> None:
    """careid's settings in this process too (fixtures, the staff member, query capture), on the bench database."""
    os.environ.update(environment)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)


def copy_into(model: Any, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    """COPY rows into a model's table; columns are attnames ("user_id"), every other field gets its default.

    Taking the other columns' defaults from the model keeps the fixtures loading when a migration adds a
    NOT NULL field (Django leaves no default in the database).
    """
    from django.db import connection
    from django.db.models.fields import NOT_PROVIDED

    fields = {field.attname: field for field in model._meta.concrete_fields}
    unknown = set(columns) - fields.keys()
    if unknown:
        raise ValueError(f"{model.__name__} has no {sorted(unknown)}")
    rest = [
        field for name, field in fields.items()
        if name not in columns and not field.primary_key and field.db_default is NOT_PROVIDED
        and not getattr(field, "generated", False)
    ]
    constant = [field for field in rest if not callable(field.default)]
    per_row = [field for field in rest if callable(field.default)]
    constant_values = tuple(field.get_db_prep_save(field.get_default(), connection) for field in constant)
    names = [*columns, *(field.attname for field in constant), *(field.attname for field in per_row)]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(model._meta.db_table), sql.SQL(", ").join(sql.Identifier(fields[name].column) for name in names)
    )
    count = 0
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:  # psycopg 3 under Django's wrapper
        for row in rows:
            if per_row:
                row = (*row, *constant_values, *(field.get_db_prep_save(field.get_default(), connection) for field in per_row))
            else:
                row = (*row, *constant_values)
            copy.write_row(row)
            count += 1
    return count


@dataclass(frozen=True)
class GeneratedUser:
    uid: str
    email: str
    status: str
    date_joined: datetime


def user_rows(rng: random.Random, count: int, now: datetime, generated: list[GeneratedUser]) -> Iterator[tuple[object, ...]]:
    """Care Identities: mostly active, a few suspended, closed or locked; most have signed in."""
    for index, uid in enumerate(rng.sample(range(10**11, 10**12), count)):  # unique 12-digit, no leading zero
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email = f"{first}.{last}{index}@{rng.choice(EMAIL_DOMAINS)}".lower().replace("'", "")
        draw = rng.random()
        status = "active" if draw < 0.94 else "suspended" if draw < 0.97 else "closed"
        joined = now - timedelta(days=730 * rng.random())
        last_login = joined + (now - joined) * (1 - rng.random() ** 3) if rng.random() < 0.85 else None
        locked = rng.random() < 0.005
        generated.append(GeneratedUser(str(uid), email, status, joined))
        yield (
            f"!bench-{index}",  # an unusable password, like set_unusable_password()
            str(uid), "Dr" if rng.random() < 0.08 else "", first, last, email, status,
            index < RA_ACTOR_POOL, joined, joined, last_login,
            now - timedelta(days=30 * rng.random()) if locked else None, 30 if locked else rng.choice((0, 0, 0, 0, 1, 2)),
        )


def event_rows(rng: random.Random, count: int, now: datetime, user_ids: Sequence[int]) -> Iterator[tuple[object, ...]]:
    """Audit events in time order (as an append-only table fills) over AUDIT_DAYS, over all users and types."""
    from audit.mac import written_mac
    from audit.models import Event

    kinds = [str(kind) for kind in Event.values]
    chosen = rng.choices(kinds, weights=[EVENT_WEIGHTS.get(kind, 1) for kind in kinds], k=count)
    offsets = sorted(rng.random() for _ in range(count))
    start = now - timedelta(days=AUDIT_DAYS)
    span = timedelta(days=AUDIT_DAYS)
    actors = user_ids[:RA_ACTOR_POOL]
    addresses = [f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}" for _ in range(5000)]
    for kind, offset in zip(chosen, offsets, strict=True):
        subject: int | None = rng.choice(user_ids)
        details: dict[str, str] = {}
        if kind in RA_EVENTS:
            actor: int | None = rng.choice(actors)
            details = {"reason": rng.choice(RA_REASONS)}
        elif kind == "signin.failed" and rng.random() < 0.1:
            subject = actor = None  # an address that is nobody's
            details = {"reason": "unknown email"}
        else:
            actor = subject
            if kind == "signin.failed":
                details = {"reason": "wrong password"}
        signin = kind.startswith(("signin.", "otp.")) or kind == "signout"
        content = {
            "at": start + span * offset, "event": kind, "outcome": "failure" if kind in FAILURE_EVENTS else "success",
            "actor_id": actor, "subject_id": subject, "ip": rng.choice(addresses), "user_agent": rng.choice(USER_AGENTS),
            "method": "authenticator-app" if signin else "", "aal": 2 if kind == "signin.succeeded" else None,
            "details": details,
        }
        # As careid writes them (AuditEvent.save): with the MAC verify_audit checks.
        yield (*list(content.values())[:-1], json.dumps(details), written_mac(content))


def fill(wanted: Fill) -> None:
    """COPY the fixtures in one transaction (all or nothing), record what was filled, then VACUUM ANALYZE."""
    from allauth.account.models import EmailAddress
    from django.db import connection, transaction
    from django.utils import timezone

    from accounts.models import User
    from audit.models import AuditEvent
    from authenticators.models import AuthenticatorApp

    rng = random.Random(wanted.seed)
    now = timezone.now()
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if cursor.fetchone() == (True,):
            # The fixtures are consistent by construction: skip the 2 deferred FK checks per audit row.
            cursor.execute("SET LOCAL session_replication_role = replica")

        generated: list[GeneratedUser] = []
        step = time.perf_counter()
        copy_into(User, ["password", "uid", "title", "first_name", "last_name", "email", "status", "is_staff",
                         "date_joined", "invited_at", "last_login", "locked_at", "password_failures"],
                  user_rows(rng, wanted.users, now, generated))
        ids = dict(User.objects.values_list("uid", "id"))
        report_rate("users", wanted.users, step)

        step = time.perf_counter()
        copy_into(EmailAddress, ["user_id", "email", "verified", "primary"],
                  ((ids[user.uid], user.email, True, True) for user in generated))
        report_rate("e-mail addresses", wanted.users, step)

        step = time.perf_counter()
        apps = []
        for user in generated:
            draw = rng.random()
            if user.status != "closed" and draw < 0.88:  # closing removes every authenticator
                added = user.date_joined + timedelta(hours=rng.random())
                confirmed = draw < 0.85  # the rest stopped half way through registration
                apps.append((ids[user.uid], "Microsoft Authenticator", confirmed, rng.randbytes(20).hex(), added,
                             added + (now - added) * rng.random() if confirmed else None))
        copy_into(AuthenticatorApp, ["user_id", "name", "confirmed", "key", "created_at", "last_used_at"], apps)
        report_rate("authenticator apps", len(apps), step)

        step = time.perf_counter()
        user_ids = [ids[user.uid] for user in generated]
        copy_into(AuditEvent, ["at", "event", "outcome", "actor_id", "subject_id", "ip", "user_agent", "method", "aal",
                               "details", "written_mac"], event_rows(rng, wanted.events, now, user_ids))
        report_rate("audit events", wanted.events, step)

        table = connection.ops.quote_name(FILL_TABLE)
        cursor.execute(f"CREATE TABLE {table} (users integer, events integer, seed integer, filled_at timestamptz)")
        cursor.execute(f"INSERT INTO {table} VALUES (%s, %s, %s, now())", [wanted.users, wanted.events, wanted.seed])
    step = time.perf_counter()
    with connection.cursor() as cursor:  # autocommit again: VACUUM cannot run in a transaction
        tables = [connection.ops.quote_name(model._meta.db_table)
                  for model in (User, EmailAddress, AuthenticatorApp, AuditEvent)]
        cursor.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")
    print(f"  VACUUM ANALYZE: {time.perf_counter() - step:.1f} s; fill in all {time.perf_counter() - started:.1f} s")


def report_rate(what: str, count: int, started: float) -> None:
    seconds = time.perf_counter() - started
    print(f"  {count:>9,} {what:<19} {seconds:6.1f} s ({count / seconds:,.0f} rows/s)")


# --- the RA Manager and their sign-in -------------------------------------------------------------------


@dataclass(frozen=True)
class Staff:
    email: str
    password: str
    secret: str  # hex TOTP key, as AuthenticatorApp.key holds it


def make_staff() -> Staff:
    """An RA Manager with a fresh known password and TOTP secret, unlocked, replay guard reset."""
    from allauth.account.models import EmailAddress
    from django.contrib.auth.models import Group

    from accounts import roles
    from accounts.models import User
    from authenticators.models import AuthenticatorApp
    from authenticators.totp import codes

    staff = Staff(STAFF_EMAIL, secrets.token_urlsafe(18), codes.new_secret())
    user = User.objects.filter(email__iexact=staff.email).first()
    if user is None:
        user = User.objects.create_user(staff.email, "Bench", "Manager", password=staff.password, is_staff=True)
    user.set_password(staff.password)
    user.is_staff, user.status = True, User.Status.ACTIVE
    user.locked_at = user.last_signin_failure_at = user.password_blocked_until = None
    user.password_failures = 0
    user.save()
    user.groups.set([Group.objects.get(name=roles.RA_MANAGER)])
    EmailAddress.objects.update_or_create(user=user, email=user.email, defaults={"primary": True, "verified": True})
    AuthenticatorApp.objects.update_or_create(user=user, defaults={
        "name": "Microsoft Authenticator", "key": staff.secret, "confirmed": True, "last_t": -1,
    })
    return staff


class LoopbackCookiePolicy(http.cookiejar.DefaultCookiePolicy):
    """careid sets Secure __Host- cookies (production settings); the bench speaks plain http to 127.0.0.1."""

    def return_ok_secure(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        return True


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the caller looks at every redirect itself


@dataclass(frozen=True)
class Page:
    status: int
    location: str
    text: str


class Browser:
    """One person's cookies (a jar that keeps the session), no redirects followed."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.jar = http.cookiejar.CookieJar(LoopbackCookiePolicy())
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirects())

    @contextmanager
    def open(self, path: str, data: dict[str, str] | None = None, timeout: float = 60) -> Iterator[HTTPResponse]:
        """The response, whatever its status (an HTTPError is a response too), closed on leaving."""
        request = urllib.request.Request(self.base_url + path, data=urlencode(data).encode() if data else None)
        try:
            response = self.opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            response = error
        with response:
            yield response

    def page(self, path: str, data: dict[str, str] | None = None) -> Page:
        with self.open(path, data) as response:
            return Page(response.status, response.headers.get("Location", ""), response.read().decode())

    def cookie(self, suffix: str) -> str:
        return next((cookie.value or "" for cookie in self.jar if cookie.name.endswith(suffix)), "")


CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def csrf_token(browser: Browser, path: str) -> str:
    page = browser.page(path)
    found = CSRF_INPUT.search(page.text)
    if page.status != 200 or found is None:
        raise SystemExit(f"GET {path}: {page.status}, no CSRF token")
    return found.group(1)


def sign_in(base_url: str, staff: Staff) -> Browser:
    """Through the real pages: e-mail and password, then the code from the authenticator app."""
    import pyotp

    from authenticators.totp import codes

    browser = Browser(base_url)
    password_page = "/login/authenticator-app/?" + urlencode({"goto": "/admin/"})
    page = browser.page(password_page, {"csrfmiddlewaretoken": csrf_token(browser, password_page),
                                        "email": staff.email, "password": staff.password})
    if page.status != 302:
        raise SystemExit(f"password step answered {page.status}:\n{page.text[:2000]}")
    code_page = page.location
    page = browser.page(code_page, {"csrfmiddlewaretoken": csrf_token(browser, code_page),
                                    "token": pyotp.TOTP(codes.base32(staff.secret)).now()})
    if page.status != 302 or page.location != "/admin/":
        raise SystemExit(f"code step answered {page.status} {page.location}:\n{page.text[:2000]}")
    page = browser.page("/admin/")
    if page.status != 200 or "Registration authority" not in page.text:
        raise SystemExit(f"GET /admin/ after signing in answered {page.status}")
    return browser


# --- what is timed -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    expect: tuple[str, ...] = ('id="result_list"',)  # the page shows results, not an error or an empty list
    export: bool = False  # a streamed CSV: first byte and first row, no target


@dataclass
class Timings:
    case: Case
    seconds: list[float] = field(default_factory=list)
    first_row: list[float] = field(default_factory=list)  # exports: until the first data row

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def p95_ms(self) -> float:
        return percentile(self.seconds, 0.95) * 1000

    @property
    def meets(self) -> bool | None:
        return None if self.case.export else self.p50_ms <= TARGET_P50_MS


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(frozen=True)
class Sample:
    uid: str
    email: str
    last_name: str
    events: int


def pick_sample(users: int) -> Sample:
    """A person from the middle of the fill who has an audit trail: what an RA would look up."""
    from django.db.models import Exists, OuterRef

    from accounts.models import User
    from audit.models import AuditEvent

    ids = User.objects.filter(is_staff=False).order_by("id").values_list("id", flat=True)
    middle = ids[users // 2] if users > 1 else ids.first()
    user = (User.objects.filter(id__gte=middle, is_staff=False)
            .filter(Exists(AuditEvent.objects.filter(subject=OuterRef("pk")))).order_by("id").first())
    if user is None:
        raise SystemExit("no user with audit events in the bench database")
    return Sample(user.uid, user.email, user.last_name, AuditEvent.objects.filter(subject=user).count())


LISTED_EVENT = "signin.failed"  # ~11% of the trail
EXPORTED_EVENT = "signin.succeeded"  # ~38% of the trail: ~130k events in 30 days


def cases_for(sample: Sample) -> list[Case]:
    from audit.models import Event

    if not {LISTED_EVENT, EXPORTED_EVENT} <= set(Event.values):
        raise SystemExit(f"audit.models.Event no longer has {LISTED_EVENT} or {EXPORTED_EVENT}")
    users, audit = "/admin/accounts/user/", "/admin/audit/auditevent/"
    return [
        Case("user list", users),
        Case("user search: exact UID", f"{users}?{urlencode({'q': sample.uid})}", ('id="result_list"', sample.uid)),
        Case("user search: e-mail", f"{users}?{urlencode({'q': sample.email})}", ('id="result_list"', sample.email)),
        Case("user search: last name", f"{users}?{urlencode({'q': sample.last_name})}"),
        Case("audit list", audit),
        Case("audit filter: subject UID", f"{audit}?{urlencode({'subject_uid': sample.uid})}"),
        Case("audit filter: event type", f"{audit}?{urlencode({'event__exact': LISTED_EVENT})}"),
        Case("audit filter: event type, 30 days", f"{audit}?{urlencode({'event__exact': EXPORTED_EVENT, 'period': '30d'})}"),
        Case("audit search: e-mail", f"{audit}?{urlencode({'q': sample.email})}"),
        Case("audit export: event type, 30 days",
             f"{audit}export/?{urlencode({'event__exact': EXPORTED_EVENT, 'period': '30d'})}",
             ("time,event,",), export=True),
    ]


def get_page(browser: Browser, case: Case, check: bool) -> float:
    """Seconds until the whole page has arrived."""
    started = time.perf_counter()
    page = browser.page(case.path)
    elapsed = time.perf_counter() - started
    if page.status != 200:
        raise SystemExit(f"{case.name}: GET {case.path} answered {page.status}")
    if check:
        missing = [text for text in case.expect if text not in page.text]
        if missing:
            raise SystemExit(f"{case.name}: GET {case.path} lacks {missing}")
    return elapsed


def get_export_start(browser: Browser, case: Case, check: bool) -> tuple[float, float]:
    """Seconds until the first byte, and until the first data row, of a streamed CSV; the rest is not read."""
    started = time.perf_counter()
    with browser.open(case.path, timeout=120) as response:
        if response.status != 200 or not response.headers.get("Content-Type", "").startswith("text/csv"):
            raise SystemExit(f"{case.name}: GET {case.path} answered {response.status} "
                             f"{response.headers.get('Content-Type')}")
        received = response.read1(65536)
        first_byte = time.perf_counter() - started
        while received.count(b"\n") < 2:  # the header line, then one event
            chunk = response.read1(65536)
            if not chunk:
                break
            received += chunk
        first_row = time.perf_counter() - started
    if check and not all(text.encode() in received for text in case.expect):
        raise SystemExit(f"{case.name}: the export starts {received[:200]!r}")
    return first_byte, first_row


def measure(browser: Browser, case: Case, warmups: int, count: int) -> Timings:
    timings = Timings(case)
    for attempt in range(warmups + count):
        check = attempt == 0
        if case.export:
            first_byte, first_row = get_export_start(browser, case, check)
            if attempt >= warmups:
                timings.seconds.append(first_byte)
                timings.first_row.append(first_row)
        else:
            elapsed = get_page(browser, case, check)
            if attempt >= warmups:
                timings.seconds.append(elapsed)
    return timings


def full_export(browser: Browser, case: Case) -> str:
    """One whole export: rows, size and time (the stream must finish within gunicorn's worker timeout)."""
    started = time.perf_counter()
    size = lines = 0
    try:
        with browser.open(case.path, timeout=600) as response:
            while chunk := response.read(65536):
                size += len(chunk)
                lines += chunk.count(b"\r\n")
    except (OSError, HTTPException) as error:  # e.g. IncompleteRead when gunicorn kills the worker
        return (f"whole export ({case.name}) FAILED after {time.perf_counter() - started:.1f} s, "
                f"{lines:,} lines: {error!r}")
    seconds = time.perf_counter() - started
    return (f"whole export ({case.name}): {lines - 1:,} rows, {size / 1e6:.1f} MB in {seconds:.1f} s "
            f"({(lines - 1) / seconds:,.0f} rows/s)")


def print_table(results: Sequence[Timings], count: int, warmups: int) -> None:
    print(f"\n{count} sequential requests per case after {warmups} warm-ups; gunicorn {WORKERS} sync workers, "
          f"DEBUG off, CONN_MAX_AGE=60")
    print(f"{'case':<38} {'p50 ms':>8} {'p95 ms':>8}   target p50 <= {TARGET_P50_MS:.0f} ms")
    for result in results:
        verdict = {True: "meets", False: "MISSES", None: "(no target: time to first byte)"}[result.meets]
        print(f"{result.case.name:<38} {result.p50_ms:8.1f} {result.p95_ms:8.1f}   {verdict}")
        if result.case.export:
            print(f"{'  ... to the first data row':<38} {statistics.median(result.first_row) * 1000:8.1f} "
                  f"{percentile(result.first_row, 0.95) * 1000:8.1f}")


# --- why a list is slow -----------------------------------------------------------------------------------


SERVER_CURSOR = re.compile(r'^DECLARE "[^"]+" NO SCROLL CURSOR (?:WITH(?:OUT)? HOLD )?FOR ')  # QuerySet.iterator()
EXECUTION_TIME = re.compile(r"Execution Time: ([\d.]+) ms")


def explain(case: Case, session_key: str) -> None:
    """The statements one request runs (same session, in-process test client), each SELECT's EXPLAIN ANALYZE
    time, and the slowest one's plan."""
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(SERVER_NAME="127.0.0.1")
    client.cookies[settings.SESSION_COOKIE_NAME] = session_key

    def request() -> None:
        response = client.get(case.path)
        if response.status_code != 200:
            raise SystemExit(f"{case.name}: the test client got {response.status_code}")
        if response.streaming:
            chunks = iter(response.streaming_content)
            next(chunks, None)
            next(chunks, None)  # the header line, then the first event: the query has run
            response.close()

    request()  # warm: templates, permissions cache
    with CaptureQueriesContext(connection) as captured:
        request()
    print(f"\n=== {case.name}: {case.path}")
    plans: list[tuple[float, str, list[str]]] = []
    for query in captured.captured_queries:
        statement = query["sql"]
        if not statement.startswith(("SELECT", "INSERT", "UPDATE", "DELETE", "DECLARE")):
            continue  # transaction control
        select = SERVER_CURSOR.sub("", statement)  # EXPLAIN ANALYZE then reads it to the end, like WITH HOLD
        if select.startswith("SELECT"):
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + select)
                plan = [line for (line,) in cursor.fetchall()]
            found = EXECUTION_TIME.search(plan[-1])
            plans.append((float(found.group(1)) if found else 0.0, select, plan))
            timing = f"{plans[-1][0]:8.2f} ms"
        else:
            timing = f"{'(not run)':>11}"
        print(f"  {timing}  {shorten(statement)}")
    if not plans:
        return
    _, slowest, plan = max(plans)
    print(f"slowest (EXPLAIN ANALYZE execution time), in full:\n  {slowest}")
    print("\n".join(f"    {line}" for line in plan))


def shorten(statement: str, width: int = 150) -> str:
    statement = " ".join(statement.split())
    return statement if len(statement) <= width else statement[: width - 3] + "..."


# --- main ------------------------------------------------------------------------------------------------


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000, help="Care Identities to fill (default 100,000)")
    parser.add_argument("--events", type=int, default=1_000_000, help="audit events to fill (default 1,000,000)")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per case (default 50)")
    parser.add_argument("--warmups", type=int, default=5, help="untimed requests per case first (default 5)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help=f"default {DEFAULT_DATABASE_URL}")
    parser.add_argument("--explain", action="store_true", help="show the SQL and plan of every case, not only misses")
    parser.add_argument("--export-all", action="store_true",
                        help="last, export the whole trail once (no filter): does it finish within gunicorn's timeout?")
    arguments = parser.parse_args()
    if arguments.users < RA_ACTOR_POOL * 2 or arguments.events < 1 or arguments.requests < 1 or arguments.warmups < 0:
        parser.error(f"--users must be at least {RA_ACTOR_POOL * 2}, --events and --requests at least 1")
    return arguments


def main() -> None:
    arguments = parse_arguments()
    check_loopback(arguments.database_url)
    environment = {**os.environ, **BENCH_SETTINGS, "DATABASE_URL": arguments.database_url}
    wanted = Fill(arguments.users, arguments.events, SEED)
    needs_fill = prepare_database(arguments.database_url, wanted)
    setup_django(environment)
    if needs_fill:
        print(f"filling with {wanted.users:,} users and {wanted.events:,} audit events (COPY)")
        fill(wanted)
    staff = make_staff()
    sample = pick_sample(wanted.users)
    print(f"sample person: uid {sample.uid}, {sample.email}, {sample.events} audit events")
    cases = cases_for(sample)

    load_before = os.getloadavg()[0]
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    results: list[Timings] = []
    with tempfile.TemporaryDirectory(prefix="careid-bench-") as scratch:
        log_path = Path(scratch) / "gunicorn.log"
        with gunicorn(environment, port, log_path) as process:  # stopped on leaving, whatever happens
            wait_until_serving(process, f"{base_url}/login/", log_path)
            wait_for_workers(process.pid)
            browser = sign_in(base_url, staff)
            print(f"signed in as {staff.email} (RA Manager) through /login/authenticator-app/")
            for case in cases:
                results.append(measure(browser, case, arguments.warmups, arguments.requests))
                print(f"  {case.name}: p50 {results[-1].p50_ms:.1f} ms")
            exports = [case for case in cases if case.export]
            if arguments.export_all:
                exports.append(Case("whole trail, no filter", "/admin/audit/auditevent/export/", export=True))
            whole = [full_export(browser, case) for case in exports]
            time.sleep(0.5)  # let gunicorn log a worker it killed
            if process.poll() is not None:
                raise SystemExit(f"gunicorn exited during the run:\n{log_path.read_text()}")
            errors = [line for line in log_path.read_text().splitlines() if "[ERROR]" in line or "TIMEOUT" in line]
        session_key = browser.cookie("careid-session")

    print_table(results, arguments.requests, arguments.warmups)
    for line in whole:
        print(line)
    if errors:
        print("gunicorn logged:\n  " + "\n  ".join(errors))
    missed = [result for result in results if result.meets is False]
    print(f"lists meeting the target: {sum(result.meets is True for result in results)} of "
          f"{sum(result.meets is not None for result in results)}")
    print(f"load average (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")

    to_explain = [result.case for result in results] if arguments.explain else [result.case for result in missed]
    for case in to_explain:
        explain(case, session_key)


if __name__ == "__main__":
    main()
