"""The audit trail is tamper-evident: PostgreSQL refuses UPDATE and DELETE (but the one sealing), and
the keyed hash chain finds what a database superuser changed, removed or slipped in."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit import chain
from audit.models import AuditEvent, Event
from audit.record import record

from .conftest import ROOT, celery_worker, output_until, require

pytestmark = pytest.mark.services


@pytest.fixture
def trail(db):
    require(connection.vendor == "postgresql", "PostgreSQL (the triggers are PostgreSQL's)")
    events = [record(Event.SIGNIN_FAILED, email=f"n{n}@nhs.net", reason="wrong password") for n in range(6)]
    assert chain.seal() == 6
    return events


def as_superuser(sql: str, params=()) -> None:
    """What someone with the database's superuser rights can do: switch the triggers off and write."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)
        cursor.execute("SET LOCAL session_replication_role = origin")


def problems() -> list[str]:
    return chain.verify().problems


UNSEAL = "seq = NULL, chain_hash = '', sealed_at = NULL"


def _verify_audit(*args: str) -> str:
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit", *args, stdout=out, stderr=err)
    except CommandError as error:  # the trail is broken
        return f"BROKEN: {error} {err.getvalue()}"
    return out.getvalue()


def test_the_newest_event_altered_and_unsealed_is_found(trail, caplog):
    """(Review of issue 9, item 6.) A database superuser who alters events and clears their seal gets them
    chained again by the sealer, which holds the key: the MAC careid wrote with the event no longer matches."""
    newest = trail[-1]
    as_superuser(f"UPDATE audit_auditevent SET details = %s, {UNSEAL} WHERE id = %s",
                 ['{"reason": "nothing to see"}', newest.pk])
    assert chain.seal() == 1  # the sealer (Celery beat, every 10 s) chains it again, with the key
    assert AuditEvent.objects.get(pk=newest.pk).details == {"reason": "nothing to see"}
    head = caplog.records[-1].getMessage().rsplit(" ", 1)[1]  # the newest head the sealer logged
    assert "BROKEN" in _verify_audit(), "verify_audit says the altered trail is intact"
    assert "BROKEN" in _verify_audit("--expect-head", head)
    assert f"Event {newest.pk} (seq 6, " in _verify_audit() and "does not match what careid wrote" in _verify_audit()


def test_the_first_event_altered_and_the_trail_unsealed_is_found(trail):
    first = trail[0]
    as_superuser("UPDATE audit_auditevent SET outcome = 'success', details = %s WHERE id = %s",
                 ['{"reason": "right password"}', first.pk])
    as_superuser(f"UPDATE audit_auditevent SET {UNSEAL}")
    assert chain.seal() == 6
    assert "BROKEN" in _verify_audit(), "verify_audit says the altered trail is intact"
    [problem] = problems()
    assert f"Event {first.pk} (seq 1, " in problem and "does not match what careid wrote" in problem


def test_an_event_altered_with_its_mac_cleared_or_copied_from_another_is_found(trail):
    as_superuser(f"UPDATE audit_auditevent SET details = '{{}}', written_mac = '', {UNSEAL} WHERE id = %s",
                 [trail[3].pk])
    as_superuser(f"UPDATE audit_auditevent SET details = '{{}}', written_mac = (SELECT written_mac FROM "
                 f"audit_auditevent WHERE id = %s), {UNSEAL} WHERE id = %s", [trail[1].pk, trail[4].pk])
    as_superuser(f"UPDATE audit_auditevent SET {UNSEAL} WHERE id > %s", [trail[3].pk])
    problems_before_sealing = chain.verify(first_problem_only=False).problems
    assert any(f"Event {trail[3].pk} (not sealed, " in problem and "has no MAC" in problem
               for problem in problems_before_sealing), problems_before_sealing
    chain.seal()
    found = chain.verify(first_problem_only=False).problems
    assert f"Event {trail[3].pk} (seq 4, " in found[0] and "has no MAC: it was written outside careid" in found[0]
    assert f"Event {trail[4].pk} (seq 5, " in found[1] and "does not match what careid wrote" in found[1]
    assert len(found) == 2


def test_an_event_slipped_in_unsealed_is_named_before_it_is_sealed(trail):
    as_superuser("INSERT INTO audit_auditevent (at, event, outcome, user_agent, method, details) "
                 "VALUES (now(), 'account.unlocked', 'success', '', '', '{}')")
    forged = AuditEvent.objects.get(event=Event.ACCOUNT_UNLOCKED)
    [problem] = problems()
    assert problem.startswith(f"Event {forged.pk} (not sealed, ") and "has no MAC" in problem
    chain.seal()
    [problem] = problems()
    assert problem.startswith(f"Event {forged.pk} (seq 7, ") and "has no MAC" in problem


