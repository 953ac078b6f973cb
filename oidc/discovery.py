"""/.well-known/openid-configuration: exactly what careid supports, nothing allauth could but careid does not."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import reverse

from authenticators import registry

from .adapter import ID_TOKEN_CLAIMS, SCOPE_CLAIMS, SCOPES
from .client_auth import ALGORITHMS
from .models import AuthMethod


def metadata() -> dict[str, Any]:
    base = settings.CAREID_BASE_URL
    return {
        "issuer": base,
        "authorization_endpoint": base + reverse("oidc:authorization"),
        "token_endpoint": base + reverse("oidc:token"),
        "userinfo_endpoint": base + reverse("oidc:userinfo"),
        "jwks_uri": base + reverse("oidc:jwks"),
        "end_session_endpoint": base + reverse("oidc:logout"),
        "revocation_endpoint": base + reverse("oidc:revoke"),
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": [method.value for method in AuthMethod],
        "token_endpoint_auth_signing_alg_values_supported": ALGORITHMS,
        "revocation_endpoint_auth_methods_supported": [method.value for method in AuthMethod],
        "code_challenge_methods_supported": ["S256"],
        "acr_values_supported": [*registry.LEVELS, *registry.specific_classes()],
        "claims_supported": sorted({*ID_TOKEN_CLAIMS, *(claim for claims in SCOPE_CLAIMS.values() for claim in claims)}),
        "prompt_values_supported": ["none", "login"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": False,
    }
