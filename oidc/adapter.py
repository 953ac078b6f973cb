"""careid's adapter on allauth's OpenID Connect provider: who the subject is, what each scope
releases, the issuer and the signing keys (CIS2's claim names, ../shared/CIS2-OIDC.md)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any, Literal

from allauth.account.models import EmailAddress
from allauth.idp.oidc.adapter import DefaultOIDCAdapter
from allauth.idp.oidc.models import Client
from django.conf import settings

from accounts.models import User

SCOPES = ["openid", "profile", "email", "nhsperson"]
SCOPE_CLAIMS = {
    "profile": ["name", "family_name", "given_name", "uid"],
    "email": ["email", "email_verified"],
    # CIS2's nhsperson has middle_names too: careid keeps none, so never sends it (nor lists it in discovery).
    "nhsperson": ["nhsid_useruid", "title", "idassurancelevel", "initials", "display_name"],
}
ID_TOKEN_CLAIMS = ["iss", "sub", "aud", "azp", "exp", "iat", "jti", "auth_time", "nonce", "acr", "amr", "sid",
                   "at_hash", "authentication_assurance_level", "id_assurance_level"]


def claims_of(user: User, scopes: Iterable[str]) -> dict[str, Any]:
    """The claims each granted scope releases (userinfo; the ID token carries only who and how). A claim
    careid has no value for is left out, never sent empty (OpenID Connect Core 5.3.2): a person without a
    title has no title, not one known to be blank."""
    scopes = set(scopes)
    claims: dict[str, Any] = {}
    if "profile" in scopes:
        claims.update(name=user.get_full_name(), given_name=user.first_name, family_name=user.last_name, uid=user.uid)
    if "email" in scopes:
        verified = EmailAddress.objects.filter(user=user, email__iexact=user.email, verified=True).exists()
        claims.update(email=user.email, email_verified=verified)
    if "nhsperson" in scopes:
        names = [user.first_name, user.last_name]
        claims.update(
            nhsid_useruid=user.uid,
            title=user.title,
            idassurancelevel=str(user.identity_assurance_level),
            initials="".join(name[0].upper() for name in names if name),
            display_name=" ".join(name for name in (user.title, user.first_name, user.last_name) if name),
        )
    return {name: value for name, value in claims.items() if value is not None and value != ""}


class CareIdOIDCAdapter(DefaultOIDCAdapter):
    def generate_client_secret(self) -> str:
        # URL-safe, so form-urlencoding it for client_secret_basic (RFC 6749 2.3.1) changes nothing: allauth's
        # default, a Django secret key, has !@#$%^&*(-_=+), which clients that encode and those that do not send
        # differently.
        return secrets.token_urlsafe(32)

    def get_issuer(self) -> str:
        # From settings, not the request: Celery workers sign logout tokens with no request at all.
        return settings.CAREID_BASE_URL

    def get_user_sub(self, client: Client, user) -> str:
        return user.uid

    def get_user_by_sub(self, client: Client, sub: str):
        # The inverse of get_user_sub (allauth's default reads `sub` as the primary key): only allauth's own
        # logout view calls it, which careid does not mount, but a future caller must find the right person.
        return User.objects.filter(uid=sub).first()

    def get_claims(self, purpose: Literal["id_token", "userinfo"], user, client: Client, scopes: Iterable[str],
                   email: str | None = None, **kwargs: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {"sub": user.uid}
        if purpose == "userinfo":
            claims.update(claims_of(user, scopes))
        return claims
