"""The real path: flow -> on_commit -> Redis -> a Celery worker process -> SMTP or a relying service."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import time_machine
from django.utils import timezone

from audit.models import AuditEvent, Event
from audit.record import record

from .conftest import body, celery_worker, output_until

pytestmark = pytest.mark.services


def test_a_worker_sends_the_invitation_and_the_one_time_password(celery_worker_process, seeded_allow_list, mailbox, client):
    from accounts.flows import invite_user

    user, link = invite_user(email="grace.hopper@nhs.net", first_name="Grace", last_name="Hopper")
    invitation = mailbox.wait_for("grace.hopper@nhs.net", "Set up your NHS Care Identity", timeout=60)
    assert link.url in body(invitation)
    assert celery_worker_process.poll() is None, "the worker died"

    live = client.post(f"/register/{link.token}/", {"confirm": "on"}).url  # the 3-minute link
    assert client.post(live, {"email": user.email}).url == "/register/authenticator-app/code/"
    message = mailbox.wait_for(user.email, "One Time Password", timeout=60)
    code = re.search(r"\b(\d{8})\b", body(message)).group(1)
    response = client.post("/register/authenticator-app/code/", {"code": code})
    assert response.status_code == 302 and response.url == "/register/authenticator-app/password/"


def test_periodic_tasks_queued_while_no_worker_ran_expire_instead_of_running_all_at_once(transactional_db, smtp_server,
                                                                                          settings):
    from audit.tasks import seal_audit_trail_task

    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        assert 0 < entry.get("options", {}).get("expires", 0) <= entry["schedule"], name
    event = record(Event.SIGNED_OUT)
    options = settings.CELERY_BEAT_SCHEDULE["seal-audit-trail"]["options"]  # as beat sends it
    with celery_worker(smtp_server.port, loglevel="info") as worker:
        with time_machine.travel(timezone.now() - timedelta(hours=1)):  # queued while the workers were down
            for _ in range(5):
                seal_audit_trail_task.apply_async(**options)
        seal_audit_trail_task.apply_async(**options)  # due now
        lines = output_until(worker, lambda lines: " succeeded in " in lines[-1])
    discarded = [line for line in lines if "Discarding revoked task: audit.tasks.seal_audit_trail_task" in line]
    ran = [line for line in lines if " succeeded in " in line]
    assert len(discarded) == 5 and len(ran) == 1 and ran[0].rstrip().endswith(": 1")
    assert AuditEvent.objects.get(pk=event.pk).seq == 1


def test_each_outbox_send_is_cut_off_before_its_claim_runs_out(settings):
    """A send still running when its claim runs out would be handed to a second worker by the sweep."""
    from accounts.outbox import deliver_email_task
    from oidc.backchannel import send_backchannel_logout_task

    for task, claim in ((send_backchannel_logout_task, settings.CAREID_BACKCHANNEL_CLAIM),
                        (deliver_email_task, settings.CAREID_EMAIL_CLAIM)):
        assert 0 < task.soft_time_limit < task.time_limit < claim.total_seconds(), task.name
        assert task.time_limit < settings.CELERY_TASK_SOFT_TIME_LIMIT, task.name


class TricklingService(ThreadingHTTPServer):
    """A relying service that answers a back-channel logout a byte every quarter of a second, each well
    inside the per-read timeout; it notes when each POST came and when careid hung up on it."""

    def __init__(self) -> None:
        self.posted: list[float] = []
        self.dropped: list[float] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                service.posted.append(time.monotonic())
                try:
                    for byte in b"HTTP/1.0 200 OK\r\nX-Slow: " + b"a" * 240:  # a minute
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.25)
                except OSError:
                    service.dropped.append(time.monotonic())

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_a_service_trickling_its_answer_is_cut_off_at_the_time_limit_counted_and_posted_to_once(
        transactional_db, smtp_server, make_person):
    """requests' timeout bounds each read, not the POST: without its own time limit the task held the
    worker (up to Celery's 300 s) past its 60 s claim, and the sweep POSTed the same logout again meanwhile.
    A real prefork worker (2 s limit here, 30 s in production) hangs up at the limit and records a failed
    attempt. About 10 s: the worker's start and the limit."""
    from oidc import backchannel
    from oidc.models import BackchannelLogout

    from . import oidc_rp as rp

    trickling = TricklingService()
    threading.Thread(target=trickling.serve_forever, daemon=True).start()
    try:
        service, _ = rp.register(key=rp.new_key(),
                                 backchannel_logout_uri=f"http://127.0.0.1:{trickling.server_address[1]}/bc")
        logout = BackchannelLogout.objects.create(client=service, user=make_person().user, sid="s" * 32,
                                                  reason="signed out")
        with celery_worker(smtp_server.port, pool="prefork") as worker:
            # What publish() queues, with the limits in its message as they travel (2 s for 30 s, 7 for 35).
            backchannel.send_backchannel_logout_task.apply_async((logout.pk,), soft_time_limit=2, time_limit=7)
            deadline = time.monotonic() + 60
            while not trickling.posted and time.monotonic() < deadline:
                time.sleep(0.1)
            assert trickling.posted, "the worker never POSTed the logout token"
            assert backchannel.sweep() == 0  # claimed: no second worker while the first is on it
            while ((BackchannelLogout.objects.get(pk=logout.pk).attempts == 0 or not trickling.dropped)
                   and time.monotonic() < deadline):  # the trickle notices the hang-up at its next byte
                time.sleep(0.1)
            assert backchannel.sweep() == 0  # the failed attempt waits its minute
            assert worker.poll() is None, "the worker died"
    finally:
        trickling.shutdown()
        trickling.server_close()
    logout.refresh_from_db()
    assert (logout.state, logout.attempts, logout.claimed_until) == (BackchannelLogout.State.QUEUED, 1, None)
    assert "time limit" in logout.last_error
    assert len(trickling.posted) == 1 and len(trickling.dropped) == 1
    assert 1.5 <= trickling.dropped[0] - trickling.posted[0] < 5, "not cut off at the soft time limit"


POOL_WARNING = "does not enforce the tasks' time limits"


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_a_worker_on_a_pool_without_time_limits_says_so_when_it_starts(transactional_db, smtp_server, pool):
    """The outboxes' sends are cut off before their claims only under the prefork pool (README)."""
    with celery_worker(smtp_server.port, pool=pool) as worker:
        lines = output_until(worker, lambda lines: POOL_WARNING in lines[-1])
    assert f"--pool={pool}" in lines[-1] and "prefork" in lines[-1]


def test_a_prefork_worker_starts_without_that_warning(transactional_db, smtp_server):
    with celery_worker(smtp_server.port, pool="prefork", loglevel="info") as worker:
        lines = output_until(worker, lambda lines: " ready." in lines[-1])
    assert not any(POOL_WARNING in line for line in lines)