@pytest.mark.parametrize("ip", ["10.1.2.3", "2001:DB8::1", "2001:db8:0:0:1:0:0:1", "::ffff:10.1.2.3", "::10.1.2.3",
                                "fe80::1:0:0:0", "::", "::1"])
def test_what_careid_writes_verifies_as_postgresql_gives_it_back(db, rf, ip):
    """The MAC is computed from what careid hands the database, and checked against what the database gives
    back: an address in another form, a time in another zone, keys in another order must not matter."""
    from zoneinfo import ZoneInfo

    request = rf.get("/", REMOTE_ADDR=ip, HTTP_USER_AGENT="Mozilla/5.0 (X11; Linux) é")
    record(Event.SIGNIN_FAILED, request=request, method="authenticator-app", aal=2,
           zeta=1, alpha={"b": [1, 2.5, None, True], "a": "x"}, reason="naïve ☃")
    with time_machine.travel(timezone.now().replace(microsecond=0)):  # no fraction of a second
        AuditEvent.objects.create(event=Event.SIGNED_OUT, at=timezone.now().astimezone(ZoneInfo("Europe/London")))
    AuditEvent.objects.bulk_create([AuditEvent(event=Event.SIGNED_OUT, ip=ip)])
    assert chain.verify().ok, chain.verify(first_problem_only=False).problems
    chain.seal()
    result = chain.verify()
    assert result.ok and result.checked == 3, result.problems


def test_postgresql_refuses_update_and_delete(trail):
    event = trail[0]
    for sql in ["UPDATE audit_auditevent SET details = '{}' WHERE id = %s",
                "DELETE FROM audit_auditevent WHERE id = %s",
                "UPDATE audit_auditevent SET seq = NULL, chain_hash = '' WHERE id = %s",
                "UPDATE audit_auditevent SET written_mac = '' WHERE id = %s"]:
        with pytest.raises(DatabaseError, match="pgtrigger"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql, [event.pk])
    with pytest.raises(PermissionError):
        AuditEvent.objects.get(pk=event.pk).delete()
    assert chain.verify().ok and chain.verify().checked == 6


def test_postgresql_refuses_them_to_a_role_that_sets_pgtrigger_ignore(trail):
    """django-pgtrigger's triggers stepped aside for a session naming them in its `pgtrigger.ignore` setting, which
    any role may set: the application's own role, neither superuser nor the table's owner, updated and deleted
    events, and slipped in one already sealed."""
    role = f"careid_app_{os.getpid()}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} NOLOGIN")  # rolled back with the test's transaction
        cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON audit_auditevent TO {role}")
        cursor.execute(f"GRANT USAGE ON SEQUENCE audit_auditevent_id_seq TO {role}")
        cursor.execute("SELECT array_agg(tgname) FROM pg_trigger WHERE tgrelid = 'audit_auditevent'::regclass "
                       "AND NOT tgisinternal")
        [names] = cursor.fetchone()
        assert len(names) == 4, names
        cursor.execute(f"SET LOCAL ROLE {role}")
        cursor.execute("SET LOCAL pgtrigger.ignore = %s", ["{" + ",".join(names) + "}"])
    event = trail[0]
    for sql in ["UPDATE audit_auditevent SET details = '{}' WHERE id = %s",
                "DELETE FROM audit_auditevent WHERE id = %s",
                "INSERT INTO audit_auditevent (at, event, outcome, user_agent, method, details, seq) "
                "SELECT now(), 'account.unlocked', 'success', '', '', '{}', 1000000 WHERE %s IS NOT NULL"]:
        with pytest.raises(DatabaseError, match="pgtrigger"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql, [event.pk])
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")
    assert chain.verify().ok and chain.verify().checked == 6


