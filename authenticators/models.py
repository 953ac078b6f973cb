from .base.models import Authenticator, RegistrationLink
from .totp.models import AuthenticatorApp

__all__ = ["Authenticator", "AuthenticatorApp", "RegistrationLink"]
