"""careid.sessions: Django's database store with one statement per change: no look-up before a new key's
INSERT, no read before a DELETE, no transaction around a single write, and a rotated key written once."""

from __future__ import annotations

import pytest
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.contrib.sessions.models import Session
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from careid import sessions
from careid.sessions import SessionStore


def _work(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if q["sql"].startswith(("SELECT", "INSERT", "UPDATE", "DELETE"))]


def test_a_new_session_is_one_insert_of_a_row_in_postgresql(db):
    store = SessionStore()
    store["who"] = "someone"
    with CaptureQueriesContext(connection) as captured:
        store.save()
    assert [sql.split()[0] for sql in _work(captured)] == ["INSERT"]
    assert SessionStore(store.session_key).load() == {"who": "someone"}
    assert Session.objects.filter(session_key=store.session_key).exists()


def test_a_key_already_taken_is_never_shared(db, monkeypatch):
    first = SessionStore()
    first["who"] = "first"
    first.save()
    keys = iter([first.session_key, "b" * 32])
    monkeypatch.setattr(sessions, "get_random_string", lambda length, allowed: next(keys))

    second = SessionStore()
    second["who"] = "second"
    second.save()

    assert second.session_key == "b" * 32
    assert SessionStore(first.session_key).load() == {"who": "first"}
    assert SessionStore(second.session_key).load() == {"who": "second"}


def _all(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"].split()[0] for q in captured.captured_queries]


def test_a_rotated_key_is_written_once_with_the_data_as_it_is_saved(db):
    store = SessionStore()
    store["who"] = "someone"
    store.save()
    old = store.session_key
    with CaptureQueriesContext(connection) as captured:
        store.cycle_key()
        store["signed in"] = True
        store.save()
    # The row moves to the new key with what the request put in (Django's store: an INSERT of the old
    # data, a DELETE of the old row, then an UPDATE, each in its own transaction).
    assert _all(captured) == ["UPDATE"]
    assert store.session_key != old
    assert not Session.objects.filter(session_key=old).exists()
    assert SessionStore(store.session_key).load() == {"who": "someone", "signed in": True}
    assert Session.objects.count() == 1


def test_a_rotated_session_whose_row_is_gone_is_written_anew(db):
    store = SessionStore()
    store["who"] = "someone"
    store.save()
    store.cycle_key()
    Session.objects.all().delete()  # signed out in another tab meanwhile
    store.save()
    assert SessionStore(store.session_key).load() == {"who": "someone"}


def test_flushing_a_rotated_session_before_it_is_saved_leaves_no_row(db):
    store = SessionStore()
    store["who"] = "someone"
    store.save()
    store.cycle_key()
    store.cycle_key()  # twice before a save: still the first row that moves, or goes
    store.flush()
    assert not Session.objects.exists()


def test_saving_what_this_store_already_wrote_writes_nothing_and_a_change_is_one_update(db):
    store = SessionStore()
    store["who"] = "someone"
    store.save()
    with CaptureQueriesContext(connection) as captured:
        store.save()  # a flow saved it in its transaction, then the middleware saves again
    assert _all(captured) == []
    store["who"] = "someone else"
    with CaptureQueriesContext(connection) as captured:
        store.save()
    assert _all(captured) == ["UPDATE"]
    assert SessionStore(store.session_key).load() == {"who": "someone else"}
    # Another request's store has written nothing yet: its save writes.
    other = SessionStore(store.session_key)
    other["who"] = "someone else"
    with CaptureQueriesContext(connection) as captured:
        other.save()
    assert _all(captured) == ["UPDATE"]


def test_saving_a_session_deleted_meanwhile_says_so_and_recreates_nothing(db):
    store = SessionStore()
    store["who"] = "someone"
    store.save()
    SessionStore(store.session_key).delete()  # signed out in another tab
    store["who"] = "someone else"
    with pytest.raises(UpdateError):
        store.save()
    assert not Session.objects.exists()


def test_a_rotated_key_that_clashes_fails_the_transaction_it_was_named_in(db, monkeypatch):
    taken = SessionStore()
    taken["who"] = "someone else"
    taken.save()
    store = SessionStore()
    store["who"] = "someone"
    store.save()
    monkeypatch.setattr(sessions, "get_random_string", lambda length, allowed: taken.session_key)
    with pytest.raises(CreateError), transaction.atomic():
        store.cycle_key()
        Session.objects.create(session_key="c" * 32, session_data="", expire_date=timezone.now())  # named elsewhere
        store.save()
    # Nothing of that transaction stays (the old row is as it was), and the other session is untouched.
    assert not Session.objects.filter(session_key="c" * 32).exists()
    assert Session.objects.count() == 2
    assert SessionStore(taken.session_key).load() == {"who": "someone else"}


def test_deleting_a_session_that_is_gone_is_quiet(db):
    store = SessionStore()
    store.save()
    store.delete()
    store.delete("no-such-session-key")
    assert not Session.objects.exists()


def test_expired_sessions_are_deleted_hourly_with_their_rows_on_the_persons_list(client, person, settings):
    """Django never deletes an expired session by itself (its clearsessions command does) and nothing ran one: every
    sign-in, half-done sign-in and journey left its row for good, and a sign-in its row on the person's list. An
    expired session is past every timeout (it expires 12 hours after its last change), so none is in use."""
    from datetime import timedelta

    from allauth.usersessions.models import UserSession
    from django.test import Client

    from signin.tasks import forget_expired_sessions_task

    from .conftest import run_task, sign_in

    sign_in(client, person)
    live = client.session.session_key
    earlier, half_done = Client(), Client()
    sign_in(earlier, person)
    half_done.post("/login/authenticator-app/", {"email": person.user.email, "password": person.password})
    expired = [earlier.session.session_key, half_done.session.session_key]
    Session.objects.filter(session_key__in=expired).update(expire_date=timezone.now() - timedelta(minutes=1))

    assert run_task(forget_expired_sessions_task) == 2
    assert list(Session.objects.values_list("session_key", flat=True)) == [live]
    assert list(UserSession.objects.values_list("session_key", flat=True)) == [live]
    assert settings.CELERY_BEAT_SCHEDULE["forget-expired-sessions"]["task"] == "signin.tasks.forget_expired_sessions_task"
