"""The provider's signing keys parsed once per process instead of on every token.

allauth turns the signing key's PEM into a key object (allauth.core.internal.jwkkit.load_jwk_from_pem)
each time it signs an ID token or serves the JWKS. cryptography checks an RSA private key as it loads
it: about 35 ms of CPU for 2,048 bits here, half of a whole code flow (bench/oidc_flow.py). careid's
own signing (ID tokens in oidc/server.py, logout tokens, the JWKS view) goes through this cache
instead; the keys come from settings and do not change while a process runs, so each PEM is parsed
once, and a rolled key, a new PEM, once in its turn. `sign` is the one way careid signs a token.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jwt
from allauth.core.internal import jwkkit
from allauth.idp.oidc.adapter import get_adapter

_load_jwk_from_pem = jwkkit.load_jwk_from_pem  # allauth's own, which does the parsing


@lru_cache(maxsize=8)  # the signing key, the next one and the last one: a handful at most
def _parsed(pem: str) -> tuple[dict[str, Any], Any]:
    return _load_jwk_from_pem(pem)


def load_jwk_from_pem(pem: str) -> tuple[dict[str, Any], Any]:
    """allauth's (public JWK, private key) for a PEM; the JWK is the caller's own copy to change."""
    jwk, private_key = _parsed(pem)
    return dict(jwk), private_key


def sign(claims: dict[str, Any], *, typ: str | None = None) -> str:
    """`claims` signed RS256 with the adapter's signing key, its kid in the header (as allauth signs ID
    tokens); `typ` for tokens that name their type (logout+jwt)."""
    jwk, private_key = _parsed(get_adapter().get_signing_key().pem)
    headers = {"kid": jwk["kid"], **({"typ": typ} if typ else {})}
    return jwt.encode(claims, private_key, algorithm="RS256", headers=headers)
