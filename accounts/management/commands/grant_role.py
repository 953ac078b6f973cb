from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts.flows import set_roles
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
        current = set(user.groups.values_list("name", flat=True))
        wanted = current - {role} if remove else current | {role}
        set_roles(user=user, actor=None, roles=wanted, assignable=set(ROLES))
        self.stdout.write(f"{user} now has: {', '.join(sorted(wanted)) or 'no role'}.")
