from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth import password_validation

from authenticators.forms import EmailCodeForm, EmailForm, SoleAccessForm, digits

__all__ = ["ConfirmForm", "EmailCodeForm", "EmailForm", "PasswordForm", "PasswordSignInForm", "TokenForm"]


class ConfirmForm(SoleAccessForm):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, label=(
            "I confirm only I will have access to the device with Microsoft Authenticator installed "
            "while it can connect to my Care Identity profile."
        ), **kwargs)


class PasswordForm(forms.Form):
    password1 = forms.CharField(
        label="Password",
        strip=False,
        max_length=settings.CAREID_PASSWORD_MAX_LENGTH,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        error_messages={
            "required": "Enter a password",
            "max_length": f"Password must be {settings.CAREID_PASSWORD_MAX_LENGTH} characters or fewer",
        },
    )
    password2 = forms.CharField(
        label="Confirm password",
        strip=False,
        max_length=settings.CAREID_PASSWORD_MAX_LENGTH,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        error_messages={"required": "Confirm your password", "max_length": "Passwords must match"},
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_password1(self) -> str:
        password = self.cleaned_data["password1"]
        password_validation.validate_password(password, self.user)
        return password

    def clean(self):
        cleaned = super().clean()
        first, second = cleaned.get("password1"), cleaned.get("password2")
        if first and second and first != second:
            self.add_error("password2", "Passwords must match")
        return cleaned


class TokenForm(forms.Form):
    token = forms.CharField(
        label="Enter verification code", max_length=20, error_messages={"required": "Enter the 6-digit code"}
    )

    def clean_token(self) -> str:
        return digits(self.cleaned_data["token"], 6, "The code")


class PasswordSignInForm(forms.Form):
    email = forms.CharField(
        label="Email address",
        max_length=254,
        error_messages={"required": "Enter your email address", "max_length": "Enter a correct email address and password"},
    )
    password = forms.CharField(
        label="Password",
        strip=False,
        max_length=settings.CAREID_PASSWORD_MAX_LENGTH,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        error_messages={"required": "Enter your password", "max_length": "Enter a correct email address and password"},
    )
