from __future__ import annotations

from allauth.account.models import EmailAddress
from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from .emails import ALREADY_ON_PROFILE
from .models import AllowedEmailDomain

EMAIL_REQUIRED = "Enter your email address"


class AddEmailForm(forms.Form):
    email = forms.CharField(
        label="Email address",
        max_length=254,
        error_messages={"required": "Enter an email address", "max_length": "Email address must be 254 characters or fewer"},
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_email(self) -> str:
        email = AllowedEmailDomain.objects.check_email(self.cleaned_data["email"])
        # Only facts about the person's own profile are told here; whether someone else holds
        # the address is not (accounts.flows.add_email_address answers the same either way).
        own = list(EmailAddress.objects.filter(user=self.user).values_list("email", flat=True))
        if email in (address.lower() for address in own):
            raise ValidationError(ALREADY_ON_PROFILE)
        if len(own) >= settings.CAREID_MAX_EMAIL_ADDRESSES:
            raise ValidationError(
                f"You can have up to {settings.CAREID_MAX_EMAIL_ADDRESSES} email addresses on your Care Identity profile"
            )
        return email
