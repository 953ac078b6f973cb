"""The four WebAuthn types, as the registry sees them (their WebAuthn options are in ceremony.py)."""

from authenticators.registry import AuthenticatorType


def namespace(key: str) -> str:
    """A WebAuthn type's URL namespace (authenticators/webauthn/urls.py): its key with underscores."""
    return key.replace("-", "_")


def _webauthn_type(key: str, model: str, **described) -> AuthenticatorType:
    """A WebAuthn type: its model, URL names and URLconf follow from its key; the rest describes it."""
    namespace_ = namespace(key)
    return AuthenticatorType(
        key=key,
        model_label=f"authenticators.{model}",
        enrol_url_name=f"{namespace_}:register",
        signin_url_name=f"{namespace_}:signin",
        urls=f"authenticators.webauthn.urls:{namespace_.upper()}",
        link_view="authenticators.webauthn.views.registration_link",
        cleanup="authenticators.webauthn.models.forget_used_challenges",
        **described,
    )


WINDOWS_HELLO = _webauthn_type(
    "windows-hello", "WindowsHello",
    needs="a Windows computer with Windows Hello set up (face, fingerprint or PIN)",
    name="Windows Hello",
    signin_label="Windows Hello",
    description="Uses facial recognition, fingerprint or PIN on supported Windows devices",
    aal=3,
    acr="AAL3_FIDO2",
    amr=("hwk", "user"),
)

SECURITY_KEY = _webauthn_type(
    "security-key", "SecurityKey",
    needs="your security key, and a USB port or NFC on the computer you will use",
    name="Security key",
    signin_label="Security key",
    description="Uses a small physical device that is a software free alternative to smartcards",
    aal=3,
    acr="AAL3_FIDO2",
    # The key verified the person (PIN or fingerprint) but does not say which: "user" claims no more
    # than careid knows.
    amr=("hwk", "user"),
)

IPAD = _webauthn_type(
    "ipad", "IPad",
    needs="your iPad with Touch ID set up",
    name="iPad",
    signin_label="iPad app",
    description="Uses fingerprint biometrics on an iPad to authenticate",
    aal=3,
    acr="AAL3_IOS",
    amr=("hwk", "fpt"),
)

PASSKEY = _webauthn_type(
    "passkey", "Passkey",
    needs="a device that can keep a passkey (phone, tablet or computer)",
    name="Passkey",
    signin_label="Passkey (private beta)",
    description="Uses a passkey saved on your phone, computer or password manager, with its fingerprint, face or PIN",
    aal=2,
    acr="AAL2_PASSKEY",
    amr=("swk", "user"),
    feature_flag="CAREID_PASSKEY_BETA",
)
