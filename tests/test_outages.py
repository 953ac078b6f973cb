"""When a component is down or hangs: clear pages, fast answers, nothing unsafe, and back to normal after.

The first tests run in-process. The others run careid as production does (gunicorn with
deploy/gunicorn.conf.py, settings only from the environment) on a Redis of their own, which they
freeze (SIGSTOP), thaw, stop and restart, and on a PostgreSQL cluster of their own (a copy of the test
database), which they stop and start, reached through a TCP link they can make hang (accepting
connections and never answering, as a host that hangs does).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pytest
import requests
from django.db import OperationalError
from django.test import Client, RequestFactory

from .conftest import ROOT, _free_port, require, totp_code
from .served import gunicorn

UNAVAILABLE = "Sorry, the service is unavailable"
PASSWORD = "a long and memorable passphrase"


def _branded(response, heading: str) -> None:
    text = response.text if hasattr(response, "text") else response.content.decode()
    assert "<h1>" + heading + "</h1>" in text, text[:2000]
    assert 'class="nhsuk-header"' in text and "/static/nhsuk/nhsuk-frontend.min.css" in text
    assert "Traceback" not in text and "Sign out" not in text


# --- in-process ---------------------------------------------------------------------------------


class _Untouchable:
    def __init__(self, what: str) -> None:
        self.what = what

    def __getattr__(self, name: str):
        raise AssertionError(f"the page touched {self.what}.{name}")


def test_every_error_page_renders_without_a_session_a_user_or_the_database():
    """A request whose session and user raise when touched (as its messages would, through the
    session), and no database: without pytest-django's db fixture any query raises."""
    from django.contrib.messages.storage.fallback import FallbackStorage

    from careid import views

    request = RequestFactory().get("/somewhere/")
    request.session, request.user = _Untouchable("the session"), _Untouchable("the user")
    request._messages = FallbackStorage(request)
    pages = [
        (views.bad_request(request), 400, "There is a problem with your request"),
        (views.permission_denied(request), 403, "You cannot do that"),
        (views.page_not_found(request), 404, "Page not found"),
        (views.csrf_failure(request), 403, "Your form could not be sent"),
        (views.server_error(request), 500, "Sorry, there is a problem with the service"),
        (views.service_unavailable(request), 503, UNAVAILABLE),
    ]
    for response, status, heading in pages:
        assert response.status_code == status
        _branded(response, heading)
        assert 'href="/terms/"' in response.content.decode()


def test_the_500_handler_answers_503_for_a_component_that_is_down():
    from careid import views

    request = RequestFactory().get("/somewhere/")
    try:
        raise OperationalError("connection to server failed")
    except OperationalError:
        response = views.server_error(request)
    assert response.status_code == 503 and response["Retry-After"] == "120"
    _branded(response, UNAVAILABLE)


@pytest.fixture
def throttle_unreachable(settings):
    """The throttle cache on a port nothing listens on (connection refused at once)."""
    require(settings.CACHES["throttle"]["BACKEND"].startswith("django_redis"), "Redis as the cache (CACHE_URL)")
    throttle = dict(settings.CACHES["throttle"])
    throttle["LOCATION"] = f"redis://127.0.0.1:{_free_port()}/0"
    settings.CACHES = {**settings.CACHES, "throttle": throttle}


@pytest.mark.parametrize("unknown", [False, True], ids=["known address", "unknown address"])
def test_a_sign_in_that_cannot_be_counted_is_refused_with_the_503_page_and_audited(db, person, throttle_unreachable,
                                                                                   unknown):
    from audit.models import AuditEvent, Event

    client = Client(raise_request_exception=False)
    email = "nobody@nhs.net" if unknown else person.user.email
    response = client.post("/login/authenticator-app/", {"email": email, "password": person.password})
    assert response.status_code == 503
    _branded(response, UNAVAILABLE)
    event = AuditEvent.objects.get(event=Event.SIGNIN_THROTTLED)
    assert event.outcome == "failure" and event.details["reason"] == "throttle store unavailable"
    assert event.details["email"] == email and event.subject_id == (None if unknown else person.user.pk)
    person.user.refresh_from_db()
    assert person.user.password_failures == 0  # nothing was checked, so nothing counts against the person


