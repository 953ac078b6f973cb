"""The transactional outbox: every e-mail careid sends goes through here.

`queue()` writes an OutgoingEmail row inside the caller's transaction, so the e-mail exists exactly when
the change that causes it does, and asks Celery to deliver it once that transaction commits. Delivery
claims the row (one worker, one send), renders the message from `kind` and `object_id` at that moment
(accounts/mail.py), sends it with EMAIL_TIMEOUT for each exchange (CAREID_EMAIL_DATA_TIMEOUT for the reply
to the message itself) and CAREID_EMAIL_TIME_LIMIT for the whole task (ended before the claim, so no second
worker sends it meanwhile), and records the outcome: sent (on a new database connection if a restart ended
this one, and though the task's soft time limit came once the server had the message: record_delivery); or
queued again with a growing wait (1 minute doubling to an hour) until CAREID_EMAIL_GIVE_UP_AFTER, then failed.
The sweep, every minute, re-queues what a lost task, a broker outage or a killed worker left behind.
Every outcome is written only while the claim it follows stands (_claimed): a send that outlived its claim (on a
pool that does not enforce time limits) finds the row taken back, perhaps sent by another worker since, and
leaves it as it is.

Each kind of e-mail registers how it renders (and, if it matters, what giving up means) with `@kind`.
"""

from __future__ import annotations

import logging
import signal
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from billiard.pool import SIG_SOFT_TIMEOUT, soft_timeout_sighandler
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from . import mail
from .models import OutgoingEmail, User

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Message:
    template: str  # templates/emails/<template>_subject.txt and _message.txt
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Kind:
    label: str  # what the RA's person page calls it
    render: Callable[[OutgoingEmail], Message | None]  # None: not needed any more (a code used, a link used)
    gave_up: Callable[[OutgoingEmail], None] | None = None


_KINDS: dict[str, Kind] = {}


class Undeliverable(Exception):
    """Raised by a kind's render when what the e-mail carries stopped working before it could be delivered (a
    link that expired while the SMTP server was down): the e-mail is failed at once, with this as its error."""


def kind(name: str, label: str, *, gave_up: Callable[[OutgoingEmail], None] | None = None):
    """Register how e-mails of kind `name` render (the decorated function) and what giving up means."""

    def register(render: Callable[[OutgoingEmail], Message | None]):
        _KINDS[name] = Kind(label, render, gave_up)
        return render

    return register


def label(name: str) -> str:
    return _KINDS[name].label if name in _KINDS else name


def queue(name: str, *, object_id: int, to: str, user: User | None = None, **extra: Any) -> OutgoingEmail:
    """Owe an e-mail, in the current transaction; it is sent once that transaction has committed."""
    return _queue(name, object_id=object_id, to=to, user=user, extra=extra, state=OutgoingEmail.State.QUEUED)


def queue_decoy(name: str, *, object_id: int) -> OutgoingEmail:
    """What queue() does, for an e-mail nobody is owed: the row is written and handed to Celery as one is,
    but born "not needed any more" and addressed to nobody, so no worker ever sends it (deliver claims only
    queued rows, the sweep hands over only those). For a step that must do the work of one that e-mails
    (a password reset for an address that gets no code)."""
    return _queue(name, object_id=object_id, to="", user=None, extra={}, state=OutgoingEmail.State.CANCELLED)


def _queue(name: str, *, object_id: int, to: str, user: User | None, extra: dict[str, Any],
           state: OutgoingEmail.State) -> OutgoingEmail:
    if name not in _KINDS:
        raise LookupError(f"No e-mail kind {name!r}")
    now = timezone.now()  # one instant for both: handed over before it was due would count as due again since
    email = OutgoingEmail.objects.create(kind=name, object_id=object_id, to=to, user=user, extra=extra, state=state,
                                         next_attempt_at=now, handed_over_at=now)
    transaction.on_commit(lambda: publish(OutgoingEmail, email.pk, deliver_email_task, "e-mail"), robust=True)
    return email


# Once the broker has not taken a task, this process leaves hand-overs to the sweep for BROKER_PAUSE seconds:
# a request that commits many rows (an RA's bulk action, a logout owed to several services) would otherwise
# wait the broker's timeout (CAREID_REDIS_TIMEOUT) once for each.
BROKER_PAUSE = 5.0
_broker_down_until = 0.0
_broker_lock = threading.Lock()


def publish(model, pk: int, task, what: str) -> None:
    """Give Celery the task for a new outbox row once its transaction has committed (the outboxes share
    this). With the broker down (or found down in the last BROKER_PAUSE seconds) the row is marked as never
    handed over, so the next sweep sends it."""
    global _broker_down_until
    try:
        if time.monotonic() < _broker_down_until:
            raise ConnectionError("the broker did not take a task a moment ago")
        task.delay(pk)
    except Exception:
        with _broker_lock:
            found_down = time.monotonic() >= _broker_down_until
            if found_down:
                _broker_down_until = time.monotonic() + BROKER_PAUSE
        if found_down:  # logged once for the pause, not once for each row
            logger.warning("Could not queue %s %s now; the outbox sweep will send it (and what this process owes "
                           "in the next %s s)", what, pk, BROKER_PAUSE, exc_info=True)
        try:
            model.objects.filter(pk=pk).update(handed_over_at=None)
        except DatabaseError:  # then the sweep takes it once a task would have been lost
            logger.warning("Could not mark %s %s as not handed over", what, pk, exc_info=True)


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(60 * 2 ** max(attempts - 1, 0), 3600))


