from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
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
