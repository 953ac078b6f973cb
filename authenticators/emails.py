"""The e-mails that carry registration links (invitations and links an RA e-mails), through the outbox."""

from __future__ import annotations

from accounts import outbox
from accounts.models import OutgoingEmail, User

from . import registry
from .models import RegistrationLink


def send_registration_link(link: RegistrationLink) -> None:
    invitation = link.purpose == RegistrationLink.Purpose.INVITATION
    outbox.queue("invitation" if invitation else "registration_link", object_id=link.pk, to=link.user.email,
                 user=link.user)


def _link_message(template: str, email: OutgoingEmail) -> outbox.Message | None:
    link = RegistrationLink.objects.select_related("user").filter(pk=email.object_id).first()
    if link is None or link.is_used or link.is_revoked:
        return None  # not needed any more (revoked: the person suspended or closed)
    if link.is_expired:
        # It lasted its whole time (a day) and this e-mail never got through: the outbox tries for longer.
        raise outbox.Undeliverable("The link expired before the e-mail could be delivered")
    return outbox.Message(template, {"user": link.user, "link": link, "kind": registry.get(link.kind)})


def _invitation_never_delivered(email: OutgoingEmail) -> None:
    # The person counts as not invited, so `onboard_users --invite` (or an RA) sends it again.
    User.objects.filter(pk=email.user_id).update(invited_at=None)


@outbox.kind("invitation", "Invitation", gave_up=_invitation_never_delivered)
def _invitation(email: OutgoingEmail) -> outbox.Message | None:
    message = _link_message("invitation", email)
    if message is None and not RegistrationLink.objects.filter(pk=email.object_id, used_at__isnull=False).exists():
        _invitation_never_delivered(email)  # revoked before it could be delivered: not invited after all
    return message


@outbox.kind("registration_link", "Registration link")
def _registration_link(email: OutgoingEmail) -> outbox.Message | None:
    return _link_message("registration_link", email)
