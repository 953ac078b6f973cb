"""`manage.py onboard_users` and `export_users`: what the operator sees and what the database holds."""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from allauth.account.models import EmailAddress
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from accounts import onboarding
from accounts.models import User
from audit import chain
from audit.models import AuditEvent, Event, Outcome
from authenticators.models import RegistrationLink

from .conftest import require

ROOT = Path(__file__).resolve().parent.parent
HEADER = "email,title,first_name,last_name,uid,external_id\n"
NOT_ALLOWED = "This email domain is not on the Care Identity allow list"
BAD_EMAIL = "Enter an email address in the correct format, like name@example.nhs.net"


@dataclass
class Run:
    status: int
    out: str
    err: str
    error: str  # the CommandError message, if any

    @property
    def summary(self) -> dict[str, str]:
        lines = (re.match(r"(read|valid|created|skipped \(exists\)|rejected|time|invitations queued|to invite)"
                          r"\s{2,}(.*)", line) for line in self.out.splitlines())
        return {match[1]: match[2] for match in lines if match}

    def counts(self) -> tuple[int, ...]:
        """(read, valid, created, skipped, rejected) as the summary shows them."""
        summary = self.summary
        return tuple(int(summary[label].split()[0].replace(",", ""))
                     for label in ("read", "valid", "created", "skipped (exists)", "rejected"))

    @property
    def problems(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("line ")]


