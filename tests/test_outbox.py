"""The transactional outbox: an e-mail exists exactly when the change that causes it does, is sent once,
waits and tries again through SMTP outages and stalls, survives a lost task or a killed worker, and is
shown as failed only after more than a day — through a real SMTP server the tests stop and restart."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from datetime import timedelta

import pytest
import time_machine
from aiosmtpd.controller import Controller
from django.db import connection, transaction
from django.utils import timezone

from accounts import outbox
from accounts.models import OutgoingEmail
from audit.models import Event
from audit.record import record
from careid.celery import app as celery_app

from .conftest import Mailbox, _free_port, require


def notification_for(user) -> OutgoingEmail:
    from accounts.notifications import notify_person

    notify_person(record(Event.ACCOUNT_UNLOCKED, subject=user, reason="Called the service desk"))
    return OutgoingEmail.objects.filter(user=user).latest("pk")


@pytest.fixture
def user(transactional_db, make_person):
    return make_person().user


@pytest.fixture
def dead_smtp(settings):
    """An SMTP address where nothing listens: every send fails at once (connection refused)."""
    settings.EMAIL_PORT = _free_port()


def test_the_email_exists_exactly_when_its_change_does(user, mailbox):
    with pytest.raises(RuntimeError), transaction.atomic():
        notification_for(user)
        raise RuntimeError("the change failed")
    assert not OutgoingEmail.objects.exists() and mailbox.messages == []
    with transaction.atomic():
        email = notification_for(user)
        assert email.state == OutgoingEmail.State.QUEUED
    email.refresh_from_db()
    assert email.state == OutgoingEmail.State.SENT and email.attempts == 1 and email.sent_at
    assert len(mailbox.wait_for(user.email, "Your Care Identity has been unlocked") and mailbox.to(user.email)) == 1


def test_an_smtp_outage_waits_longer_each_time_then_delivers_once(user, mailbox, dead_smtp, settings, smtp_server):
    email = notification_for(user)
    email.refresh_from_db()
    assert email.state == OutgoingEmail.State.QUEUED and email.attempts == 1
    assert "ConnectionRefusedError" in email.last_error
    assert timedelta(seconds=55) < email.next_attempt_at - timezone.now() <= timedelta(seconds=60)
    assert outbox.sweep() == 0  # not due yet
    OutgoingEmail.objects.filter(pk=email.pk).update(next_attempt_at=timezone.now())
    assert outbox.sweep() == 1  # due: tried again (in-process here), still down
    email.refresh_from_db()
    assert email.attempts == 2 and timedelta(seconds=115) < email.next_attempt_at - timezone.now() <= timedelta(minutes=2)
    settings.EMAIL_PORT = smtp_server.port  # SMTP is back
    OutgoingEmail.objects.filter(pk=email.pk).update(next_attempt_at=timezone.now())
    outbox.sweep()
    email.refresh_from_db()
    assert email.state == OutgoingEmail.State.SENT and email.attempts == 3
    mailbox.wait_for(user.email, "unlocked")
    outbox.sweep()
    assert len(mailbox.to(user.email)) == 1  # exactly once


def test_waits_grow_to_an_hour_and_it_gives_up_after_more_than_a_day(settings):
    assert [outbox.backoff(n).total_seconds() for n in (1, 2, 3, 7, 20)] == [60, 120, 240, 3600, 3600]
    assert settings.CAREID_EMAIL_GIVE_UP_AFTER > timedelta(hours=24)


def test_an_invitation_given_up_counts_as_not_sent(transactional_db, seeded_allow_list, dead_smtp, settings):
    from accounts.flows import invite_user

    user, _link = invite_user(email="undeliverable@nhs.net", first_name="A", last_name="B")
    email = OutgoingEmail.objects.get(user=user, kind="invitation")
    assert email.state == OutgoingEmail.State.QUEUED
    user.refresh_from_db()
    assert user.invited_at is not None  # still on its way
    OutgoingEmail.objects.filter(pk=email.pk).update(created_at=timezone.now() - settings.CAREID_EMAIL_GIVE_UP_AFTER,
                                                     next_attempt_at=timezone.now())
    outbox.sweep()
    email.refresh_from_db()
    user.refresh_from_db()
    assert email.state == OutgoingEmail.State.FAILED and user.invited_at is None  # `--invite` sends it again


def test_an_invitation_whose_link_expired_in_an_smtp_outage_is_shown_as_failed(transactional_db, seeded_allow_list,
                                                                               ra_staff, dead_smtp, settings):
    """With the defaults the link (24 hours) expires before the outbox gives up (26 hours): the invitation
    ended "Not needed any more", never "Failed", and still counted as sent."""
    from accounts.flows import invite_user

    assert settings.CAREID_INVITATION_LINK_TTL < settings.CAREID_EMAIL_GIVE_UP_AFTER
    user, _link = invite_user(email="florence.nightingale@nhs.net", first_name="Florence", last_name="Nightingale")
    email = OutgoingEmail.objects.get(user=user, kind="invitation")
    started = timezone.now()
    with time_machine.travel(started, tick=False) as clock:  # the sweep every half hour, SMTP down throughout
        while email.state == OutgoingEmail.State.QUEUED and timezone.now() - started < settings.CAREID_EMAIL_GIVE_UP_AFTER:
            clock.shift(timedelta(minutes=30))
            outbox.sweep()
            email.refresh_from_db()
    assert email.state == OutgoingEmail.State.FAILED
    assert email.last_error == "The link expired before the e-mail could be delivered"
    user.refresh_from_db()
    assert user.invited_at is None  # `onboard_users --invite` sends it again
    _ra, client = ra_staff("RA Agent")
    page = client.get(f"/admin/accounts/user/{user.pk}/change/").content.decode()
    emails = page[page.index("E-mails to this person"):][:1500]
    assert "Failed" in emails and "The link expired before the e-mail could be delivered" in emails


def test_a_worker_killed_while_sending_leaves_nothing_behind(user, mailbox):
    email = notification_for(user)
    email.refresh_from_db()
    assert email.state == OutgoingEmail.State.SENT
    # As a worker killed between claiming and finishing leaves it:
    OutgoingEmail.objects.filter(pk=email.pk).update(state=OutgoingEmail.State.SENDING, sent_at=None,
                                                     claimed_until=timezone.now() + timedelta(minutes=5))
    assert outbox.sweep() == 0  # another worker may still be sending it
    OutgoingEmail.objects.filter(pk=email.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert outbox.sweep() == 1
    email.refresh_from_db()
    assert email.state == OutgoingEmail.State.SENT


def test_an_email_whose_worker_dies_every_time_is_given_up_in_the_end(transactional_db, seeded_allow_list, settings,
                                                                     mailbox):
    """A worker killed mid-send left the row taken, and the sweep put it back without counting an attempt or
    looking at the give-up time: an e-mail that kills whichever worker sends it was tried for ever, and an
    invitation stuck so still counted as on its way."""
    from accounts.flows import invite_user

    lost = {"state": OutgoingEmail.State.SENDING, "claimed_until": timezone.now() - timedelta(seconds=1), "sent_at": None}
    user, _link = invite_user(email="lost.once@nhs.net", first_name="A", last_name="B")
    email = OutgoingEmail.objects.get(user=user, kind="invitation")
    OutgoingEmail.objects.filter(pk=email.pk).update(attempts=3, **lost)  # as a killed worker leaves it
    outbox.sweep()  # counted, and handed over at once (in-process here: sent)
    email.refresh_from_db()
    assert (email.state, email.attempts) == (OutgoingEmail.State.SENT, 5)
    mailbox.wait_for("lost.once@nhs.net")

    user, _link = invite_user(email="kills.workers@nhs.net", first_name="C", last_name="D")
    email = OutgoingEmail.objects.get(user=user, kind="invitation")
    OutgoingEmail.objects.filter(pk=email.pk).update(
        attempts=3, created_at=timezone.now() - settings.CAREID_EMAIL_GIVE_UP_AFTER, **lost)
    outbox.sweep()
    email.refresh_from_db()
    user.refresh_from_db()
    assert (email.state, email.attempts) == (OutgoingEmail.State.FAILED, 4) and "lost" in email.last_error
    assert user.invited_at is None  # `--invite` sends it again
    assert len(mailbox.to("kills.workers@nhs.net")) == 1  # the first send, before it was "lost"; none after


def test_a_sweep_hands_an_email_over_only_when_no_task_waits_for_it(user, mailbox, settings):
    """During a backlog a due e-mail's task waits in the broker's queue: the sweep used to hand every due
    row over again each minute, one more (no-op) task per row per minute while the backlog lasted."""
    email = notification_for(user)
    now = timezone.now()

    def waiting(*, due: timedelta, handed_over: timedelta) -> None:
        OutgoingEmail.objects.filter(pk=email.pk).update(state=OutgoingEmail.State.QUEUED, sent_at=None,
                                                         next_attempt_at=now - due, handed_over_at=now - handed_over)

    waiting(due=timedelta(seconds=90), handed_over=timedelta(seconds=90))  # its task is still in the queue
    assert outbox.sweep() == 0
    waiting(due=timedelta(seconds=30), handed_over=timedelta(seconds=90))  # due again since: a retry
    assert outbox.sweep() == 1
    waiting(due=timedelta(minutes=10), handed_over=settings.CAREID_EMAIL_CLAIM + timedelta(seconds=1))  # lost
    assert outbox.sweep() == 1
    email.refresh_from_db()
    assert email.state == OutgoingEmail.State.SENT and email.handed_over_at >= now
    assert outbox.sweep() == 0


def test_a_web_server_clock_a_little_ahead_of_the_workers_does_not_hold_an_email_back(user, mailbox):
    """The row's time comes from the web server's clock, the due check from the worker's: with the web
    server a little ahead, the task found the e-mail not due yet, and it waited for the sweep."""
    email = notification_for(user)
    ahead = timezone.now() + timedelta(seconds=2)
    OutgoingEmail.objects.filter(pk=email.pk).update(state=OutgoingEmail.State.QUEUED, sent_at=None,
                                                     next_attempt_at=ahead, handed_over_at=ahead)
    assert outbox.deliver(email.pk) == OutgoingEmail.State.SENT
    assert len(mailbox.wait_for(user.email, "unlocked") and mailbox.to(user.email)) == 2  # here, and again now


def test_the_broker_down_at_commit_loses_nothing(user, mailbox, monkeypatch, caplog):
    monkeypatch.setattr(outbox, "_broker_down_until", 0.0)  # and no pause after the test (undone below)
    conf = celery_app.conf
    previous = conf.task_always_eager, conf.broker_transport_options
    conf.task_always_eager = False
    # Nothing listens there. Celery reads the variable before its own broker_url setting.
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{_free_port()}/0")
    conf.broker_transport_options = {**previous[1], "socket_connect_timeout": 0.5, "max_retries": 0}
    # Without this, the producer pool's connection to the real broker, opened by an earlier test, is used.
    celery_app._pool = celery_app.amqp._producer_pool = None
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="accounts.outbox"):
            email = notification_for(user)  # the change commits although the task cannot be queued
        assert time.monotonic() - started < 10
    finally:
        conf.task_always_eager, conf.broker_transport_options = previous
        monkeypatch.undo()
        celery_app._pool = celery_app.amqp._producer_pool = None  # the next test publishes to the real broker
    assert f"Could not queue e-mail {email.pk} now; the outbox sweep will send it (and what this process owes in " \
           f"the next {outbox.BROKER_PAUSE} s)" in caplog.messages
    email.refresh_from_db()
    assert email.state == OutgoingEmail.State.QUEUED and email.attempts == 0 and mailbox.messages == []
    assert outbox.sweep() == 1  # the broker is back: the sweep hands it over
    mailbox.wait_for(user.email, "unlocked")
    email.refresh_from_db()
    assert email.state == OutgoingEmail.State.SENT and email.attempts == 1


def test_once_the_broker_failed_a_hand_over_the_next_few_seconds_are_left_to_the_sweep(user, mailbox, monkeypatch,
                                                                                       caplog):
    """An RA's bulk action commits a transaction (and hands over an e-mail) for each person: with Redis frozen
    each hand-over waited CAREID_REDIS_TIMEOUT, the request half a second for each person selected."""
    handed: list[int] = []

    def frozen(pk: int) -> None:
        handed.append(pk)
        raise ConnectionError("Timeout reading from socket")

    monkeypatch.setattr(outbox, "_broker_down_until", 0.0)
    monkeypatch.setattr(outbox.deliver_email_task, "delay", frozen)
    with caplog.at_level(logging.WARNING, logger="accounts.outbox"):
        emails = [notification_for(user) for _ in range(3)]
    assert len(handed) == 1 and len(caplog.records) == 1  # tried once, logged once
    assert not OutgoingEmail.objects.filter(handed_over_at__isnull=False).exists()  # all left to the sweep
    monkeypatch.undo()  # the broker is back
    monkeypatch.setattr(outbox, "_broker_down_until", 0.0)  # BROKER_PAUSE later
    assert outbox.sweep() == 3
    assert {email.pk for email in emails} == set(OutgoingEmail.objects.filter(state="sent").values_list("pk", flat=True))


def test_a_code_used_before_its_email_went_is_not_sent(transactional_db, make_person, mailbox, dead_smtp, settings,
                                                       smtp_server):
    from accounts.models import EmailOneTimePassword
    from accounts.notifications import send_email_code

    user = make_person().user
    with transaction.atomic():
        code = EmailOneTimePassword.issue(user=user, email=user.email, purpose="registration")
        send_email_code(code)
    code.verify(code.code)  # used (as if typed from an earlier message)
    settings.EMAIL_PORT = smtp_server.port
    OutgoingEmail.objects.update(next_attempt_at=timezone.now())
    outbox.sweep()
    assert OutgoingEmail.objects.get().state == OutgoingEmail.State.CANCELLED and mailbox.messages == []


def test_codes_and_links_that_expired_while_smtp_was_down_are_not_sent(transactional_db, make_person, mailbox,
                                                                      dead_smtp, settings, smtp_server):
    """A One Time Password lives 10 minutes and a link 3 minutes to a day; the outbox tries for 26 hours. What
    arrives after it stopped working would only confuse: it is not sent. A code is asked for again by the person
    waiting for it (not needed any more); a link the person never got is failed, for the RA to see."""
    from accounts.models import EmailOneTimePassword
    from accounts.notifications import send_email_code
    from authenticators.flows import issue_registration_link
    from authenticators.models import RegistrationLink

    user = make_person().user
    with transaction.atomic():
        send_email_code(EmailOneTimePassword.issue(user=user, email=user.email, purpose="registration"))
    issue_registration_link(user=user, kind="authenticator-app", purpose=RegistrationLink.Purpose.EMAILED)
    assert OutgoingEmail.objects.filter(state=OutgoingEmail.State.QUEUED).count() == 2
    settings.EMAIL_PORT = smtp_server.port
    with time_machine.travel(timezone.now() + settings.CAREID_INVITATION_LINK_TTL + timedelta(minutes=1)):
        OutgoingEmail.objects.update(next_attempt_at=timezone.now())
        outbox.sweep()
    assert dict(OutgoingEmail.objects.values_list("kind", "state")) == {
        "email_code": OutgoingEmail.State.CANCELLED, "registration_link": OutgoingEmail.State.FAILED}
    assert mailbox.messages == []


def test_an_invitation_revoked_before_it_went_is_not_needed_any_more(transactional_db, seeded_allow_list, dead_smtp,
                                                                     ra_staff):
    from accounts.flows import invite_user, suspend_user

    user, _link = invite_user(email="florence.nightingale@nhs.net", first_name="Florence", last_name="Nightingale")
    ra, _client = ra_staff("RA Manager")
    suspend_user(user=user, actor=ra.user, reason="Left the trust")  # her links are revoked
    OutgoingEmail.objects.update(next_attempt_at=timezone.now())
    outbox.sweep()
    email = OutgoingEmail.objects.get(user=user, kind="invitation")
    assert (email.state, email.attempts) == (OutgoingEmail.State.CANCELLED, 2)


def test_an_invitation_that_expired_undelivered_is_failed_though_invitations_last_longer_since(
        transactional_db, seeded_allow_list, dead_smtp, settings):
    """Its link ran out its own time while SMTP was down, then an operator made invitations last twice as long:
    it expired, it was not revoked, so the RA sees the invitation failed rather than not needed any more."""
    from accounts.flows import invite_user

    user, link = invite_user(email="florence.nightingale@nhs.net", first_name="Florence", last_name="Nightingale")
    settings.CAREID_INVITATION_LINK_TTL *= 2
    with time_machine.travel(link.expires_at + timedelta(minutes=1)):
        OutgoingEmail.objects.update(next_attempt_at=timezone.now())
        outbox.sweep()
    email = OutgoingEmail.objects.get(user=user, kind="invitation")
    assert email.state == OutgoingEmail.State.FAILED
    assert email.last_error == "The link expired before the e-mail could be delivered"
    user.refresh_from_db()
    assert user.invited_at is None


def test_an_invitation_revoked_is_not_needed_any_more_though_invitations_last_less_since(
        transactional_db, seeded_allow_list, dead_smtp, ra_staff, settings):
    """Revoked when it had lasted three quarters of its time, then an operator halved how long invitations last:
    its link lasted longer than one issued now would, and it was still revoked, not expired."""
    from accounts.flows import invite_user, suspend_user

    user, link = invite_user(email="florence.nightingale@nhs.net", first_name="Florence", last_name="Nightingale")
    ra, _client = ra_staff("RA Manager")
    with time_machine.travel(link.created_at + settings.CAREID_INVITATION_LINK_TTL * 3 / 4):
        suspend_user(user=user, actor=ra.user, reason="Left the trust")
        settings.CAREID_INVITATION_LINK_TTL /= 2
        OutgoingEmail.objects.update(next_attempt_at=timezone.now())
        outbox.sweep()
    email = OutgoingEmail.objects.get(user=user, kind="invitation")
    assert email.state == OutgoingEmail.State.CANCELLED


def test_two_deliveries_of_one_email_at_once_send_it_once(user, mailbox, dead_smtp, settings, smtp_server):
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from .test_concurrency import in_parallel

    email = notification_for(user)  # failed once: queued again
    settings.EMAIL_PORT = smtp_server.port
    OutgoingEmail.objects.filter(pk=email.pk).update(next_attempt_at=timezone.now())
    results = in_parallel(6, lambda index: outbox.deliver(email.pk))
    assert results.count(OutgoingEmail.State.SENT) == 1 and results.count(None) == 5
    mailbox.wait_for(user.email, "unlocked")
    time.sleep(0.3)
    assert len(mailbox.to(user.email)) == 1


class StallsTheFirstSend(Mailbox):
    """An SMTP server that holds the first message at RCPT until `release` is set, then refuses it for now (451, a
    temporary failure); every later message it takes at once."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled, self.release = threading.Event(), threading.Event()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not self.stalled.is_set():
            self.stalled.set()
            while not self.release.is_set():
                await asyncio.sleep(0.05)
            return "451 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def test_a_send_that_outlived_its_claim_leaves_the_next_workers_outcome_alone(user, dead_smtp, settings, caplog):
    """On a pool that does not enforce the send's time limit (solo, threads), an SMTP server stalling for longer than
    CAREID_EMAIL_CLAIM lets the sweep take the e-mail back and a second worker send it. The first worker's outcome,
    written by the row's id alone, then replaced the second's: its late failure put the sent e-mail back in the
    queue, and it went a second time at the next retry."""
    require(connection.vendor == "postgresql", "PostgreSQL (a worker's send beside the sweep's)")
    email = notification_for(user)  # failed once (SMTP down): queued again
    handler = StallsTheFirstSend()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    late: list = []

    def first_worker() -> None:
        try:
            late.append(outbox.deliver(email.pk))
        finally:
            connection.close()

    try:
        settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = controller.port, 30
        settings.CAREID_EMAIL_CLAIM = timedelta(seconds=1)
        OutgoingEmail.objects.filter(pk=email.pk).update(next_attempt_at=timezone.now())
        worker = threading.Thread(target=first_worker)
        worker.start()
        assert handler.stalled.wait(10)
        time.sleep(1.1)  # the first worker's claim runs out while the SMTP server stalls it
        assert outbox.sweep() == 1  # taken back, and sent by a second worker (in-process here)
        handler.wait_for(user.email, "unlocked")
        email.refresh_from_db()
        assert (email.state, email.attempts) == (OutgoingEmail.State.SENT, 3)  # failed, taken back, sent
        with caplog.at_level(logging.WARNING, logger="accounts.outbox"):
            handler.release.set()  # the first worker's send fails, long after its claim ran out
            worker.join(10)
        email.refresh_from_db()
        assert (email.state, email.attempts, email.claimed_until) == (OutgoingEmail.State.SENT, 3, None)
        assert late == [None]  # not this worker's to record any more
        assert any(f"E-mail {email.pk} " in message and "claim" in message for message in caplog.messages)
        with time_machine.travel(timezone.now() + timedelta(hours=1)):
            outbox.sweep()  # a retry, had the late failure been written, would be due
        time.sleep(0.3)
        assert len(handler.to(user.email)) == 1
    finally:
        handler.release.set()
        controller.stop()


