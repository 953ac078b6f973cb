from __future__ import annotations

from allauth.account.models import EmailAddress
from django import forms
from django.core.exceptions import ValidationError

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
        if EmailAddress.objects.filter(user=self.user, email__iexact=email).exists():
            raise ValidationError("This email address is already on your Care Identity profile")
        if EmailAddress.objects.filter(email__iexact=email, verified=True).exclude(user=self.user).exists():
            # Same words as for any address we cannot add: no hint whose it is.
            raise ValidationError("This email address cannot be added to your Care Identity profile")
        return email


class SignInMethodForm(forms.Form):
    method = forms.ChoiceField(
        label="Select your login method", widget=forms.RadioSelect, error_messages={"required": "Select your login method"}
    )
    remember = forms.BooleanField(label="Remember my selection", required=False)

    def __init__(self, *args, kinds, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["method"].choices = [(kind.key, kind.signin_label) for kind in kinds]
        self.fields["method"].error_messages["invalid_choice"] = "Select your login method"
