"""private_key_jwt client authentication (RFC 7523, OpenID Connect Core 9), which allauth's provider
does not have: a relying service signs a short assertion with its own key instead of sending a secret.

Hand-written because no maintained library verifies client assertions for oauthlib: the checks are
PyJWT's (signature, aud, exp) plus what OpenID Connect adds (iss = sub = client_id, a lifetime of at
most five minutes, a jti never used before). The service's keys come from its registration: inline,
or from its jwks_uri, fetched and cached in the shared cache.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jwt
import requests
from django.core.cache import cache

from .models import AuthMethod, RelyingService, UsedAssertion

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ["RS256", "ES256"]
MAX_LIFETIME = 300  # seconds an assertion may be valid for (CIS2: a short exp)
LEEWAY = 30  # clock skew allowed on exp, iat and nbf
JWKS_CACHE_SECONDS = 3600
JWKS_REFETCH_AFTER = 60  # an unknown kid refetches the jwks_uri, at most this often per service
JWKS_MAX_BYTES = 64 * 1024


class ClientAssertionError(Exception):
    """The assertion does not authenticate a client; `reason` goes to the audit trail."""

    def __init__(self, reason: str, client_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.client_id = client_id


def verify_client_assertion(assertion: str, *, token_endpoint: str) -> RelyingService:
    """The relying service that signed `assertion` for `token_endpoint`; ClientAssertionError otherwise."""
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise ClientAssertionError("malformed client assertion") from None
    client_id = unverified.get("iss")
    if not isinstance(client_id, str) or unverified.get("sub") != client_id:
        raise ClientAssertionError("client assertion iss and sub must both be the client_id")
    client = RelyingService.objects.filter(pk=client_id).first()
    if client is None:
        raise ClientAssertionError("unknown client", client_id)
    if client.auth_method != AuthMethod.PRIVATE_KEY_JWT:
        raise ClientAssertionError("client is not registered for private_key_jwt", client_id)
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        raise ClientAssertionError(f"client assertion algorithm {algorithm!r} is not allowed", client_id)
    key = _signing_key(client, header.get("kid"), algorithm)
    try:
        claims = jwt.decode(
            assertion, key, algorithms=[algorithm], audience=token_endpoint, issuer=client_id, leeway=LEEWAY,
            options={"require": ["iss", "sub", "aud", "exp", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise ClientAssertionError("client assertion expired", client_id) from None
    except jwt.InvalidAudienceError:
        raise ClientAssertionError("client assertion aud is not the token endpoint", client_id) from None
    except jwt.InvalidSignatureError:
        raise ClientAssertionError("client assertion signature does not verify with the client's keys", client_id) from None
    except jwt.PyJWTError as error:
        raise ClientAssertionError(f"client assertion refused: {error}", client_id) from None
    now = datetime.now(UTC).timestamp()
    if claims["exp"] - now > MAX_LIFETIME + LEEWAY:
        raise ClientAssertionError("client assertion exp is more than 5 minutes ahead", client_id)
    jti = claims["jti"]
    if not isinstance(jti, str) or not jti or len(jti) > 255:
        raise ClientAssertionError("client assertion jti missing or too long", client_id)
    if not UsedAssertion.objects.use(client_id, jti, datetime.fromtimestamp(claims["exp"] + LEEWAY, UTC)):
        raise ClientAssertionError("client assertion jti used before (replay)", client_id)
    return client


def unverified_client_id(assertion: str) -> str | None:
    """The client_id an assertion claims to come from, before anything is verified (for routing only)."""
    try:
        issuer = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError:
        return None
    return issuer if isinstance(issuer, str) else None


def _signing_key(client: RelyingService, kid: str | None, algorithm: str):
    jwks = client.jwks
    if jwks is None:
        if not client.jwks_uri:
            raise ClientAssertionError("client has no keys registered", client.pk)
        jwks = _fetched_jwks(client)
        if _find(jwks, kid, algorithm) is None and cache.add(f"oidc-jwks-refetch:{client.pk}", 1, JWKS_REFETCH_AFTER):
            jwks = _fetched_jwks(client, refresh=True)  # the service may have rolled its key
    key = _find(jwks, kid, algorithm)
    if key is None:
        raise ClientAssertionError("no key of the client matches the assertion's kid", client.pk)
    return key


def _find(jwks: dict, kid: str | None, algorithm: str):
    try:
        keys = jwt.PyJWKSet.from_dict(jwks).keys
    except jwt.PyJWTError:
        return None
    family = "RSA" if algorithm.startswith("RS") else "EC"
    candidates = [key for key in keys if key.key_type == family and (key.public_key_use in (None, "sig"))]
    if kid is not None:
        candidates = [key for key in candidates if key.key_id == kid]
    elif len(candidates) != 1:
        return None  # without a kid, only an unambiguous single key will do
    return candidates[0].key if candidates else None


def _fetched_jwks(client: RelyingService, *, refresh: bool = False) -> dict:
    cache_key = f"oidc-jwks:{client.pk}:{client.jwks_uri}"
    if not refresh and (cached := cache.get(cache_key)) is not None:
        return cached
    try:
        response = requests.get(client.jwks_uri, timeout=5, stream=True, headers={"Accept": "application/json"})
        response.raise_for_status()
        body = response.raw.read(JWKS_MAX_BYTES + 1, decode_content=True)
        if len(body) > JWKS_MAX_BYTES:
            raise ValueError("JWKS too large")
        jwks = json.loads(body)
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise ValueError("not a JWKS")
    except (requests.RequestException, ValueError) as error:
        raise ClientAssertionError(f"client's jwks_uri could not be read: {type(error).__name__}", client.pk) from None
    cache.set(cache_key, jwks, JWKS_CACHE_SECONDS)
    return jwks