class StallingHandler(Mailbox):
    """An SMTP server that accepts the connection, then stalls before answering RCPT (before it has the
    message), or after it has the message, before answering its end (`at`)."""

    def __init__(self, stall: float, at: str) -> None:
        super().__init__()
        self.stall, self.at = stall, at

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.at == "RCPT":
            await asyncio.sleep(self.stall)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.at == "DATA":
            await asyncio.sleep(self.stall)
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize("at", ["RCPT", "DATA"])
def test_a_stalled_smtp_server_costs_a_send_its_timeout_not_a_hang(user, settings, at):
    """EMAIL_TIMEOUT for each exchange; CAREID_EMAIL_DATA_TIMEOUT (longer: test below) for the message's end."""
    handler = StallingHandler(stall=5, at=at)
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        settings.EMAIL_PORT, settings.EMAIL_TIMEOUT, settings.CAREID_EMAIL_DATA_TIMEOUT = controller.port, 1, 2
        started = time.monotonic()
        email = notification_for(user)
        assert time.monotonic() - started < {"RCPT": 2, "DATA": 4}[at]
        email.refresh_from_db()
        assert email.state == OutgoingEmail.State.QUEUED and "timed out" in email.last_error
    finally:
        controller.stop()


class SlowToConfirm(Mailbox):
    """An SMTP server that takes (queues) every message at once, then, while `slow`, waits `stall` seconds
    before saying so (250): a busy disk, a virus scan."""

    def __init__(self, stall: float) -> None:
        super().__init__()
        self.stall, self.slow = stall, True

    async def handle_DATA(self, server, session, envelope):
        answer = await super().handle_DATA(server, session, envelope)
        if self.slow:
            await asyncio.sleep(self.stall)
        return answer


