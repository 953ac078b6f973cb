from __future__ import annotations

import os
import tempfile

from django.core.management.base import BaseCommand, CommandError

from accounts import onboarding
from accounts.management.output import os_user
from accounts.models import User


class Command(BaseCommand):
    help = (
        "Write Care Identities to a CSV file with the columns onboard_users reads (email, title, first_name, "
        "last_name, uid, external_id), safe to open in a spreadsheet, so it can be edited and imported again."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="the CSV file to write; - writes standard output")
        parser.add_argument("--status", action="append", choices=User.Status.values, default=[],
                            help="only Care Identities with this status (repeat for several; default: all)")
        parser.add_argument("--operator", default=os_user(),
                            help="who runs the export, for the audit trail (default: the OS user name)")

    def handle(self, *args, file: str, status: list[str], operator: str, **options) -> None:
        if file == "-":
            count = onboarding.export_users(self.stdout, statuses=status, operator=operator, file_name="<stdout>")
            self.stderr.write(f"Exported {_care_identities(count)}.", style_func=lambda plain: plain)
            return
        path = os.path.abspath(file)
        # Written beside the target and renamed when complete: a failed export leaves no partial file,
        # and the file is readable by its owner only (it holds personal data).
        try:
            descriptor, partial = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".export-", suffix=".csv")
        except OSError as error:
            raise CommandError(f"Cannot write {file}: {error.strerror}.") from None
        try:
            with open(descriptor, "w", encoding="utf-8-sig", newline="") as destination:
                count = onboarding.export_users(destination, statuses=status, operator=operator, file_name=path)
            os.replace(partial, path)
        except BaseException:
            os.unlink(partial)
            raise
        self.stdout.write(f"Exported {_care_identities(count)} to {file}.")


def _care_identities(count: int) -> str:
    return f"{count:,} Care {'Identity' if count == 1 else 'Identities'}"