def test_a_password_reset_and_an_added_address_that_cannot_be_counted_are_refused_and_audited(
        signed_in, person, throttle_unreachable):
    from allauth.account.models import EmailAddress

    from accounts.models import EmailOneTimePassword
    from audit.models import AuditEvent, Event

    signed_in.raise_request_exception = False
    response = signed_in.post("/profile/email/add/", {"email": "edith.cavell@nhs.uk"})
    assert response.status_code == 503
    refused = AuditEvent.objects.get(event=Event.EMAIL_REFUSED)
    assert refused.details["reason"] == "throttle store unavailable" and refused.subject_id == person.user.pk
    assert not EmailAddress.objects.filter(email="edith.cavell@nhs.uk").exists()

    client = Client(raise_request_exception=False)
    response = client.post("/login/authenticator-app/forgotten-password/", {"email": person.user.email})
    assert response.status_code == 503
    _branded(response, UNAVAILABLE)
    started = AuditEvent.objects.get(event=Event.PASSWORD_RESET_STARTED)
    assert started.outcome == "failure" and started.details["reason"] == "throttle store unavailable"
    assert not EmailOneTimePassword.objects.exists()


def _settings_of(code: str, env: dict[str, str]) -> dict:
    """What a fresh process configured only by `env` ends up with (`code` prints JSON)."""
    import json

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CAREID_", "DATABASE_URL", "CACHE_URL", "CELERY_"))}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                            env={**clean, "DJANGO_SETTINGS_MODULE": "careid.settings", "SECRET_KEY": "k",
                                 "CAREID_AUDIT_CHAIN_KEY": "c", **env})
    return json.loads(result.stdout)


SETTINGS = ("import json; from django.conf import settings as s; print(json.dumps({"
            "'db': s.DATABASES['default'].get('OPTIONS', {}), 'caches': s.CACHES, 'broker': s.CELERY_BROKER_TRANSPORT_OPTIONS,"
            "'publish': s.CELERY_TASK_PUBLISH_RETRY_POLICY, 'email': s.EMAIL_TIMEOUT, 'session': s.SESSION_ENGINE}))")
COMPONENTS = {"DATABASE_URL": "postgres://careid@db:5432/careid", "CACHE_URL": "redis://redis:6379/2",
              "CELERY_BROKER_URL": "redis://redis:6379/1"}


def test_every_component_has_short_timeouts_and_the_throttle_fails_closed():
    s = _settings_of(SETTINGS, COMPONENTS)
    assert s["db"]["connect_timeout"] == 3 and "options" not in s["db"]  # no statement timeout for commands
    default, throttle = s["caches"]["default"], s["caches"]["throttle"]
    assert default["LOCATION"] == throttle["LOCATION"] == "redis://redis:6379/2"
    assert default["OPTIONS"]["IGNORE_EXCEPTIONS"] is True and throttle["OPTIONS"]["IGNORE_EXCEPTIONS"] is False
    for options in default["OPTIONS"], throttle["OPTIONS"]:
        assert options["SOCKET_CONNECT_TIMEOUT"] == options["SOCKET_TIMEOUT"] == 0.5
    assert s["broker"]["socket_timeout"] == s["broker"]["socket_connect_timeout"] == 0.5
    assert s["broker"]["visibility_timeout"] > 3600  # beyond any task's run and the longest retry wait
    assert s["publish"]["max_retries"] <= 1 and s["email"] == 10
    assert s["session"] == "careid.sessions"  # Django's database store (tests/test_session_store.py)

    s = _settings_of(SETTINGS, {**COMPONENTS, "CAREID_REDIS_TIMEOUT": "0.25", "CAREID_DB_CONNECT_TIMEOUT": "5"})
    assert s["caches"]["throttle"]["OPTIONS"]["SOCKET_TIMEOUT"] == s["broker"]["socket_timeout"] == 0.25
    assert s["db"]["connect_timeout"] == 5


def test_web_processes_get_a_statement_timeout_and_commands_do_not():
    web = _settings_of("import json, careid.wsgi; from django.conf import settings as s; "
                       "print(json.dumps(s.DATABASES['default']['OPTIONS']))", COMPONENTS)
    assert web["options"] == "-c statement_timeout=30000"
    assert "options" not in _settings_of(SETTINGS, COMPONENTS)["db"]
    # Options the database URL gives are kept beside it.
    web = _settings_of("import json, careid.wsgi; from django.conf import settings as s; "
                       "print(json.dumps(s.DATABASES['default']['OPTIONS']))",
                       {**COMPONENTS, "DATABASE_URL": COMPONENTS["DATABASE_URL"] + "?options=-c%20search_path%3Dcareid"})
    assert web["options"] == "-c search_path=careid -c statement_timeout=30000"


