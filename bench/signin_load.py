"""Sign-ins under load: N people at once through the whole CIS2 sign-in, against two gunicorn instances.

1. A PostgreSQL database whose name contains "bench" or "load" (DATABASE_URL, default
   careid_bench_load; created and migrated when missing) gets --people distinct Care Identities, each
   with a verified e-mail address and an Authenticator app (its own TOTP secret), made once and reused;
   their password hash is made again at the start of every run with the configured Argon2 cost (one hash
   shared by all: every sign-in still checks it in full). Redis is the shared cache (CACHE_URL, default
   db 14, emptied at the start).
2. Two gunicorn instances, each on its own port, started with deploy/gunicorn.conf.py (the production
   settings; --worker-class, --workers, --threads, --keepalive override them for experiments), DEBUG
   off, persistent database connections, sharing PostgreSQL and Redis. By default Debian's nginx runs
   in front as the load balancer (least_conn over both, X-Forwarded-For/-Proto as a TLS proxy sets them,
   so careid runs with CAREID_TRUSTED_PROXY_COUNT=1); --balancer direct spreads the clients over the two
   ports instead.
3. For each N (--clients, default 20,50,200): N clients, each from its own loopback address (so the
   per-IP limit sees N addresses, as a load balancer would pass on), starting one every 1/(0.8 x the
   hash checks/s measured just before) seconds, about a sign-in's time at the target rate over all N
   (--all-at-once: together; they then move through the six
   steps in step, sign-ins complete in waves, and a window counts a crest or a trough of them: at N=200
   1.4 password steps per sign-in counted, so CPU per sign-in read 40% high), sign in again and again, each time
   as the next person of the pool: GET /login/ (CIS2 Authentication), choose "Authenticator app", GET
   and POST e-mail and password, GET and POST the 6-digit code computed from the person's secret, which
   must answer 302 to the home page. A person signs in at most once per 30-second time step (the
   replay guard is reset between runs, as tests/conftest.py's fresh_code does). Clients run until every
   one has finished a sign-in (and at least --warmup seconds), then --duration seconds, or three times
   the median sign-in if longer, are measured; the sign-ins begun in that window are then finished.
   Every --segment seconds of the window (at least once), the service (nginx, both gunicorn instances,
   the sealer) is frozen with SIGSTOP, the machine's pure hash rate is measured (5. below), and the
   service goes on (SIGCONT); the clients wait for their answers as for a slow server. The window's
   length and each sign-in's time leave the pauses out; the clients' --timeout, nginx's read timeout
   and the TOTP time step do not, so a pause adds its 3-4 s to them.
   Reported: sign-ins/s completed in the window (and the password steps answered in it per sign-in
   completed in it: near 1 when the window is not on a crest or a trough of completions),
   p50/p95/max of the whole sign-in, errors (a wrong answer, a 4xx/5xx, a timeout) and dropped
   connections (refused, reset, or closed before a whole response), over the whole run, warm-up and
   drain included; CPU per sign-in in the window (its CPU over the password steps answered in it: one
   per sign-in, and most of its CPU) of the gunicorn workers, their PostgreSQL backends,
   nginx, the sealer and the clients (read from /proc every half second); and the audit trail's count
   of signin.succeeded events against the clients' count.
4. Each N runs twice: without and with the audit chain's sealer (a separate process calling
   audit.chain.seal() every second), in alternating order.
5. The machine's pure password-hash rate: Django's check_password on the configured hasher in as many
   processes as the two instances have request slots (workers x threads), all starting at once, each
   counting the checks it ended within --hash-seconds over the time to the last of them, and going on
   until one ends after (so the others' counts see the machine as busy throughout); the sum of the
   processes' rates. Measured in the pauses of each run's window, and each run's ratio is its sign-ins/s
   over the mean of its own pauses' rates: this machine's speed drifts by 10-30% within minutes (one hash
   check's CPU went from 210 to 290 ms in an hour; consecutive 3-second measurements differ by up to
   30%), so rates measured minutes apart, as they were before each N, compared the drift more than the
   code. Also measured before each N, to space the clients' arrivals.

Targets (issue 9, item 5): no errors and no dropped connections at N=200; sign-ins/s >= 0.8x the pure
hash rate. Everything runs on this machine, so the clients' CPU is taken from the same cores as the
hash rate's, and other work on a shared machine moves both rates: the "CPU ratio" column (one hash
check's CPU over the CPU that served one sign-in) is the ratio on cores that do nothing else, and
varies far less from run to run.

--profile DIR serves bench/profiled_wsgi.py instead of careid.wsgi: per kind of request, its thread CPU
(time.thread_time, so a neighbour's work is not counted), queries, and the hash's CPU, which do not
depend on how the window falls.

Run from the project root:  .venv/bin/python bench/signin_load.py [--quick] [--clients 20,50,200]
    [--duration S] [--balancer nginx|direct] [--workers W] [--threads T] [--worker-class sync|gthread]
    [--all-at-once] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))  # run as bench/signin_load.py: the project's packages

from bench.signin_page import free_port, stop, wait_until_serving  # noqa: E402

VENV_BIN = Path(sys.executable).parent
DEFAULTS = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/careid_bench_load",
    "CACHE_URL": "redis://127.0.0.1:6379/14",
}
# Production settings (DEBUG off, Secure cookies, persistent connections), plain http on loopback.
BENCH_SETTINGS = {
    "DJANGO_SETTINGS_MODULE": "careid.settings",
    "SECRET_KEY": "bench-only-secret-key-not-used-anywhere-else",
    "CAREID_AUDIT_CHAIN_KEY": "bench-only-audit-chain-key-not-used-anywhere-else",
    "DEBUG": "false",
    "ALLOWED_HOSTS": "127.0.0.1",
    "CAREID_SSL_REDIRECT": "false",
    "CELERY_BROKER_URL": "",  # a sign-in that succeeds queues nothing
}
INSTANCES = 2
TARGET_RATIO = 0.8
PASSWORD = "bench load pass phrase, not used anywhere else"
EMAIL = "load.person{:05d}@nhs.net"
EMAIL_LIKE = r"^load\.person[0-9]{5}@nhs\.net$"
STEP = 30  # TOTP time step, seconds
CSRF_INPUT = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')
SEALER = """
import signal, sys, time
import django
django.setup()
from audit import chain
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
calls = sealed = 0
busy = 0.0
while not stopping:
    started = time.perf_counter()
    sealed += chain.seal()
    busy += time.perf_counter() - started
    calls += 1
    time.sleep(1)