def run_command(name: str, *args: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(name, *args, stdout=out, stderr=err)
    except CommandError as error:
        return Run(error.returncode, out.getvalue(), err.getvalue(), str(error))
    return Run(0, out.getvalue(), err.getvalue(), "")


@pytest.fixture
def onboard(tmp_path):
    """Write `content` (text as UTF-8, or bytes as they are) to a file and onboard it."""

    def run(content: str | bytes, *options: str, name: str = "staff.csv") -> Run:
        path = tmp_path / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return run_command("onboard_users", str(path), "--operator", "ra.manager", *options)

    return run


def nothing_written() -> bool:
    return not (User.objects.exists() or EmailAddress.objects.exists()
                or AuditEvent.objects.exclude(event=Event.ONBOARDING_RUN).exists())


def test_a_valid_file_creates_each_person_with_an_unverified_address_and_audit_events(db, onboard, mailbox):
    run = onboard(
        HEADER
        + "Mary.Seacole@NHS.net,Ms,Mary,Seacole,,ESR-1\n"
        + "edith.cavell@leeds.nhs.uk,,Edith,Cavell,123456789012,\n"
        + "aneurin.bevan@nhs.net,Dr,Aneurin,Bevan,,ESR-3\n"
    )
    assert run.status == 0, run.err + run.error
    assert run.counts() == (3, 3, 3, 0, 0)
    assert re.fullmatch(r"\d+\.\d s \([\d,]+ rows/s\)", run.summary["time"])
    assert run.problems == []
    mary, edith, aneurin = User.objects.order_by("pk")
    assert (mary.email, mary.title, mary.first_name, mary.last_name, mary.external_id) == (
        "mary.seacole@nhs.net", "Ms", "Mary", "Seacole", "ESR-1")
    assert edith.uid == "123456789012" and edith.external_id == ""
    assert all(re.fullmatch(r"[1-9]\d{11}", user.uid) for user in (mary, aneurin))
    for user in (mary, edith, aneurin):
        assert user.status == User.Status.ACTIVE and not user.is_staff and not user.is_superuser
        assert not user.has_usable_password() and user.invited_at is None
        address = EmailAddress.objects.get(user=user)
        assert (address.email, address.primary, address.verified) == (user.email, True, False)
    run_event = AuditEvent.objects.get(event=Event.ONBOARDING_RUN)
    assert run_event.outcome == Outcome.SUCCESS
    assert run_event.details | {"file": "", "sha256": ""} == {
        "operator": "ra.manager", "file": "", "sha256": "", "read": 3, "valid": 3, "created": 3, "exists": 0,
        "rejected": 0, "skip_invalid": False, "invite": False}
    assert run_event.details["file"].endswith("staff.csv") and len(run_event.details["sha256"]) == 64
    onboarded = AuditEvent.objects.filter(event=Event.USER_ONBOARDED).order_by("subject_id")
    assert [(event.subject, event.details) for event in onboarded] == [
        (mary, {"run": run_event.pk, "line": 2, "email": "mary.seacole@nhs.net"}),
        (edith, {"run": run_event.pk, "line": 3, "email": "edith.cavell@leeds.nhs.uk"}),
        (aneurin, {"run": run_event.pk, "line": 4, "email": "aneurin.bevan@nhs.net"}),
    ]
    # Inserted from the staging table with the MAC careid computed for each: verify_audit finds them its own.
    assert all(event.written_mac for event in onboarded) and chain.verify().ok, chain.verify().problems
    assert mailbox.messages == []  # no --invite, no e-mail


def test_every_kind_of_bad_row_is_reported_with_its_line_and_nothing_is_written(db, onboard, make_person, tmp_path):
    taken = make_person(email="taken@nhs.net", external_id="ESR-TAKEN", uid="555555555555").user
    other = make_person(email="other@nhs.net", uid="666666666666").user
    verified_elsewhere = EmailAddress.objects.create(user=taken, email="second@nhs.net", verified=True)
    rows = [
        "good@nhs.net,,Good,Row,,",
        "not-an-address,,A,B,,",
        "someone@example.com,,=cmd|' /C calc'!A0,B,,",
        ",,A,B,,",
        "a1@nhs.net,,,B,,",
        "a2@nhs.net,,A,   ,,",
        f"a3@nhs.net,{'T' * 36},{'F' * 101},{'L' * 101},,{'E' * 65}",
        f"{'x' * 250}@nhs.net,,A,B,,",
        'a4@nhs.net,,"Bell\x07",B,,',
        "a5@nhs.net,,A,B,0123,",
        "a6@nhs.net,,A,B,12345678901x,",
        "a7@nhs.net,,A,B,,,extra",
        "a8@nhs.net,,A",
        "GOOD@nhs.net,,Again,Row,,",
        "a9@nhs.net,,A,B,123456789012,ESR-9",
        "a10@nhs.net,,A,B,123456789012,ESR-9",
        "a11@nhs.net,,A,B,,ESR-TAKEN",
        f"taken@nhs.net,,A,B,{other.uid},",
        f"{verified_elsewhere.email},,A,B,,",
    ]
    report = tmp_path / "rejects.csv"
    run = onboard(HEADER + "\n".join(rows) + "\n", "--report", str(report))

    assert run.status == 1
    assert run.problems == [
        f"line 3: {BAD_EMAIL}",
        f"line 4: {NOT_ALLOWED}",
        "line 5: Enter an email address",
        "line 6: Enter a first name",
        "line 7: Enter a last name",
        "line 8: Title must be 35 characters or fewer; First name must be 100 characters or fewer; "
        "Last name must be 100 characters or fewer; External ID must be 64 characters or fewer",
        "line 9: Email address must be 254 characters or fewer",
        "line 10: First name must not contain control or invisible characters",
        "line 11: UID must be 12 digits, not starting with 0",
        "line 12: UID must be 12 digits, not starting with 0",
        "line 13: Expected 6 values, as in the header, found 7",
        "line 14: Expected 6 values, as in the header, found 3",
        "line 15: Same email address as line 2",
        "line 17: Same UID as line 16; Same external ID as line 16",
        f"line 18: External ID already belongs to Care Identity {taken.uid}",
        f"line 19: The email address belongs to Care Identity {taken.uid} but the UID to another",
        f"line 20: This email address is verified on another Care Identity (UID {taken.uid})",
    ]
    assert run.error == ("17 rows were rejected, so nothing was written. Correct the file and run the command "
                         "again, or use --skip-invalid to import only the valid rows.")
    assert run.counts() == (19, 2, 0, 0, 17)
    assert set(User.objects.all()) == {taken, other} and EmailAddress.objects.count() == 3
    assert not AuditEvent.objects.filter(event=Event.USER_ONBOARDED).exists()
    failure = AuditEvent.objects.get(event=Event.ONBOARDING_RUN)
    assert failure.outcome == Outcome.FAILURE and failure.details["rejected"] == 17
    assert failure.details["reason"].startswith("17 rows were rejected")

    with report.open(encoding="utf-8-sig", newline="") as file:
        reported = list(csv.DictReader(file))
    assert [row["line"] for row in reported] == [problem.split(":")[0][5:] for problem in run.problems]
    assert {row["outcome"] for row in reported} == {"rejected"}
    assert reported[0] == {"line": "3", "outcome": "rejected", "reason": BAD_EMAIL, "email": "not-an-address",
                           "title": "", "first_name": "A", "last_name": "B", "uid": "", "external_id": ""}
    assert reported[1]["first_name"] == "'=cmd|' /C calc'!A0"  # a spreadsheet shows it, never runs it
    assert stat.S_IMODE(report.stat().st_mode) == 0o600  # it holds personal data


def test_a_header_alone_imports_nothing_and_succeeds(db, onboard):
    run = onboard(HEADER)
    assert run.status == 0 and run.counts() == (0, 0, 0, 0, 0)
    assert not User.objects.exists()


@pytest.mark.parametrize(("header", "message"), [
    ("email,first_name,last_name,is_staff\n",
     "Line 1 (the header): unknown column is_staff. The columns are email, title, first_name, last_name, uid, "
     "external_id (email, first_name, last_name required). Nothing was written."),
    ("email,first_name\n", "Line 1 (the header): missing column last_name."),
    ("email,first_name,last_name,email\n", "Line 1 (the header): column email more than once."),
    ("email,first_name,last_name,\n", "Line 1 (the header): unknown column (column 4 has no name)."),
])
def test_a_header_with_unknown_missing_or_repeated_columns_is_refused(db, onboard, header, message):
    run = onboard(header + "a@nhs.net,A,B,C\n")
    assert run.status == 1 and message in run.error
    assert nothing_written()
    assert AuditEvent.objects.get(event=Event.ONBOARDING_RUN).outcome == Outcome.FAILURE


def test_header_names_are_read_in_any_case_and_order_with_a_bom_and_crlf(db, onboard):
    run = onboard("\ufeff Last_Name ,EMAIL,First_name\r\nSeacole,mary@nhs.net,Mary\r\n")
    assert run.status == 0, run.err + run.error
    user = User.objects.get()
    assert (user.email, user.first_name, user.last_name, user.title) == ("mary@nhs.net", "Mary", "Seacole", "")


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\n\n  \n", b",,\n"])
def test_an_empty_file_is_refused(db, onboard, content):
    run = onboard(content)
    assert run.status == 1
    assert run.error == ("The file is empty: the first line must name the columns, at least email, first_name, "
                         "last_name. Nothing was written.")
    assert nothing_written()


def test_quoted_values_keep_commas_and_quotes_and_lines_count_as_in_an_editor(db, onboard):
    run = onboard(
        HEADER
        + 'mary@nhs.net,,"Mary\nJane","Seacole, ""Mother""",,\n'  # lines 2-3
        + '"edith@nhs.net",,"Edith","Cavell\r\n\r\nJones",,\n'  # lines 4-6
        + "bad,,A,B,,\n",  # line 7
        "--skip-invalid",
    )
    assert run.status == 0
    assert run.problems == [f"line 7: {BAD_EMAIL}"]
    mary, edith = User.objects.order_by("pk")
    # A line break typed into a spreadsheet cell is spacing, never part of a name.
    assert (mary.first_name, mary.last_name) == ("Mary Jane", 'Seacole, "Mother"')
    assert edith.last_name == "Cavell Jones"
    assert list(AuditEvent.objects.filter(event=Event.USER_ONBOARDED).order_by("pk")
                .values_list("details__line", flat=True)) == [2, 4]


def test_a_broken_quote_stops_the_run_at_its_line(db, onboard):
    run = onboard(HEADER + "a@nhs.net,,A,B,,\n" + 'b@nhs.net,,"B"x,C,,\n', "--skip-invalid")
    assert run.status == 1
    assert run.error.startswith("Line 3 is not valid CSV (")
    assert run.error.endswith("Nothing was written.")
    assert nothing_written()


def test_bytes_that_are_not_utf8_are_refused_whole_even_with_skip_invalid(db, onboard):
    content = (HEADER + "mary@nhs.net,,Mary,Seacole,,\n").encode() + "zoe@nhs.net,,Zoë,Brontë,,\n".encode("cp1252")
    for options in ((), ("--skip-invalid",)):
        run = onboard(content, *options)
        assert run.status == 1
        assert run.problems == ["line 3: Contains bytes that are not UTF-8 text"]
        assert run.error == ("The file is not UTF-8 text (line 3). Save it as CSV UTF-8 and run the command "
                             "again; nothing was written.")
        assert nothing_written()


def test_a_utf16_file_is_refused_at_its_header(db, onboard):
    run = onboard((HEADER + "mary@nhs.net,,Mary,Seacole,,\n").encode("utf-16"))
    assert run.status == 1
    assert run.error == "Line 1 (the header) is not UTF-8 text. Save the file as CSV UTF-8. Nothing was written."
    assert nothing_written()


def test_duplicate_rows_are_rejected_after_the_first(db, onboard):
    line = "mary@nhs.net,,Mary,Seacole,123456789012,ESR-1\n"
    run = onboard(HEADER + line + line + line.upper())
    assert run.status == 1
    duplicate = "Same email address as line 2; Same UID as line 2; Same external ID as line 2"
    assert run.problems == [f"line 3: {duplicate}", f"line 4: {duplicate}"]
    assert nothing_written()

    run = onboard(HEADER + line + line, "--skip-invalid")
    assert run.status == 0 and run.counts() == (2, 1, 1, 0, 1)
    assert User.objects.get().uid == "123456789012"


def test_a_re_run_creates_nothing_and_says_what_exists(db, onboard, tmp_path):
    content = HEADER + "mary@nhs.net,,Mary,Seacole,,\nedith@nhs.net,,Edith,Cavell,123456789012,\n"
    assert onboard(content).status == 0
    first = {user.email: user.uid for user in User.objects.all()}

    run = onboard(content)
    assert run.status == 0 and run.counts() == (2, 2, 0, 2, 0)
    assert "already exists" not in run.out + run.err  # counted; listed only when asked

    report = tmp_path / "report.csv"
    run = onboard(content + "florence@nhs.net,,Florence,Nightingale,,\n", "-v", "2", "--report", str(report))
    assert run.status == 0 and run.counts() == (3, 3, 1, 2, 0)
    assert f"line 2: A Care Identity with this email address already exists (UID {first['mary@nhs.net']})" in run.out
    with report.open(encoding="utf-8-sig", newline="") as file:
        assert [(row["line"], row["outcome"]) for row in csv.DictReader(file)] == [("2", "exists"), ("3", "exists")]
    assert {user.email: user.uid for user in User.objects.exclude(email="florence@nhs.net")} == first
    assert User.objects.count() == 3 and EmailAddress.objects.count() == 3
    assert AuditEvent.objects.filter(event=Event.USER_ONBOARDED).count() == 3

    # A UID that is already someone's means that person exists, whatever address the file has.
    run = onboard(HEADER + "edith.cavell@nhs.net,,Edith,Cavell,123456789012,\n", "-v", "2")
    assert run.status == 0 and run.counts() == (1, 1, 0, 1, 0)
    assert "line 2: A Care Identity with this UID already exists, with another email address" in run.out

    # The import never changes anyone: a different UID for a known address is said, not applied.
    run = onboard(HEADER + "mary@nhs.net,,Mary,Seacole,999999999999,\n", "-v", "2")
    assert run.status == 0 and run.counts() == (1, 1, 0, 1, 0)
    assert f"(UID {first['mary@nhs.net']}), not UID 999999999999" in run.out
    assert User.objects.get(email="mary@nhs.net").uid == first["mary@nhs.net"]


def test_a_dry_run_checks_everything_and_writes_nothing(db, onboard):
    run = onboard(HEADER + "mary@nhs.net,,Mary,Seacole,,\n", "--dry-run", "--invite")
    assert run.status == 0
    assert run.summary["created"] == "0 (dry run: 1 would be created)" and run.summary["to invite"] == "1"
    assert "Dry run: nothing was written." in run.out
    assert not User.objects.exists() and not AuditEvent.objects.exists()

    run = onboard(HEADER + "mary@nhs.net,,Mary,Seacole,,\nbad,,A,B,,\n", "--dry-run")
    assert run.status == 1 and run.problems == [f"line 3: {BAD_EMAIL}"]
    assert not User.objects.exists() and not AuditEvent.objects.exists()


def test_skip_invalid_writes_the_valid_rows_and_reports_the_rest(db, onboard):
    run = onboard(HEADER + "mary@nhs.net,,Mary,Seacole,,\nbad,,A,B,,\nedith@nhs.net,,Edith,Cavell,,\n",
                  "--skip-invalid")
    assert run.status == 0 and run.counts() == (3, 2, 2, 0, 1)
    assert run.problems == [f"line 3: {BAD_EMAIL}"]
    assert set(User.objects.values_list("email", flat=True)) == {"mary@nhs.net", "edith@nhs.net"}
    assert AuditEvent.objects.get(event=Event.ONBOARDING_RUN).details["rejected"] == 1


def test_other_delimiters_and_standard_input(db, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"email;first_name;last_name\nm@nhs.net;M;S\n")))
    run = run_command("onboard_users", "-", "--delimiter", ";")
    assert run.status == 0 and User.objects.get().email == "m@nhs.net"
    assert AuditEvent.objects.get(event=Event.ONBOARDING_RUN).details["file"] == "<stdin>"

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"email\tfirst_name\tlast_name\nt@nhs.net\tT\tS\n")))
    assert run_command("onboard_users", "-", "--delimiter", "tab").status == 0
    assert User.objects.filter(email="t@nhs.net").exists()


