"""A relying service as the tests drive it: registration, authorize, the token endpoint with
private_key_jwt, and checking what comes back (signatures against careid's JWKS)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings

REDIRECT_URI = "https://ers.example.nhs.uk/callback"
POST_LOGOUT_URI = "https://ers.example.nhs.uk/signed-out"
SCOPE = "openid profile email nhsperson"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def new_key(kind: str = "RSA"):
    return ec.generate_private_key(ec.SECP256R1()) if kind == "EC" else rsa.generate_private_key(
        public_exponent=65537, key_size=2048)


def public_jwk(key, kid: str) -> dict:
    algorithm = jwt.algorithms.ECAlgorithm if isinstance(key, ec.EllipticCurvePrivateKey) else jwt.algorithms.RSAAlgorithm
    jwk = json.loads(algorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig"}


def register(*, name: str = "e-Referral Service", key=None, kid: str = "ers-1", auth_method: str = "private_key_jwt",
             backchannel_logout_uri: str = "", refresh_tokens: bool = True, redirect_uris=(REDIRECT_URI,),
             jwks_uri: str = ""):
    """Register through the same form and flow as the admin and register_client."""
    from oidc import flows
    from oidc.forms import RelyingServiceForm

    jwks = json.dumps({"keys": [public_jwk(key, kid)]}) if key is not None and not jwks_uri else ""
    form = RelyingServiceForm(data={
        "name": name, "auth_method": auth_method, "redirect_uris": "\n".join(redirect_uris),
        "post_logout_redirect_uris": POST_LOGOUT_URI, "backchannel_logout_uri": backchannel_logout_uri,
        "jwks_uri": jwks_uri, "jwks": jwks, "allowed_scopes": SCOPE.split(), "refresh_tokens": refresh_tokens,
    })
    assert form.is_valid(), form.errors
    return flows.save_relying_service(form, actor=None)


def token_endpoint() -> str:
    return settings.CAREID_BASE_URL + "/oidc/token"


def assertion(client_id: str, key, *, kid: str = "ers-1", aud: str | None = None, lifetime: int = 60,
              jti: str | None = None, issued: float | None = None, algorithm: str | None = None) -> str:
    now = issued if issued is not None else time.time()
    claims = {"iss": client_id, "sub": client_id, "aud": aud or token_endpoint(), "iat": int(now),
              "exp": int(now + lifetime), "jti": jti or uuid.uuid4().hex}
    algorithm = algorithm or ("ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256")
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


@dataclass
class Authorization:
    """One authorization request's secrets, kept by the relying service."""

    state: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))

    @property
    def challenge(self) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(self.verifier.encode()).digest()).rstrip(b"=").decode()

    def params(self, client_id: str, **extra) -> dict:
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": SCOPE,
                  "state": self.state, "nonce": self.nonce, "code_challenge": self.challenge,
                  "code_challenge_method": "S256"}
        params.update(extra)
        return {name: value for name, value in params.items() if value is not None}


def query_of(location: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


def authorize(client, client_id: str, authorization: Authorization | None = None, **extra):
    authorization = authorization or Authorization()
    return client.get("/oidc/authorize", authorization.params(client_id, **extra)), authorization


def code_of(response, authorization: Authorization) -> str:
    assert response.status_code == 302, response.content.decode()[:3000]
    assert response["Location"].startswith(REDIRECT_URI + "?"), response["Location"]
    query = query_of(response["Location"])
    assert query.get("state") == authorization.state
    assert "code" in query, query
    return query["code"]


def exchange(client, client_id: str, key, code: str, authorization: Authorization, **overrides):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "code_verifier": authorization.verifier, "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion(client_id, key)}
    data.update(overrides)
    return client.post("/oidc/token", {name: value for name, value in data.items() if value is not None})


def verified(client, id_token: str, client_id: str) -> dict:
    """The ID token's claims once its signature checks out against careid's published JWKS."""
    jwks = client.get("/.well-known/jwks.json").json()
    header = jwt.get_unverified_header(id_token)
    key = next(key for key in jwt.PyJWKSet.from_dict(jwks).keys if key.key_id == header["kid"])
    return jwt.decode(id_token, key.key, algorithms=["RS256"], audience=client_id, issuer=settings.CAREID_BASE_URL)