@pytest.fixture
def slow_to_confirm(settings):
    handler = SlowToConfirm(stall=3)
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = controller.port, 1
    yield handler
    controller.stop()


def test_a_server_slow_to_confirm_a_message_it_took_gets_it_once(user, slow_to_confirm):
    """careid waited EMAIL_TIMEOUT for the reply to the end of the message, as for every other, took the send
    for failed and sent it again: RFC 5321 (4.5.3.2.6) asks a client to wait up to 10 minutes there."""
    email = notification_for(user)
    slow_to_confirm.slow = False  # the server is quick again
    time.sleep(3.5)
    OutgoingEmail.objects.filter(pk=email.pk).update(next_attempt_at=timezone.now())  # a retry would be due
    outbox.sweep()
    email.refresh_from_db()
    assert (email.state, email.attempts) == (OutgoingEmail.State.SENT, 1)
    assert len(slow_to_confirm.to(user.email)) == 1


def test_the_ra_sees_each_email_and_its_state(ra_staff, make_person, dead_smtp, transactional_db):
    person = make_person(email="florence.nightingale@nhs.net")
    notification_for(person.user)
    _ra, client = ra_staff("RA Agent")
    page = client.get(f"/admin/accounts/user/{person.user.pk}/change/").content.decode()
    assert "E-mails to this person" in page and "Notification of a change" in page
    assert "Queued" in page and "ConnectionRefusedError" in page


