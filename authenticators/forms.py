"""Forms every registration journey shares: sole access, the e-mail address and its One Time Password."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from accounts.emails import INVALID_EMAIL, normalise_email


def digits(value: str, count: int, what: str) -> str:
    value = "".join(value.split())  # people paste "123 456"
    if not value.isascii() or not value.isdigit() or len(value) != count:
        raise ValidationError(f"{what} must be {count} digits")
    return value


class SoleAccessForm(forms.Form):
    """"I confirm only I will have access to …", worded for each type."""

    confirm = forms.BooleanField(error_messages={"required": "Confirm only you will have access to the device"})

    def __init__(self, *args, label: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["confirm"].label = label


class EmailForm(forms.Form):
    email = forms.CharField(
        label="Email address",
        max_length=254,
        error_messages={"required": "Enter your email address", "max_length": INVALID_EMAIL},
    )

    def clean_email(self) -> str:
        return normalise_email(self.cleaned_data["email"])


class EmailCodeForm(forms.Form):
    code = forms.CharField(
        label="One Time Password", max_length=20, error_messages={"required": "Enter the One Time Password"}
    )

    def clean_code(self) -> str:
        return digits(self.cleaned_data["code"], 8, "The One Time Password")
