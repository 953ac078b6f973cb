from __future__ import annotations

import argparse
import csv
import os
import stat
import sys
from contextlib import ExitStack
from typing import BinaryIO, TextIO

from django.core.management.base import BaseCommand, CommandError

from accounts import onboarding
from accounts.management.output import Progress, open_private, os_user


def _delimiter(value: str) -> str:
    value = {"tab": "\t", "\\t": "\t"}.get(value.lower(), value)
    if len(value) != 1 or value in "\"'\r\n":
        raise argparse.ArgumentTypeError("one character, such as , or ; or tab")
    return value


class Command(BaseCommand):
    help = (
        "Create Care Identities from a CSV file (an HR export) with the columns email, first_name, last_name "
        "and optionally title, uid, external_id. Every row is checked first: any rejected row and nothing is "
        "written (unless --skip-invalid). Rows that are already Care Identities are skipped, so a re-run "
        "creates nothing twice."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="the CSV file (UTF-8, with or without BOM, a header line); - reads stdin")
        parser.add_argument("--dry-run", action="store_true", help="check and report everything, write nothing")
        parser.add_argument("--skip-invalid", action="store_true",
                            help="create the valid rows even when others are rejected")
        parser.add_argument("--invite", action="store_true",
                            help="then e-mail an invitation to every Care Identity of the file never invited before")
        parser.add_argument("--delimiter", type=_delimiter, default=",",
                            help="the field separator (default ,; tab for tab)")
        parser.add_argument("--report", metavar="REJECTS.csv",
                            help="write every rejected or existing row, with the reason, to this CSV file")
        parser.add_argument("--operator", default=os_user(),
                            help="who runs the import, for the audit trail (default: the OS user name)")

    def handle(self, *args, file: str, dry_run: bool, skip_invalid: bool, invite: bool, delimiter: str,
               report: str | None, operator: str, verbosity: int, **options) -> None:
        if report and _same_file(file, report):
            raise CommandError("The report would overwrite the file being imported: choose another --report file.")
        with ExitStack() as stack:
            source = self._open(file, stack)
            report_writer = csv.writer(self._create(report, stack)) if report else None
            if report_writer:
                report_writer.writerow(["line", "outcome", "reason", *onboarding.COLUMNS])

            def report_row(row: onboarding.ReportedRow) -> None:
                if row.outcome == onboarding.REJECTED:
                    self.stderr.write(f"line {row.line}: {row.reason}")
                elif verbosity > 1:
                    self.stdout.write(f"line {row.line}: {row.reason}")
                if report_writer:
                    report_writer.writerow([row.line, row.outcome, *map(onboarding.escape_cell, [
                        row.reason, *row.values.values()])])

            progress = Progress(self._write_progress, interactive=self.stderr.isatty(), total_bytes=_size(source))
            try:
                summary = onboarding.onboard_users(
                    source, file_name="<stdin>" if file == "-" else os.path.abspath(file), operator=operator,
                    delimiter=delimiter, dry_run=dry_run, skip_invalid=skip_invalid, invite=invite,
                    report=report_row, report_existing=bool(report) or verbosity > 1,
                    progress=progress if verbosity else None,
                )
            except onboarding.OnboardingError as error:
                progress.finish()
                raise CommandError(f"{error} Nothing was written.") from None
            except KeyboardInterrupt:
                progress.finish()
                raise CommandError(
                    "Interrupted. The import is all or nothing: run the same command again to finish the job "
                    "(rows already written are skipped as existing, and --invite invites only people never invited).",
                    returncode=130,
                ) from None
            progress.finish()
        self._print_summary(summary, dry_run=dry_run, invite=invite, report=report)
        if summary.refusal:
            raise CommandError(summary.refusal)
        if summary.invitation_error:
            waiting = summary.invitations_not_queued
            raise CommandError(
                f"Could not queue invitations ({summary.invitation_error}): {waiting:,} Care "
                f"{'Identity' if waiting == 1 else 'Identities'} of this file {'is' if waiting == 1 else 'are'} not "
                "invited yet. Run the command again with --invite to invite them."
            )

    def _open(self, file: str, stack: ExitStack) -> BinaryIO:
        if file == "-":
            return sys.stdin.buffer
        try:
            return stack.enter_context(open(file, "rb"))
        except OSError as error:
            raise CommandError(f"Cannot read {file}: {error.strerror}.") from None

    def _create(self, report: str, stack: ExitStack) -> TextIO:
        try:
            return stack.enter_context(open_private(report))
        except OSError as error:
            raise CommandError(f"Cannot write {report}: {error.strerror}.") from None

    def _write_progress(self, text: str) -> None:
        self.stderr.write(text, style_func=lambda plain: plain, ending="")
        self.stderr.flush()

    def _print_summary(self, summary: onboarding.Summary, *, dry_run: bool, invite: bool, report: str | None) -> None:
        created = f"{summary.created:,}"
        if dry_run:
            created += f" (dry run: {summary.new:,} would be created)"
        elif summary.refusal:
            created += f" ({summary.new:,} would have been)"
        lines = [
            ("read", f"{summary.read:,}"),
            ("valid", f"{summary.valid:,}"),
            ("created", created),
            ("skipped (exists)", f"{summary.exists:,}"),
            ("rejected", f"{summary.rejected:,}"),
            ("time", f"{summary.seconds:.1f} s ({summary.rows_per_second:,.0f} rows/s)"),
        ]
        if invite and (dry_run or summary.refusal):
            lines.append(("to invite", f"{summary.to_invite:,}"))
        elif invite:
            lines.append(("invitations queued", f"{summary.invitations_queued:,}"))
        if report:
            lines.append(("report", report))
        self.stdout.write("\n".join(f"{label:<20}{value}" for label, value in lines))
        if dry_run:
            self.stdout.write("Dry run: nothing was written.")


def _same_file(file: str, report: str) -> bool:
    try:
        return file != "-" and os.path.samefile(file, report)
    except OSError:  # one of them does not exist (yet)
        return False


def _size(source: BinaryIO) -> int | None:
    """The size of a regular file, for the ETA; None for a pipe."""
    try:
        status = os.fstat(source.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None
