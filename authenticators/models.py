from .base.models import Authenticator, RegistrationLink
from .totp.models import AppRegistration, AuthenticatorApp
from .webauthn.models import IPad, Passkey, SecurityKey, UsedChallenge, WebAuthnCredential, WindowsHello

__all__ = ["AppRegistration", "Authenticator", "AuthenticatorApp", "IPad", "Passkey", "RegistrationLink", "SecurityKey",
           "UsedChallenge", "WebAuthnCredential", "WindowsHello"]