def test_the_email_task_is_registered_with_the_worker():
    import accounts.tasks  # noqa: F401  (what the worker imports: autodiscovery)

    assert "accounts.outbox.deliver_email_task" in celery_app.tasks
    assert "accounts.tasks.sweep_outbox_task" in celery_app.tasks


def test_an_email_that_cannot_be_written_is_retried_then_failed_not_left_sending(user, settings):
    """A message that fails to render (here a kind this version no longer knows) is an attempt like an SMTP
    failure: queued again with its error shown, and failed in the end, never left 'sending'."""
    email = OutgoingEmail.objects.create(kind="retired-kind", object_id=user.pk, to=user.email, user=user)
    assert outbox.deliver(email.pk) == OutgoingEmail.State.QUEUED
    email.refresh_from_db()
    assert (email.state, email.attempts, email.claimed_until) == (OutgoingEmail.State.QUEUED, 1, None)
    assert "retired-kind" in email.last_error
    OutgoingEmail.objects.filter(pk=email.pk).update(created_at=timezone.now() - settings.CAREID_EMAIL_GIVE_UP_AFTER,
                                                     next_attempt_at=timezone.now())
    assert outbox.deliver(email.pk) == OutgoingEmail.State.FAILED
    email.refresh_from_db()
    assert email.state == OutgoingEmail.State.FAILED and email.attempts == 2


