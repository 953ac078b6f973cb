"""Shared fixtures: a real SMTP server, users at each stage of the journey, isolation.

CAREID_REQUIRE_SERVICES=1 (set by .ci/run) turns every "component missing" skip into a
failure, so CI can never pass without the real components.
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from careid.celery import app as celery_app

REQUIRE_SERVICES = os.environ.get("CAREID_REQUIRE_SERVICES") == "1"
ROOT = Path(__file__).resolve().parent.parent


def require(condition: bool, what: str) -> None:
    """Skip locally when a component is missing; fail in CI."""
    if condition:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required here (CAREID_REQUIRE_SERVICES=1) but missing")
    pytest.skip(f"{what} is not available")


# --- a real SMTP server on loopback -------------------------------------------------------


@dataclass
class Mailbox:
    messages: list[Message] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.original_content)
        with self.lock:
            self.messages.append(message)
            self.lock.notify_all()
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if address.lower() in m["To"].lower()]

    def wait_for(self, address: str, subject: str = "", count: int = 1, timeout: float = 20) -> Message:
        """The `count`-th message to `address` whose subject contains `subject`."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                found = [m for m in self.messages if address.lower() in m["To"].lower() and subject in m["Subject"]]
                if len(found) >= count:
                    return found[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"No message {count} to {address} with {subject!r} in {timeout}s")
                self.lock.wait(remaining)


def body(message: Message) -> str:
    return message.get_payload(decode=True).decode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def smtp_server():
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield controller
    controller.stop()


@pytest.fixture(autouse=True)
def mailbox(smtp_server, settings) -> Mailbox:
    """Every test sends its e-mail through the real SMTP server and reads it back."""
    settings.EMAIL_BACKEND = "accounts.mail.SMTPBackend"  # what EMAIL_URL smtp:// gives
    settings.EMAIL_HOST = smtp_server.hostname
    settings.EMAIL_PORT = smtp_server.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    mailbox: Mailbox = smtp_server.handler
    with mailbox.lock:
        mailbox.messages.clear()
    return mailbox


@pytest.fixture(scope="session", autouse=True)
def urls_loaded(django_db_setup) -> None:
    """Import the URLconf with the settings as they are, before any test overrides them: which types'
    URLs are mounted is decided at import (a test that disables a type must not unmount it for the
    tests after it in the same worker)."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018


@pytest.fixture(autouse=True)
def isolated_cache(settings):
    """A key prefix per test: throttling counters never leak between tests, even on a shared Redis."""
    caches = {name: dict(config) for name, config in settings.CACHES.items()}
    for config in caches.values():
        config["KEY_PREFIX"] = f"test-{uuid.uuid4().hex}"
    settings.CACHES = caches


@pytest.fixture(autouse=True)
def celery_in_process():
    """Tasks run in-process unless a test asks for the real worker (tests/test_celery_worker.py)."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


def run_task(task, *args):
    """Run a task here, as a worker would, and give its result (its exception raised). Not .delay().get(): Celery
    refuses get() while a task runs in the process, and it knows that by one flag for the whole process, set by
    any thread: a task running eagerly on the live server's thread (a browser test's last request) made it refuse
    in this one ("Never call result.get() within a task!")."""
    return task.apply(args).get(disable_sync_subtasks=False)


@pytest.fixture(scope="session")
def op_signing_key_file(tmp_path_factory) -> str:
    """The OpenID Connect provider's signing key for this run, in a file that subprocesses (a Celery
    worker, gunicorn) are pointed at with CAREID_OIDC_PRIVATE_KEY_FILES."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("op-key") / "signing.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return str(path)


@pytest.fixture(autouse=True)
def op_signing_key(settings, op_signing_key_file, monkeypatch) -> str:
    from pathlib import Path

    pem = Path(op_signing_key_file).read_text()
    settings.IDP_OIDC_PRIVATE_KEYS = [{"pem": pem}]
    monkeypatch.setenv("CAREID_OIDC_PRIVATE_KEY_FILES", op_signing_key_file)
    return pem


@pytest.fixture
def fast_hashing(settings):
    """Argon2 at full cost is the point in production and only slows the tests down."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- people at each stage of the journey ------------------------------------------------------