def test_postgresql_refuses_an_event_inserted_already_sealed(trail):
    """No superuser needed before: the application's role could INSERT an event with its place in the chain
    already set; the sealer took it for the head and chained every later event after it."""
    columns = "INSERT INTO audit_auditevent (at, event, outcome, user_agent, method, details, {}) "
    for column, value in (("seq", 1_000_000), ("chain_hash", "f" * 64), ("sealed_at", timezone.now())):
        with pytest.raises(DatabaseError, match="pgtrigger: Cannot insert"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(columns.format(column) + "VALUES (now(), 'account.unlocked', 'success', '', '', '{}', %s)",
                               [value])
    assert AuditEvent.objects.count() == 6
    record(Event.SIGNED_OUT)  # as careid writes them: unsealed
    assert chain.seal() == 1 and chain.verify().ok and chain.verify().checked == 7


def test_the_sealing_update_happens_once_and_only_to_the_chain_fields(db):
    require(connection.vendor == "postgresql", "PostgreSQL (the triggers are PostgreSQL's)")
    event = record(Event.SIGNIN_FAILED, reason="x")
    with pytest.raises(DatabaseError, match="pgtrigger"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(seq=1, chain_hash="a" * 64, method="forged")
    with pytest.raises(DatabaseError, match="pgtrigger"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(seq=1, chain_hash="a" * 64, written_mac="b" * 64)
    assert chain.seal() == 1 and chain.seal() == 0


def test_postgresql_refuses_an_event_given_a_place_that_does_not_extend_the_chain(trail):
    """What the INSERT trigger refuses, the sealing UPDATE allowed: the application's role gave an unsealed event
    a place of its choosing. Far ahead, the sealer took it for the head and chained every later event after it
    (verify_audit then reports events removed that never were); at 0 or below, it was outside the chain."""
    slipped = AuditEvent.objects.create(event=Event.ACCOUNT_UNLOCKED)
    for seq in (1_000_000, 8, 0, -1):
        with pytest.raises(DatabaseError, match="pgtrigger"), transaction.atomic():
            AuditEvent.objects.filter(pk=slipped.pk).update(seq=seq, chain_hash="f" * 64, sealed_at=timezone.now())
    record(Event.SIGNED_OUT)
    assert chain.seal() == 2  # the sealer's own places, a batch at a time, still go
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, 9))
    assert chain.verify().ok and chain.verify().checked == 8


def test_an_untouched_trail_verifies_and_new_events_extend_it(trail):
    record(Event.SIGNED_OUT)
    result = chain.verify()
    assert result.ok and result.checked == 6 and result.unsealed == 1
    chain.seal()
    assert chain.verify().checked == 7
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, 8))


def test_an_altered_event_is_found(trail):
    as_superuser("UPDATE audit_auditevent SET details = %s WHERE id = %s", ['{"reason": "nothing to see"}', trail[2].pk])
    [problem] = problems()
    assert f"Event {trail[2].pk} " in problem and "does not match its chain hash" in problem


def test_an_event_whose_seal_time_was_cleared_is_named_not_a_crash(trail):
    """An event keeping its place but not its seal time (careid sets both at once) stopped verify_audit with a
    TypeError: no problem named, and none of those after it with --all-problems."""
    as_superuser("UPDATE audit_auditevent SET sealed_at = NULL WHERE id = %s", [trail[2].pk])
    as_superuser("UPDATE audit_auditevent SET details = '{}' WHERE id = %s", [trail[4].pk])
    assert "BROKEN" in _verify_audit()
    found = chain.verify(first_problem_only=False).problems
    assert f"Event {trail[2].pk} (seq 3, " in found[0] and "does not match its chain hash" in found[0]
    assert any(f"Event {trail[4].pk} (seq 5, " in problem for problem in found[1:]), found


def test_a_removed_event_is_found(trail):
    as_superuser("DELETE FROM audit_auditevent WHERE id = %s", [trail[3].pk])
    [problem] = problems()
    assert "seq 4–4 are missing" in problem and "removed" in problem


def test_an_event_inserted_with_a_forged_link_is_found(trail):
    victim = AuditEvent.objects.get(pk=trail[4].pk)
    as_superuser("UPDATE audit_auditevent SET seq = seq + 100 WHERE seq >= %s", [victim.seq])
    as_superuser(
        "INSERT INTO audit_auditevent (at, event, outcome, user_agent, method, details, seq, chain_hash, sealed_at) "
        "VALUES (%s, 'signin.succeeded', 'success', '', '', '{}', %s, %s, %s)",
        [victim.at, victim.seq, "f" * 64, victim.sealed_at])
    assert "does not match its chain hash" in problems()[0]


@pytest.mark.parametrize("seq", [0, -1])
def test_an_event_inserted_with_a_place_before_the_chains_start_is_found(trail, seq):
    """The chain starts at seq 1 and verify walked it from there: an event slipped in with seq 0 or below was
    neither chained nor unsealed, so nothing checked it, while the RA's list and the export showed it."""
    as_superuser(
        "INSERT INTO audit_auditevent (at, event, outcome, user_agent, method, details, seq, chain_hash, sealed_at) "
        "VALUES (now(), 'account.unlocked', 'success', '', '', '{}', %s, %s, now())", [seq, "f" * 64])
    forged = AuditEvent.objects.get(event=Event.ACCOUNT_UNLOCKED)
    assert "BROKEN" in _verify_audit(), "verify_audit says a trail with an event slipped in is intact"
    [problem] = problems()
    assert problem.startswith(f"Event {forged.pk} (seq {seq}, ") and "outside careid" in problem
    since = AuditEvent.objects.get(pk=trail[2].pk).at
    assert f"Event {forged.pk} (seq {seq}, " in chain.verify(since=since).problems[0]


def test_an_event_inserted_out_of_order_is_found(trail, settings):
    backdated = timezone.now() - timedelta(days=3)
    as_superuser("INSERT INTO audit_auditevent (at, event, outcome, user_agent, method, details) "
                 "VALUES (%s, 'account.unlocked', 'success', '', '', '{}')", [backdated])
    chain.seal()  # the sealer cannot tell: the chain keeps the time it was sealed
    [problem] = problems()
    assert "inserted out of order" in problem