def test_a_missing_file_is_a_clear_error(db, tmp_path):
    run = run_command("onboard_users", str(tmp_path / "nope.csv"))
    assert run.status == 1 and run.error == f"Cannot read {tmp_path / 'nope.csv'}: No such file or directory."


def test_the_report_never_overwrites_the_file_being_imported(db, tmp_path):
    path = tmp_path / "staff.csv"
    path.write_text(HEADER + "mary@nhs.net,,Mary,Seacole,,\n")
    run = run_command("onboard_users", str(path), "--report", str(tmp_path / "." / "staff.csv"))
    assert run.status == 1 and "would overwrite the file being imported" in run.error
    assert path.read_text().startswith(HEADER) and not User.objects.exists()

    run = run_command("onboard_users", str(path), "--report", str(tmp_path / "no-such-folder" / "r.csv"))
    assert run.status == 1 and run.error.startswith("Cannot write ") and not User.objects.exists()


def test_a_generated_uid_that_is_taken_is_generated_again(db, onboard, make_person, monkeypatch):
    taken = make_person(uid="444444444444").user
    uids = iter(["444444444444", "333333333333", "333333333333", "222222222222", "111111111111", "777777777777"])
    monkeypatch.setattr(onboarding, "generate_uid", lambda: next(uids))
    run = onboard(HEADER + "a@nhs.net,,A,B,,\nb@nhs.net,,A,B,,\nc@nhs.net,,A,B,,\n")
    assert run.status == 0
    created = User.objects.exclude(pk=taken.pk)
    assert len({user.uid for user in created} | {taken.uid}) == 4