def test_health_says_only_ok_or_unavailable_and_operators_get_the_details(db, throttle_unreachable, client):
    from django.core.management import call_command

    response = client.get("/health/")
    assert (response.status_code, response.content) == (503, b"Unavailable\n")
    assert "no-store" in response["Cache-Control"]

    output = StringIO()
    with pytest.raises(SystemExit) as exit:
        call_command("health_check", "health", "--no-http", stdout=output)
    assert exit.value.code == 1
    report = output.getvalue()
    assert "Database(alias='default'): OK" in report and "Cache(alias='throttle'): Unexpected Result" in report


def test_health_is_ok_when_every_component_answers(db, client):
    response = client.get("/health/")
    assert (response.status_code, response.content) == (200, b"OK\n")


# --- careid under gunicorn, with components that fail ------------------------------------------


class RedisServer:
    """A redis-server of the test's own (never the machine's shared one), on a free port."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("redis-server did not start")
            time.sleep(0.05)

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def freeze(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    require(shutil.which("redis-server") is not None, "redis-server")
    server = RedisServer()
    server.start()
    yield server
    if server.process.poll() is None:
        server.stop()


class PostgresServer:
    """A PostgreSQL cluster of the test's own (initdb in a temporary directory, on a free port; never the
    machine's shared one), so that it can be stopped and started for real: a fast shutdown ends every
    connection with the server's own error, as a restart or failover does."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = _free_port()
        self.directory = tempfile.mkdtemp(prefix="careid-pg-")
        self.data = os.path.join(self.directory, "data")
        # PostgreSQL will not run as root: as root, the cluster belongs to the postgres user.
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_owner:
            shutil.chown(self.directory, "postgres")
        self._run("initdb", "--pgdata", self.data, "--auth", "trust", "--username", "postgres", "--encoding", "UTF8",
                  "--no-sync")

    def _run(self, program: str, *arguments: str, **options) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_owner, str(self.bindir / program), *arguments], check=True,
                              capture_output=True, text=True, timeout=120, **options)

    def start(self) -> None:
        self._run("pg_ctl", "--pgdata", self.data, "--wait", "--log", os.path.join(self.directory, "log"),
                  "--options", f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off",
                  "start")

    def stop(self) -> None:
        self._run("pg_ctl", "--pgdata", self.data, "--wait", "--mode", "fast", "stop")

    def copy_database(self, source: dict) -> None:
        """Make careid's test database here, as it is now in the shared cluster (schema, triggers, rows)."""
        here = ["--host", "127.0.0.1", "--port", str(self.port), "--username", "postgres"]
        self._run("createdb", *here, source["NAME"])
        dump = subprocess.run(
            [str(self.bindir / "pg_dump"), "--no-owner", "--no-privileges", "--host", source["HOST"] or "127.0.0.1",
             "--port", str(source["PORT"] or 5432), "--username", source["USER"], source["NAME"]],
            check=True, capture_output=True, text=True, timeout=120).stdout
        self._run("psql", *here, "--quiet", "--set", "ON_ERROR_STOP=1", "--dbname", source["NAME"], input=dump)

    def sql(self, database: str, statement: str) -> None:
        self._run("psql", "--host", "127.0.0.1", "--port", str(self.port), "--username", "postgres", "--quiet",
                  "--set", "ON_ERROR_STOP=1", "--dbname", database, "--command", statement)

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def own_postgres(postgres) -> Iterator[PostgresServer]:
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(Path(path).parent.name))
    require(bool(bindirs) and os.path.exists(os.path.join(bindirs[-1], "initdb")), "PostgreSQL's initdb")
    server = PostgresServer(Path(bindirs[-1]))
    server.start()
    yield server
    server.remove()