def test_an_event_inserted_with_a_date_in_the_future_is_named_not_the_genuine_one_after_it(trail, settings):
    """Sealed like any other, a forward-dated event used to make verify accuse the next genuine event of being
    inserted out of order; it is the forged one that is dated after it was sealed."""
    as_superuser("INSERT INTO audit_auditevent (at, event, outcome, user_agent, method, details) "
                 "VALUES (%s, 'account.unlocked', 'success', '', '', '{}')", [timezone.now() + timedelta(days=1)])
    forged = AuditEvent.objects.get(event=Event.ACCOUNT_UNLOCKED)
    chain.seal()
    record(Event.SIGNED_OUT)
    chain.seal()
    result = chain.verify(first_problem_only=False)
    [problem] = result.problems
    assert problem.startswith(f"Event {forged.pk} (seq 7) is dated ") and "inserted with a date in the future" in problem
    assert result.checked == 8
    # A web server's clock a little ahead of the sealer's, within the tolerance, is no problem.
    with time_machine.travel(timezone.now() + settings.CAREID_AUDIT_SEAL_TOLERANCE - timedelta(seconds=30)):
        record(Event.SIGNED_OUT)
    chain.seal()
    assert chain.verify(first_problem_only=False).problems == [problem]


def test_an_event_dated_in_a_quiet_time_and_inserted_later_is_found(trail, settings):
    """Nothing happened for an hour: the sealer's heartbeats are in the chain, so an event inserted afterwards,
    dated after the last real one but within that hour, is dated before events chained ahead of it."""
    with time_machine.travel(timezone.now(), tick=False) as clock:
        clock.shift(timedelta(minutes=2))
        forged_at = timezone.now()
        for _run in range(12):  # the sealer runs every 10 s; one run in five minutes chains a heartbeat
            clock.shift(timedelta(minutes=5))
            chain.seal()
        heartbeats = AuditEvent.objects.filter(event=Event.AUDIT_HEARTBEAT)
        assert heartbeats.count() == 12 and all(beat.seq for beat in heartbeats)
        assert chain.verify().ok
        as_superuser("INSERT INTO audit_auditevent (at, event, outcome, user_agent, method, details) "
                     "VALUES (%s, 'account.unlocked', 'success', '', '', '{}')", [forged_at])
        chain.seal()
        [problem] = problems()
        assert "inserted out of order" in problem


def test_no_heartbeat_while_events_are_sealed_or_the_chain_is_empty(db, settings):
    assert chain.seal() == 0  # nothing chained yet: nothing to keep alive
    record(Event.SIGNED_OUT)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        assert chain.seal() == 1
        clock.shift(settings.CAREID_AUDIT_HEARTBEAT - timedelta(seconds=10))
        assert chain.seal() == 0
        record(Event.SIGNED_OUT)
        clock.shift(timedelta(seconds=20))
        assert chain.seal() == 1  # the event itself, no heartbeat
    assert not AuditEvent.objects.filter(event=Event.AUDIT_HEARTBEAT).exists()


def test_a_trail_cut_short_at_its_end_is_found_against_the_logged_head(trail, caplog):
    record(Event.SIGNED_OUT)
    chain.seal()  # logged at default settings (below)
    head = caplog.records[-1].getMessage().rsplit(" ", 1)[1]
    seq, head_hash = head.split(":")
    assert seq == "7"
    as_superuser("DELETE FROM audit_auditevent WHERE seq = 7")
    assert chain.verify().ok  # the chain alone cannot know its end is gone ...
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="broken"):
        call_command("verify_audit", "--expect-head", head, stdout=out, stderr=err)
    assert "no longer holds the head" in err.getvalue()  # ... the logged head does


def test_a_logged_head_typed_otherwise_is_read_as_the_sealer_logged_it_or_refused_with_a_message(trail, caplog):
    """An operator copies the head from a log or types it: in capitals it is the same head (not a trail "replaced"),
    and a place that is no number (a superscript 2 passes str.isdigit) is refused with the command's message, not a
    traceback."""
    record(Event.SIGNED_OUT)
    chain.seal()
    seq, head_hash = caplog.records[-1].getMessage().rsplit(" ", 1)[1].split(":")
    assert "intact" in _verify_audit("--expect-head", f"{seq}:{head_hash.upper()}")
    for typed in (f"\u00b2:{head_hash}", f"{seq}:{'g' * 64}", f"-1:{head_hash}", f"{seq}{head_hash}"):
        with pytest.raises(CommandError, match="--expect-head must be SEQ:HASH as the sealer logs it"):
            call_command("verify_audit", f"--expect-head={typed}", stdout=StringIO(), stderr=StringIO())