def deliver(email_id: int) -> OutgoingEmail.State | None:
    """Send one owed e-mail if it is due and nobody else is sending it; returns its new state (None when
    it was not this call's to send, or stopped being so: the send outlasted its claim and the sweep took it back)."""
    claim = timezone.now() + settings.CAREID_EMAIL_CLAIM
    claimed = OutgoingEmail.objects.due().filter(pk=email_id).update(state=OutgoingEmail.State.SENDING,
                                                                     claimed_until=claim)
    if not claimed:
        return None
    email = OutgoingEmail.objects.get(pk=email_id)
    email.claimed_until = claim  # what each outcome's write is conditional on (_claimed)
    try:
        message = _KINDS[email.kind].render(email)
        if message is None:
            return _finish(email, OutgoingEmail.State.CANCELLED)
        mail.send(message.template, email.to, message.context)
    except Undeliverable as error:
        return _give_up(email, str(error))
    except (OSError, smtplib.SMTPException) as error:
        return _failed_attempt(email, f"{type(error).__name__}: {error}")
    except SoftTimeLimitExceeded:  # the SMTP server kept the send going past the task's soft limit
        return _failed_attempt(email, "SoftTimeLimitExceeded: not sent within the task's time limit")
    except DatabaseError:
        raise  # the claim runs out and the sweep hands it over again
    except Exception as error:  # it could not be written (a template, a kind this version no longer has)
        logger.exception("Could not write e-mail %s (%s)", email.pk, email.kind)
        return _failed_attempt(email, f"{type(error).__name__}: {error}")
    return record_delivery(lambda: _finish(email, OutgoingEmail.State.SENT, sent_at=timezone.now(), last_error=""),
                           what=f"e-mail {email.pk}", within=20)


def record_delivery(write: Callable[[], T], *, what: str, within: float) -> T:
    """Write the outcome of a delivery the other side has accepted (the outboxes share this). A row left
    claimed is sent a second time once its claim runs out, so a connection a PostgreSQL restart or failover
    ended since the claim is closed and the write tried again on a new one, a little longer apart each time,
    for up to `within` seconds (well inside the task's time limit). The task's soft time limit does not stop
    it either: while the write runs, its signal is only noted (_soft_time_limit_held), so it can land neither
    in a query nor in a COMMIT (inside a transaction, Django's clean-up would replace the exception with
    another and skip the write's retry); the hard limit, 5 seconds later, still ends a task stuck here. Only a
    database down for longer (or until the hard limit) leaves the row claimed: then it is delivered at least
    once, not exactly once."""
    deadline, pause = time.monotonic() + within, 0.1
    with _soft_time_limit_held() as soft_limit:
        while True:
            try:
                result = write()
                break
            except (OperationalError, InterfaceError):
                if time.monotonic() + pause > deadline:
                    logger.error("Could not record %s as delivered: it will be sent again once its claim runs out",
                                 what, exc_info=True)
                    raise
                logger.warning("Could not record %s as delivered; trying again on a new connection", what,
                               exc_info=True)
                connection.close()
                time.sleep(pause)
                pause = min(pause * 2, 2)
    if soft_limit:
        logger.warning("The task's soft time limit came while %s was recorded as delivered; recorded all the same",
                       what)
    return result


@contextmanager
def _soft_time_limit_held() -> Iterator[list[int]]:
    """Celery's prefork pool signals a task's soft time limit (billiard's SIG_SOFT_TIMEOUT), and its handler
    raises SoftTimeLimitExceeded wherever the task is. Within this block the signal is only noted in the list
    yielded. Only where billiard's handler is the one installed (a prefork pool's process, whose main thread runs
    the task): elsewhere (eager in a web process, where the signal may be the web server's own, or a thread
    pool) no soft limit comes by signal, and nothing changes."""
    noted: list[int] = []
    if (SIG_SOFT_TIMEOUT is None or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(SIG_SOFT_TIMEOUT) is not soft_timeout_sighandler):
        yield noted
        return
    previous = signal.signal(SIG_SOFT_TIMEOUT, lambda number, _frame: noted.append(number))
    try:
        yield noted
    finally:
        signal.signal(SIG_SOFT_TIMEOUT, previous)