def test_a_care_identity_created_meanwhile_fails_the_run_cleanly(db, onboard, monkeypatch):
    write = onboarding._Staging.write

    def someone_else_creates_mary_first(self, **kwargs):
        User.objects.create_user("mary@nhs.net", first_name="Mary", last_name="Seacole")
        return write(self, **kwargs)

    monkeypatch.setattr(onboarding._Staging, "write", someone_else_creates_mary_first)
    run = onboard(HEADER + "mary@nhs.net,,Mary,Seacole,,\nedith@nhs.net,,Edith,Cavell,,\n")
    assert run.status == 1 and "was created while this run was checking the file" in run.error
    assert nothing_written()


def test_ctrl_c_writes_nothing(db, onboard, monkeypatch):
    staged_row = onboarding._RowChecker.staged_row

    def interrupt_at_line_3(self, line, values):
        if line == 3:
            raise KeyboardInterrupt
        return staged_row(self, line, values)

    monkeypatch.setattr(onboarding._RowChecker, "staged_row", interrupt_at_line_3)
    run = onboard(HEADER + "mary@nhs.net,,Mary,Seacole,,\nedith@nhs.net,,Edith,Cavell,,\n")
    assert run.status == 130 and run.error.startswith("Interrupted. The import is all or nothing")
    assert nothing_written()
    assert AuditEvent.objects.get(event=Event.ONBOARDING_RUN).details["reason"] == "interrupted"


