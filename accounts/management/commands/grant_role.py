from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts.flows import change_roles
from accounts.models import User
from accounts.roles import ROLES


class Command(BaseCommand):
    help = "Operators: give or take a registration authority role (RA Manager, RA Agent, Auditor)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--email", required=True)
        parser.add_argument("--role", required=True, choices=list(ROLES))
        parser.add_argument("--remove", action="store_true", help="Take the role away instead")

    def handle(self, *args, email: str, role: str, remove: bool, **options) -> None:
        user = User.objects.with_email(email).first()
        if user is None:
            raise CommandError(f"No Care Identity with the email address {email}.")
        change = {"remove": {role}} if remove else {"add": {role}}
        now = change_roles(user=user, actor=None, assignable=set(ROLES), **change)
        self.stdout.write(f"{user} now has: {', '.join(sorted(now)) or 'no role'}.")
