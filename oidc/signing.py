"""The provider's signing keys parsed once per process instead of on every token.

allauth turns the signing key's PEM into a key object (allauth.core.internal.jwkkit.load_jwk_from_pem)
each time it signs an ID token, and again for the JWKS, an id_token_hint and each logout token.
cryptography checks an RSA private key as it loads it: about 35 ms of CPU for 2,048 bits here, half
of a whole code flow (bench/oidc_flow.py). The keys come from settings and do not change while a
process runs, so each PEM is parsed once; a rolled key is a new PEM, parsed once in its turn.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from allauth.core.internal import jwkkit

_load_jwk_from_pem = jwkkit.load_jwk_from_pem  # allauth's own, which does the parsing


@lru_cache(maxsize=8)  # the signing key, the next one and the last one: a handful at most
def _parsed(pem: str) -> tuple[dict[str, Any], Any]:
    return _load_jwk_from_pem(pem)


def load_jwk_from_pem(pem: str) -> tuple[dict[str, Any], Any]:
    """allauth's (public JWK, private key) for a PEM; the JWK is the caller's own copy to change."""
    jwk, private_key = _parsed(pem)
    return dict(jwk), private_key


def install() -> None:
    """Every caller reaches the function through the module (jwkkit.load_jwk_from_pem(...))."""
    jwkkit.load_jwk_from_pem = load_jwk_from_pem
