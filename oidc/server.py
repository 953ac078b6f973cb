"""allauth's oauthlib server with careid's request validator.

allauth's validator is extended, not forked: each override adds what CIS2 relying services need and
calls allauth's own code for the rest (codes, tokens, PKCE, scopes, refresh rotation, code reuse
detection). Reuse detection for rotated refresh tokens is careid's (allauth deletes a rotated token
and forgets it): RotatedRefreshToken.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from urllib.parse import unquote_plus

from allauth.core import context
from allauth.core.internal import httpkit
from allauth.idp.oidc import app_settings
from allauth.idp.oidc.adapter import get_adapter
from allauth.idp.oidc.internal.oauthlib.request_validator import OAuthLibRequestValidator
from allauth.idp.oidc.internal.oauthlib.server import (
    claim_authorization_code,
    generate_access_token,
    generate_refresh_token,
    validate_code_challenge_method,
)
from allauth.idp.oidc.internal.oauthlib.utils import get_validator_context
from allauth.idp.oidc.internal.tokens import decode_jwt_token
from allauth.idp.oidc.models import Client, Token
from django.urls import reverse
from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc6749.grant_types.authorization_code import code_challenge_method_s256
from oauthlib.openid import Server
from oauthlib.openid.connect.core.exceptions import RequestNotSupported, RequestURINotSupported

from audit.models import Event
from audit.record import record
from signin.session import current

from . import levels, signing
from .adapter import SCOPES
from .client_auth import JWT_BEARER, ClientAssertionError, unverified_client_id, verify_client_assertion
from .models import AuthMethod, Grant, RelyingService, RotatedRefreshToken

PKCE_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")  # RFC 7636 4.1: 43 to 128 unreserved characters
S256_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")  # RFC 7636 4.2: a SHA-256 hash in base64url, unpadded


def token_endpoint() -> str:
    from django.conf import settings

    return settings.CAREID_BASE_URL + reverse("oidc:token")


def refuse(reason: str, client_id: str | None = None) -> None:
    """Remember why this request is refused, for the audit event the view writes."""
    context.request.oidc_refusal = (reason, client_id)


def refusal(request) -> tuple[str, str | None] | None:
    return getattr(request, "oidc_refusal", None)


class CareIdRequestValidator(OAuthLibRequestValidator):
    # --- client authentication: private_key_jwt beside allauth's client secrets -----------------
    def client_authentication_required(self, request, *args, **kwargs) -> bool:
        if context.request.POST.get("client_assertion"):
            return True
        return super().client_authentication_required(request, *args, **kwargs)

    def authenticate_client(self, request, *args, **kwargs) -> bool:
        post = context.request.POST
        assertion_type, assertion = post.get("client_assertion_type"), post.get("client_assertion")
        basic_id, basic_secrets = self._basic_credentials(request)
        if assertion_type or assertion:
            if assertion_type != JWT_BEARER or not assertion:
                refuse("unsupported client_assertion_type")
                return False
            if basic_id or post.get("client_secret"):
                refuse("more than one client authentication method")
                return False
            try:
                client = verify_client_assertion(assertion, token_endpoint=token_endpoint())
            except ClientAssertionError as error:
                refuse(error.reason, error.client_id)
                return False
            if request.client_id and request.client_id != client.pk:
                refuse("client_id does not match the client assertion", client.pk)
                return False
            get_validator_context().clients[client.pk] = client
            self._use_client(request, client)
            return True
        client_id = basic_id or post.get("client_id")
        service = self._lookup_client(request, client_id)
        if service is not None and service.auth_method == AuthMethod.PRIVATE_KEY_JWT:
            refuse("client is registered for private_key_jwt, not a secret", service.pk)
            return False
        if basic_id:  # allauth's check of the secret (a password hash), given the secret decoded
            authenticated = service is not None and any(service.check_secret(secret) for secret in basic_secrets)
            if authenticated:
                self._use_client(request, service)
        else:
            authenticated = super().authenticate_client(request, *args, **kwargs)
        if not authenticated:
            refuse("client authentication failed", client_id if isinstance(client_id, str) else None)
            return False
        return True

    def _basic_credentials(self, request) -> tuple[str | None, list[str]]:
        """HTTP Basic client credentials: the client_id, and the secrets to try. RFC 6749 2.3.1 form-urlencodes
        both before Base64 (openid-client, Nimbus, Spring Security do; allauth reads them undecoded), so careid
        decodes them. A service registered before careid's secrets were URL-safe may send its secret as it
        is: when decoding changed it, it is tried as sent too (and an id as sent, when the decoded one names no
        service). Each try is the secret's hash check, constant-time."""
        client_id, secret = httpkit.extract_basic_auth(request.headers)
        if client_id is None or secret is None:
            return None, []
        decoded_id = unquote_plus(client_id)
        if decoded_id != client_id and self._lookup_client(request, decoded_id) is None:
            decoded_id = client_id
        return decoded_id, list(dict.fromkeys([unquote_plus(secret), secret]))

    def _lookup_client(self, request, client_id) -> RelyingService | None:
        """allauth's per-request cache of clients, filled with RelyingServices (careid's view of allauth's
        Client, the same row): each service is read once per request. careid registers every service
        (no client ID metadata documents), so no id that is not a string can name one."""
        clients = get_validator_context().clients
        if client_id not in clients:
            clients[client_id] = (RelyingService.objects.filter(pk=client_id).first()
                                  if isinstance(client_id, str) and client_id else None)
        return clients[client_id]

    def get_authorization_code_scopes(self, client_id, code, redirect_uri, request) -> list[str]:
        # oauthlib picks the OpenID grant (the one that adds an ID token) from the code's scopes before
        # the client is authenticated; with private_key_jwt the client_id is only inside the assertion.
        # With client_secret_basic, only in the Authorization header (allauth's fallback reads it undecoded).
        if not client_id:
            assertion = context.request.POST.get("client_assertion")
            client_id = unverified_client_id(assertion) if assertion else self._basic_credentials(request)[0]
        return super().get_authorization_code_scopes(client_id, code, redirect_uri, request)

    def authenticate_client_id(self, client_id, request, *args, **kwargs) -> bool:
        if not super().authenticate_client_id(client_id, request, *args, **kwargs):
            refuse("public client unknown, or confidential client without authentication", client_id)
            return False
        return True

    # --- scopes: those careid does not know are ignored -------------------------------------------
    def validate_scopes(self, client_id, scopes, client, request, *args, **kwargs) -> bool:
        """OpenID Connect Core 3.1.2.1: scope values careid does not know (CIS2's nationalrbacaccess,
        associatedorgs, selectedrole, ... until careid builds them) are ignored. They are dropped from the
        request, so the code, its tokens and the token response's `scope` hold only what was granted. The
        rest must be registered for the service (its registration is what it may see), and openid is
        required: a sign-in without an ID token is no sign-in at careid."""
        request.scopes = [scope for scope in scopes if scope in SCOPES]
        # No scope at all: oauthlib took it for plain OAuth 2.0 (no OpenID Connect checks, prompt=login ignored)
        # and filled in the service's default scopes, so "openid" is asked of what the service sent.
        if "openid" not in request.scopes or not request.scope:
            raise errors.InvalidScopeError(description="the openid scope is required", request=request)
        registered = request.client.get_scopes()
        if unregistered := [scope for scope in request.scopes if scope not in registered]:
            raise errors.InvalidScopeError(description=f"scope not registered for this service: {' '.join(unregistered)}",
                                           request=request)
        return True

    def is_within_original_scope(self, request_scopes, refresh_token, request, *args, **kwargs) -> bool:
        """A refresh asking for scopes the sign-in did not get: those careid does not know are ignored here too
        (Authlib and requests-oauthlib send the sign-in's scope string again with every refresh); the rest must
        be among the grant's."""
        known = [scope for scope in request_scopes if scope in SCOPES]
        if all(scope in self.get_original_scopes(refresh_token, request) for scope in known):
            request.scopes = known
            return True
        return False

    # --- response types: the authorization code flow only ----------------------------------------
    def validate_response_type(self, client_id, response_type, client, request, *args, **kwargs) -> bool:
        """Implicit and hybrid flows are not careid's for any service (CIS2; discovery lists "code" alone): another
        response type is unsupported (RFC 6749 4.1.2.1), not one this service's registration happens to lack
        (allauth's unauthorized_client)."""
        if response_type != "code":
            raise errors.UnsupportedResponseTypeError(request=request)
        return super().validate_response_type(client_id, response_type, client, request, *args, **kwargs)

    # --- redirect URIs: registered exactly ------------------------------------------------------
    def validate_redirect_uri(self, client_id, redirect_uri, request, *args, **kwargs) -> bool:
        return redirect_uri in request.client.get_redirect_uris()

    # --- codes and tokens -----------------------------------------------------------------------
    def validate_code(self, client_id, code, client, request, *args, **kwargs) -> bool:
        if not super().validate_code(client_id, code, client, request, *args, **kwargs):
            refuse("unknown or expired authorization code", client_id)
            return False
        if not request.user.is_active:
            refuse(f"profile {request.user.status}", client_id)
            return False
        # The challenge the code was issued with, never one sent to the token endpoint.
        challenge = self.get_code_challenge(code, request)
        if challenge is None and request.code_verifier is not None:
            # RFC 9700 2.1.1: a verifier for a code issued without a challenge is a PKCE downgrade (an
            # attacker who stripped the challenge from the authorization request); oauthlib ignores it.
            refuse("PKCE code_verifier for a code issued without a code_challenge", client_id)
            return False
        if challenge and request.code_verifier is not None and not PKCE_VERIFIER.fullmatch(request.code_verifier):
            # oauthlib takes any verifier whose hash matches: "abc" too, which anyone who saw the challenge can guess.
            refuse("PKCE code_verifier is not 43 to 128 unreserved characters (RFC 7636 4.1)", client_id)
            return False
        # oauthlib checks the verifier next, with the same function, but cannot say why it refused.
        if (challenge and request.code_challenge_method == "S256" and request.code_verifier is not None
                and not code_challenge_method_s256(request.code_verifier, challenge)):
            refuse("PKCE code_verifier does not match the code_challenge", client_id)
            return False
        return True

    def validate_refresh_token(self, refresh_token, client, request, *args, **kwargs) -> bool:
        if not super().validate_refresh_token(refresh_token, client, request, *args, **kwargs):
            hashed = get_adapter().hash_token(refresh_token)
            rotated = RotatedRefreshToken.objects.filter(client=client, token_hash=hashed).first()
            if rotated is not None:
                _refuse_reuse(client, rotated.grant_id)
            else:
                refuse("unknown, revoked or expired refresh token, or the person is not active", client.pk)
            return False
        return True

    def save_authorization_code(self, client_id, code, request, *args, **kwargs) -> None:
        super().save_authorization_code(client_id, code, request, *args, **kwargs)
        auth = current(context.request)
        Grant.objects.create(
            grant_id=get_validator_context().grant_id, client=request.client, user=request.user, sid=auth.sid,
            session_key=context.request.session.session_key or "", method=auth.method, aal=auth.aal,
            amr=list(auth.amr), auth_time=datetime.fromtimestamp(auth.at, UTC),
            acr=levels.acr_claim(request.acr_values, auth),
        )

    def finalize_id_token(self, id_token: dict, token: dict, token_handler, request) -> str:
        """allauth's finalize_id_token, step for step (iss, exp, jti, the adapter's get_claims, then its
        populate_id_token hook), with how the person signed in added first; signed by oidc/signing.py
        (the key parsed once) instead of allauth's parse on every token."""
        adapter = get_adapter()
        grant = _grant_of_this_request()
        id_token.update(
            iss=adapter.get_issuer(), exp=id_token["iat"] + app_settings.ID_TOKEN_EXPIRES_IN, jti=uuid.uuid4().hex,
            azp=request.client.pk, acr=grant.acr, amr=grant.amr, auth_time=int(grant.auth_time.timestamp()),
            sid=grant.sid, authentication_assurance_level=str(grant.aal),
            id_assurance_level=str(request.user.identity_assurance_level),
        )
        id_token.update(adapter.get_claims("id_token", request.user, request.client, request.scopes,
                                           email=get_validator_context().email))
        adapter.populate_id_token(id_token, request.client, request.scopes)
        return signing.sign(id_token)

    def save_bearer_token(self, token: dict, request, *args, **kwargs) -> None:
        if Client.GrantType.REFRESH_TOKEN not in request.client.get_grant_types():
            # oauthlib issues a refresh token with every code. Using it is refused for a service registered
            # without refresh tokens, but it would start working if they were switched on later: none is
            # stored, and none is sent (oauthlib sends this very dict once it is saved).
            token.pop("refresh_token", None)
        replaced = get_validator_context().refresh_token  # allauth deletes it when it rotates
        if replaced is not None and app_settings.ROTATE_REFRESH_TOKEN and not RotatedRefreshToken.objects.remember(replaced):
            _refuse_reuse(request.client, replaced.get_grant_id())  # another request rotated it a moment ago
            raise errors.InvalidGrantError(request=request)
        super().save_bearer_token(token, request, *args, **kwargs)
        if replaced is not None and "refresh_token" in token and replaced.get_scopes() != list(request.scopes):
            # RFC 6749 6: a refresh may narrow the access token, never the refresh token issued in its place
            # (allauth gives both the narrowed scope, and a later refresh could not widen it back).
            Token.objects.filter(client=request.client, type=Token.Type.REFRESH_TOKEN,
                                 hash=get_adapter().hash_token(token["refresh_token"])).update(scopes=replaced.scopes)
        grant = _grant_of_this_request()  # read once per request (finalize_id_token read it first)
        record(Event.OIDC_TOKEN_ISSUED, subject=request.user, method=grant.method, aal=grant.aal,
               client=request.client.pk, service=request.client.name, grant_type=request.grant_type,
               scopes=list(request.scopes), acr=grant.acr)

    # --- id_token_hint and a sub asked for in the claims parameter: whom the service expects -----------
    def validate_user_match(self, id_token_hint, scopes, claims, request) -> bool:
        """Nobody signed in yet: accepted, the person signs in first and comes back here, asked again.
        Signed in: the person must be the one the service names (OpenID Connect Core 3.1.2.1, 5.5.1),
        else the service gets login_required. The hint must be careid's, for this service; an expired one
        still names its person (ID tokens last 5 minutes, the hint is who, not a credential)."""
        user = context.request.user
        if not user.is_authenticated:
            return True
        named = []
        if id_token_hint:
            payload = decode_jwt_token(id_token_hint, client_id=request.client.id, verify_exp=False, verify_iss=True)
            if payload is None:
                return False
            named.append(payload.get("sub"))
        if (sub := _sub_asked_for(claims)) is not None:
            named.append(sub)
        signed_in = get_adapter().get_user_sub(request.client, user)
        return all(sub == signed_in for sub in named)

    # --- prompt=none: only a session that already reaches what is asked ---------------------------
    def validate_silent_login(self, request) -> bool:
        if not levels.session_satisfies(context.request, request.acr_values, request.max_age):
            return False
        request.user = context.request.user
        return True

    def validate_silent_authorization(self, request) -> bool:
        return True  # no consent screen: using CIS2 implies consent under its terms of use


