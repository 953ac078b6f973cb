"""careid.sessions: Django's database store, with a new key's look-up and a delete's read left out."""

from __future__ import annotations

from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext

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


def test_a_rotated_key_leaves_one_row_with_the_data(db):
    store = SessionStore()
    store["who"] = "someone"
    store.save()
    old = store.session_key
    with CaptureQueriesContext(connection) as captured:
        store.cycle_key()
    assert [sql.split()[0] for sql in _work(captured)] == ["INSERT", "DELETE"]
    assert store.session_key != old
    assert not Session.objects.filter(session_key=old).exists()
    store.save()
    assert SessionStore(store.session_key).load() == {"who": "someone"}


def test_deleting_a_session_that_is_gone_is_quiet(db):
    store = SessionStore()
    store.save()
    store.delete()
    store.delete("no-such-session-key")
    assert not Session.objects.exists()
