from __future__ import annotations

from allauth.account import signals
from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.models import EmailAddress
from django.conf import settings
from django.urls import reverse

from .models import AllowedEmailDomain


class CareIdentityAccountAdapter(DefaultAccountAdapter):
    """allauth manages e-mail addresses and their verification; careid owns everything else."""

    def is_open_for_signup(self, request) -> bool:
        return False  # Care Identities are created by invitation, an RA or onboarding only

    def clean_email(self, email: str) -> str:
        return AllowedEmailDomain.objects.check_email(email)

    def get_email_confirmation_url(self, request, emailconfirmation) -> str:
        # Built from settings so a Celery worker (no request) makes the same link.
        return settings.CAREID_BASE_URL + reverse("confirm_email", args=[emailconfirmation.key])

    def get_email_verification_redirect_url(self, email_address) -> str:
        return reverse("profile")

    def confirm_email(self, request, email_address: EmailAddress) -> bool:
        """Verified, and nothing more: allauth also made the address primary when the person had no primary
        one (a superuser made with createsuperuser has no address row), which rewrote the address they sign
        in with, unaudited and the old one never told. Which address is the Care Identity's is careid's
        (accounts.flows.confirm_email_address, make_care_identity_email). Verified once: a conditional update, so
        that of a link followed twice at once (a double click) only one verifies, audits it and tells the person."""
        if not email_address.can_set_verified():
            return False
        if not EmailAddress.objects.filter(pk=email_address.pk, verified=False).update(verified=True):
            return False
        email_address.verified = True
        signals.email_confirmed.send(sender=EmailAddress, request=request, email_address=email_address)
        return True
