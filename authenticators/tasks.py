from __future__ import annotations

from celery import shared_task

from accounts import mail
from accounts.models import User

from . import registry
from .models import RegistrationLink


@shared_task(bind=True, max_retries=5)
def send_registration_link_task(self, link_id: int) -> None:
    link = RegistrationLink.objects.select_related("user").get(pk=link_id)
    if link.is_used:
        return
    invitation = link.purpose == RegistrationLink.Purpose.INVITATION
    try:
        mail.send("invitation" if invitation else "registration_link", link.user.email,
                  {"user": link.user, "link": link, "kind": registry.get(link.kind)})
    except OSError as error:
        if self.request.retries < self.max_retries and not self.request.is_eager:  # in-process: no queue to retry from
            raise self.retry(exc=error, countdown=10 * 2**self.request.retries) from error
        if invitation:
            # Never delivered: the person counts as not invited, so `onboard_users --invite` sends it again.
            User.objects.filter(pk=link.user_id).update(invited_at=None)
        raise


@shared_task
def forget_abandoned_registrations_task() -> int:
    """Hourly (CELERY_BEAT_SCHEDULE): pending secrets of journeys nobody finished."""
    from .totp.models import AppRegistration

    return AppRegistration.objects.forget_abandoned()
