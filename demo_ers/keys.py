"""The demo's own key: it signs the private_key_jwt client assertions, and its public half is
published at /jwks.json, the jwks_uri careid was given when the demo was registered."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from joserfc.jwk import RSAKey

from .files import made_once


@cache
def signing_key() -> RSAKey:
    """Made on first start (a git-ignored file, DEMO_ERS_KEY_FILE) and kept, so the registration at
    careid stays valid across restarts. The kid is the key's RFC 7638 thumbprint."""
    pem = made_once(settings.DEMO_ERS_KEY_FILE, lambda: RSAKey.generate_key(2048).as_pem(private=True))
    kid = RSAKey.import_key(pem).thumbprint()
    return RSAKey.import_key(pem, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


def public_jwks() -> dict:
    return {"keys": [signing_key().as_dict(private=False)]}
