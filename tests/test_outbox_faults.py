"""E-mail through a real Celery worker while things go wrong: the worker is killed in the middle of a
send, the SMTP server stalls, Redis loses the task, PostgreSQL restarts. After recovery every e-mail that
was due is delivered exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import timedelta

import psycopg
import pytest
from aiosmtpd.controller import Controller
from django.conf import settings
from django.utils import timezone

from accounts import outbox
from accounts.models import OutgoingEmail
from audit.models import Event
from audit.record import record
from careid.celery import app as celery_app

from .conftest import Mailbox, _free_port, celery_worker
from .test_outages import own_postgres, postgres  # noqa: F401

pytestmark = pytest.mark.services


class GateHandler(Mailbox):
    """An SMTP server that holds every message at RCPT (before any of it is sent) while `held` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.held = True
        self.waiting = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.waiting += 1
        while self.held:
            await asyncio.sleep(0.05)
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def gated_smtp(settings):
    handler = GateHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    settings.EMAIL_PORT = controller.port
    yield handler, controller.port
    handler.held = False
    controller.stop()


def wait_until(condition, timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_worker_killed_mid_send_loses_nothing_and_sends_once(transactional_db, make_person, gated_smtp):
    from accounts.notifications import notify_person

    handler, port = gated_smtp
    user = make_person().user
    # A short claim, and a time limit (1 s soft, 6 s hard) that ends before it, as careid requires to start.
    with celery_worker(port, CAREID_EMAIL_CLAIM="7", CAREID_EMAIL_TIME_LIMIT="1", CAREID_EMAIL_TIMEOUT="30") as worker:
        notify_person(record(Event.ACCOUNT_UNLOCKED, subject=user, reason="Called the service desk"))
        email = OutgoingEmail.objects.get(user=user)
        wait_until(lambda: handler.waiting, what="the worker to reach the SMTP server")
        assert OutgoingEmail.objects.get(pk=email.pk).state == OutgoingEmail.State.SENDING
        os.kill(worker.pid, signal.SIGKILL)  # mid-send, as the OOM killer or a lost host would
        worker.wait(timeout=10)
    handler.held = False
    assert handler.to(user.email) == []  # nothing got through
    email.refresh_from_db()
    assert email.state == OutgoingEmail.State.SENDING
    assert outbox.sweep() == 0  # the claim still stands: another worker might be sending it
    time.sleep(7.1)  # CAREID_EMAIL_CLAIM in the worker: here the claim has now run out
    celery_app.conf.task_always_eager = True
    assert outbox.sweep() == 1
    email.refresh_from_db()
    assert email.state == OutgoingEmail.State.SENT
    handler.wait_for(user.email, "unlocked")
    assert len(handler.to(user.email)) == 1


def test_emails_queued_while_the_worker_is_down_are_sent_when_it_is_back(transactional_db, make_person, smtp_server,
                                                                        mailbox):
    from accounts.notifications import notify_person

    users = [make_person(email=f"person{n}@nhs.net").user for n in range(3)]
    with celery_worker(smtp_server.port) as worker:
        os.kill(worker.pid, signal.SIGKILL)  # no worker: the tasks wait in Redis (or are lost with it)
        worker.wait(timeout=10)
        for user in users:
            notify_person(record(Event.ACCOUNT_UNLOCKED, subject=user, reason="x"))
        assert set(OutgoingEmail.objects.values_list("state", flat=True)) == {OutgoingEmail.State.QUEUED}
    with celery_worker(smtp_server.port):  # back, on a new queue: the old messages are gone with the old one
        assert outbox.sweep() == 0  # their tasks may still be on their way
        # CAREID_EMAIL_CLAIM later, still not sent: their tasks are taken for lost and handed over again.
        OutgoingEmail.objects.update(handed_over_at=timezone.now() - settings.CAREID_EMAIL_CLAIM - timedelta(seconds=1))
        assert outbox.sweep() == 3
        for user in users:
            mailbox.wait_for(user.email, "unlocked")
        wait_until(lambda: set(OutgoingEmail.objects.values_list("state", flat=True)) == {OutgoingEmail.State.SENT},
                   what="every e-mail marked sent")
    assert [len(mailbox.to(user.email)) for user in users] == [1, 1, 1]
    assert OutgoingEmail.objects.filter(sent_at__lte=timezone.now()).count() == 3


def test_postgresql_restarted_while_an_email_is_sent_still_sends_it_once(postgres, own_postgres, make_person,  # noqa: F811
                                                                         gated_smtp, settings):
    """The SMTP server took the message, but the restart had ended the worker's connection: "sent" could not
    be written, the row stayed "sending", and the sweep sent it again once the claim ran out."""
    from django.db import connection

    from accounts.notifications import notify_person
    from accounts.tasks import sweep_outbox_task

    handler, smtp_port = gated_smtp
    user = make_person().user
    settings.EMAIL_PORT = _free_port()  # the first attempt fails at once: the e-mail waits, queued
    notify_person(record(Event.ACCOUNT_UNLOCKED, subject=user, reason="Called the service desk"))
    email = OutgoingEmail.objects.get(user=user)
    assert email.state == OutgoingEmail.State.QUEUED
    own_postgres.copy_database(connection.settings_dict)
    dsn = f"postgresql://postgres@127.0.0.1:{own_postgres.port}/{connection.settings_dict['NAME']}"

    def row() -> tuple[str, int]:
        with psycopg.connect(dsn, autocommit=True) as db:
            return db.execute("SELECT state, attempts FROM accounts_outgoingemail WHERE id = %s", [email.pk]).fetchone()

    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("UPDATE accounts_outgoingemail SET next_attempt_at = now() WHERE id = %s", [email.pk])
    with celery_worker(smtp_port, DATABASE_URL=dsn.replace("postgresql://", "postgres://"), CAREID_EMAIL_CLAIM="7",
                       CAREID_EMAIL_TIME_LIMIT="1"):
        outbox.deliver_email_task.delay(email.pk)
        wait_until(lambda: handler.waiting, what="the worker to reach the SMTP server")
        assert row()[0] == "sending"
        own_postgres.stop()  # a fast shutdown ends every connection, as a restart or failover does ...
        own_postgres.start()
        handler.held = False  # ... while the SMTP server was taking the message
        handler.wait_for(user.email, "unlocked")
        wait_until(lambda: row()[0] != "sending", timeout=5, what="the worker to record the send")
        assert row() == ("sent", 2)
        time.sleep(7.1)  # CAREID_EMAIL_CLAIM in the worker has run out: a sweep would take a "sending" row
        sweep_outbox_task.delay()
        time.sleep(3)
    assert len(handler.to(user.email)) == 1