def _claimed(email: OutgoingEmail):
    """The row, while the claim `email` was read with still holds it: the one deliver() took, or the one the sweep
    found run out. A send can outlive its claim where the task's time limit is not enforced (a solo or threads
    pool): the sweep then takes the row back, and another worker may send it and record that meanwhile. Written
    by its id alone, the late outcome replaced theirs ("queued" over "sent", an attempt counted again)."""
    return OutgoingEmail.objects.filter(pk=email.pk, state=OutgoingEmail.State.SENDING,
                                        claimed_until=email.claimed_until)


def _claim_lost(email: OutgoingEmail, outcome: OutgoingEmail.State) -> None:
    """An outcome whose claim was taken is logged, never written: the row is the sweep's or another worker's."""
    now = OutgoingEmail.objects.filter(pk=email.pk).values_list("state", flat=True).first()
    logger.warning("E-mail %s (%s): outcome %s not recorded, as the claim it follows ran out (CAREID_EMAIL_CLAIM) "
                   "and the row was taken back or finished by another since; it is %s now. A send that outlasts its "
                   "claim (a worker pool that does not enforce time limits) may go twice",
                   email.pk, email.kind, outcome, now or "deleted")


def _finish(email: OutgoingEmail, state: OutgoingEmail.State, **fields) -> OutgoingEmail.State | None:
    if not _claimed(email).update(state=state, attempts=email.attempts + 1, claimed_until=None, **fields):
        return _claim_lost(email, state)
    return state


def _failed_attempt(email: OutgoingEmail, error: str) -> OutgoingEmail.State | None:
    attempts = email.attempts + 1
    if timezone.now() - email.created_at >= settings.CAREID_EMAIL_GIVE_UP_AFTER:
        return _give_up(email, error)
    if not _claimed(email).update(
            state=OutgoingEmail.State.QUEUED, attempts=attempts, claimed_until=None, last_error=error[:300],
            next_attempt_at=timezone.now() + backoff(attempts)):
        return _claim_lost(email, OutgoingEmail.State.QUEUED)
    return OutgoingEmail.State.QUEUED


def _give_up(email: OutgoingEmail, error: str) -> OutgoingEmail.State | None:
    with transaction.atomic():
        if _finish(email, OutgoingEmail.State.FAILED, last_error=error[:300]) is None:
            return None  # not given up: what giving up means (an invitation not sent) is not this send's to say
        if (registered := _KINDS.get(email.kind)) and (gave_up := registered.gave_up):
            gave_up(email)
    logger.error("Gave up e-mail %s (%s to %s) after %s attempts: %s", email.pk, email.kind, email.to,
                 email.attempts + 1, error)
    return OutgoingEmail.State.FAILED


def sweep() -> int:
    """Re-queue what was left behind; returns how many e-mails were handed to Celery again."""
    for email in OutgoingEmail.objects.abandoned():  # rare: a worker killed mid-send, or its host lost
        _taken_back(email)
    return hand_over(OutgoingEmail.objects.due(), deliver_email_task, lost_after=settings.CAREID_EMAIL_CLAIM)


def _taken_back(email: OutgoingEmail) -> None:
    """A send whose worker was lost is an attempt like a failed one, due again at once: counted, and given up
    at the give-up time, so that an e-mail that kills whichever worker sends it is not tried for ever."""
    error = "the worker sending it was lost (killed, or its host lost)"
    if timezone.now() - email.created_at >= settings.CAREID_EMAIL_GIVE_UP_AFTER:
        _failed_attempt(email, error)
        return
    _claimed(email).update(state=OutgoingEmail.State.QUEUED, attempts=email.attempts + 1, claimed_until=None,
                           handed_over_at=None, last_error=error)


def hand_over(due, task, *, lost_after: timedelta, limit: int = 5000) -> int:
    """Queue `task` for each row of `due` that has no task waiting for it, oldest first, until the broker
    stops answering (the next sweep goes on from there); returns how many were handed over. The outboxes'
    sweeps share it.

    A row has no task waiting when none was ever handed over (the broker was down at the commit), when
    it became due again since the last one (a retry after a failed attempt), or when that one was handed
    over more than `lost_after` ago and the row is still due (the task was lost with the broker or a worker).
    During a backlog, a row whose task is still in the broker's queue is not handed over again each minute.
    """
    now = timezone.now()
    waiting_for_none = (Q(handed_over_at__isnull=True) | Q(handed_over_at__lt=F("next_attempt_at"))
                        | Q(handed_over_at__lt=now - lost_after))
    handed: list[int] = []
    for pk in due.filter(waiting_for_none).order_by("next_attempt_at").values_list("pk", flat=True)[:limit]:
        try:
            task.delay(pk)
        except Exception:
            logger.warning("The broker is not answering: this sweep stops here until the next", exc_info=True)
            break
        handed.append(pk)
    due.model.objects.filter(pk__in=handed).update(handed_over_at=now)
    return len(handed)


@shared_task(acks_late=True, ignore_result=True, **settings.CAREID_EMAIL_TASK_LIMITS)
def deliver_email_task(email_id: int) -> None:
    deliver(email_id)