def _refuse_what_careid_does_not_support(request) -> dict:
    """A parameter careid would otherwise ignore, to the service's surprise: a request object, by value or
    by reference (discovery says neither is supported; what the service put in it, a level or a nonce, would
    be dropped: OpenID Connect Core 6.1, 6.2), a response_mode other than the one discovery lists (the code
    would go where the service did not ask), a max_age that is no number of seconds (the service's wish for a
    recent sign-in would be dropped)."""
    # oauthlib's Request answers every parameter sent as an attribute (it has no `request` of its own)
    if getattr(request, "request", None) is not None:
        raise RequestNotSupported(request=request)
    if getattr(request, "request_uri", None) is not None:
        raise RequestURINotSupported(request=request)
    mode = request.response_mode
    if mode is not None and mode != "query":
        raise errors.InvalidRequestError(description=f"response_mode {mode!r} is not supported: query only",
                                         request=request)
    if request.max_age is not None and levels.parse_max_age(request.max_age) is None:
        raise errors.InvalidRequestError(description="max_age must be a whole number of seconds, 0 or more",
                                         request=request)
    return {}


def _refuse_a_code_challenge_no_verifier_meets(request) -> dict:
    """RFC 7636 4.2: an S256 code_challenge is 43 base64url characters. Any other would be stored with the code,
    which no verifier could then redeem: the service is told now, with its state, not at the token endpoint."""
    if request.code_challenge is not None and not S256_CHALLENGE.fullmatch(request.code_challenge):
        raise errors.InvalidRequestError(description="code_challenge must be the 43 base64url characters of an S256 hash",
                                         request=request)
    return {}


