"""E-mail through the real path: flow -> on_commit -> Redis -> a Celery worker process -> SMTP."""

from __future__ import annotations

import re

import pytest

from .conftest import body

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