def test_a_sealer_outage_longer_than_the_tolerance_verifies_once_sealing_resumes(trail, settings):
    assert settings.CAREID_AUDIT_SEAL_TOLERANCE == timedelta(seconds=900)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        written = []
        for n in range(4):  # 1,200 s of events and no sealer
            written.append(record(Event.SIGNIN_FAILED, reason=f"during the outage {n}"))
            clock.shift(timedelta(seconds=300))
        assert "never sealed" in problems()[0]
        assert chain.seal() == 4
        result = chain.verify()
        assert result.ok and result.checked == 10 and result.unsealed == 0
        as_superuser("UPDATE audit_auditevent SET details = %s WHERE id = %s", ['{"reason": "x"}', written[1].pk])
        [problem] = problems()
        assert f"Event {written[1].pk} " in problem and "does not match its chain hash" in problem


def test_an_event_committed_a_little_after_later_ones_is_no_problem(trail):
    with time_machine.travel(timezone.now() - timedelta(seconds=60)):  # a transaction that took a minute
        late = record(Event.SIGNED_OUT)
    chain.seal()
    assert AuditEvent.objects.get(pk=late.pk).seq == 7
    assert chain.verify().ok


def test_verify_since_a_time_nothing_was_sealed_after_reads_only_the_link_into_it(trail):
    with CaptureQueriesContext(connection) as queries:
        result = chain.verify(since=timezone.now() + timedelta(days=1))
    assert result.ok and result.checked == 0
    reads = [query["sql"] for query in queries if "SAVEPOINT" not in query["sql"]]
    # Where to start, the head and the event before it (the link into the empty window), events placed before
    # the chain's start, and the unsealed events: not the chain.
    assert len(reads) <= 6, reads


def test_verify_since_finds_every_event_of_the_day_altered_and_re_dated_before_the_window(trail):
    """With all of the window's events moved out of it, it held nothing to check: verify_audit --since said the
    trail was intact. The link into the empty window is the head's."""
    since = AuditEvent.objects.get(pk=trail[0].pk).at
    as_superuser("UPDATE audit_auditevent SET at = at - interval '400 days', details = %s",
                 ['{"reason": "nothing to see"}'])
    assert "BROKEN" in _verify_audit("--since", timezone.localtime(since).date().isoformat())
    result = chain.verify(since=since)
    assert not result.ok and result.checked == 0
    assert f"Event {trail[5].pk} (seq 6," in result.problems[0] and "does not match its chain hash" in result.problems[0]


def genuine_old_events(count: int, days: int) -> list[AuditEvent]:
    """Events written and sealed `days` ago, before today's."""
    require(connection.vendor == "postgresql", "PostgreSQL (the triggers are PostgreSQL's)")
    with time_machine.travel(timezone.now() - timedelta(days=days)):
        events = [record(Event.SIGNIN_FAILED, email=f"old{n}@nhs.net", reason="wrong password") for n in range(count)]
        assert chain.seal() == count
    return events


def test_verify_since_a_time_starts_at_the_first_event_sealed_then(db):
    genuine_old_events(4, days=1)
    today = [record(Event.SIGNED_OUT) for _ in range(2)]
    chain.seal()
    result = chain.verify(since=AuditEvent.objects.get(pk=today[0].pk).at)
    assert result.ok and result.checked == 2  # the link into the window is checked, not counted


def test_verify_since_finds_the_days_first_events_altered_and_re_dated_before_the_window(trail):
    """The window is chosen by the very column someone rewriting events can rewrite: the day's first
    three events, altered and moved 400 days back, fall out of `--since today`; the link into the window
    (the last of them against the one before it) does not hold."""
    since = AuditEvent.objects.get(pk=trail[0].pk).at
    as_superuser("UPDATE audit_auditevent SET at = at - interval '400 days', details = %s WHERE id = ANY(%s)",
                 ['{"reason": "nothing to see"}', [event.pk for event in trail[:3]]])
    result = chain.verify(since=since)
    assert not result.ok and result.checked == 0
    assert f"Event {trail[2].pk} (seq 3," in result.problems[0] and "does not match its chain hash" in result.problems[0]
    as_superuser("DELETE FROM audit_auditevent WHERE id = ANY(%s)", [[event.pk for event in trail[:2]]])
    assert chain.verify(since=since).problems == ["The event before seq 3 is missing: events were removed"]


def test_verify_audit_names_the_first_broken_link_and_fails(trail):
    out = StringIO()
    call_command("verify_audit", stdout=out)
    assert "The audit trail is intact: 6 chained events checked" in out.getvalue()
    as_superuser("UPDATE audit_auditevent SET outcome = 'failure' WHERE id = %s", [trail[1].pk])
    as_superuser("DELETE FROM audit_auditevent WHERE id = %s", [trail[4].pk])
    err = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("verify_audit", stdout=StringIO(), stderr=err)
    assert raised.value.returncode == 1
    assert err.getvalue().count("\n") == 1 and f"Event {trail[1].pk} " in err.getvalue()
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_audit", "--all-problems", stdout=StringIO(), stderr=err)
    assert "missing" in err.getvalue()
    with pytest.raises(CommandError, match="--since must be a date"):
        call_command("verify_audit", "--since", "yesterday")