# --- invitations ---------------------------------------------------------------------------------


def test_invite_emails_every_new_person_after_the_commit_and_a_re_run_invites_nobody_twice(
    transactional_db, seeded_allow_list, onboard, mailbox
):
    content = HEADER + "mary@nhs.net,,Mary,Seacole,,\nedith@nhs.net,,Edith,Cavell,,\n"
    run = onboard(content, "--invite")
    assert run.status == 0 and run.summary["invitations queued"] == "2"
    for address in ("mary@nhs.net", "edith@nhs.net"):
        mailbox.wait_for(address, "Set up your NHS Care Identity")
        user = User.objects.get(email=address)
        assert user.invited_at is not None
        assert RegistrationLink.objects.filter(user=user, purpose=RegistrationLink.Purpose.INVITATION).count() == 1

    run = onboard(content + "florence@nhs.net,,Florence,Nightingale,,\n", "--invite")
    assert run.status == 0 and run.summary["invitations queued"] == "1"
    mailbox.wait_for("florence@nhs.net", "Set up your NHS Care Identity")
    assert len(mailbox.messages) == 3 and RegistrationLink.objects.count() == 3


def test_an_invitation_that_cannot_be_queued_is_sent_by_the_next_run(
    transactional_db, seeded_allow_list, onboard, mailbox, monkeypatch
):
    from accounts import tasks

    def broker_down(user_ids):
        raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")

    content = HEADER + "mary@nhs.net,,Mary,Seacole,,\n"
    with monkeypatch.context() as patched:
        patched.setattr(tasks.send_invitations_task, "delay", broker_down)
        run = onboard(content, "--invite")
    assert run.status == 1
    assert run.error == ("Could not queue invitations (Error 111 connecting to redis:6379. Connection refused.): "
                         "1 Care Identity of this file is not invited yet. Run the command again with --invite "
                         "to invite them.")
    assert run.summary["created"] == "1" and User.objects.get().invited_at is None

    run = onboard(content, "--invite")
    assert run.status == 0 and run.counts() == (1, 1, 0, 1, 0) and run.summary["invitations queued"] == "1"
    mailbox.wait_for("mary@nhs.net", "Set up your NHS Care Identity")
    assert User.objects.get().invited_at is not None


