"""Lock-outs that strangers cannot hand out (NIST SP 800-63B: at most 100 consecutive failures).

Wrong passwords bring growing delays and lock only at the 100th, a lock the person lifts by resetting
their password; wrong codes, which need the right password first, lock at the 30th until an RA unlocks.
Addresses that belong to nobody answer exactly like a Care Identity throughout, whatever the cache does.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.core.cache import caches
from django.utils import timezone

from accounts.models import User
from audit.models import AuditEvent, Event

from .conftest import sign_in

APP = "/login/authenticator-app/"
CODE = "/login/authenticator-app/code/"


@pytest.fixture
def no_delays(settings):
    """Only counts and locks are compared here, not the waits between attempts (nor the per-IP limit,
    which these tests' hundreds of attempts from one address would reach)."""
    settings.CAREID_SIGNIN_DELAY_FROM = 1000
    settings.CAREID_IP_FAILURE_LIMIT = 10_000


def answer(response, email: str) -> tuple[int, str]:
    page = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", response.content.decode())
    return response.status_code, page.replace(email, "")



def test_thirty_wrong_passwords_from_a_stranger_do_not_lock_the_owner_out(client, person, no_delays):
    for _attempt in range(30):
        client.post(APP, {"email": person.user.email, "password": "wrong password"})
    person.user.refresh_from_db()
    assert person.user.locked_at is None and person.user.password_failures == 30
    assert sign_in(client, person).status_code == 302
    assert client.session.get("_auth_user_id")
    person.user.refresh_from_db()
    assert person.user.password_failures == 0


def test_the_hundredth_wrong_password_locks_until_the_password_is_reset(client, person, no_delays, settings):
    assert settings.CAREID_PASSWORD_LOCK_AFTER == 100
    User.objects.filter(pk=person.user.pk).update(password_failures=99, last_signin_failure_at=timezone.now())
    response = client.post(APP, {"email": person.user.email, "password": "wrong password"})
    page = response.content.decode()
    assert "Your Care Identity is locked" in page and "Reset your password" in page
    person.user.refresh_from_db()
    assert person.user.locked_at is not None and person.user.lock_reason == "passwords"
    assert AuditEvent.objects.filter(event=Event.ACCOUNT_LOCKED, subject=person.user, details__reason="passwords").exists()
    # Even the right password is refused now.
    response = client.post(APP, {"email": person.user.email, "password": person.password})
    assert "Your Care Identity is locked" in response.content.decode()
    assert not client.session.get("careid_pending_signin")


def last_answers(client, emails: list[str], attempts: int) -> dict[str, tuple[int, str]]:
    """Each address's answer to the last of `attempts` wrong passwords (the address itself taken out)."""
    answers = {}
    for email in emails:
        for _attempt in range(attempts):
            response = client.post(APP, {"email": email, "password": "wrong password"})
        answers[email] = answer(response, email)
    return answers


def test_an_unknown_address_answers_like_a_locked_care_identity(client, person, no_delays):
    answers = last_answers(client, ["nobody@nhs.net", person.user.email], 100)
    assert answers["nobody@nhs.net"] == answers[person.user.email]
    assert "Your Care Identity is locked" in answers["nobody@nhs.net"][1]


def test_an_unknown_address_keeps_its_lock_when_the_cache_is_emptied(client, person, no_delays):
    User.objects.filter(pk=person.user.pk).update(password_failures=99, last_signin_failure_at=timezone.now())
    client.post(APP, {"email": person.user.email, "password": "wrong password"})
    for _attempt in range(100):
        client.post(APP, {"email": "nobody@nhs.net", "password": "wrong password"})
    # What eviction or a Redis restart does to anything kept only there. Only this test's keys (its own
    # KEY_PREFIX, conftest.isolated_cache): FLUSHDB would empty the Redis db other test workers share.
    for cache in caches.all():
        if hasattr(cache, "delete_pattern"):  # django-redis: the pattern is under the key prefix
            cache.delete_pattern("*")
        else:
            cache.clear()  # local memory: this process's own
    unknown = answer(client.post(APP, {"email": "nobody@nhs.net", "password": "wrong password"}), "nobody@nhs.net")
    known = answer(client.post(APP, {"email": person.user.email, "password": "wrong password"}), person.user.email)
    assert unknown == known
    assert "Your Care Identity is locked" in unknown[1]


def test_thirty_wrong_codes_lock_until_a_registration_authority_unlocks(client, person, no_delays):
    User.objects.filter(pk=person.user.pk).update(code_failures=29, last_signin_failure_at=timezone.now())
    client.post(APP, {"email": person.user.email, "password": person.password})
    response = client.post(CODE, {"token": person.wrong_code()})
    page = response.content.decode()
    assert "Your Care Identity is locked" in page and "registration authority" in page
    person.user.refresh_from_db()
    assert person.user.locked_at is not None and person.user.lock_reason == "codes"
    assert AuditEvent.objects.filter(event=Event.ACCOUNT_LOCKED, subject=person.user, details__reason="codes").exists()
    # A stranger's wrong password gets the ordinary answer: the lock tells nothing about the account.
    stranger = answer(client.post(APP, {"email": person.user.email, "password": "wrong password"}), person.user.email)
    nobody = answer(client.post(APP, {"email": "nobody@nhs.net", "password": "wrong password"}), "nobody@nhs.net")
    assert stranger == nobody
    # The owner, with the right password, is told to contact their registration authority.
    response = client.post(APP, {"email": person.user.email, "password": person.password})
    assert "Contact your registration authority" in response.content.decode()
    assert not client.session.get("careid_pending_signin")


def test_wrong_codes_and_wrong_passwords_are_counted_apart(client, person, no_delays):
    client.post(APP, {"email": person.user.email, "password": "wrong password"})
    client.post(APP, {"email": person.user.email, "password": person.password})
    client.post(CODE, {"token": person.wrong_code()})
    person.user.refresh_from_db()
    # The right password ends the run of wrong passwords; the wrong code starts a run of its own.
    assert (person.user.password_failures, person.user.code_failures) == (0, 1)


def test_a_locked_unknown_address_stays_locked_after_the_failure_window(client, person, no_delays, settings):
    """A real Care Identity's lock outlasts the failure window, so an unknown address's must too, after the
    daily clean-up of stale rows (else the address would answer differently from then on)."""
    from signin.models import UnknownAddress

    User.objects.filter(pk=person.user.pk).update(password_failures=99, last_signin_failure_at=timezone.now())
    client.post(APP, {"email": person.user.email, "password": "wrong password"})
    for _attempt in range(100):
        client.post(APP, {"email": "nobody@nhs.net", "password": "wrong password"})
    for _attempt in range(3):
        client.post(APP, {"email": "someone.else@nhs.net", "password": "wrong password"})
    with time_machine.travel(timezone.now() + settings.CAREID_SIGNIN_FAILURE_WINDOW + timedelta(minutes=1)):
        assert UnknownAddress.objects.forget_stale() == 1  # only the address that was not locked
        unknown = answer(client.post(APP, {"email": "nobody@nhs.net", "password": "wrong password"}), "nobody@nhs.net")
        known = answer(client.post(APP, {"email": person.user.email, "password": "wrong password"}), person.user.email)
    assert unknown == known and "Your Care Identity is locked" in unknown[1]


def test_a_care_identity_locked_for_codes_answers_wrong_passwords_like_an_unknown_address(client, person, no_delays):
    """Someone with the password failed 30 codes (an RA-only lock); a stranger's 100 wrong passwords then get the
    answer an unknown address gets, never "too many wrong security codes"."""
    User.objects.filter(pk=person.user.pk).update(code_failures=30, locked_at=timezone.now(), lock_reason="codes",
                                                  last_signin_failure_at=timezone.now())
    answers = last_answers(client, ["nobody@nhs.net", person.user.email], 101)
    assert answers["nobody@nhs.net"] == answers[person.user.email]
    assert "wrong security codes" not in answers[person.user.email][1]
    person.user.refresh_from_db()
    assert not person.user.lock_is_lifted_by_password_reset  # the codes it counted still need an RA