def test_verify_from_a_date_starts_at_that_day(db):
    """An event altered days before the window is not --since's to find (the whole chain's check finds it).
    (This test once re-dated today's first event 10 days back as its "old" event: what
    test_verify_since_finds_the_days_first_events_altered_and_re_dated_before_the_window shows is caught.)"""
    old = genuine_old_events(3, days=10)
    for _ in range(5):
        record(Event.SIGNED_OUT)
    chain.seal()
    as_superuser("UPDATE audit_auditevent SET details = %s WHERE id = %s", ['{"reason": "nothing to see"}', old[0].pk])
    assert problems()
    out = StringIO()
    call_command("verify_audit", "--since", timezone.localdate().isoformat(), stdout=out)
    assert "The audit trail is intact: 5 chained events checked" in out.getvalue()


def test_events_never_sealed_are_reported(db, settings):
    require(connection.vendor == "postgresql", "PostgreSQL (the triggers are PostgreSQL's)")
    event = record(Event.SIGNED_OUT)
    as_superuser("UPDATE audit_auditevent SET at = at - interval '1 hour' WHERE id = %s", [event.pk])
    [problem] = problems()
    assert f"Event {event.pk} " in problem and "never sealed" in problem


def test_the_export_carries_the_chain(trail, ra_staff):
    _person, client = ra_staff("Auditor")
    chain.seal()
    lines = b"".join(client.get("/admin/audit/auditevent/export/").streaming_content).decode().splitlines()
    assert lines[0].endswith(",id,seq,chain_hash,written_mac")
    sealed = AuditEvent.objects.get(pk=trail[0].pk)
    assert any(line.endswith(f",{sealed.pk},{sealed.seq},{sealed.chain_hash},{sealed.written_mac}")
               for line in lines[1:])


def test_heartbeats_are_chained_and_exported_but_not_listed_among_the_events(trail, ra_staff):
    """A quiet night chains a heartbeat every five minutes: proof for verify_audit, noise between the events
    an RA reads. The list leaves them out unless its event filter asks for them; the export keeps the whole
    chain, which checking it needs."""
    _person, client = ra_staff("Auditor")
    chain.seal()  # what making the RA recorded
    with time_machine.travel(timezone.now(), tick=False) as clock:
        clock.shift(timedelta(minutes=6))
        chain.seal()
    [beat] = AuditEvent.objects.filter(event=Event.AUDIT_HEARTBEAT)
    listed = [event.pk for event in client.get("/admin/audit/auditevent/").context["cl"].result_list]
    assert beat.pk not in listed and {event.pk for event in trail} <= set(listed)
    asked = client.get(f"/admin/audit/auditevent/?event__exact={Event.AUDIT_HEARTBEAT.value}").context["cl"].result_list
    assert [event.pk for event in asked] == [beat.pk]
    lines = b"".join(client.get("/admin/audit/auditevent/export/").streaming_content).decode().splitlines()
    assert any(line.endswith(f",{beat.pk},{beat.seq},{beat.chain_hash},{beat.written_mac}") for line in lines[1:])


def test_events_written_in_parallel_while_sealing_all_end_up_chained(transactional_db):
    """No lock is shared by the writers: they never wait for the sealer or for one another's commits."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    import threading

    from django.db import connections

    from .test_concurrency import in_parallel

    done = threading.Event()

    def sealer() -> None:
        try:
            while not done.is_set():
                chain.seal(batch=7)
        finally:
            connections.close_all()

    sealing = threading.Thread(target=sealer)
    sealing.start()

    def write(index: int) -> int:
        for n in range(20):
            with transaction.atomic():
                record(Event.SIGNIN_FAILED, reason=f"writer {index} event {n}")
        return index

    in_parallel(8, write)
    done.set()
    sealing.join()
    chain.seal()
    result = chain.verify()
    assert result.ok and result.checked == 160 and result.unsealed == 0


def _default_logging_env() -> dict[str, str]:
    """This process's environment on the test database, with the log level left at its default."""
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if k != "CAREID_LOG_LEVEL"}
    return {**env, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}


def _head_logged_by(process: subprocess.Popen) -> str:
    """The first chain head a process logs."""
    last = output_until(process, lambda lines: "audit chain head " in lines[-1])[-1]
    return last.rsplit(" ", 1)[1].strip()


