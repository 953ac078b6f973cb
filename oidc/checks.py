"""`manage.py check --deploy`: what the provider needs in production and cannot default safely.

Not refused at start, as SECRET_KEY is: the test suite and `make run` run without them (a key made on first
use, loopback addresses). Run the deploy checks before a production start (README, "Production").
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.security, deploy=True)
def provider_configured(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    problems = []
    if not settings.IDP_OIDC_PRIVATE_KEYS:
        problems.append(checks.Error(
            "No key signs ID tokens and logout tokens: the JWKS is empty and every sign-in at a service fails.",
            hint="Set CAREID_OIDC_PRIVATE_KEY_FILES to the PEM file(s) of the RSA signing key(s).", id="careid.E001"))
    base = urlsplit(settings.CAREID_BASE_URL)
    if base.scheme != "https" or base.hostname in {None, "127.0.0.1", "localhost", "::1"}:
        problems.append(checks.Error(
            f"CAREID_BASE_URL is {settings.CAREID_BASE_URL!r}: it is the OpenID Connect issuer, the token endpoint's "
            "audience, the base of every e-mailed link and the WebAuthn RP ID, so services, people and browsers "
            "would all be sent to a loopback or plain-http address.",
            hint="Set CAREID_BASE_URL to careid's public https address, e.g. https://careid.example.nhs.uk.",
            id="careid.E002"))
    return problems
