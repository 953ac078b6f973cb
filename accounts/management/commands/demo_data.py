from __future__ import annotations

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from accounts.models import User
from accounts.roles import RA_MANAGER
from authenticators import registry
from authenticators.flows import issue_registration_link
from authenticators.models import RegistrationLink

DEMO_PEOPLE = [
    ({"email": "florence.nightingale@nhs.net", "first_name": "Florence", "last_name": "Nightingale", "title": "Dr"}, None),
    ({"email": "mary.seacole@nhs.net", "first_name": "Mary", "last_name": "Seacole", "title": ""}, RA_MANAGER),
]


class Command(BaseCommand):
    help = "Create the demo Care Identities (by invitation) for `make run`, or send them fresh links."

    def handle(self, *args, **options) -> None:
        for person, role in DEMO_PEOPLE:
            self._invite(person)
            if role:
                call_command("grant_role", email=person["email"], role=role, stdout=self.stdout)

    def _invite(self, person: dict[str, str]) -> None:
        user = User.objects.with_email(person["email"]).first()
        if user is None:
            call_command(
                "invite_user", email=person["email"], first_name=person["first_name"], last_name=person["last_name"],
                title=person["title"], show_link=True, stdout=self.stdout,
            )
            return
        if any(registered for registered in registry.authenticators_of(user)):
            self.stdout.write(f"Demo Care Identity {user.uid} <{user.email}> is registered: sign in at /login/.")
            return
        link = issue_registration_link(
            user=user, kind=settings.CAREID_INVITATION_AUTHENTICATOR, purpose=RegistrationLink.Purpose.INVITATION
        )
        self.stdout.write(f"Demo Care Identity {user.uid} <{user.email}>: new registration link {link.url}")
