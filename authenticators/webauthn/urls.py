"""Each WebAuthn type's URLs, in a namespace of its own (its registry key with underscores); the
registry mounts a type's only when that type is switched on."""

from __future__ import annotations

from django.urls import path

from authenticators.registry import AuthenticatorType

from . import kinds, views


def _urls(kind: AuthenticatorType, *, discoverable: bool = False) -> tuple[list, str]:
    slug, given = kind.key, {"kind": kind}
    signin = (
        [path(f"login/{slug}/", views.passkey_signin, given, name="signin")] if discoverable else [
            path(f"login/{slug}/", views.signin, given, name="signin"),
            path(f"login/{slug}/verify/", views.signin_verify, given, name="verify"),
        ]
    )
    return [
        path(f"authenticators/{slug}/", views.register, given, name="register"),
        path(f"register/{slug}/code/", views.code, given, name="code"),
        path(f"register/{slug}/code/resend/", views.resend, given, name="resend"),
        path(f"register/{slug}/set-up/", views.ceremony, given, name="ceremony"),
        path(f"register/{slug}/done/", views.done, given, name="done"),
        *signin,
    ], views.namespace(kind)


WINDOWS_HELLO = _urls(kinds.WINDOWS_HELLO)
SECURITY_KEY = _urls(kinds.SECURITY_KEY)
IPAD = _urls(kinds.IPAD)
PASSKEY = _urls(kinds.PASSKEY, discoverable=True)