def test_a_send_cut_off_at_the_tasks_time_limit_is_a_failed_attempt(user, settings, monkeypatch):
    """An SMTP server trickling its answers keeps a send going past EMAIL_TIMEOUT, which bounds each exchange:
    the task's soft time limit (CAREID_EMAIL_TIME_LIMIT, below the claim) cuts it off, and that counts."""
    from celery.exceptions import SoftTimeLimitExceeded

    from accounts import mail

    def cut_off(*args, **kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(mail, "send", cut_off)
    email = notification_for(user)  # sent at the commit (in-process here)
    assert (email.state, email.attempts, email.claimed_until) == (OutgoingEmail.State.QUEUED, 1, None)
    assert email.last_error == "SoftTimeLimitExceeded: not sent within the task's time limit"


def test_the_tasks_soft_time_limit_as_sent_is_written_does_not_send_it_twice(user, mailbox, dead_smtp, settings,
                                                                            smtp_server,
                                                                            soft_time_limit_handled_as_a_worker_does):
    """The SMTP server took the message, then the task's soft time limit (CAREID_EMAIL_TIME_LIMIT) came as "sent"
    was about to be written: SoftTimeLimitExceeded ended the task with the row still "sending", and the sweep
    took it back once its claim ran out and sent it a second time."""
    email = notification_for(user)  # failed once (SMTP down): queued again
    settings.EMAIL_PORT = smtp_server.port
    OutgoingEmail.objects.filter(pk=email.pk).update(next_attempt_at=timezone.now())
    cut_off = []

    def soft_limit_at_the_sent_write(execute, sql, params, many, context):
        if not cut_off and sql.startswith('UPDATE "accounts_outgoingemail"') and OutgoingEmail.State.SENT in params:
            cut_off.append(sql)
            signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)  # as the prefork pool signals the task
        return execute(sql, params, many, context)

    with connection.execute_wrapper(soft_limit_at_the_sent_write):
        assert outbox.deliver(email.pk) == OutgoingEmail.State.SENT
    assert cut_off
    mailbox.wait_for(user.email, "unlocked")
    with time_machine.travel(timezone.now() + settings.CAREID_EMAIL_CLAIM + timedelta(seconds=1)):
        outbox.sweep()  # a claim left behind would have run out
    time.sleep(0.3)
    assert len(mailbox.to(user.email)) == 1
    email.refresh_from_db()
    assert (email.state, email.attempts, email.claimed_until) == (OutgoingEmail.State.SENT, 2, None)