class BreakableLink:
    """A TCP link to PostgreSQL that fails the ways a database does, seen from careid: `stop()` closes
    every connection and refuses new ones (PostgreSQL stopped); `hang()` closes every connection and
    accepts new ones that never get an answer (a host that hangs, a failover to an address that does not
    answer yet); `mend()` forwards again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = _free_port()
        self.mode = "forward"
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self._listen()

    def _listen(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self.lock:
                self.sockets.add(client)
                if self.mode != "forward":
                    continue  # held open, never answered
                try:
                    upstream = socket.create_connection(self.target)
                except OSError:  # the database is down: so is the connection
                    self.sockets.discard(client)
                    client.close()
                    continue
                self.sockets.add(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        self._close(source, sink)

    def _close(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with self.lock:
                self.sockets.discard(sock)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _drop_all(self) -> None:
        with self.lock:
            sockets = list(self.sockets)
        self._close(*sockets)

    def _stop_listening(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone would not
        except OSError:
            pass
        self.listener.close()

    def stop(self) -> None:
        self.mode = "stopped"
        self._stop_listening()
        self._drop_all()

    def hang(self) -> None:
        self.mode = "hang"
        self._drop_all()

    def mend(self) -> None:
        self._drop_all()
        self.mode = "forward"
        if self.listener.fileno() == -1:
            self._listen()

    def close(self) -> None:
        self._stop_listening()
        self._drop_all()


@dataclass
class Careid:
    url: str
    process: subprocess.Popen

    def session(self) -> requests.Session:
        return requests.Session()

    def get(self, browser: requests.Session, path: str) -> tuple[requests.Response, float]:
        started = time.monotonic()
        response = browser.get(self.url + path, allow_redirects=False, timeout=30)
        return response, time.monotonic() - started

    def post(self, browser: requests.Session, path: str, data: dict) -> tuple[requests.Response, float]:
        if "csrftoken" not in browser.cookies:
            browser.get(self.url + "/login/", timeout=30)  # a page with a form sets the CSRF cookie
        started = time.monotonic()
        response = browser.post(self.url + path, data={**data, "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
                                allow_redirects=False, timeout=30)
        return response, time.monotonic() - started


@contextmanager
def careid_under_gunicorn(*, database: tuple[str, int], redis: RedisServer) -> Iterator[Careid]:
    from django.db import connection

    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{database[0]}:{database[1]}/{db['NAME']}",
        "CACHE_URL": redis.url(0),
        "CELERY_BROKER_URL": redis.url(1),
        "CAREID_REDIS_TIMEOUT": "0.5",
        "CAREID_SECURE_COOKIES": "false",
        "CAREID_WORKERS": "1",
    }
    env.pop("CAREID_DB_CONNECT_TIMEOUT", None)  # the default, 3 s
    with gunicorn(env) as (url, server):
        yield Careid(url, server)


@pytest.fixture
def postgres(transactional_db) -> tuple[str, int]:
    """careid's test database, committed to (gunicorn reads it from another process)."""
    from django.db import connection

    require(connection.vendor == "postgresql", "PostgreSQL (DATABASE_URL)")
    return connection.settings_dict["HOST"] or "127.0.0.1", int(connection.settings_dict["PORT"] or 5432)


@pytest.fixture
def nurse(postgres, seeded_allow_list):
    """Someone who can sign in with the Authenticator app, their password hashed as in production
    (gunicorn knows only the production hashers)."""
    from allauth.account.models import EmailAddress

    from accounts.models import User
    from authenticators.models import AuthenticatorApp
    from authenticators.totp import codes

    user = User.objects.create_user("mary.seacole@nhs.net", first_name="Mary", last_name="Seacole", password=PASSWORD)
    EmailAddress.objects.create(user=user, email=user.email, primary=True, verified=True)
    secret = codes.new_secret()
    AuthenticatorApp.objects.create(user=user, name="Microsoft Authenticator", key=secret, confirmed=True)
    return user, secret


def _sign_in(careid: Careid, user, secret: str, fresh_code=None) -> requests.Session:
    from authenticators.models import AuthenticatorApp

    browser = careid.session()
    response, _ = careid.post(browser, "/login/authenticator-app/", {"email": user.email, "password": PASSWORD})
    assert response.status_code == 302, response.text[:2000]
    if fresh_code is None:  # the replay guard: a code of the same time step is accepted again
        AuthenticatorApp.objects.filter(user=user).update(last_t=-1)
    else:
        fresh_code()
    response, _ = careid.post(browser, "/login/authenticator-app/code/", {"token": totp_code(secret)})
    assert response.status_code == 302 and response.headers["Location"] == "/", response.text[:2000]
    return browser