print(calls, sealed, round(busy, 3), flush=True)
"""


# --- the database and the people ---------------------------------------------------------------------


def database_name(database_url: str) -> str:
    return str(conninfo_to_dict(database_url).get("dbname") or urlsplit(database_url).path.lstrip("/"))


def check_database(database_url: str) -> None:
    host = str(conninfo_to_dict(database_url).get("host") or "")
    if host not in {"", "localhost", "127.0.0.1", "::1"} and not host.startswith("/"):
        raise SystemExit(f"the bench database must be on this machine, not {host!r}")
    name = database_name(database_url)
    if "bench" not in name and "load" not in name:
        raise SystemExit(f"refusing to use {name!r}: the bench database's name must contain 'bench' or 'load'")


def ensure_database(database_url: str) -> None:
    name = database_name(database_url)
    with psycopg.connect(make_conninfo(database_url, dbname="postgres"), autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}")


def setup_django(environment: dict[str, str]) -> None:
    os.environ.update(environment)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)


@dataclass
class Person:
    email: str
    secret: bytes  # the TOTP key
    last_step: int = -1  # the last time step this bench used for them


def prepare_people(count: int) -> tuple[list[Person], str]:
    """--people Care Identities, active and unthrottled, with this run's password hash; (people, hash)."""
    from allauth.account.models import EmailAddress
    from django.contrib.auth.hashers import make_password
    from django.db import transaction

    from accounts.models import User
    from authenticators.models import AuthenticatorApp
    from authenticators.totp import codes

    encoded = make_password(PASSWORD)  # the configured hasher and cost
    emails = [EMAIL.format(index) for index in range(count)]
    with transaction.atomic():
        have = set(User.objects.filter(email__in=emails).values_list("email", flat=True))
        missing = [email for email in emails if email not in have]
        if missing:
            started = time.perf_counter()
            users = User.objects.bulk_create(
                [User(email=email, first_name="Load", last_name=f"Person {email[11:16]}", password=encoded)
                 for email in missing], batch_size=1000)
            EmailAddress.objects.bulk_create(
                [EmailAddress(user=user, email=user.email, primary=True, verified=True) for user in users],
                batch_size=1000)
            AuthenticatorApp.objects.bulk_create(
                [AuthenticatorApp(user=user, name="Microsoft Authenticator", key=codes.new_secret(), confirmed=True)
                 for user in users], batch_size=1000)
            print(f"created {len(users):,} Care Identities in {time.perf_counter() - started:.1f} s")
        User.objects.filter(email__in=emails).update(password=encoded, status=User.Status.ACTIVE)
    keys = dict(AuthenticatorApp.objects.filter(user__email__in=emails).values_list("user__email", "key"))
    return [Person(email, bytes.fromhex(keys[email])) for email in emails], encoded


def reset_people() -> None:
    """Between runs: the replay guard and every sign-in count back to nothing (as fresh_code does), the
    sessions of earlier runs gone, and the events of earlier runs sealed (the sealer then seals only new ones)."""
    from allauth.usersessions.models import UserSession
    from django.contrib.sessions.models import Session
    from django.db import connection

    from accounts.models import User
    from audit import chain
    from authenticators.models import AuthenticatorApp

    people = User.objects.filter(email__regex=EMAIL_LIKE)
    AuthenticatorApp.objects.filter(user__in=people).update(last_t=-1)
    people.update(password_failures=0, password_blocked_until=None, code_failures=0, code_blocked_until=None,
                  last_signin_failure_at=None, locked_at=None, lock_reason="")
    UserSession.objects.filter(user__in=people).delete()
    Session.objects.all().delete()  # this database is the bench's own
    chain.seal()
    # What autovacuum would have cleaned by now, where the server runs it (it may be off on a test machine:
    # then the sealer's look-up of unsealed events went through every earlier run's dead index entries).
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE django_session, usersessions_usersession, authenticators_authenticatorapp, "
                       "accounts_user, audit_auditevent")


def last_event_id() -> int:
    from django.db.models import Max

    from audit.models import AuditEvent

    return AuditEvent.objects.aggregate(last=Max("id"))["last"] or 0


def succeeded_events_after(event_id: int) -> int:
    """signin.succeeded events of the bench's people written after the event with this id."""
    from audit.models import AuditEvent, Event

    return AuditEvent.objects.filter(id__gt=event_id, event=Event.SIGNIN_SUCCEEDED, actor__email__regex=EMAIL_LIKE).count()


def totp(secret: bytes, step: int) -> str:
    """RFC 6238 (SHA-1, 6 digits, 30 s) at a time step: what the person's app shows (django-otp's HOTP of
    the step's number)."""
    from django_otp.oath import hotp

    return f"{hotp(secret, step):06d}"


