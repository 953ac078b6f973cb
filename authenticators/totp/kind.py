from authenticators.registry import AuthenticatorType

KIND = AuthenticatorType(
    key="authenticator-app",
    name="Microsoft Authenticator",
    signin_label="Authenticator app",
    description="Uses an approved email and security code to access National Care Records Service",
    aal=2,
    acr="AAL2_TOTP",
    amr=("pwd", "otp"),
    model_label="authenticators.AuthenticatorApp",
    enrol_url_name="totp:register",
    signin_url_name="totp:signin",
    urls="authenticators.totp.urls",
    link_view="authenticators.totp.views.registration_link",
    cleanup="authenticators.totp.models.forget_abandoned_registrations",
    manage=(("Change password", "totp:change_password"),),
    needs="the Microsoft Authenticator app installed on your phone",
)
