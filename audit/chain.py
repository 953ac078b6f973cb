"""The audit trail's hash chain: tamper evidence against anyone with access to the database.

Events are written without waiting for one another (each in its own change's transaction, so no
lock is shared by every request). careid writes each with `written_mac` = HMAC(key, its content but
the id), and one sealer at a time then gives each committed event the next place in the chain (`seq`)
and `chain_hash` = HMAC(key, previous chain_hash + the event's whole content + its place), both keyed
by CAREID_AUDIT_CHAIN_KEY, which the database does not hold. PostgreSQL itself refuses UPDATE and
DELETE on the table except the single sealing update, and an INSERT of an event already sealed
(audit/models.py's triggers); `verify()` finds what someone with the power to lift those did, without
the key:
- an event altered, chained or not, even with its seal cleared so that the sealer (which holds the
  key and chains whatever it finds unsealed) chains it again: its MAC no longer matches;
- an event inserted, chained or not: it has no MAC careid wrote (a MAC copied from another event does
  not match its content);
- events removed from the chain (a gap in seq, or a broken link), events moved or re-dated, an event
  dated well before one chained ahead of it or after it was sealed, events never sealed;
- the seals of a run of events cleared and the run chained again (hiding an event removed before it),
  when the run holds a heartbeat, which the sealer writes and chains in one go; without one, verify()
  counts the events chained long after they were written (as a sealer outage leaves them) for a warning.
Not found by the chain alone: the newest events removed, or the whole trail emptied, or an event removed
from within with every seal after it cleared and no heartbeat among them (the sealer logs each head:
`verify_audit --expect-head`); an event removed in the seconds before it was sealed; an
exact copy of an event careid wrote inserted again (its MAC does not cover the id), unless its date
puts it well before an event chained ahead of it, as it does once the tolerance has passed.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Min
from django.utils import timezone

from .mac import CHAINED_FIELDS, keyed_hash, written_mac
from .mac import text as _text
from .models import AuditEvent, Event
from .record import record

head_log = logging.getLogger("careid.audit.head")  # settings.LOGGING gives it its own level
GENESIS = "0" * 64
_SEAL_LOCK = 0x61756469  # pg_try_advisory_xact_lock key: one sealer at a time, the others leave it to it
CONTENT = CHAINED_FIELDS


def link(previous: str, seq: int, sealed_at: datetime, content: dict) -> str:
    """The chain hash of one event: keyed, over its place, its sealing time, its content and the link before."""
    return keyed_hash([previous, seq, _text(sealed_at), [_text(content[name]) for name in CONTENT]])


def _head() -> tuple[int, str, datetime | None]:
    head = (AuditEvent.objects.filter(seq__isnull=False).order_by("-seq")
            .values_list("seq", "chain_hash", "sealed_at").first())
    return head if head else (0, GENESIS, None)


def seal(batch: int = 2000) -> int:
    """Chain the committed events not chained yet, oldest first; returns how many were sealed.

    With nothing to seal for CAREID_AUDIT_HEARTBEAT, it chains a heartbeat event: a quiet night then
    leaves the sealer's runs in the chain, and an event inserted afterwards with a date from that night
    is dated well before one chained ahead of it, which verify() reports."""
    sealed = 0
    while True:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:  # another sealer at work: it seals these too
                    cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_SEAL_LOCK])
                    if not cursor.fetchone()[0]:
                        return sealed
            seq, previous, last_sealed = _head()
            rows = list(AuditEvent.objects.filter(seq__isnull=True).order_by("id").values(*CONTENT)[:batch])
            if not rows:
                if sealed or last_sealed is None or timezone.now() - last_sealed < settings.CAREID_AUDIT_HEARTBEAT:
                    return sealed
                before_heartbeat = transaction.savepoint()
                heartbeat = record(Event.AUDIT_HEARTBEAT)
                rows = list(AuditEvent.objects.filter(seq__isnull=True).order_by("id").values(*CONTENT)[:batch])
                if heartbeat.pk not in {content["id"] for content in rows}:
                    # Events committed meanwhile fill the batch: chained now, they show the sealer ran. The
                    # heartbeat must be chained with its own writing, as verify() expects, or not written.
                    transaction.savepoint_rollback(before_heartbeat)
            now = timezone.now()
            ids, seqs, hashes = [], [], []
            for content in rows:
                seq += 1
                previous = link(previous, seq, now, content)
                ids.append(content["id"])
                seqs.append(seq)
                hashes.append(previous)
            _write_links(ids, seqs, hashes, now)
            sealed += len(rows)
        # Logged (and shipped off the database's host with the other logs): the head to check against
        # later, which is how a trail cut short at its end, or emptied, is found.
        head_log.info("audit chain head %s:%s", seq, previous)


def _write_links(ids: list[int], seqs: list[int], hashes: list[str], sealed_at: datetime) -> None:
    if connection.vendor == "postgresql":  # one statement a batch: thousands of events a second
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE audit_auditevent AS event SET seq = link.seq, chain_hash = link.chain_hash, sealed_at = %s "
                "FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) AS link(id, seq, chain_hash) "
                "WHERE event.id = link.id", [sealed_at, ids, seqs, hashes])
        return
    AuditEvent.objects.bulk_update(
        [AuditEvent(id=id_, seq=seq, chain_hash=chain_hash, sealed_at=sealed_at)
         for id_, seq, chain_hash in zip(ids, seqs, hashes, strict=True)],
        ["seq", "chain_hash", "sealed_at"], batch_size=500)


@dataclass
class Verification:
    checked: int = 0
    unsealed: int = 0
    problems: list[str] = field(default_factory=list)
    late: int = 0  # events chained well after they were written, from seq late_from
    late_from: int | None = None

    @property
    def warning(self) -> str:
        """Events chained late are a sealer outage, or events whose seals were cleared and which the sealer
        chained again: that hides an event removed before them, which only a head logged before then finds."""
        if not self.late:
            return ""
        return (f"{self.late:,} event(s) from seq {self.late_from} were chained more than "
                f"{settings.CAREID_AUDIT_SEAL_TOLERANCE} after they were written: a sealer outage, or seals cleared "
                f"and chained again (which would hide an event removed before them). Check against a head the "
                f"sealer logged before then: --expect-head SEQ:HASH")

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(*, since: datetime | None = None, first_problem_only: bool = True,
           expect_head: tuple[int, str] | None = None) -> Verification:
    """Walk the chain in order (from the first event on or after `since`, and the link into it) and name
    what is broken: an event altered, events removed (a gap, or a broken link), an event inserted or moved,
    an event dated well before one chained ahead of it (backdated: written outside careid) or after it was
    sealed (forward-dated), or events never sealed."""
    result = Verification()
    start_seq, counted_from, previous, latest = 1, 1, GENESIS, None
    if since is not None:
        first = AuditEvent.objects.filter(seq__isnull=False, at__gte=since).aggregate(first=Min("seq"))["first"]
        if first is None:
            # Nothing chained since then, by the dates: the window is empty, and the link into it (below) is the
            # head, which is all there is to read. Every event of the day altered and re-dated into the past
            # would otherwise empty the window unseen.
            head = AuditEvent.objects.filter(seq__isnull=False).aggregate(head=Max("seq"))["head"]
            first = None if head is None else head + 1
        if first is None:
            start_seq = None  # nothing chained at all: only the unsealed events to check
        elif first > 1:
            # The window is found by the events' dates, which whoever alters events can change too: the
            # day's first events, altered and re-dated into the past, would fall out of it. So the link into
            # the window is checked as well: the event before it, against its own predecessor (it is the
            # last of such a run, or a genuine earlier event, which verifies).
            start_seq, counted_from = first - 1, first
            if first > 2:
                before = AuditEvent.objects.filter(seq=first - 2).values_list("chain_hash", "at").first()
                if before is None:
                    result.problems.append(f"The event before seq {first - 1} is missing: events were removed")
                    return result
                previous, latest = before
    tolerance = settings.CAREID_AUDIT_SEAL_TOLERANCE
    expected = start_seq
    for content, seq, chain_hash, sealed_at, mac in _chained(start_seq) if start_seq is not None else ():
        if seq != expected:
            result.problems.append(f"Events seq {expected}–{seq - 1} are missing before event {content['id']}: "
                                   f"they were removed")
            if first_problem_only:
                return result
        recomputed = link(previous, seq, sealed_at, content)
        # careid writes an event before it is sealed (but for clocks a little apart): one dated later was
        # written outside careid, with a date ahead.
        # (A seal time cleared beside its place, which careid never writes, fails the link below.)
        dated_ahead = sealed_at is not None and content["at"] - sealed_at > tolerance
        if not hmac.compare_digest(recomputed, chain_hash):
            result.problems.append(f"Event {content['id']} (seq {seq}, {_text(content['at'])}) does not match its "
                                   f"chain hash: it was altered, moved, or an event before it was removed or changed")
            if first_problem_only:
                return result
        elif dated_ahead:
            result.problems.append(f"Event {content['id']} (seq {seq}) is dated {_text(content['at'])}, after it was "
                                   f"sealed ({_text(sealed_at)}): it was inserted with a date in the future")
            if first_problem_only:
                return result
        elif latest is not None and latest - content["at"] > tolerance:
            # The sealer chains events in the order they were written (id), however late it runs (an outage
            # only delays it); their times follow that order but for transactions committing out of step.
            result.problems.append(f"Event {content['id']} (seq {seq}) is dated {_text(content['at'])}, before an "
                                   f"event chained ahead of it ({_text(latest)}): it was inserted out of order")
            if first_problem_only:
                return result
        elif problem := _not_written_by_careid(content, mac, f"seq {seq}"):
            result.problems.append(problem)
            if first_problem_only:
                return result
        elif content["event"] == Event.AUDIT_HEARTBEAT and sealed_at - content["at"] > tolerance:
            # The sealer writes a heartbeat and chains it in one transaction: chained later, it was chained again
            # after its seal was cleared, with everything after it (which hides an event removed before them).
            result.problems.append(f"Event {content['id']} (seq {seq}), the sealer's heartbeat of "
                                   f"{_text(content['at'])}, was chained again at {_text(sealed_at)}: the seals from "
                                   f"there on were cleared and events before it may have been removed")
            if first_problem_only:
                return result
        chained_late = sealed_at is not None and sealed_at - content["at"] > tolerance
        if chained_late and seq >= counted_from:  # an outage, or seals cleared
            result.late += 1
            result.late_from = result.late_from or seq
        previous, expected = chain_hash, seq + 1
        if not dated_ahead:  # its date would make the genuine events after it look inserted out of order
            latest = content["at"] if latest is None else max(latest, content["at"])
        result.checked += seq >= counted_from  # the link into the window is not one of its events
    if expect_head is not None:
        seq, chain_hash = expect_head
        found = AuditEvent.objects.filter(seq=seq).values_list("chain_hash", flat=True).first()
        if found != chain_hash:
            result.problems.append(f"The chain no longer holds the head logged earlier (seq {seq}): "
                                   + ("its event was removed, with any after it" if found is None else "it was replaced"))
    # The sealer gives places from 1: an event placed before that is neither in the walk above nor unsealed.
    if not (first_problem_only and result.problems):
        outside = AuditEvent.objects.filter(seq__lt=1).order_by("seq").values_list("id", "seq", "at")
        for id_, seq, at in outside[:1] if first_problem_only else outside:
            result.problems.append(f"Event {id_} (seq {seq}, {_text(at)}) has a place before the chain's start, which "
                                   f"the sealer never gives: it was inserted outside careid")
    # Chained or not, an event must be what careid wrote: the sealer chains whatever it finds unsealed. One
    # read of the unsealed events (a few seconds' worth, but for a sealer outage).
    stale, old, old_count, forged = timezone.now() - tolerance, None, 0, []
    rows = AuditEvent.objects.filter(seq__isnull=True).order_by("id").values_list(*CONTENT, "written_mac")
    for *values, mac in rows.iterator(chunk_size=5000):
        content = dict(zip(CONTENT, values, strict=True))
        result.unsealed += 1
        if content["at"] < stale:
            old, old_count = old or content, old_count + 1
        if problem := _not_written_by_careid(content, mac, "not sealed"):
            forged.append(problem)
    if old is not None:
        result.problems.append(f"Event {old['id']} ({_text(old['at'])}) and {old_count - 1} other(s) older than "
                               f"{tolerance} were never sealed: is the sealer running?")
    if not (first_problem_only and result.problems):
        result.problems.extend(forged[:1] if first_problem_only else forged)
    return result


def _not_written_by_careid(content: dict, mac: str, place: str) -> str:
    """What is wrong with an event whose MAC is not the one careid wrote with it ("" if nothing)."""
    if not mac:
        return (f"Event {content['id']} ({place}, {_text(content['at'])}) has no MAC: it was written outside careid "
                f"(or by a release before it, while this release's migration ran: README)")
    if not hmac.compare_digest(written_mac(content), mac):
        return (f"Event {content['id']} ({place}, {_text(content['at'])}) does not match what careid wrote: "
                f"altered, or written outside careid")
    return ""


def _chained(start_seq: int) -> Iterator[tuple[dict, int, str, datetime, str]]:
    rows = (AuditEvent.objects.filter(seq__gte=start_seq).order_by("seq")
            .values_list(*CONTENT, "seq", "chain_hash", "sealed_at", "written_mac"))
    with transaction.atomic():  # a server-side cursor that streams (why: audit/export.export_lines)
        for *content, seq, chain_hash, sealed_at, mac in rows.iterator(chunk_size=5000):
            yield dict(zip(CONTENT, content, strict=True)), seq, chain_hash, sealed_at, mac