def check_totp(person: Person) -> None:
    from authenticators.totp import codes

    step = int(time.time() // STEP)
    if codes.matching_step(person.secret.hex(), totp(person.secret, step)) != step:
        raise SystemExit("the bench's TOTP codes are not careid's")


# --- the pure hash rate --------------------------------------------------------------------------------


def _hash_loop(arguments: tuple[str, float, float, bool]) -> tuple[int, float, float, float]:
    """In a pool process: check_password against the hash from the start until a check ends after the
    deadline; (checks ended by the deadline, seconds from the start to the last of them, CPU seconds, checks
    done). The check that ends after the deadline keeps the machine as busy as before until the deadline for
    the other processes' counts, but is not counted: by then some have stopped and the others run faster."""
    from django.contrib.auth.hashers import check_password

    encoded, start_at, seconds, warm = arguments
    if warm:
        check_password(PASSWORD, encoded)  # the library loaded, memory touched once
    while time.monotonic() < start_at:
        time.sleep(0.005)
    done, counted, cpu_before = 0, (0, 0.0), time.process_time()
    while True:
        if not check_password(PASSWORD, encoded):
            raise RuntimeError("the bench password does not match its hash")
        done += 1
        elapsed = time.monotonic() - start_at
        if elapsed > seconds:
            # At least one check counted, even one that ended after the deadline (a deadline shorter than a check).
            return (*(counted if counted[0] else (done, elapsed)), time.process_time() - cpu_before, done)
        counted = (done, elapsed)


@dataclass(frozen=True)
class HashRate:
    processes: int
    per_second: float
    cpu_ms: float  # CPU per check, averaged over the processes


    @classmethod
    def combined(cls, rates: Sequence[HashRate]) -> HashRate:
        """Several measurements of equal length as one."""
        return cls(rates[0].processes, statistics.mean(r.per_second for r in rates), statistics.mean(r.cpu_ms for r in rates))


class Hashing:
    """Processes that check the password hash, as many as the instances have request slots, kept for the
    whole run: measure() is the machine's pure hash rate at that moment."""

    def __init__(self, encoded: str, processes: int) -> None:
        from django.db import connections

        connections.close_all()  # the forked processes must not share this process's connections
        self.encoded, self.processes, self.warm = encoded, processes, True
        self.pool = multiprocessing.get_context("fork").Pool(processes, _start_hash_process)

    def measure(self, seconds: float) -> HashRate:
        # Every process starts at the same instant; the first time after a check of its own (warm), after which
        # its memory stays touched.
        start_at = time.monotonic() + (1.0 + 0.05 * self.processes if self.warm else 0.05)
        results = self.pool.map(_hash_loop, [(self.encoded, start_at, seconds, self.warm)] * self.processes)
        self.warm = False
        done = sum(done for _, _, _, done in results)
        cpu = sum(cpu for _, _, cpu, _ in results)
        return HashRate(self.processes, sum(count / elapsed for count, elapsed, _, _ in results), cpu / done * 1000)

    def __enter__(self) -> Hashing:
        return self

    def __exit__(self, *_exception) -> None:
        self.pool.terminate()
        self.pool.join()


def _start_hash_process() -> None:
    """Ctrl-C stops the bench, not a hash process in the middle of a pause (pool.map would wait for it
    forever with the service frozen); SIGTERM and SIGHUP stop a hash process as they would any other
    (not with the bench's handler). The process hashes as a web process does: with the memory of a
    finished hash kept for the next when CAREID_ARGON2_KEEP_MEMORY is on (deploy/gunicorn.conf.py), so the pure
    rate is the same hash's."""
    from django.conf import settings

    from accounts.hashers import keep_hash_memory

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    if settings.CAREID_ARGON2_KEEP_MEMORY:
        keep_hash_memory(hashes_at_once=1)


# --- servers ---------------------------------------------------------------------------------------------


@dataclass
class Servers:
    targets: list[tuple[str, int]]  # where the clients connect
    scheme: str  # what careid sees (https behind the proxy)
    gunicorns: list[subprocess.Popen[bytes]]
    nginx: subprocess.Popen[bytes] | None
    logs: list[Path]
    worker_pids: list[int] = field(default_factory=list)

    def nginx_pids(self) -> list[int]:
        return [self.nginx.pid, *children(self.nginx.pid)] if self.nginx else []

    def service_pids(self) -> list[int]:
        """nginx and the gunicorn instances, masters and workers."""
        return [*self.nginx_pids(), *(process.pid for process in self.gunicorns), *current_workers(self)]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


@contextmanager
def frozen(pids: Sequence[int]) -> Iterator[None]:
    """These processes stopped (SIGSTOP) while the block runs: they take no CPU, and the clients wait for
    their answers as for a slow server. The pure hash rate is measured so, between stretches of load."""
    stopped = []
    try:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2
        while any(_state(pid) not in {"T", "t", "gone"} for pid in stopped) and time.monotonic() < deadline:
            time.sleep(0.002)
        yield
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def cpu_by_pid(pids: Sequence[int]) -> dict[int, float]:
    """User + system CPU seconds of each process still running (Linux /proc)."""
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


class Meter:
    """CPU of groups of processes over the measured window, read every half second: a process that
    starts in the window counts from zero, one that ends in it (a database connection past
    CONN_MAX_AGE) counts until its last reading."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.base: dict[tuple[str, int], float] = {}
        self.last: dict[tuple[str, int], float] = {}
        self.started = False

    def sample(self) -> None:
        for name, pids in self.groups.items():
            for pid, seconds in cpu_by_pid(pids()).items():
                self.base.setdefault((name, pid), seconds if not self.started else 0.0)
                self.last[(name, pid)] = seconds
        self.started = True

    def seconds(self, name: str) -> float:
        return sum(self.last[key] - self.base[key] for key in self.last if key[0] == name)


class PostgresBackends:
    """The server processes of the connections to the bench database (the gunicorn workers' and the sealer's)."""

    def __init__(self, database_url: str) -> None:
        self.connection = psycopg.connect(database_url, autocommit=True)

    def __call__(self) -> list[int]:
        return [pid for (pid,) in self.connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'")]

    def close(self) -> None:
        self.connection.close()


def children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def gunicorn_environment(environment: dict[str, str], arguments: argparse.Namespace, port: int) -> dict[str, str]:
    overrides = {"CAREID_WORKER_CLASS": arguments.worker_class, "CAREID_WORKERS": arguments.workers,
                 "CAREID_THREADS": arguments.threads, "CAREID_KEEPALIVE": arguments.keepalive,
                 "CAREID_WORKER_CONNECTIONS": arguments.worker_connections}
    if arguments.profile:
        environment = {**environment, "CAREID_PROFILE_DIR": str(arguments.profile)}
    return {**environment, "CAREID_BIND": f"127.0.0.1:{port}",
            **{name: str(value) for name, value in overrides.items() if value is not None}}


def gunicorn_settings(environment: dict[str, str]) -> dict[str, object]:
    """deploy/gunicorn.conf.py's values for this environment (what the instances run with)."""
    code = Path(PROJECT_DIR / "deploy" / "gunicorn.conf.py").read_text()
    saved = dict(os.environ)
    os.environ.update(environment)
    try:
        namespace: dict[str, object] = {}
        exec(compile(code, "gunicorn.conf.py", "exec"), namespace)  # noqa: S102 - our own config file
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {name: value for name, value in namespace.items() if not name.startswith("_") and
            isinstance(value, str | int | float)}


NGINX_CONF = """
worker_processes 1;
pid {scratch}/nginx.pid;
error_log {scratch}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {scratch}/client-body;
    proxy_temp_path {scratch}/proxy;
    fastcgi_temp_path {scratch}/fastcgi;
    uwsgi_temp_path {scratch}/uwsgi;
    scgi_temp_path {scratch}/scgi;
    upstream careid {{
        least_conn;
{servers}
        keepalive 32;
        keepalive_timeout {upstream_keepalive}s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        keepalive_timeout 75s;
        location / {{
            proxy_pass http://careid;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_buffer_size 32k;
            proxy_buffers 16 32k;
        }}
    }}
}}
"""


@contextmanager
def servers(environment: dict[str, str], arguments: argparse.Namespace, scratch: Path) -> Iterator[Servers]:
    ports = [free_port() for _ in range(INSTANCES)]
    behind_proxy = arguments.balancer == "nginx"
    environment = {**environment, "CAREID_TRUSTED_PROXY_COUNT": "1" if behind_proxy else "0"}
    with ExitStack() as stack:
        gunicorns, logs = [], []
        for index, port in enumerate(ports):
            log_path = scratch / f"gunicorn-{index}.log"
            log = stack.enter_context(log_path.open("wb"))
            app = "bench.profiled_wsgi:application" if arguments.profile else "careid.wsgi:application"
            process = subprocess.Popen(
                [str(VENV_BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", app],
                cwd=PROJECT_DIR, env=gunicorn_environment(environment, arguments, port), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
            stack.callback(stop, process)
            gunicorns.append(process)
            logs.append(log_path)
        for process, port, log_path in zip(gunicorns, ports, logs, strict=True):
            wait_until_serving(process, f"http://127.0.0.1:{port}/login/", log_path)
        nginx = None
        if behind_proxy:
            front = free_port()
            scratch.chmod(0o755)
            conf = scratch / "nginx.conf"
            conf.write_text(NGINX_CONF.format(
                scratch=scratch, port=front, upstream_keepalive=arguments.proxy_keepalive,
                servers="\n".join(f"        server 127.0.0.1:{port} max_fails=0;" for port in ports)))
            nginx_log = stack.enter_context((scratch / "nginx.out").open("wb"))
            nginx = subprocess.Popen(["nginx", "-p", str(scratch), "-e", str(scratch / "nginx-error.log"),
                                      "-c", str(conf), "-g", "daemon off; user root;"],
                                     stdout=nginx_log, stderr=subprocess.STDOUT, start_new_session=True)
            stack.callback(stop, nginx)
            logs.append(scratch / "nginx-error.log")
            wait_until_serving(nginx, f"http://127.0.0.1:{front}/login/", scratch / "nginx.out")
            targets = [("127.0.0.1", front)]
        else:
            targets = [("127.0.0.1", port) for port in ports]
        yield Servers(targets, "https" if behind_proxy else "http", gunicorns, nginx, logs)


def current_workers(state: Servers) -> list[int]:
    return sorted(pid for process in state.gunicorns for pid in children(process.pid))


# --- the clients -------------------------------------------------------------------------------------------


class Dropped(Exception):
    """The connection failed: refused, reset, or closed before a whole response."""


class WrongAnswer(Exception):
    """careid answered, but not what a sign-in gets."""


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        return next((value for key, value in self.headers if key == name), "")


class Browser:
    """One client: its own loopback address, a kept-alive connection, a cookie jar per sign-in."""

    def __init__(self, host: str, port: int, source: str, scheme: str, timeout: float) -> None:
        self.host, self.port, self.source, self.timeout = host, port, source, timeout
        self.origin = f"{scheme}://{host}:{port}"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.cookies: dict[str, str] = {}

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None

    async def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Response:
        try:
            return await asyncio.wait_for(self._request(method, path, form), self.timeout)
        except TimeoutError:
            await self.close()
            raise WrongAnswer(f"{method} {path.split('?')[0]}: no answer in {self.timeout:.0f} s") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
            await self.close()
            raise Dropped(f"{method} {path.split('?')[0]}: {type(error).__name__} {error}") from None

    async def _request(self, method: str, path: str, form: dict[str, str] | None) -> Response:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, local_addr=(self.source, 0))
        assert self.reader is not None
        body = urlencode(form).encode() if form is not None else b""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "User-Agent: careid-signin-load",
                 "Accept: text/html"]
        if self.cookies:
            lines.append("Cookie: " + "; ".join(f"{name}={value}" for name, value in self.cookies.items()))
        if form is not None:
            lines += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}",
                      f"Origin: {self.origin}", f"Referer: {self.origin}{path}"]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("closed before the status line")
        status = int(status_line.split()[1])
        headers: list[tuple[str, str]] = []
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n"):
            if not line:
                raise ConnectionResetError("closed in the headers")
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        response = Response(status, headers, b"")
        if response.header("transfer-encoding").lower() == "chunked":
            chunks = []
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                chunks.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            while await self.reader.readline() not in (b"\r\n", b"\n", b""):
                pass
            response.body = b"".join(chunks)
        elif length := response.header("content-length"):
            response.body = await self.reader.readexactly(int(length))
        else:
            response.body = await self.reader.read()
            await self.close()
        for name, value in headers:
            if name == "set-cookie":
                cookie, _, attributes = value.partition(";")
                key, _, content = cookie.partition("=")
                if "max-age=0" in attributes.lower() or "01 jan 1970" in attributes.lower():
                    self.cookies.pop(key.strip(), None)
                else:
                    self.cookies[key.strip()] = content.strip()
        if response.header("connection").lower() == "close":
            await self.close()
        return response