PASSWORD = "correct horse battery staple"


def totp_code(secret_hex: str, offset_steps: int = 0) -> str:
    import pyotp

    from authenticators.totp import codes

    totp = pyotp.TOTP(codes.base32(secret_hex))
    return totp.at(time.time() + 30 * offset_steps)


def wrong_code(code: str) -> str:
    return f"{(int(code) + 500000) % 10**6:06d}"


@dataclass
class Person:
    user: object
    password: str
    secret: str

    def code(self, offset_steps: int = 0) -> str:
        return totp_code(self.secret, offset_steps)

    def wrong_code(self) -> str:
        """A code that is not the current one (nor one step either side)."""
        return wrong_code(self.code())

    def fresh_code(self) -> str:
        """A code the replay guard will accept again (tests sign in more than once a step)."""
        from authenticators.models import AuthenticatorApp

        AuthenticatorApp.objects.filter(user=self.user).update(last_t=-1)
        return self.code()


@pytest.fixture
def seeded_allow_list():
    """Transactional tests empty every table afterwards, the data migration's rows included."""
    from importlib import import_module

    from django.apps import apps

    import_module("accounts.migrations.0002_seed_allowed_email_domains").seed(apps, None)


@pytest.fixture
def invite(transactional_db, seeded_allow_list, fast_hashing):
    """Real commits, so e-mails queued with transaction.on_commit are sent."""

    from accounts.flows import invite_user

    def make(email: str = "mary.seacole@nhs.net", first_name: str = "Mary", last_name: str = "Seacole"):
        return invite_user(email=email, first_name=first_name, last_name=last_name)

    return make


@pytest.fixture
def make_person(db, fast_hashing):
    from allauth.account.models import EmailAddress

    from accounts.models import User
    from authenticators.models import AuthenticatorApp
    from authenticators.totp import codes

    def make(email: str = "edith.cavell@nhs.net", **fields) -> Person:
        user = User.objects.create_user(email, first_name="Edith", last_name="Cavell", password=PASSWORD, **fields)
        EmailAddress.objects.create(user=user, email=user.email, primary=True, verified=True)
        secret = codes.new_secret()
        AuthenticatorApp.objects.create(user=user, name="Microsoft Authenticator", key=secret, confirmed=True)
        return Person(user, PASSWORD, secret)

    return make


@pytest.fixture
def person(make_person) -> Person:
    return make_person()


def sign_in(client, person: Person, goto: str | None = None):
    """Through the real pages: e-mail and password, then the 6-digit code."""
    from urllib.parse import urlencode

    query = f"?{urlencode({'goto': goto})}" if goto else ""
    response = client.post(f"/login/authenticator-app/{query}", {"email": person.user.email, "password": person.password})
    assert response.status_code == 302, response.content.decode()[:2000]
    return client.post(f"/login/authenticator-app/code/{query}", {"token": person.fresh_code()})


@pytest.fixture
def signed_in(client, person):
    response = sign_in(client, person)
    assert response.status_code == 302
    return client


@pytest.fixture
def seeded_roles():
    """The RA roles of the data migration (transactional tests flush them)."""
    from importlib import import_module

    from django.apps import apps

    import_module("accounts.migrations.0004_ra_roles").create_roles(apps, None)


@pytest.fixture
def ra_staff(make_person, seeded_roles):
    """A member of RA staff in `role`, signed in to the admin through CIS2 Authentication."""
    from django.contrib.auth.models import Group
    from django.test import Client

    def make(role: str, email: str | None = None):
        person = make_person(email=email or f"{role.lower().replace(' ', '.')}@nhs.net", is_staff=True)
        person.user.groups.add(Group.objects.get(name=role))
        client = Client()
        response = sign_in(client, person, goto="/admin/")
        assert response.url == "/admin/"
        return person, client

    return make


