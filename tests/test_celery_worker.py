"""E-mail through the real path: flow -> on_commit -> Redis -> a Celery worker process -> SMTP."""

from __future__ import annotations

import re
from datetime import timedelta

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