@pytest.mark.services
@pytest.mark.xdist_group("outages")
def test_with_redis_frozen_or_stopped_pages_render_sign_in_fails_closed_fast_and_all_recovers(
        postgres, own_redis, nurse, mailbox):
    from accounts.flows import invite_user
    from audit.models import AuditEvent, Event

    user, secret = nurse
    with careid_under_gunicorn(database=postgres, redis=own_redis) as careid:
        response, _ = careid.get(careid.session(), "/health/")
        assert (response.status_code, response.text) == (200, "OK\n")
        signed_in = _sign_in(careid, user, secret)
        invited, link = invite_user(email="florence.nightingale@nhs.net", first_name="Florence", last_name="Nightingale")
        registering = careid.session()
        response, _ = careid.post(registering, f"/register/{link.token}/", {"confirm": "on"})
        live_link = response.headers["Location"]

        own_redis.freeze()

        # Pages that need no counting work as before: sessions are in PostgreSQL.
        response, elapsed = careid.get(careid.session(), "/login/")
        assert response.status_code == 200 and "CIS2 Authentication" in response.text and elapsed < 1.5
        for browser in careid.session(), signed_in:
            response, elapsed = careid.get(browser, "/no-such-page/")
            assert response.status_code == 404 and elapsed < 1.5
            _branded(response, "Page not found")
        response, elapsed = careid.get(signed_in, "/profile/")
        assert response.status_code == 200 and "Mary Seacole" in response.text and elapsed < 1.5

        # A sign-in cannot be counted: refused, quickly, with the branded page, and audited.
        response, elapsed = careid.post(careid.session(), "/login/authenticator-app/",
                                        {"email": user.email, "password": PASSWORD})
        assert response.status_code == 503 and response.headers["Retry-After"] == "120"
        _branded(response, UNAVAILABLE)
        assert elapsed < 2, elapsed
        refused = AuditEvent.objects.get(event=Event.SIGNIN_THROTTLED, subject=user)
        assert refused.details["reason"] == "throttle store unavailable" and refused.method == "authenticator-app"

        # A step that queues an e-mail: the broker gives up within a second and the journey goes on.
        response, elapsed = careid.post(registering, live_link, {"email": invited.email})
        assert response.status_code == 302 and response.headers["Location"] == "/register/authenticator-app/code/"
        assert elapsed < 2.5, elapsed

        # The load balancer hears of it at once, and nothing more.
        response, elapsed = careid.get(careid.session(), "/health/")
        assert (response.status_code, response.text) == (503, "Unavailable\n") and elapsed < 2, elapsed

        # Signing out works, and stays done once Redis is back with everything it held.
        response, elapsed = careid.post(signed_in, "/logout/", {})
        assert response.status_code == 200 and elapsed < 2, elapsed

        own_redis.thaw()

        response, _ = careid.get(signed_in, "/profile/")
        assert response.status_code == 302 and response.headers["Location"].startswith("/login/")
        response, _ = careid.get(careid.session(), "/health/")
        assert response.status_code == 200
        _sign_in(careid, user, secret)

        # Stopped rather than frozen: refused at once; started again (empty): all is well.
        own_redis.stop()
        response, elapsed = careid.post(careid.session(), "/login/authenticator-app/",
                                        {"email": user.email, "password": PASSWORD})
        assert response.status_code == 503 and elapsed < 1.5, elapsed
        response, elapsed = careid.get(careid.session(), "/health/")
        assert response.status_code == 503 and elapsed < 1.5, elapsed
        own_redis.start()
        response, _ = careid.get(careid.session(), "/health/")
        assert response.status_code == 200
        _sign_in(careid, user, secret)


