"""Parallel requests against the real database: the guards hold when requests really overlap."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections
from django.test import RequestFactory
from django.utils import timezone

from accounts.models import User
from audit.models import AuditEvent, Event
from signin import flows

from .conftest import require

pytestmark = pytest.mark.services


def in_parallel(count: int, work) -> list:
    barrier, results = threading.Barrier(count), [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_parallel_guesses_cannot_pass_the_lock(transactional_db, make_person, settings):
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    person = make_person()
    lock_after = settings.CAREID_PASSWORD_LOCK_AFTER
    User.objects.filter(pk=person.user.pk).update(password_failures=lock_after - 1, last_signin_failure_at=timezone.now())
    factory = RequestFactory()

    def guess(index: int):
        request = factory.post("/login/authenticator-app/", REMOTE_ADDR=f"10.0.0.{index}")
        return flows.check_password_step(request, email=person.user.email, password=f"guess {index}", method="test")

    results = in_parallel(16, guess)
    assert all(user is None for user, _message in results)
    person.user.refresh_from_db()
    assert person.user.password_failures == lock_after and person.user.is_locked
    # Exactly one guess was checked; the others were turned away while it was (SIGNIN_THROTTLED).
    assert AuditEvent.objects.filter(event=Event.SIGNIN_FAILED).count() == 1


def test_a_code_used_twice_at_once_signs_in_once(transactional_db, make_person):
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from authenticators.models import AuthenticatorApp

    person = make_person()
    token = person.fresh_code()
    results = in_parallel(8, lambda index: AuthenticatorApp.objects.get(user=person.user).verify_token(token))
    assert results.count(True) == 1


def test_the_per_ip_limit_holds_under_parallel_attempts(transactional_db, settings, fast_hashing):
    """Each attempt is counted before it is checked, so the limit holds whatever runs at once."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    settings.CAREID_IP_FAILURE_LIMIT = 10
    factory = RequestFactory()

    def guess(index: int):
        request = factory.post("/login/authenticator-app/", REMOTE_ADDR="203.0.113.40")
        return flows.check_password_step(request, email=f"nobody{index}@nhs.net", password="guess", method="test")

    results = in_parallel(40, guess)
    assert all(user is None for user, _message in results)
    assert AuditEvent.objects.filter(event=Event.SIGNIN_FAILED).count() == 10
    assert AuditEvent.objects.filter(event=Event.SIGNIN_THROTTLED, details__reason="ip_throttled").count() == 30