# --- a real Celery worker process ------------------------------------------------------------


@contextmanager
def celery_worker(smtp_port: int, loglevel: str = "warning", pool: str = "solo", **env_overrides: str):
    """A real Celery worker process on Redis, on a queue of its own, sharing the test database, the SMTP
    server on `smtp_port`, CAREID_BASE_URL and the provider's signing key (CAREID_OIDC_PRIVATE_KEY_FILES,
    set by op_signing_key); tasks this process queues go to it while the block runs. The solo pool starts
    fastest; pool="prefork" (production's) is the one that enforces tasks' time limits."""
    from django.conf import settings as django_settings
    from django.db import connection

    broker = os.environ.get("CELERY_BROKER_URL", "")
    require(broker.startswith("redis"), "A Redis broker (CELERY_BROKER_URL)")
    require(connection.vendor == "postgresql", "PostgreSQL (the worker must share the test database)")
    db = connection.settings_dict
    queue = f"careid-test-{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}",
        "CAREID_CELERY_QUEUE": queue,
        "CAREID_BASE_URL": django_settings.CAREID_BASE_URL,
        **env_overrides,
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "careid", "worker", f"--pool={pool}", "--concurrency=1", "-Q", queue,
         "-l", loglevel, "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    previous = celery_app.conf.task_always_eager, celery_app.conf.task_default_queue
    celery_app.conf.task_always_eager, celery_app.conf.task_default_queue = False, queue
    try:
        yield worker
    finally:
        celery_app.conf.task_always_eager, celery_app.conf.task_default_queue = previous
        if worker.poll() is None:
            worker.terminate()
        output, _ = worker.communicate(timeout=30)
        print(output)


def output_until(process: subprocess.Popen, done: Callable[[list[str]], bool], timeout: float = 60) -> list[str]:
    """The lines a process (started with stdout=PIPE, text=True) writes, read as they come, until
    done(lines); a failure showing them if it never is."""
    lines: list[str] = []
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0 and selector.select(remaining):
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if done(lines):
            return lines
    raise AssertionError("Not in the process's output:\n" + "".join(lines))


@pytest.fixture
def celery_worker_process(transactional_db, smtp_server):
    """celery_worker() on the tests' SMTP server, for a whole test."""
    with celery_worker(smtp_server.port) as worker:
        yield worker


# --- WebAuthn ------------------------------------------------------------------------------------------

WEBAUTHN_ORIGIN = "https://careid.example.nhs.uk"


def reload_urls() -> None:
    """Mount the URLs of the types switched on now (the URLconf mounts them when it is imported)."""
    import importlib

    from django.urls import clear_url_caches

    for name in ("authenticators.urls", "careid.urls"):
        if name in sys.modules:
            importlib.reload(sys.modules[name])
    clear_url_caches()


@pytest.fixture
def webauthn_site(settings) -> str:
    """The relying party the server-side tests' software authenticators talk to."""
    settings.CAREID_WEBAUTHN_RP_ID = "careid.example.nhs.uk"
    settings.CAREID_WEBAUTHN_ORIGINS = [WEBAUTHN_ORIGIN]
    return WEBAUTHN_ORIGIN


@pytest.fixture
def passkey_beta(settings):
    """Passkeys (a private beta) switched on, their URLs mounted; off again afterwards."""
    settings.CAREID_PASSKEY_BETA = True
    reload_urls()
    yield
    settings.CAREID_PASSKEY_BETA = False
    reload_urls()


@pytest.fixture
def soft_time_limit_handled_as_a_worker_does():
    """SIGUSR1, which Celery's prefork pool sends a task's process at its soft time limit, handled as billiard
    handles it in a worker: SoftTimeLimitExceeded, raised wherever the task is."""
    import signal

    from billiard.pool import soft_timeout_sighandler

    previous = signal.signal(signal.SIGUSR1, soft_timeout_sighandler)
    yield
    signal.signal(signal.SIGUSR1, previous)