class SoftLimitAtGoodbye(Mailbox):
    """An SMTP server that takes every message; when the client then says goodbye (QUIT), the sending task's soft
    time limit comes, as Celery's prefork pool brings it (SIGUSR1 to the worker, here the test's thread), before
    the server answers."""

    def __init__(self, task_thread: int) -> None:
        super().__init__()
        self.task_thread = task_thread

    async def handle_QUIT(self, server, session, envelope):
        signal.pthread_kill(self.task_thread, signal.SIGUSR1)
        await asyncio.sleep(0.5)
        return "221 Bye"


def test_the_tasks_soft_time_limit_at_the_smtp_goodbye_does_not_send_it_twice(user, dead_smtp, settings,
                                                                             soft_time_limit_handled_as_a_worker_does):
    """The SMTP server took the message, then the task's soft time limit came while careid waited for the answer
    to QUIT: the send counted as failed, and the e-mail went again at the next attempt."""
    email = notification_for(user)  # failed once (SMTP down): queued again
    handler = SoftLimitAtGoodbye(threading.get_ident())
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        settings.EMAIL_PORT = controller.port
        OutgoingEmail.objects.filter(pk=email.pk).update(next_attempt_at=timezone.now())
        outbox.deliver(email.pk)
        handler.wait_for(user.email, "unlocked")
        with time_machine.travel(timezone.now() + timedelta(hours=1)):
            outbox.sweep()  # a retry, had it been one, would be due
        time.sleep(0.3)
        assert len(handler.to(user.email)) == 1
        email.refresh_from_db()
        assert (email.state, email.attempts, email.last_error) == (OutgoingEmail.State.SENT, 2, "")
    finally:
        controller.stop()


def test_a_decoy_is_handed_over_like_an_email_and_never_sent(user, mailbox):
    """outbox.queue_decoy: the work of queue() for a step that e-mails nobody (a password reset for an unknown
    address). Its task finds nothing to send, and no sweep hands it over again, however long it waits."""
    from accounts.models import EmailOneTimePassword

    code = EmailOneTimePassword.issue(user=None, email="", purpose="password-reset", emailed=False)
    with transaction.atomic():
        decoy = outbox.queue_decoy("email_code", object_id=code.pk)
    decoy.refresh_from_db()
    assert (decoy.state, decoy.to, decoy.user, decoy.attempts) == (OutgoingEmail.State.CANCELLED, "", None, 0)
    assert outbox.deliver(decoy.pk) is None
    with time_machine.travel(timezone.now() + timedelta(days=2)):
        assert outbox.sweep() == 0
    assert mailbox.messages == []