def test_the_chain_head_reaches_the_log_at_default_settings_in_a_web_process(transactional_db):
    require(connection.vendor == "postgresql", "PostgreSQL (the process must share the test database)")
    for n in range(3):
        record(Event.SIGNIN_FAILED, reason=f"attempt {n}")
    process = subprocess.Popen([sys.executable, "manage.py", "verify_audit", "--seal"], cwd=ROOT,
                               env=_default_logging_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        head = _head_logged_by(process)
    finally:
        process.communicate(timeout=60)
    assert head == "3:" + AuditEvent.objects.get(seq=3).chain_hash


def test_the_chain_head_reaches_the_log_at_default_settings_in_a_celery_worker(transactional_db, smtp_server):
    from audit.tasks import seal_audit_trail_task

    record(Event.SIGNIN_FAILED, reason="wrong password")
    with celery_worker(smtp_server.port, CAREID_LOG_LEVEL="WARNING") as worker:  # the default, and `-l warning`
        seal_audit_trail_task.delay()
        head = _head_logged_by(worker)
    assert head == "1:" + AuditEvent.objects.get(seq=1).chain_hash


def test_a_sealer_finds_another_at_work_and_leaves_it_to_it(transactional_db, settings):
    """During a backlog every beat tick queues a seal: each finds the one at work and returns at once,
    instead of waiting for the lock and tying up another worker."""
    import psycopg

    require(connection.vendor == "postgresql", "PostgreSQL (its advisory locks)")
    record(Event.SIGNED_OUT)
    database = settings.DATABASES["default"]
    other = psycopg.connect(host=database["HOST"] or None, port=database["PORT"] or None, user=database["USER"],
                            password=database["PASSWORD"] or None, dbname=connection.settings_dict["NAME"])
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [chain._SEAL_LOCK])
        assert chain.seal() == 0
        assert AuditEvent.objects.filter(seq__isnull=True).count() == 1
    finally:
        # Released by a statement that returns once the lock is free: a closed connection's backend
        # lets go of it a moment later, so a seal straight after close() could still find it held.
        other.execute("SELECT pg_advisory_unlock(%s)", [chain._SEAL_LOCK])
        other.close()
    assert chain.seal() == 1


def test_the_chain_and_the_trigger_cover_every_column_but_the_sealers_own():
    from audit.models import CHAINED_FIELDS, WRITTEN_FIELDS, _chained

    columns = {field.column for field in AuditEvent._meta.concrete_fields}
    assert set(CHAINED_FIELDS) == columns - {"seq", "chain_hash", "sealed_at", "written_mac"}
    assert set(WRITTEN_FIELDS) == set(CHAINED_FIELDS) - {"id"}  # the id is the database's, after the MAC
    assert "OLD.written_mac" in _chained("OLD")  # the trigger refuses changing the MAC too