def expect(response: Response, step: str, status: int, marker: bytes | None = None) -> Response:
    if response.status != status or (marker is not None and marker not in response.body):
        problem = f"{response.status}" if response.status != status else f"no {marker.decode()!r}"
        message = re.search(rb'<p class="nhsuk-error-message"[^>]*>(.*?)</p>|<li>(.*?)</li>', response.body, re.S)
        detail = f" ({(message.group(1) or message.group(2)).decode(errors='replace').strip()[:80]})" if message else ""
        raise WrongAnswer(f"{step}: {problem}{detail}")
    return response


def csrf(response: Response, step: str) -> str:
    found = CSRF_INPUT.search(response.body)
    if found is None:
        raise WrongAnswer(f"{step}: no CSRF token")
    return found.group(1).decode()


def code_for(person: Person) -> str:
    """The code of the current step, or of the next (±1 step is accepted) if this one was used."""
    step = int(time.time() // STEP)
    step = max(step, person.last_step + 1)
    person.last_step = step
    return totp(person.secret, step)


async def sign_in(browser: Browser, person: Person, passwords: list[float]) -> None:
    """The whole sign-in; when the password step was answered is appended to `passwords`."""
    browser.cookies.clear()  # a new person at a new browser
    page = expect(await browser.request("GET", "/login/"), "GET /login/", 200, b"CIS2 Authentication")
    chosen = expect(await browser.request("POST", "/login/", {"csrfmiddlewaretoken": csrf(page, "GET /login/"),
                                                               "method": "authenticator-app"}), "POST /login/", 302)
    password_page = chosen.header("location")
    page = expect(await browser.request("GET", password_page), "GET password page", 200, b'name="password"')
    posted = expect(await browser.request("POST", password_page, {
        "csrfmiddlewaretoken": csrf(page, "GET password page"), "email": person.email, "password": PASSWORD}),
        "POST password", 302)
    passwords.append(time.monotonic())
    code_page = posted.header("location")
    page = expect(await browser.request("GET", code_page), "GET code page", 200, b'name="token"')
    done = expect(await browser.request("POST", code_page, {"csrfmiddlewaretoken": csrf(page, "GET code page"),
                                                            "token": code_for(person)}), "POST code", 302)
    if done.header("location") != "/":
        raise WrongAnswer(f"POST code: redirected to {done.header('location')!r}")


@dataclass(frozen=True)
class Attempt:
    started: float
    ended: float
    failure: str = ""  # "" when signed in
    dropped: bool = False


@dataclass
class Load:
    attempts: list[Attempt] = field(default_factory=list)
    window: tuple[float, float] = (0.0, 0.0)
    stalls: int = 0  # a person had to wait for the next time step (the pool was too small)
    passwords: list[float] = field(default_factory=list)  # when each password step was answered
    pauses: list[tuple[float, float]] = field(default_factory=list)  # the service frozen, the hash rate measured
    rates: list[HashRate] = field(default_factory=list)  # measured in those pauses

    @property
    def paused(self) -> float:
        return sum(end - start for start, end in self.pauses)

    def took(self, attempt: Attempt) -> float:
        """How long a sign-in took, the pauses it waited through left out."""
        waited = sum(max(0.0, min(end, attempt.ended) - max(start, attempt.started)) for start, end in self.pauses)
        return attempt.ended - attempt.started - waited


async def run_load(n: int, state: Servers, people: deque[Person], *, warmup: float, duration: float,
                   timeout: float, meter: Meter, spacing: float, pause: Callable[[], HashRate],
                   segment: float) -> Load:
    load = Load()
    starting = [True]
    finished = [0] * n  # sign-ins each client has finished, right or wrong

    async def client(index: int) -> None:
        host, port = state.targets[index % len(state.targets)]
        source = f"127.0.{1 + index // 250}.{2 + index % 250}"
        browser = Browser(host, port, source, state.scheme, timeout)
        await asyncio.sleep(index * spacing)  # arrivals spread over about one sign-in's time, not all at once
        while starting[0]:
            person = people.popleft()
            if person.last_step > time.time() // STEP:  # used this step and the next: wait
                load.stalls += 1
                await asyncio.sleep(STEP - time.time() % STEP)
            started = time.monotonic()
            try:
                await sign_in(browser, person, load.passwords)
                load.attempts.append(Attempt(started, time.monotonic()))
            except Dropped as error:
                load.attempts.append(Attempt(started, time.monotonic(), str(error), dropped=True))
            except WrongAnswer as error:
                load.attempts.append(Attempt(started, time.monotonic(), str(error)))
            finished[index] += 1
            people.append(person)
        await browser.close()

    began = time.monotonic()
    tasks = [asyncio.create_task(client(index)) for index in range(n)]
    while time.monotonic() - began < warmup or min(finished) == 0:  # until every client has been through
        await asyncio.sleep(0.05)
        if time.monotonic() - began > warmup + 4 * timeout:
            break
    # A window several sign-ins long: with fair queueing the clients move through the six steps nearly
    # together, so sign-ins complete in waves and a window shorter than one sign-in counts a trough or a crest.
    warm = [a.ended - a.started for a in load.attempts if not a.failure]
    duration = max(duration, 3 * statistics.median(warm)) if warm else duration
    # Every `segment` seconds of load (at least once), the service is frozen and the pure hash rate measured:
    # the machine's speed drifts by 10-30% within minutes, so rates measured minutes apart compare badly.
    meter.sample()
    window_start = loading_since = time.monotonic()
    loaded, next_pause = 0.0, min(segment, duration / 2)
    while (left := duration - (loaded + time.monotonic() - loading_since)) > 0:
        if duration - left >= next_pause:
            loaded += time.monotonic() - loading_since
            meter.sample()
            paused_at = time.monotonic()
            load.rates.append(pause())
            loading_since = time.monotonic()
            load.pauses.append((paused_at, loading_since))
            next_pause += segment
            continue
        await asyncio.sleep(min(0.5, left, next_pause - (duration - left)))
        meter.sample()
    window_end = time.monotonic()
    load.window = (window_start, window_end)
    starting[0] = False
    await asyncio.gather(*tasks)
    return load


# --- one run: N clients, with or without the sealer ------------------------------------------------------


@dataclass
class Result:
    n: int
    sealer: bool
    per_second: float
    p50: float
    p95: float
    worst: float
    errors: int
    dropped: int
    failures: Counter[str]
    cpu_ms: dict[str, float]  # CPU per sign-in in the window: workers, postgres, nginx, sealer, clients
    rate: HashRate  # the pure hash rate, measured in the window's pauses
    pauses: int
    audited: int
    signed_in: int
    stalls: int
    window: float = 0.0
    sealed: str = ""
    load_average: float = 0.0
    # Password steps answered in the window per sign-in completed in it: about 1 when the window saw the work
    # of as many sign-ins as it counted (CPU per sign-in is then right), far from 1 when the clients
    # moved in step and the window caught a crest or a trough of completions.
    balance: float = 1.0
    profile: str = ""  # --profile: where the window's CPU per sign-in went, by request


def profile_report(directory: Path, start: float, end: float, signins: int) -> str:
    """From bench/profiled_wsgi.py's lines of the requests that ended in the window: per kind of request,
    how many per sign-in and, per request, thread CPU, wall, queries, query wall, and the hash's CPU."""
    rows: dict[str, list[list[float]]] = {}
    at_once = Counter()
    for path in directory.glob("*.tsv"):
        for line in path.read_text().splitlines():
            ended, method, view, status, *numbers = line.split("\t")
            if start <= float(ended) <= end:
                values = [float(value) for value in numbers]
                rows.setdefault(f"{method} {view} {status}", []).append(values)
                if values[5]:
                    at_once[int(values[6])] += 1
    lines = [f"    {'request':<40} {'per sign-in':>11} {'wall ms':>8} {'CPU ms':>7} {'queries':>7} "
             f"{'query ms':>8} {'hash CPU':>8} {'hash wall':>9}"]
    total_cpu = total_hash = total_queries = 0.0
    steps = [0.0, 0.0, 0.0]  # one request of each step: CPU, hash CPU, queries
    for name, values in sorted(rows.items(), key=lambda item: -sum(v[1] for v in item[1])):
        mean = [statistics.mean(column) for column in zip(*values, strict=True)]
        if name.endswith((" 200", " 302")):
            steps = [steps[0] + mean[1], steps[1] + mean[4], steps[2] + mean[2]]
        lines.append(f"    {name:<40} {len(values) / signins:>11.2f} {mean[0]:>8.1f} {mean[1]:>7.2f} {mean[2]:>7.1f} "
                     f"{mean[3]:>8.2f} {mean[4]:>8.1f} {mean[5]:>9.1f}")
        total_cpu += sum(v[1] for v in values)
        total_hash += sum(v[4] for v in values)
        total_queries += sum(v[2] for v in values)
    lines.append(f"    per sign-in: {total_cpu / signins:.1f} ms thread CPU in requests, of which the hash "
                 f"{total_hash / signins:.1f} and the rest {(total_cpu - total_hash) / signins:.1f}; "
                 f"{total_queries / signins:.1f} queries; hashes in the same process at once: "
                 + ", ".join(f"{k}: {v}" for k, v in sorted(at_once.items()))
                 + f"\n    one request of each step: {steps[0]:.1f} ms thread CPU, of which the hash {steps[1]:.1f} "
                 f"and the rest {steps[0] - steps[1]:.1f}; {steps[2]:.1f} queries")
    return "\n".join(lines)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] if ordered else float("nan")


