"""The four WebAuthn types, as the registry sees them (their WebAuthn options are in ceremony.py)."""

from authenticators.registry import AuthenticatorType

_SHARED = {
    "link_view": "authenticators.webauthn.views.registration_link",
    "cleanup": "authenticators.webauthn.models.forget_used_challenges",
}

WINDOWS_HELLO = AuthenticatorType(
    key="windows-hello",
    needs="a Windows computer with Windows Hello set up (face, fingerprint or PIN)",
    name="Windows Hello",
    signin_label="Windows Hello",
    description="Uses facial recognition, fingerprint or PIN on supported Windows devices",
    aal=3,
    acr="AAL3_FIDO2",
    amr=("hwk", "user"),
    model_label="authenticators.WindowsHello",
    enrol_url_name="windows_hello:register",
    signin_url_name="windows_hello:signin",
    urls="authenticators.webauthn.urls:WINDOWS_HELLO",
    **_SHARED,
)

SECURITY_KEY = AuthenticatorType(
    key="security-key",
    needs="your security key, and a USB port or NFC on the computer you will use",
    name="Security key",
    signin_label="Security key",
    description="Uses a small physical device that is a software free alternative to smartcards",
    aal=3,
    acr="AAL3_FIDO2",
    # The key verified the person (PIN or fingerprint) but does not say which: "user" claims no more
    # than careid knows.
    amr=("hwk", "user"),
    model_label="authenticators.SecurityKey",
    enrol_url_name="security_key:register",
    signin_url_name="security_key:signin",
    urls="authenticators.webauthn.urls:SECURITY_KEY",
    **_SHARED,
)

IPAD = AuthenticatorType(
    key="ipad",
    needs="your iPad with Touch ID set up",
    name="iPad",
    signin_label="iPad app",
    description="Uses fingerprint biometrics on an iPad to authenticate",
    aal=3,
    acr="AAL3_IOS",
    amr=("hwk", "fpt"),
    model_label="authenticators.IPad",
    enrol_url_name="ipad:register",
    signin_url_name="ipad:signin",
    urls="authenticators.webauthn.urls:IPAD",
    **_SHARED,
)

PASSKEY = AuthenticatorType(
    key="passkey",
    needs="a device that can keep a passkey (phone, tablet or computer)",
    name="Passkey",
    signin_label="Passkey (private beta)",
    description="Uses a passkey saved on your phone, computer or password manager, with its fingerprint, face or PIN",
    aal=2,
    acr="AAL2_PASSKEY",
    amr=("swk", "user"),
    model_label="authenticators.Passkey",
    enrol_url_name="passkey:register",
    signin_url_name="passkey:signin",
    urls="authenticators.webauthn.urls:PASSKEY",
    feature_flag="CAREID_PASSKEY_BETA",
    **_SHARED,
)