def _claim_authorization_code(request) -> None:
    """allauth's claim of the code (a second use revokes the first use's tokens), with the reason. The sign-in
    into the service the first use made ends with them (RFC 6749 10.5: the code was stolen, or the service
    replayed it): it leaves the person's list of where they are signed in, and no back-channel logout is owed."""
    try:
        claim_authorization_code(request)
    except errors.InvalidGrantError:
        code = get_validator_context().code_tokens.get((request.client_id, request.code))
        if code is not None:
            Grant.objects.filter(client_id=request.client_id, grant_id=code.get_grant_id()).end()
        refuse("authorization code already exchanged (reused)", request.client_id)
        raise


def _refuse_reuse(client, grant_id: str | None) -> None:
    """A refresh token that rotation replaced is presented again: the token was stolen, or the service
    lost track of its tokens, and careid cannot tell the thief from the service. The grant ends with every
    token of it (RFC 9700 4.14.2), so whoever holds the newest one is stopped too; the person signs in again
    at the service."""
    if grant_id:
        Grant.objects.filter(client=client, grant_id=grant_id).end()
    refuse("refresh token already rotated (reused): the grant's tokens are revoked", client.pk)


def _sub_asked_for(claims) -> str | None:
    """The sub value the claims parameter asks the ID token for ({"id_token": {"sub": {"value": …}}})."""
    wanted = claims.get("id_token") if isinstance(claims, dict) else None
    sub = wanted.get("sub") if isinstance(wanted, dict) else None
    return sub.get("value") if isinstance(sub, dict) else None


