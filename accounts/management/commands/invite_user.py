from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from accounts.flows import invite_user
from accounts.models import OutgoingEmail


class Command(BaseCommand):
    help = "Create a Care Identity and e-mail it a link to register the Authenticator app."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--email", required=True)
        parser.add_argument("--first-name", required=True)
        parser.add_argument("--last-name", required=True)
        parser.add_argument("--title", default="")
        parser.add_argument("--show-link", action="store_true", help="Also print the registration link (development).")

    def handle(self, *args, email: str, first_name: str, last_name: str, title: str, show_link: bool, **options):
        if not first_name.strip() or not last_name.strip():
            raise CommandError("First and last name must not be empty.")
        try:
            user, link = invite_user(email=email, first_name=first_name.strip(), last_name=last_name.strip(), title=title.strip())
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        except IntegrityError:
            raise CommandError(f"A Care Identity with the email address {email} already exists.") from None
        self.stdout.write(f"Created Care Identity {user.uid} for {user.get_full_name()} <{user.email}>.")
        invitation = OutgoingEmail.objects.filter(user=user, kind="invitation").latest("pk")
        if invitation.state == OutgoingEmail.State.SENT:
            self.stdout.write(f"Invitation sent; the link expires at {link.expires_at:%Y-%m-%d %H:%M %Z}.")
        else:
            self.stdout.write(f"Invitation queued (e-mail {invitation.pk}, {invitation.get_state_display().lower()}"
                              f"{': ' + invitation.last_error if invitation.last_error else ''}); it is retried until "
                              f"delivered, and its state shows on the person's page in the back office. The link "
                              f"expires at {link.expires_at:%Y-%m-%d %H:%M %Z}.")
        if show_link:
            self.stdout.write(f"Registration link: {link.url}")
        return None
