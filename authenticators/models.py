from .base.models import Authenticator, RegistrationLink
from .totp.models import AppRegistration, AuthenticatorApp

__all__ = ["AppRegistration", "Authenticator", "AuthenticatorApp", "RegistrationLink"]
