from __future__ import annotations

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from accounts.models import User
from authenticators import registry
from authenticators.flows import issue_registration_link
from authenticators.models import RegistrationLink

DEMO = {"email": "florence.nightingale@nhs.net", "first_name": "Florence", "last_name": "Nightingale", "title": "Dr"}


class Command(BaseCommand):
    help = "Create the demo Care Identity (by invitation) for `make run`, or send it a fresh link."

    def handle(self, *args, **options) -> None:
        user = User.objects.filter(email__iexact=DEMO["email"]).first()
        if user is None:
            call_command(
                "invite_user", email=DEMO["email"], first_name=DEMO["first_name"], last_name=DEMO["last_name"],
                title=DEMO["title"], show_link=True, stdout=self.stdout,
            )
            return
        if any(registered for registered in registry.authenticators_of(user)):
            self.stdout.write(f"Demo Care Identity {user.uid} <{user.email}> is registered: sign in at /login/.")
            return
        link = issue_registration_link(
            user=user, kind=settings.CAREID_INVITATION_AUTHENTICATOR, purpose=RegistrationLink.Purpose.INVITATION
        )
        self.stdout.write(f"Demo Care Identity {user.uid} <{user.email}>: new registration link {link.url}")