def test_invite_sends_nothing_to_an_address_whose_domain_has_left_the_allow_list(
    transactional_db, seeded_allow_list, onboard, mailbox
):
    """Mary was onboarded, not invited, at an address of a domain the RA Manager has since taken off the allow list.
    The next HR export has her new address and her UID: she exists, and --invite e-mailed her invitation (a link that
    registers an authenticator on her Care Identity) to the old address, which invite_user and the RA's forms refuse."""
    from accounts.models import AllowedEmailDomain, OutgoingEmail

    assert onboard(HEADER + "mary.seacole@yahoo.com,,Mary,Seacole,123456789012,\n").status == 0
    AllowedEmailDomain.objects.filter(domain="yahoo.com").delete()
    run = onboard(HEADER + "mary.seacole@nhs.net,,Mary,Seacole,123456789012,\n", "--invite")
    assert run.status == 0 and run.counts() == (1, 1, 0, 1, 0)
    mary = User.objects.get(uid="123456789012")
    assert mary.email == "mary.seacole@yahoo.com" and mary.invited_at is None
    assert not RegistrationLink.objects.exists() and not OutgoingEmail.objects.exists()
    refused = AuditEvent.objects.get(event=Event.EMAIL_REFUSED, subject=mary)
    assert refused.outcome == Outcome.FAILURE
    assert refused.details == {"email": "mary.seacole@yahoo.com", "via": "invitation", "reason": "not on the allow list"}
    assert not AuditEvent.objects.filter(event=Event.USER_INVITED).exists()
    assert mailbox.messages == []


def test_the_invitation_task_skips_people_already_invited_or_not_active(db, make_person, mailbox):
    from accounts.tasks import send_invitations_task

    invited = make_person(email="invited@nhs.net").user
    User.objects.filter(pk=invited.pk).update(invited_at=timezone.now())
    suspended = make_person(email="suspended@nhs.net", status=User.Status.SUSPENDED).user
    send_invitations_task([invited.pk, suspended.pk])
    assert not RegistrationLink.objects.exists()


# --- any input at all ------------------------------------------------------------------------------

_ODD_VALUES = st.sampled_from([
    "", " ", "bad", "a@b", "x@example.com", "=cmd|' /C calc'!A0", "'=1+1", "Seacole, Mary", 'say "hi"', "line\nbreak",
    "\x00", "\x07", "Zoë", "023456789012", "T" * 120,
]) | st.text(max_size=12)


def _mostly(usual: st.SearchStrategy, rarely: st.SearchStrategy) -> st.SearchStrategy:
    return st.integers(0, 9).flatmap(lambda roll: rarely if roll == 0 else usual)