def _grant_of_this_request() -> Grant:
    ctx = get_validator_context()
    grant_id = ctx.grant_id or (ctx.refresh_token.get_grant_id() if ctx.refresh_token else None)
    cached = getattr(ctx, "careid_grant", None)
    if cached is None or cached.grant_id != grant_id:
        cached = ctx.careid_grant = Grant.objects.get(grant_id=grant_id)
    return cached


class CareIdServer(Server):
    """allauth's OAuthLibServer (internal/oauthlib/server.py) with CareIdRequestValidator: the same
    token generators, lifetimes and custom validators, only the validator class differs."""

    def __init__(self, **kwargs) -> None:
        super().__init__(
            request_validator=CareIdRequestValidator(),
            token_generator=generate_access_token,
            refresh_token_generator=generate_refresh_token,
            token_expires_in=app_settings.ACCESS_TOKEN_EXPIRES_IN,
            **kwargs,
        )
        for grant in (self.auth_grant, self.openid_connect_auth, self.openid_connect_hybrid):
            grant.custom_validators.pre_auth.append(validate_code_challenge_method)
            grant.custom_validators.pre_auth.append(_refuse_a_code_challenge_no_verifier_meets)
            grant.custom_validators.pre_auth.append(_refuse_what_careid_does_not_support)
        for grant in (self.auth_grant, self.openid_connect_auth):
            grant.custom_validators.post_token.append(_claim_authorization_code)


def get_server() -> CareIdServer:
    return CareIdServer()

