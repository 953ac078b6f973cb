"""careid as this service's OpenID Provider, through Authlib: discovery, private_key_jwt, PKCE,
ID token and logout token verification against careid's published keys."""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from authlib.integrations.django_client import OAuth
from authlib.integrations.django_client.apps import DjangoOAuth2App
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from django.conf import settings
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from . import keys

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_MAX_AGE = 300  # seconds: an older logout token is refused (careid's live 2 minutes)
LEEWAY = 60  # clock skew allowed between careid and the demo
ASSERTION_LIFETIME = 60  # seconds a private_key_jwt client assertion is valid for


class ShortLivedPrivateKeyJWT(PrivateKeyJWT):
    """Authlib's private_key_jwt with a one-minute assertion: Authlib's default lifetime is an hour,
    and careid (like CIS2, which asks for a short exp) refuses one more than five minutes ahead."""

    def sign(self, auth: ClientAuth, token_endpoint: str) -> str:
        return private_key_jwt_sign(auth.client_secret, client_id=auth.client_id, token_endpoint=token_endpoint,
                                    alg=self.alg, header=self.headers, expires_in=ASSERTION_LIFETIME)


@cache
def client() -> DjangoOAuth2App:
    """The registered Authlib client; careid's metadata and JWKS are fetched on first use and kept."""
    oauth = OAuth()
    oauth.register(
        "careid",
        client_id=settings.DEMO_ERS_CLIENT_ID,
        client_secret=keys.signing_key(),  # PrivateKeyJWT signs its assertions with it; it is never sent
        server_metadata_url=f"{settings.DEMO_ERS_ISSUER}/.well-known/openid-configuration",
        client_kwargs={
            "scope": settings.DEMO_ERS_SCOPES,
            "token_endpoint_auth_method": "private_key_jwt",
            "code_challenge_method": "S256",
            "default_timeout": settings.DEMO_ERS_HTTP_TIMEOUT,
        },
        client_auth_methods=[ShortLivedPrivateKeyJWT(headers={"kid": keys.signing_key().kid})],
    )
    return oauth.create_client("careid")


class LogoutTokenError(Exception):
    """The logout token is not one careid signed for this service (the reason is for the response)."""


def verify_logout_token(token: str) -> dict[str, Any]:
    """The claims of a back-channel logout token, once verified as OpenID Connect Back-Channel
    Logout 1.0 section 2.6 asks: signed by careid (its JWKS), iss, aud = our client_id, iat and exp,
    a backchannel-logout event, a sid (careid always sends one; the demo's sessions are keyed by it),
    no nonce."""
    app = client()
    issuer = app.load_server_metadata()["issuer"]
    registry = JWSRegistry(algorithms=["RS256"])
    try:
        try:
            decoded = jwt.decode(token, KeySet.import_key_set(app.fetch_jwk_set()), registry=registry)
        except InvalidKeyIdError:  # careid may have rolled its key since the JWKS was fetched
            decoded = jwt.decode(token, KeySet.import_key_set(app.fetch_jwk_set(force=True)), registry=registry)
        if decoded.header.get("typ", "logout+jwt") != "logout+jwt":
            raise LogoutTokenError("not a logout token (typ)")
        claims = decoded.claims
        jwt.JWTClaimsRegistry(
            leeway=LEEWAY, iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": settings.DEMO_ERS_CLIENT_ID}, iat={"essential": True},
            exp={"essential": True}, jti={"essential": True}, sid={"essential": True},
        ).validate(claims)
    except (JoseError, ValueError) as error:  # malformed tokens raise ValueError in places
        raise LogoutTokenError(str(error) or type(error).__name__) from None
    if claims["iat"] < time.time() - LOGOUT_TOKEN_MAX_AGE:
        raise LogoutTokenError("iat too old")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_EVENT), dict):
        raise LogoutTokenError("events has no back-channel logout event")
    if "nonce" in claims:
        raise LogoutTokenError("a logout token must not have a nonce")
    if not isinstance(claims["sid"], str):
        raise LogoutTokenError("sid is not a string")
    return claims
