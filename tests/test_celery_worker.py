"""E-mail through the real path: flow -> on_commit -> Redis -> a Celery worker process -> SMTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

from careid.celery import app as celery_app

from .conftest import body, require

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def celery_worker_process(transactional_db, smtp_server):
    broker = os.environ.get("CELERY_BROKER_URL", "")
    require(broker.startswith("redis"), "A Redis broker (CELERY_BROKER_URL)")
    require(connection.vendor == "postgresql", "PostgreSQL (the worker must share the test database)")
    db = connection.settings_dict
    queue = f"careid-test-{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "EMAIL_URL": f"smtp://{smtp_server.hostname}:{smtp_server.port}",
        "CAREID_CELERY_QUEUE": queue,
        "CAREID_BASE_URL": django_settings.CAREID_BASE_URL,
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "careid", "worker", "--pool=solo", "-Q", queue, "-l", "warning",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    previous = celery_app.conf.task_always_eager, celery_app.conf.task_default_queue
    celery_app.conf.task_always_eager, celery_app.conf.task_default_queue = False, queue
    try:
        yield worker
    finally:
        celery_app.conf.task_always_eager, celery_app.conf.task_default_queue = previous
        worker.terminate()
        output, _ = worker.communicate(timeout=30)
        print(output)


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
