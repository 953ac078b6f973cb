from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts.flows import unlock_user
from accounts.models import User


class Command(BaseCommand):
    help = "Unlock a Care Identity after too many failed sign-ins (clears every throttle)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--uid", required=True, help="The 12-digit Care Identity user ID")
        parser.add_argument("--reason", required=True, help="Why (kept in the audit trail)")

    def handle(self, *args, uid: str, reason: str, **options) -> None:
        user = User.objects.filter(uid=uid.strip()).first()
        if user is None:
            raise CommandError(f"No Care Identity with user ID {uid}.")
        if not reason.strip():
            raise CommandError("Give a reason.")
        was_locked = user.is_locked
        unlock_user(user=user, reason=reason.strip())
        self.stdout.write(f"{'Unlocked' if was_locked else 'Throttles cleared for'} {user}.")