_VALUES = {
    "email": _mostly(st.integers(0, 10**6).map(lambda n: f"person.{n}@nhs.net"), st.just("MARY@Leeds.NHS.uk")),
    "title": st.sampled_from(["", "Dr", "Ms"]),
    "first_name": st.sampled_from(["Mary", "Anne-Marie", "Zoë"]),
    "last_name": st.sampled_from(["Seacole", "O'Brien", "Ní Bhriain"]),
    "uid": _mostly(st.just(""), st.integers(10**11, 10**11 + 99).map(str)),
    "external_id": _mostly(st.just(""), st.integers(0, 99).map(lambda n: f"ESR-{n}")),
}


@st.composite
def _csv_like(draw) -> bytes:
    """Mostly plausible rows (so that some runs create people), with odd values, odd columns and
    odd row lengths mixed in."""
    names = draw(_mostly(st.permutations(onboarding.COLUMNS), st.lists(
        st.sampled_from([*onboarding.COLUMNS, "is_staff", ""]), min_size=1, max_size=7)))
    rows = []
    for _ in range(draw(st.integers(0, 8))):
        row = [draw(_mostly(_VALUES.get(name, _ODD_VALUES), _ODD_VALUES)) for name in names]
        shape = draw(st.sampled_from(["as header"] * 8 + ["short", "long"]))
        rows.append(row[:-1] if shape == "short" else row + ["x"] if shape == "long" else row)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(names)
    writer.writerows(rows)
    return (draw(st.sampled_from(["", "\ufeff"])) + text.getvalue()).encode("utf-8", "surrogatepass")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(_csv_like(), _csv_like(), st.binary(max_size=200),
                         st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass"))),
       skip_invalid=st.booleans())
def test_any_input_gets_a_clear_answer_and_never_partial_data(db, onboard, content, skip_invalid):
    before = (User.objects.count(), EmailAddress.objects.count(),
              AuditEvent.objects.filter(event=Event.USER_ONBOARDED).count())
    run = onboard(content, *(["--skip-invalid"] if skip_invalid else []))
    assert run.status in (0, 1), run
    assert "Traceback" not in run.err
    created = run.counts()[2] if run.status == 0 else 0
    after = (User.objects.count(), EmailAddress.objects.count(),
             AuditEvent.objects.filter(event=Event.USER_ONBOARDED).count())
    assert after == tuple(count + created for count in before)
    event(f"exit {run.status}, {'some' if created else 'none'} created")
    if run.status == 1:
        assert run.error


# --- a killed process ------------------------------------------------------------------------------