@pytest.mark.services
@pytest.mark.xdist_group("outages")
def test_with_postgresql_stopped_or_hanging_every_page_is_branded_and_fast_and_all_recovers(
        postgres, own_postgres, own_redis, nurse):
    from django.db import connection

    from authenticators.models import AuthenticatorApp

    user, secret = nurse
    own_postgres.copy_database(connection.settings_dict)  # the nurse included
    database = connection.settings_dict["NAME"]

    def fresh_code():
        own_postgres.sql(database, f"UPDATE {AuthenticatorApp._meta.db_table} SET last_t = -1 WHERE user_id = {user.pk}")

    link = BreakableLink(("127.0.0.1", own_postgres.port))
    try:
        with careid_under_gunicorn(database=("127.0.0.1", link.port), redis=own_redis) as careid:
            signed_in = _sign_in(careid, user, secret, fresh_code)
            response, _ = careid.get(careid.session(), "/health/")
            assert response.status_code == 200

            # PostgreSQL stopped (a fast shutdown: every connection ended by the server), then started
            # again; and a database host that accepts connections and never answers, then answers.
            for failure, recovery, within in ((own_postgres.stop, own_postgres.start, 1.5), (link.hang, link.mend, 5)):
                failure()
                # The sign-in page itself needs no database for someone not signed in.
                response, elapsed = careid.get(careid.session(), "/login/")
                assert response.status_code == 200 and elapsed < 1.5
                response, elapsed = careid.get(signed_in, "/profile/")
                assert response.status_code == 503 and elapsed < within, (failure.__name__, elapsed)
                _branded(response, UNAVAILABLE)
                response, elapsed = careid.post(careid.session(), "/login/authenticator-app/",
                                                {"email": user.email, "password": PASSWORD})
                assert response.status_code == 503 and elapsed < within, (failure.__name__, elapsed)
                _branded(response, UNAVAILABLE)
                response, elapsed = careid.get(careid.session(), "/health/")
                assert (response.status_code, response.text) == (503, "Unavailable\n")
                assert elapsed < within, (failure.__name__, elapsed)
                assert not re.search(r"psycopg|OperationalError|connection", response.text)

                recovery()
                # The session was in PostgreSQL and is still there; new sign-ins work again.
                response, _ = careid.get(signed_in, "/profile/")
                assert response.status_code == 200 and "Mary Seacole" in response.text
                response, _ = careid.get(careid.session(), "/health/")
                assert response.status_code == 200
                _sign_in(careid, user, secret, fresh_code)
    finally:
        link.close()


def _ra_manager():
    """An RA Manager who can sign in with the Authenticator app; their TOTP secret."""
    from importlib import import_module

    from allauth.account.models import EmailAddress
    from django.apps import apps
    from django.contrib.auth.models import Group

    from accounts.models import User
    from authenticators.models import AuthenticatorApp
    from authenticators.totp import codes

    import_module("accounts.migrations.0004_ra_roles").create_roles(apps, None)
    user = User.objects.create_user("ra.manager@nhs.net", first_name="Ra", last_name="Manager", password=PASSWORD,
                                    is_staff=True)
    user.groups.add(Group.objects.get(name="RA Manager"))
    EmailAddress.objects.create(user=user, email=user.email, primary=True, verified=True)
    secret = codes.new_secret()
    AuthenticatorApp.objects.create(user=user, name="Microsoft Authenticator", key=secret, confirmed=True)
    return user, secret


@pytest.mark.services
@pytest.mark.xdist_group("outages")
def test_with_redis_frozen_an_ras_bulk_action_waits_for_the_broker_once_not_once_a_person(postgres, own_redis,
                                                                                           seeded_allow_list):
    """Each person is suspended in a transaction of their own, whose e-mail was handed to the frozen broker
    after it: half a second (CAREID_REDIS_TIMEOUT) for each person selected, 6.5 s for twelve."""
    from accounts.models import OutgoingEmail, User

    ra_user, ra_secret = _ra_manager()
    people = [User.objects.create_user(f"nurse{n}@nhs.net", first_name="Ward", last_name=f"Nurse{n}")
              for n in range(12)]
    with careid_under_gunicorn(database=postgres, redis=own_redis) as careid:
        ra = _sign_in(careid, ra_user, ra_secret)
        response, _ = careid.get(ra, "/admin/accounts/user/")
        assert response.status_code == 200
        own_redis.freeze()
        try:
            response, elapsed = careid.post(ra, "/admin/accounts/user/", {
                "action": "suspend_selected", "apply": "1", "reason": "Agency contract ended",
                "_selected_action": [str(person.pk) for person in people]})
        finally:
            own_redis.thaw()
    assert response.status_code == 302
    assert User.objects.filter(status=User.Status.SUSPENDED).count() == len(people)
    emails = OutgoingEmail.objects.filter(user__in=people)
    assert emails.count() == len(people) and not emails.filter(handed_over_at__isnull=False).exists()  # for the sweep
    assert elapsed < 2.5, f"the RA waited {elapsed:.1f} s"