def test_a_person_s_events_are_found_through_the_indexes_that_lead_with_them(db):
    """Each event writes every index of the trail, and each seal writes them again: the actor's and the
    subject's own indexes are gone, since (actor, at) and (subject, at) serve every look-up by person."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "audit_auditevent").values()
    by_first_column = {}
    # (The former-address indexes are on expressions, for e-mail change events only: no columns to list.)
    for columns in (info["columns"] for info in constraints if info["index"] and info["columns"]):
        by_first_column.setdefault(columns[0], []).append(columns)
    assert by_first_column["actor_id"] == [["actor_id", "at"]]
    assert by_first_column["subject_id"] == [["subject_id", "at"]]


def test_an_event_removed_from_within_and_the_rest_chained_again_is_found_against_a_logged_head(db, caplog):
    """The superuser removes an event from the middle and clears the seals of every event after it; the
    sealer, which holds the key, chains them again with no gap. verify_audit warns that they were chained
    long after they were written (an outage looks the same), and a head logged before finds the removal."""
    require(connection.vendor == "postgresql", "PostgreSQL (the triggers are PostgreSQL's)")
    events = [record(Event.SIGNIN_FAILED, email=f"n{n}@nhs.net", reason="wrong password") for n in range(3)]
    events.append(record(Event.USER_SUSPENDED, reason="fraud investigation"))
    events += [record(Event.SIGNIN_FAILED, email=f"m{n}@nhs.net", reason="wrong password") for n in range(5)]
    assert chain.seal() == 9
    logged_head = caplog.records[-1].getMessage().rsplit(" ", 1)[1]
    with time_machine.travel(timezone.now() + timedelta(hours=2)):
        as_superuser("DELETE FROM audit_auditevent WHERE id = %s", [events[3].pk])
        as_superuser(f"UPDATE audit_auditevent SET {UNSEAL} WHERE id > %s", [events[3].pk])
        assert chain.seal() == 5
        result = chain.verify(first_problem_only=False)
        assert result.problems == [] and result.late == 5 and result.late_from == 4
        assert "--expect-head" in result.warning and "chained again" in result.warning
        err = StringIO()
        with pytest.raises(CommandError):
            call_command("verify_audit", "--expect-head", logged_head, stderr=err)
        assert "The chain no longer holds the head logged earlier (seq 9): its event was removed" in err.getvalue()
        assert "Warning: 5 event(s) from seq 4 were chained more than" in err.getvalue()


def test_a_heartbeat_chained_again_gives_the_removal_away_without_a_logged_head(db):
    """The sealer writes and chains its heartbeat in one go: one chained later had its seal cleared."""
    require(connection.vendor == "postgresql", "PostgreSQL (the triggers are PostgreSQL's)")
    start = timezone.now()
    removed = record(Event.USER_SUSPENDED, reason="fraud investigation")
    assert chain.seal() == 1
    with time_machine.travel(start + timedelta(minutes=6)):
        assert chain.seal() == 1  # a quiet time: the heartbeat
    heartbeat = AuditEvent.objects.get(event=Event.AUDIT_HEARTBEAT)
    with time_machine.travel(start + timedelta(hours=2)):
        as_superuser("DELETE FROM audit_auditevent WHERE id = %s", [removed.pk])
        as_superuser(f"UPDATE audit_auditevent SET {UNSEAL} WHERE id > %s", [removed.pk])
        assert chain.seal() == 1
        assert problems() == [f"Event {heartbeat.pk} (seq 1), the sealer's heartbeat of "
                              f"{heartbeat.at.astimezone(UTC).isoformat()}, was chained again at "
                              f"{AuditEvent.objects.get(pk=heartbeat.pk).sealed_at.astimezone(UTC).isoformat()}"
                              f": the seals from there on were cleared and events before it may have been removed"]


def test_a_sealer_outage_verifies_with_a_warning_only(db):
    require(connection.vendor == "postgresql", "PostgreSQL (the triggers are PostgreSQL's)")
    record(Event.SIGNIN_FAILED, email="n@nhs.net", reason="wrong password")
    with time_machine.travel(timezone.now() + timedelta(hours=1)):
        assert chain.seal() == 1
        result = chain.verify()
    assert result.ok and result.late == 1 and "a sealer outage" in result.warning


class SealerStopped(Exception):
    pass


def test_a_heartbeat_is_chained_as_it_is_written_even_when_events_commit_meanwhile(db, monkeypatch):
    """Events committed between the sealer's empty look and its heartbeat, a whole batch of them, are chained
    first; the heartbeat must not be left unsealed for a sealer that then stops and comes back after the
    tolerance, or a genuine trail would read as tampered with."""
    require(connection.vendor == "postgresql", "PostgreSQL")
    start = timezone.now()
    record(Event.SIGNIN_FAILED, email="n@nhs.net", reason="wrong password")
    assert chain.seal() == 1
    batch = 50
    real_record = chain.record

    def heartbeat_while_a_burst_commits(event, **kwargs):
        for n in range(batch):
            record(Event.USER_ONBOARDED, email=f"o{n}@nhs.net")
        return real_record(event, **kwargs)

    def worker_stops(*args, **kwargs):
        raise SealerStopped

    with time_machine.travel(start + timedelta(minutes=6)):
        monkeypatch.setattr(chain, "record", heartbeat_while_a_burst_commits)
        monkeypatch.setattr(chain.head_log, "info", worker_stops)
        with pytest.raises(SealerStopped):
            chain.seal(batch=batch)
        monkeypatch.undo()
    assert not AuditEvent.objects.filter(event=Event.AUDIT_HEARTBEAT, seq__isnull=True).exists()
    with time_machine.travel(start + timedelta(minutes=30)):  # the sealer back 24 minutes later
        chain.seal()
        result = chain.verify(first_problem_only=False)
    assert result.problems == []


def test_account_locked_gets_no_failed_tag_beside_it():
    from audit.models import Outcome

    assert not AuditEvent(event=Event.ACCOUNT_LOCKED, outcome=Outcome.FAILURE).failed_unsaid
    assert AuditEvent(event=Event.PASSWORD_RESET, outcome=Outcome.FAILURE).failed_unsaid


@pytest.mark.parametrize("number", [1e16, 1.5e300, float("inf")])
def test_a_float_the_database_would_give_back_in_another_form_is_refused(db, rf, number):
    """jsonb gives 1e+16 back as 10000000000000000, an integer: written, the event's MAC would not match it read
    back, and verify_audit would call an untouched event altered. Refused as it is recorded, nothing written."""
    with pytest.raises(TypeError, match="would give back in another form"):
        record(Event.SIGNIN_FAILED, request=rf.get("/"), reason="test", figures={"seen": [number]})
    assert not AuditEvent.objects.exists()
    record(Event.SIGNIN_FAILED, request=rf.get("/"), reason="test", figures={"seen": [2.5, 1e-05, 10**16]})
    assert chain.verify().ok
