from __future__ import annotations

import os

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from accounts.roles import RA_MANAGER
from authenticators import registry
from authenticators.flows import issue_registration_link
from authenticators.models import RegistrationLink
from oidc.flows import save_relying_service
from oidc.forms import RelyingServiceForm
from oidc.models import RelyingService

DEMO_PEOPLE = [
    ({"email": "florence.nightingale@nhs.net", "first_name": "Florence", "last_name": "Nightingale", "title": "Dr"}, None),
    ({"email": "mary.seacole@nhs.net", "first_name": "Mary", "last_name": "Seacole", "title": ""}, RA_MANAGER),
]


class Command(BaseCommand):
    help = ("Create the demo Care Identities (by invitation) for `make run`, or send them fresh links; "
            "register the demo eRS (demo_ers/) as a relying service.")

    def handle(self, *args, **options) -> None:
        if not settings.DEBUG:
            # An RA Manager at a real NHSmail address, an invitation e-mailed to it, a service at loopback
            # addresses: nothing a production database may be given.
            raise CommandError("demo_data is for local development (`make run`, DEBUG=true) only: DEBUG is off.")
        for person, role in DEMO_PEOPLE:
            self._invite(person)
            if role:
                call_command("grant_role", email=person["email"], role=role, stdout=self.stdout)
        self._register_demo_ers()

    def _register_demo_ers(self) -> None:
        """The demo eRS of `make run` (python -m demo_ers), with the same variables it reads, registered
        once: a later run leaves the registration (and its audit trail) as it is."""
        client_id = os.environ.get("DEMO_ERS_CLIENT_ID") or "demo-ers"
        base = (os.environ.get("DEMO_ERS_BASE_URL") or "http://127.0.0.1:8001").rstrip("/")
        if RelyingService.objects.filter(pk=client_id).exists():
            self.stdout.write(f"Demo eRS {client_id!r} is registered: open {base}/")
            return
        form = RelyingServiceForm(data={
            "name": "e-Referral Service (demo)", "auth_method": "private_key_jwt",
            "redirect_uris": f"{base}/callback", "post_logout_redirect_uris": f"{base}/",
            "backchannel_logout_uri": f"{base}/backchannel-logout", "jwks_uri": f"{base}/jwks.json",
            "allowed_scopes": ["openid", "profile", "email", "nhsperson"],
        })
        form.instance.pk = client_id
        if not form.is_valid():
            problems = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())
            raise CommandError(f"Demo eRS not registered: {problems}")
        save_relying_service(form, actor=None)
        self.stdout.write(f"Demo eRS registered as relying service {client_id!r}: open {base}/")

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