def run(n: int, sealer: bool, state: Servers, people: deque[Person], environment: dict[str, str],
        arguments: argparse.Namespace, hashing: Hashing, hash_rate: float) -> Result:
    reset_people()
    for person in people:
        person.last_step = -1
    first_event = last_event_id()
    sealing: subprocess.Popen[str] | None = None
    backends = PostgresBackends(environment["DATABASE_URL"])

    def own_cpu() -> list[int]:
        return [os.getpid()]

    meter = Meter({"workers": lambda: current_workers(state), "postgres": backends, "nginx": state.nginx_pids,
                   "sealer": lambda: [sealing.pid] if sealing else [], "clients": own_cpu})
    if sealer:
        sealing = subprocess.Popen([sys.executable, "-c", SEALER], cwd=PROJECT_DIR, env=environment,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def pause() -> HashRate:
        with frozen(state.service_pids() + ([sealing.pid] if sealing else [])):
            return hashing.measure(arguments.hash_seconds)

    try:
        load = asyncio.run(run_load(n, state, people, warmup=arguments.warmup, duration=arguments.duration,
                                    timeout=arguments.timeout, meter=meter,
                                    spacing=0.0 if arguments.all_at_once else 1 / (TARGET_RATIO * hash_rate),
                                    pause=pause, segment=arguments.segment))
    finally:
        backends.close()
        sealed = ""
        if sealing is not None:
            sealing.send_signal(signal.SIGTERM)
            output, _ = sealing.communicate(timeout=60)
            # Its last line (the chain head's log line may come before it).
            last = output.strip().splitlines()[-1].split() if output.strip() else []
            calls, count, busy = (last + ["?", "?", "?"])[:3]
            sealed = f"{count} events in {calls} seals, {busy} s sealing" if sealing.returncode == 0 else output[-500:]
    start, end = load.window
    in_window = [a for a in load.attempts if not a.failure and start <= a.ended <= end]
    begun = [load.took(a) for a in load.attempts if not a.failure and start <= a.started <= end]
    failures = Counter(a.failure for a in load.attempts if a.failure)
    signed_in = sum(1 for a in load.attempts if not a.failure)
    done = max(len(in_window), 1)
    # CPU per sign-in: over the password steps answered in the window, not the sign-ins completed in it.
    # Each sign-in has one, it is most of the CPU, and the window's CPU went into the steps it served,
    # whereas completions come in waves whenever the clients move in step (--all-at-once).
    hashed = max(sum(1 for at in load.passwords if start <= at <= end), 1)
    cpu_ms = {name: meter.seconds(name) / hashed * 1000 for name in meter.groups}
    return Result(
        n=n, sealer=sealer, per_second=len(in_window) / (end - start - load.paused), window=end - start - load.paused,
        rate=HashRate.combined(load.rates), pauses=len(load.pauses),
        p50=statistics.median(begun) if begun else float("nan"), p95=percentile(begun, 0.95),
        worst=max((load.took(a) for a in load.attempts), default=float("nan")),
        errors=sum(1 for a in load.attempts if a.failure and not a.dropped),
        dropped=sum(1 for a in load.attempts if a.dropped), failures=failures,
        cpu_ms=cpu_ms,
        audited=succeeded_events_after(first_event), signed_in=signed_in, stalls=load.stalls, sealed=sealed,
        load_average=os.getloadavg()[0],
        balance=hashed / done,
        profile=profile_report(arguments.profile, start, end, done) if arguments.profile else "",
    )


# --- report ------------------------------------------------------------------------------------------------


def log_problems(state: Servers) -> list[str]:
    found = []
    for path in state.logs:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if any(mark in line for mark in ("[ERROR]", "[CRITICAL]", "WORKER TIMEOUT", "Traceback", "[error]",
                                                 "[crit]", "[alert]", "[emerg]")):
                    found.append(f"{path.name}: {line[:300]}")
    return found


SERVICE = ("workers", "postgres", "nginx", "sealer")  # what serves a sign-in (the clients are the bench's)


def ratio(result: Result) -> float:
    return result.per_second / result.rate.per_second


def service_cpu(result: Result) -> float:
    return sum(result.cpu_ms[name] for name in SERVICE)


def print_table(results: list[Result]) -> None:
    print(f"\n{'':24}{'':>35}{'errors':>15}   {'CPU ms per sign-in':^34}   CPU")
    print(f"{'N':>4} {'sealer':>6} {'sign-ins/s':>10} {'hash/s':>7} {'ratio':>6} {'p50 s':>7} {'p95 s':>7} {'max s':>7} "
          f"{'':>2}{'errors':>6} {'dropped':>7}   {'workers':>7} {'pg':>5} {'nginx':>5} {'sealer':>6} {'clients':>7}"
          f"   {'ratio':>5}  load")
    for result in results:
        cpu = result.cpu_ms
        print(f"{result.n:>4} {'on' if result.sealer else 'off':>6} {result.per_second:>10.1f} "
              f"{result.rate.per_second:>7.1f} {ratio(result):>6.2f} {result.p50:>7.2f} {result.p95:>7.2f} "
              f"{result.worst:>7.2f} {'':>2}{result.errors:>6} {result.dropped:>7}   {cpu['workers']:>7.1f} "
              f"{cpu['postgres']:>5.1f} {cpu['nginx']:>5.1f} {cpu['sealer']:>6.1f} {cpu['clients']:>7.1f}   "
              f"{result.rate.cpu_ms / service_cpu(result):>5.2f} {result.load_average:5.1f}")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a smaller run: 8 s windows, the sealer at the largest N only")
    parser.add_argument("--clients", default="20,50,200", help="the Ns to run, comma-separated (default 20,50,200)")
    parser.add_argument("--duration", type=float,
                        help="measured seconds per run, at least 3 sign-ins long (default 20; --quick 8)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="at least this many seconds before measuring, and until each client signed in once")
    parser.add_argument("--hash-seconds", type=float, default=3.0,
                        help="seconds per measurement of the pure hash rate (default 3)")
    parser.add_argument("--segment", type=float, default=6.0,
                        help="seconds of load between two measurements of the pure hash rate (default 6)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a client waits for an answer (120)")
    parser.add_argument("--people", type=int, default=4000, help="Care Identities to sign in as (default 4000)")
    parser.add_argument("--balancer", choices=("nginx", "direct"), default="nginx" if shutil.which("nginx") else "direct",
                        help="nginx in front (default when installed), or clients spread over the two ports")
    parser.add_argument("--all-at-once", action="store_true",
                        help="start the N clients at the same instant instead of one every 1/(0.8 x hash checks/s) s")
    parser.add_argument("--no-sealer", action="store_true", help="skip the runs with the audit sealer")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per N and sealer setting, alternating without and with the sealer (default 1)")
    parser.add_argument("--argon2", metavar="M,T,P",
                        help="Argon2id memory (KiB), time and parallelism for this run (CAREID_ARGON2_*), "
                             "e.g. 102400,2,8 (Django's defaults, careid's cost before it was configurable)")
    parser.add_argument("--worker-class", help="override deploy/gunicorn.conf.py (CAREID_WORKER_CLASS)")
    parser.add_argument("--workers", type=int, help="per instance; override deploy/gunicorn.conf.py (CAREID_WORKERS)")
    parser.add_argument("--threads", type=int, help="override deploy/gunicorn.conf.py (CAREID_THREADS)")
    parser.add_argument("--keepalive", type=int, help="override deploy/gunicorn.conf.py (CAREID_KEEPALIVE)")
    parser.add_argument("--worker-connections", type=int,
                        help="override deploy/gunicorn.conf.py (CAREID_WORKER_CONNECTIONS)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="serve bench/profiled_wsgi.py (each request's thread CPU, queries and hash time, "
                             "written to DIR) and print where each N's CPU per sign-in goes")
    parser.add_argument("--proxy-keepalive", type=int, default=60,
                        help="seconds nginx keeps an idle connection to gunicorn (default 60, nginx's own default; "
                             "gunicorn's keepalive must be longer)")
    arguments = parser.parse_args()
    arguments.ns = sorted({int(n) for n in arguments.clients.split(",")})
    if arguments.profile:
        arguments.profile = arguments.profile.resolve()
        arguments.profile.mkdir(parents=True, exist_ok=True)
        for old in arguments.profile.glob("*.tsv"):
            old.unlink()
    if arguments.duration is None:
        arguments.duration = 8.0 if arguments.quick else 20.0
    if arguments.segment <= 0 or arguments.hash_seconds <= 0:
        parser.error("--segment and --hash-seconds: more than 0")
    if not arguments.ns or min(arguments.ns) < 1 or max(arguments.ns) > 2000:
        parser.error("--clients: between 1 and 2000")
    if arguments.balancer == "nginx" and not shutil.which("nginx"):
        parser.error("nginx is not installed (apt-get install -y nginx), or use --balancer direct")
    return arguments


def main() -> None:
    arguments = parse_arguments()
    # Stopped any other way than Ctrl-C, the bench still thaws a frozen service and stops its servers.
    for stopping in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stopping, lambda number, _frame: sys.exit(128 + number))
    environment = {**DEFAULTS, **os.environ, **BENCH_SETTINGS}
    if arguments.argon2:
        memory, passes, lanes = arguments.argon2.split(",")
        environment.update(CAREID_ARGON2_MEMORY_COST=memory, CAREID_ARGON2_TIME_COST=passes,
                           CAREID_ARGON2_PARALLELISM=lanes)
    check_database(environment["DATABASE_URL"])
    ensure_database(environment["DATABASE_URL"])
    setup_django(environment)
    from django.conf import settings
    from django.core.cache import cache
    from django.db import connection

    cache.clear()  # the bench's Redis database: per-IP counters and cached sessions of earlier runs
    people_list, encoded = prepare_people(arguments.people)
    check_totp(people_list[0])
    people = deque(people_list)
    conf = gunicorn_settings(gunicorn_environment(environment, arguments, 0))
    slots = INSTANCES * int(conf["workers"]) * (int(conf["threads"]) if conf["worker_class"] == "gthread" else 1)
    with connection.cursor() as cursor:
        cursor.execute("SHOW autovacuum")
        autovacuum = cursor.fetchone()[0]
    argon2 = (f"Argon2id m={settings.CAREID_ARGON2_MEMORY_COST} KiB t={settings.CAREID_ARGON2_TIME_COST} "
              f"p={settings.CAREID_ARGON2_PARALLELISM}, its memory {'kept' if settings.CAREID_ARGON2_KEEP_MEMORY else 'freed'}")
    print(f"{INSTANCES} gunicorn instances ({conf['worker_class']}, {conf['workers']} workers"
          + (f" x {conf['threads']} threads, {conf['worker_connections']} connections each"
             if conf["worker_class"] == "gthread" else "")
          + f", backlog {conf['backlog']}, keepalive {conf['keepalive']} s, timeout {conf['timeout']} s) "
          f"{'behind nginx' if arguments.balancer == 'nginx' else 'without a balancer'}; "
          f"PostgreSQL (CONN_MAX_AGE={settings.DATABASES['default']['CONN_MAX_AGE']}, health checks "
          f"{'on' if settings.DATABASES['default']['CONN_HEALTH_CHECKS'] else 'off'}, autovacuum {autovacuum}), "
          f"Redis; {argon2}; "
          f"{os.cpu_count()} CPUs; {len(people):,} people")

    load_before = os.getloadavg()[0]
    results: list[Result] = []
    problems: list[str] = []
    with Hashing(encoded, slots) as hashing, tempfile.TemporaryDirectory(prefix="careid-load-") as scratch, \
            servers(environment, arguments, Path(scratch)) as state:
        state.worker_pids = current_workers(state)
        for index, n in enumerate(arguments.ns):
            before = hashing.measure(arguments.hash_seconds)  # how fast the clients arrive
            print(f"pure hash checks, {slots} processes: {before.per_second:.1f}/s ({before.cpu_ms:.1f} ms CPU per check)")
            with_sealer = not arguments.no_sealer and (not arguments.quick or n == arguments.ns[-1])
            order = ([False, True] if with_sealer else [False]) * arguments.repeat
            if index % 2:
                order.reverse()
            for sealer in order:
                result = run(n, sealer, state, people, environment, arguments, hashing, before.per_second)
                results.append(result)
                print(f"N={n:<4} sealer {'on ' if sealer else 'off'}: {result.window:.0f} s measured, "
                      f"{result.per_second:6.1f} sign-ins/s against {result.rate.per_second:.1f} hash checks/s "
                      f"in {result.pauses} pauses ({result.rate.cpu_ms:.1f} ms CPU per check), p50 "
                      f"{result.p50:.2f} s, p95 {result.p95:.2f} s, max {result.worst:.2f} s, {result.errors} errors, "
                      f"{result.dropped} dropped; {result.signed_in} signed in, {result.audited} audited; "
                      f"{result.balance:.2f} password steps per sign-in in the window"
                      + (f"; sealer: {result.sealed}" if result.sealer else "")
                      + (f"; {result.stalls} waits for a time step" if result.stalls else ""))
                for failure, count in result.failures.most_common(5):
                    print(f"    {count} x {failure}")
                if result.profile:
                    print(result.profile)
                if result.audited != result.signed_in:
                    problems.append(f"N={n}: the clients signed in {result.signed_in} times, the audit trail has "
                                    f"{result.audited} signin.succeeded events")
                if current_workers(state) != state.worker_pids:
                    problems.append(f"N={n}: a gunicorn worker was replaced during the run")
                    state.worker_pids = current_workers(state)
        problems += log_problems(state)

    # Sealed at the end too, so the bench database never keeps a backlog for the next run's sealer.
    from audit import chain

    chain.seal()
    print_table(results)
    print(f"\n{argon2}; pure hash rate measured with {slots} processes (the instances' request slots) for "
          f"{arguments.hash_seconds:.0f} s after every {arguments.segment:.0f} s of load, the service frozen; "
          f"each run's ratio against the mean of its own measurements")
    largest = [r for r in results if r.n == max(arguments.ns)]
    clean = all(r.errors == 0 and r.dropped == 0 for r in largest)
    print(f"N={max(arguments.ns)}: {'no' if clean else 'SOME'} errors or dropped connections "
          f"({'meets' if clean else 'MISSES'} the target)")
    worst_ratio = min(ratio(r) for r in results)
    print(f"lowest ratio sign-ins/s to hash checks/s: {worst_ratio:.2f} "
          f"({'meets' if worst_ratio >= TARGET_RATIO else 'BELOW'} the {TARGET_RATIO} target)")
    hash_cpu = statistics.mean(r.rate.cpu_ms for r in results)
    service = statistics.median(service_cpu(r) for r in results)
    print(f"CPU per sign-in (median): {service:.1f} ms serving it (gunicorn workers, its PostgreSQL backends, nginx), "
          f"of which one hash check {hash_cpu:.1f} ms: the ratio on cores that do nothing else, "
          f"{hash_cpu / service:.2f}; {service - hash_cpu:.1f} ms is not the hash")
    for n in arguments.ns:
        off = [r for r in results if r.n == n and not r.sealer]
        on = [r for r in results if r.n == n and r.sealer]
        if not off or not on:
            continue

        def mean(runs: list[Result], value) -> float:
            return statistics.mean(value(r) for r in runs)

        print(f"sealer at N={n} (mean of {len(on)} with, {len(off)} without): sign-ins/s "
              f"{mean(on, lambda r: r.per_second) / mean(off, lambda r: r.per_second) - 1:+.0%}, ratio "
              f"{mean(off, ratio):.2f} -> {mean(on, ratio):.2f}, p50 {mean(on, lambda r: r.p50) - mean(off, lambda r: r.p50):+.2f} s, "
              f"CPU per sign-in {mean(off, service_cpu):.1f} -> {mean(on, service_cpu):.1f} ms "
              f"(the sealer's own {mean(on, lambda r: r.cpu_ms['sealer']):.1f} ms)")
    for problem in problems[:20]:
        print(f"problem: {problem}")
    print(f"load average (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