@pytest.mark.services
def test_a_killed_run_leaves_nothing_and_a_re_run_creates_exactly_one_user_per_row(
    transactional_db, seeded_allow_list, tmp_path
):
    require(connection.vendor == "postgresql", "PostgreSQL (the command runs in a process of its own)")
    rows = 20_000
    path = tmp_path / "staff.csv"
    path.write_text(HEADER + "".join(f"person.{n}@nhs.net,,Person,Number {n},,ESR-{n}\n" for n in range(rows)))
    db = connection.settings_dict
    environment = {**os.environ, "PYTHONUNBUFFERED": "1",
                   "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
    process = subprocess.Popen([sys.executable, "manage.py", "onboard_users", str(path)], cwd=ROOT, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    for line in process.stdout:
        output.append(line)
        if line.startswith("Writing"):
            process.send_signal(signal.SIGKILL)  # mid-write: no handler, no clean-up, like a crash
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(output)
    assert not User.objects.exists() and not AuditEvent.objects.exists()

    run = run_command("onboard_users", str(path))
    assert run.status == 0, run.err + run.error
    assert run.counts() == (rows, rows, rows, 0, 0)
    assert User.objects.count() == rows
    assert User.objects.values("email").distinct().count() == rows
    assert EmailAddress.objects.count() == rows
    assert AuditEvent.objects.filter(event=Event.USER_ONBOARDED).count() == rows


# --- export, and importing it again ---------------------------------------------------------------


def test_export_is_formula_safe_and_imports_back_to_the_same_people(db, onboard, tmp_path):
    people = [
        ("mary@nhs.net", "Ms", "Mary", "=HYPERLINK(\"http://evil\")", "ESR-1"),
        ("edith@nhs.net", "", "'=Edith", "+Cavell, \"E\"", ""),
        ("aneurin@nhs.net", "Dr", "-Aneurin", "@Bevan", "\tESR-3"),
        ("zoe@nhs.net", "", "Zoë", "O'Brien", "ESR-4"),
    ]
    for email, title, first_name, last_name, external_id in people:
        User.objects.create_user(email, first_name=first_name, last_name=last_name, title=title,
                                 external_id=external_id)
    suspended = User.objects.create_user("suspended@nhs.net", first_name="S", last_name="S",
                                         status=User.Status.SUSPENDED)
    before = list(User.objects.exclude(pk=suspended.pk).order_by("pk").values_list(*onboarding.COLUMNS))

    path = tmp_path / "export.csv"
    run = run_command("export_users", "--status", "active", "--operator", "auditor", str(path))
    assert run.status == 0 and run.out.strip() == f"Exported 4 Care Identities to {path}."
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with path.open(encoding="utf-8-sig", newline="") as file:
        exported = list(csv.reader(file))
    assert exported[0] == list(onboarding.COLUMNS)
    cells = [cell for row in exported[1:] for cell in row]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert exported[1][3] == "'=HYPERLINK(\"http://evil\")" and exported[2][2] == "''=Edith"
    event = AuditEvent.objects.get(event=Event.USERS_EXPORTED)
    assert event.details == {"operator": "auditor", "file": str(path), "count": 4, "statuses": ["active"]}

    # Importing the export again: everyone exists already.
    run = onboard(path.read_bytes(), "-v", "2")
    assert run.status == 0 and run.counts() == (4, 4, 0, 4, 0)

    # Into an empty service: the same people, with the same UIDs.
    User.objects.all().delete()
    run = onboard(path.read_bytes())
    assert run.status == 0, run.err + run.error
    assert list(User.objects.order_by("pk").values_list(*onboarding.COLUMNS)) == [
        (email, title, " ".join(first.split()), " ".join(last.split()), uid, external.strip())
        for email, title, first, last, uid, external in before
    ]


def test_export_to_standard_output(db, make_person):
    make_person(email="mary@nhs.net")
    run = run_command("export_users", "-")
    lines = run.out.splitlines()
    assert lines[0] == ",".join(onboarding.COLUMNS) and lines[1].startswith("mary@nhs.net,,Edith,Cavell,")
    assert run.err.strip() == "Exported 1 Care Identity."


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "'=1", "''+1", "'", "'x", "x=1", ""])
def test_cell_escaping_is_undone_exactly(value):
    escaped = onboarding.escape_cell(value)
    assert not escaped.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert onboarding.unescape_cell(escaped) == value


# --- progress ---------------------------------------------------------------------------------------


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_otherwise(monkeypatch):
    from accounts.management import output

    clock = iter([0.0, 1.0, 20.0, 21.0])
    monkeypatch.setattr(output.time, "monotonic", lambda: next(clock))
    written: list[str] = []
    bar = output.Progress(written.append, interactive=True, total_bytes=1000)
    bar.advance(500, 250)  # 1 s in: 500 rows/s, a quarter of the file, 3 s to go
    assert written == ["\r 25% [########                      ] 500 rows  500 rows/s  ETA 0:00:03\x1b[K"]

    clock = iter([0.0, 1.0, 10.0, 11.0])
    monkeypatch.setattr(output.time, "monotonic", lambda: next(clock))
    written.clear()
    plain = output.Progress(written.append, interactive=False, total_bytes=None)
    plain.advance(100, 10)  # 1 s in: too soon for a line
    plain.advance(5000, 500)
    plain.phase("Writing")
    assert written == ["Read 5,000 rows, 500 rows/s\n", "Writing...\n"]


@pytest.mark.parametrize("character", ["\u202e", "\u200b", "\u2066", "\x1b"], ids=ascii)
def test_names_with_bidi_or_invisible_characters_are_refused(db, onboard, character):
    run = onboard(HEADER + f"a1@nhs.net,Dr{character},A,B,,\na2@nhs.net,,A,B{character}C,,\n"
                           f"a3@nhs.net,,A,B,,ESR{character}1\n")
    assert run.status == 1
    assert run.problems == ["line 2: Title must not contain control or invisible characters",
                            "line 3: Last name must not contain control or invisible characters",
                            "line 4: External ID must not contain control or invisible characters"]
    assert not User.objects.exists()
