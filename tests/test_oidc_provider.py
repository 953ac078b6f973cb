"""careid as an OpenID Connect provider: what a relying service (eRS) sends and gets back, and every
refusal the issue names, through the real endpoints."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from datetime import timedelta
from urllib.parse import quote_plus

import jwt
import pytest
import time_machine
from allauth.idp.oidc.models import Token
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent, Event
from oidc.models import Grant, RotatedRefreshToken
from signin.session import SESSION_AUTH

from . import oidc_rp as rp
from .conftest import sign_in


@pytest.fixture(scope="session")
def rp_key():
    return rp.new_key()


@pytest.fixture
def service(db, rp_key):
    service, _secret = rp.register(key=rp_key)
    return service


def refused(reason_part: str) -> bool:
    return any(reason_part in event.details.get("reason", "") for event in AuditEvent.objects.filter(event=Event.OIDC_REFUSED))


def signed_in_code(client, person, service, **extra):
    sign_in(client, person)
    response, authorization = rp.authorize(client, service.pk, **extra)
    return rp.code_of(response, authorization), authorization


def test_discovery_lists_exactly_what_is_supported(client, db, settings):
    data = client.get("/.well-known/openid-configuration").json()
    base = settings.CAREID_BASE_URL
    assert data["issuer"] == base
    assert data["authorization_endpoint"] == base + "/oidc/authorize"
    assert data["token_endpoint"] == base + "/oidc/token"
    assert data["jwks_uri"] == base + "/.well-known/jwks.json"
    assert data["acr_values_supported"] == ["AAL3_ANY", "AAL2_OR_AAL3_ANY", "AAL2_ANY", "AAL1_USERPASS", "AAL3_FIDO2", "AAL3_IOS",
                                          "AAL2_TOTP"]
    assert data["scopes_supported"] == ["openid", "profile", "email", "nhsperson"]
    assert data["response_types_supported"] == ["code"]
    assert data["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert "private_key_jwt" in data["token_endpoint_auth_methods_supported"]
    assert data["token_endpoint_auth_signing_alg_values_supported"] == ["RS256", "ES256"]
    assert data["backchannel_logout_supported"] and data["backchannel_logout_session_supported"]
    assert {"sub", "acr", "amr", "auth_time", "sid", "nhsid_useruid", "idassurancelevel", "uid"} <= set(
        data["claims_supported"])
    assert "device_authorization_endpoint" not in data


def test_a_signed_in_person_is_sent_back_with_a_code_and_the_service_gets_verified_claims(client, person, service, rp_key):
    code, authorization = signed_in_code(client, person, service)
    response = rp.exchange(client, service.pk, rp_key, code, authorization)
    assert response.status_code == 200, response.content
    tokens = response.json()
    claims = rp.verified(client, tokens["id_token"], service.pk)
    user = person.user
    assert claims["sub"] == user.uid
    assert claims["acr"] == "AAL2_OR_AAL3_ANY"
    assert claims["amr"] == ["pwd", "otp"]
    assert claims["authentication_assurance_level"] == "2" and claims["id_assurance_level"] == "0"
    assert claims["nonce"] == authorization.nonce
    assert claims["sid"] == client.session[SESSION_AUTH]["sid"]
    assert abs(claims["auth_time"] - client.session[SESSION_AUTH]["at"]) < 1
    assert claims["azp"] == service.pk and "email" not in claims  # the scopes' claims come from userinfo

    info = client.get("/oidc/userinfo", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}").json()
    assert info["sub"] == user.uid and info["uid"] == user.uid and info["nhsid_useruid"] == user.uid
    assert info["name"] == "Edith Cavell" and info["family_name"] == "Cavell" and info["given_name"] == "Edith"
    assert info["email"] == user.email and info["email_verified"] is True
    assert info["initials"] == "EC" and info["idassurancelevel"] == "0"
    event = AuditEvent.objects.get(event=Event.OIDC_TOKEN_ISSUED)
    assert event.subject == user and event.details["client"] == service.pk
    assert event.details["acr"] == "AAL2_OR_AAL3_ANY" and "nhsperson" in event.details["scopes"]


def test_userinfo_leaves_out_claims_careid_has_no_value_for(client, person, service, rp_key):
    """CIS2-OIDC.md: nhsperson releases nhsid_useruid "(always)", the rest when known. OpenID Connect Core 5.3.2:
    a claim not returned is omitted, not present with a null or empty value. careid sent middle_names "" always
    (it keeps no middle names) and title "" for a person without one, which a service reads as a title and
    middle names known to be empty."""
    assert person.user.title == ""
    code, authorization = signed_in_code(client, person, service)
    bearer = f"Bearer {rp.exchange(client, service.pk, rp_key, code, authorization).json()['access_token']}"
    info = client.get("/oidc/userinfo", HTTP_AUTHORIZATION=bearer).json()
    assert info["nhsid_useruid"] == person.user.uid and info["display_name"] == "Edith Cavell"
    assert "title" not in info and "middle_names" not in info and "" not in info.values(), info
    person.user.title = "Dr"
    person.user.save(update_fields=["title"])
    info = client.get("/oidc/userinfo", HTTP_AUTHORIZATION=bearer).json()
    assert info["title"] == "Dr" and info["display_name"] == "Dr Edith Cavell"
    assert "middle_names" not in client.get("/.well-known/openid-configuration").json()["claims_supported"]


def test_scopes_careid_does_not_have_are_ignored_and_the_others_granted(client, person, service, rp_key):
    """CIS2's scopes careid does not build yet (associatedorgs, nationalrbacaccess, selectedrole, the memberships):
    OpenID Connect Core 3.1.2.1 says scope values not understood SHOULD be ignored. careid answered invalid_scope,
    so eRS, which asks for its role scopes, could sign nobody in; a person may have no roles and the service must
    cope. The token response's scope says what was granted."""
    scope = "openid profile nhsperson nationalrbacaccess associatedorgs selectedrole professionalmemberships"
    code, authorization = signed_in_code(client, person, service, scope=scope)
    tokens = rp.exchange(client, service.pk, rp_key, code, authorization).json()
    assert tokens["scope"] == "openid profile nhsperson"
    assert rp.verified(client, tokens["id_token"], service.pk)["sub"] == person.user.uid
    info = client.get("/oidc/userinfo", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}").json()
    assert info["uid"] == person.user.uid and info["nhsid_useruid"] == person.user.uid
    assert AuditEvent.objects.get(event=Event.OIDC_TOKEN_ISSUED).details["scopes"] == ["openid", "profile", "nhsperson"]


def test_a_refresh_sending_the_sign_ins_scope_again_is_not_refused(client, person, service, rp_key):
    """Authlib's and requests-oauthlib's refresh_token() send the scope the sign-in asked for with every refresh:
    the scopes careid ignored at sign-in are ignored there too, not answered invalid_scope."""
    scope = "openid profile nhsperson nationalrbacaccess selectedrole"
    code, authorization = signed_in_code(client, person, service, scope=scope)
    tokens = rp.exchange(client, service.pk, rp_key, code, authorization).json()
    refreshed = client.post("/oidc/token", {
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "scope": scope,
        "client_assertion_type": rp.JWT_BEARER, "client_assertion": rp.assertion(service.pk, rp_key)})
    assert refreshed.status_code == 200, refreshed.content
    assert refreshed.json()["scope"] == "openid profile nhsperson"
    assert not AuditEvent.objects.filter(event=Event.OIDC_REFUSED).exists()
    # A scope careid has that the sign-in did not get is still refused.
    refused_refresh = client.post("/oidc/token", {
        "grant_type": "refresh_token", "refresh_token": refreshed.json()["refresh_token"], "scope": "openid email",
        "client_assertion_type": rp.JWT_BEARER, "client_assertion": rp.assertion(service.pk, rp_key)})
    assert refused_refresh.status_code == 400 and refused_refresh.json()["error"] == "invalid_scope"


def test_a_request_without_any_scope_is_refused_as_one_without_openid(client, person, service):
    """oauthlib takes a request with no scope for plain OAuth 2.0 and gives it the service's default scopes, so it
    got a code without OpenID Connect's checks: prompt=login did not make a signed-in person sign in again."""
    sign_in(client, person)
    response, authorization = rp.authorize(client, service.pk, scope=None, prompt="login")
    query = rp.query_of(response["Location"])
    assert response["Location"].startswith(rp.REDIRECT_URI + "?") and query["state"] == authorization.state
    assert query["error"] == "invalid_scope" and "code" not in query


@pytest.mark.parametrize(("scope", "reason"), [
    ("profile nhsperson", "the openid scope is required"),
    ("nationalrbacaccess selectedrole", "the openid scope is required"),  # nothing careid knows is left
    ("openid profile nhsperson", "scope not registered for this service: nhsperson"),
])
def test_a_scope_careid_has_is_refused_unless_registered_and_openid_always_needed(client, person, service, scope,
                                                                                  reason):
    service.set_scopes(["openid", "profile", "email"])
    service.save()
    sign_in(client, person)
    response, authorization = rp.authorize(client, service.pk, scope=scope)
    query = rp.query_of(response["Location"])
    assert response["Location"].startswith(rp.REDIRECT_URI + "?") and query["state"] == authorization.state
    assert query["error"] == "invalid_scope" and query["error_description"] == reason and "code" not in query
    assert refused(reason) and not Token.objects.filter(type=Token.Type.AUTHORIZATION_CODE).exists()


def test_a_person_not_signed_in_goes_to_cis2_authentication_and_back(client, person, service, rp_key):
    response, authorization = rp.authorize(client, service.pk, acr_values="AAL2_ANY")
    assert response.status_code == 302 and response["Location"].startswith("/login/?acr_values=AAL2_ANY&goto=")
    goto = rp.query_of(response["Location"])["goto"]
    assert goto.startswith("/oidc/authorize?")
    page = client.get(response["Location"]).content.decode()
    assert "CIS2 Authentication" in page and "Authenticator app" in page
    assert sign_in(client, person, goto=goto).url == goto
    code = rp.code_of(client.get(goto), authorization)
    claims = rp.verified(client, rp.exchange(client, service.pk, rp_key, code, authorization).json()["id_token"],
                         service.pk)
    assert claims["acr"] == "AAL2_ANY"


def test_a_specific_class_asked_for_comes_back_as_the_class_reached(client, person, service, rp_key):
    code, authorization = signed_in_code(client, person, service, acr_values="AAL2_TOTP")
    claims = rp.verified(client, rp.exchange(client, service.pk, rp_key, code, authorization).json()["id_token"],
                         service.pk)
    assert claims["acr"] == "AAL2_TOTP"


@pytest.mark.parametrize("redirect_uri", [
    "https://evil.example.com/callback",
    rp.REDIRECT_URI + "?next=https://evil.example.com",  # extra query: allauth alone would accept it
    rp.REDIRECT_URI + "/",
    rp.REDIRECT_URI.replace("https", "http"),
])
def test_an_unregistered_redirect_uri_gets_an_error_page_never_a_redirect(client, person, service, redirect_uri):
    sign_in(client, person)
    response, _ = rp.authorize(client, service.pk, redirect_uri=redirect_uri)
    assert response.status_code == 400
    assert "There is a problem with the service you came from" in response.content.decode()
    assert "Location" not in response
    assert AuditEvent.objects.filter(event=Event.OIDC_REFUSED, details__endpoint="authorize").exists()


@pytest.mark.parametrize("response_type", ["token", "id_token", "id_token token", "code id_token", "code token", "none"])
def test_a_response_type_other_than_code_is_unsupported_and_told_to_the_service(client, person, service, response_type):
    """careid has the authorization code flow only (CIS2: no implicit, no hybrid; discovery lists "code" alone). Any
    other response type is one careid does not support (RFC 6749 4.1.2.1: unsupported_response_type), with the
    service's state; careid answered unauthorized_client, which tells the service its registration does not allow
    it, as if another registration would."""
    sign_in(client, person)
    response, authorization = rp.authorize(client, service.pk, response_type=response_type)
    assert response.status_code == 302 and response["Location"].startswith(rp.REDIRECT_URI + "?")
    query = rp.query_of(response["Location"])
    assert query["error"] == "unsupported_response_type" and query["state"] == authorization.state
    assert "code" not in query and "#" not in response["Location"]
    assert not Token.objects.exists()
    response, _ = rp.authorize(client, service.pk, response_type=response_type, redirect_uri="https://evil.example/cb")
    assert response.status_code == 400 and "Location" not in response  # the redirect_uri is checked first


def test_an_unknown_client_gets_an_error_page(client, db):
    response, _ = rp.authorize(client, "no-such-client")
    assert response.status_code == 400 and "Location" not in response


def test_pkce_missing_is_refused_for_a_public_client(client, person, db):
    public, _ = rp.register(name="Public app", auth_method="none")
    sign_in(client, person)
    response, authorization = rp.authorize(client, public.pk, code_challenge=None, code_challenge_method=None)
    assert response.status_code == 302
    assert rp.query_of(response["Location"])["error"] == "invalid_request"
    response, authorization = rp.authorize(client, public.pk)
    code = rp.code_of(response, authorization)
    no_verifier = client.post("/oidc/token", {"grant_type": "authorization_code", "code": code,
                                              "redirect_uri": rp.REDIRECT_URI, "client_id": public.pk})
    assert no_verifier.status_code == 400 and no_verifier.json()["error"] == "invalid_request"


def test_a_wrong_pkce_verifier_is_refused(client, person, service, rp_key):
    code, authorization = signed_in_code(client, person, service)
    response = rp.exchange(client, service.pk, rp_key, code, authorization, code_verifier="x" * 50)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert not Token.objects.filter(type=Token.Type.ACCESS_TOKEN).exists()
    assert refused("PKCE code_verifier does not match the code_challenge") and not refused("already exchanged")


def test_a_pkce_verifier_for_a_code_issued_without_a_challenge_is_refused(client, person, service, rp_key):
    # RFC 9700 2.1.1: a verifier without a challenge is a downgrade (the challenge was stripped on the way).
    code, authorization = signed_in_code(client, person, service, code_challenge=None, code_challenge_method=None)
    response = rp.exchange(client, service.pk, rp_key, code, authorization)  # sends code_verifier
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert not Token.objects.filter(type=Token.Type.ACCESS_TOKEN).exists()
    assert refused("PKCE code_verifier for a code issued without a code_challenge")


def test_a_code_issued_without_a_challenge_is_exchanged_without_a_verifier(client, person, service, rp_key):
    code, authorization = signed_in_code(client, person, service, code_challenge=None, code_challenge_method=None)
    assert rp.exchange(client, service.pk, rp_key, code, authorization, code_verifier=None).status_code == 200


@pytest.mark.parametrize("verifier", ["abc", "a" * 129, "+/=" * 15])
def test_a_pkce_verifier_not_as_rfc7636_says_is_refused_though_it_matches(client, person, service, rp_key, verifier):
    """RFC 7636 4.1: a code_verifier is 43 to 128 unreserved characters, so that a code and its challenge seen on
    the way cannot be matched by guessing. careid took any verifier whose hash matched the challenge: "abc" too."""
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    code, authorization = signed_in_code(client, person, service, code_challenge=challenge)
    response = rp.exchange(client, service.pk, rp_key, code, authorization, code_verifier=verifier)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert not Token.objects.filter(type=Token.Type.ACCESS_TOKEN).exists()
    assert refused("PKCE code_verifier is not 43 to 128 unreserved characters")


@pytest.mark.parametrize("challenge", ["short", "a" * 42 + "=", "a" * 44])
def test_a_code_challenge_that_no_s256_verifier_gives_is_refused_to_the_service(client, person, service, challenge):
    """RFC 7636 4.2: an S256 code_challenge is the 43 characters of a SHA-256 hash in base64url. Anything else is a
    service's mistake that no verifier could ever meet: it is told at once (invalid_request, with its state)."""
    sign_in(client, person)
    response, authorization = rp.authorize(client, service.pk, code_challenge=challenge)
    assert response.status_code == 302 and response["Location"].startswith(rp.REDIRECT_URI + "?")
    query = rp.query_of(response["Location"])
    assert query["error"] == "invalid_request" and query["state"] == authorization.state and "code" not in query
    assert not Token.objects.filter(type=Token.Type.AUTHORIZATION_CODE).exists()


def test_a_code_used_twice_is_refused_and_the_first_tokens_are_revoked(transactional_db, client, person, service, rp_key):
    # Real commits: the revocation runs once the refusing transaction has committed.
    code, authorization = signed_in_code(client, person, service)
    first = rp.exchange(client, service.pk, rp_key, code, authorization)
    assert first.status_code == 200
    second = rp.exchange(client, service.pk, rp_key, code, authorization)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    userinfo = client.get("/oidc/userinfo", HTTP_AUTHORIZATION=f"Bearer {first.json()['access_token']}")
    assert userinfo.status_code == 401
    assert AuditEvent.objects.filter(event=Event.OIDC_REFUSED, details__endpoint="token",
                                     details__error="invalid_grant").exists()
    assert refused("authorization code already exchanged (reused)") and not refused("PKCE")
    assert Grant.objects.get(client=service).ended_at is not None  # no longer where the person is signed in
    assert not Grant.objects.live().exists()


def test_a_code_older_than_its_lifetime_is_refused(client, person, service, rp_key, settings):
    assert settings.IDP_OIDC_AUTHORIZATION_CODE_EXPIRES_IN <= 60
    code, authorization = signed_in_code(client, person, service)
    Token.objects.filter(type=Token.Type.AUTHORIZATION_CODE).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = rp.exchange(client, service.pk, rp_key, code, authorization)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert refused("unknown or expired authorization code")


@pytest.mark.parametrize("make_assertion, reason", [
    (lambda client_id, key: rp.assertion(client_id, rp.new_key()), "signature does not verify"),
    (lambda client_id, key: rp.assertion(client_id, key, aud="https://elsewhere.example/token"), "aud"),
    (lambda client_id, key: rp.assertion(client_id, key, issued=time.time() - 400, lifetime=60), "expired"),
    (lambda client_id, key: rp.assertion(client_id, key, lifetime=600), "more than 5 minutes"),
    (lambda client_id, key: rp.assertion(client_id, key, kid="unknown-kid"), "kid"),
    (lambda client_id, key: "not-a-jwt", "malformed"),
])
def test_a_bad_client_assertion_is_refused(client, person, service, rp_key, make_assertion, reason):
    code, authorization = signed_in_code(client, person, service)
    response = rp.exchange(client, service.pk, rp_key, code, authorization,
                           client_assertion=make_assertion(service.pk, rp_key))
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert refused(reason)
    assert not Token.objects.filter(type=Token.Type.ACCESS_TOKEN).exists()


def test_a_replayed_client_assertion_is_refused(client, person, service, rp_key):
    reused = rp.assertion(service.pk, rp_key, jti="the-same-jti")
    code, authorization = signed_in_code(client, person, service)
    assert rp.exchange(client, service.pk, rp_key, code, authorization, client_assertion=reused).status_code == 200
    response, authorization = rp.authorize(client, service.pk)
    code = rp.code_of(response, authorization)
    replay = rp.exchange(client, service.pk, rp_key, code, authorization, client_assertion=reused)
    assert replay.status_code == 401 and refused("replay")


def test_an_es256_key_works_too(client, person, db):
    key = rp.new_key("EC")
    service, _ = rp.register(name="EC service", key=key)
    code, authorization = signed_in_code(client, person, service)
    assert rp.exchange(client, service.pk, key, code, authorization).status_code == 200


def test_a_private_key_jwt_service_cannot_use_a_secret(client, person, service, rp_key):
    code, authorization = signed_in_code(client, person, service)
    response = client.post("/oidc/token", {"grant_type": "authorization_code", "code": code,
                                           "redirect_uri": rp.REDIRECT_URI, "code_verifier": authorization.verifier,
                                           "client_id": service.pk, "client_secret": "guess"})
    assert response.status_code == 401 and refused("registered for private_key_jwt")


def secret_basic(client, person, service, client_id: str, secret: str):
    """A code exchanged with client_secret_basic, the id and secret put in the header as given."""
    code, authorization = signed_in_code(client, person, service)
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return client.post("/oidc/token", {"grant_type": "authorization_code", "code": code,
                                       "redirect_uri": rp.REDIRECT_URI, "code_verifier": authorization.verifier},
                       HTTP_AUTHORIZATION=f"Basic {basic}")


def test_a_client_secret_works_and_is_stored_hashed(client, person, db):
    service, secret = rp.register(name="Secret service", auth_method="client_secret_basic")
    assert secret and secret not in service.secret and service.secret.startswith(("argon2", "pbkdf2", "md5"))
    assert secret_basic(client, person, service, service.pk, secret).status_code == 200


def test_client_secret_basic_takes_rfc6749_form_encoded_credentials(client, person, db):
    """RFC 6749 2.3.1: the client id and secret are form-urlencoded, then used as the Basic user name and
    password (openid-client, Nimbus, Spring Security and .NET's IdentityModel do so). careid's secrets were
    Django secret keys (!@#$%^&*(-_=+)), which that encoding changes, and careid compared the encoded text:
    such a service got invalid_client. Secrets are URL-safe now, and encoded credentials are decoded."""
    service, secret = rp.register(name="Secret service", auth_method="client_secret_basic")
    assert quote_plus(secret) == secret and len(secret) >= 43  # nothing for the encoding to change; 256 bits
    response = secret_basic(client, person, service, quote_plus(service.pk), quote_plus(secret))
    assert response.status_code == 200, response.content
    assert "id_token" in response.json()


@pytest.mark.parametrize("sent", [quote_plus, str], ids=["form-encoded", "as it is"])
def test_a_secret_issued_before_secrets_were_url_safe_works_encoded_or_not(client, person, db, sent):
    """A service registered before has a Django secret key for a secret, and may send it as it is (as careid
    used to expect) or encoded (as RFC 6749 says): both work; a wrong secret either way does not."""
    service, _ = rp.register(name="Secret service", auth_method="client_secret_basic")
    old = "x9+%2a!@#$^&*(-_=+)%"  # '+' and '%2a' read differently once decoded
    service.set_secret(old)
    service.save()
    assert secret_basic(client, person, service, sent(service.pk), sent(old)).status_code == 200
    wrong = secret_basic(client, person, service, sent(service.pk), sent(old.replace("+", " ")))
    assert wrong.status_code == 401 and refused("client authentication failed")


@pytest.mark.parametrize(("name", "value"), [("response_mode", "fragment"), ("response_mode", "form_post"),
                                           ("max_age", "-1"), ("max_age", "soon")])
def test_what_careid_does_not_support_is_refused_not_ignored(client, person, service, name, value):
    """Discovery lists response_mode query only: a code asked for in the fragment (or posted) went there anyway.
    A max_age that is no number of seconds was ignored, so the service's wish for a recent sign-in was too."""
    sign_in(client, person)
    response, authorization = rp.authorize(client, service.pk, **{name: value})
    assert response.status_code == 302 and response["Location"].startswith(rp.REDIRECT_URI)
    # The error where the service asked for answers (oauthlib's choice, as the spec has none): query or fragment.
    query = rp.query_of(response["Location"].replace("#", "?", 1))
    assert query["error"] == "invalid_request" and "code" not in query and query["state"] == authorization.state
    assert name in query["error_description"]
    assert not Token.objects.filter(type=Token.Type.AUTHORIZATION_CODE).exists()


@pytest.mark.parametrize(("name", "error"), [("request", "request_not_supported"),
                                             ("request_uri", "request_uri_not_supported")])
def test_a_request_object_is_refused_not_ignored(client, person, service, rp_key, name, error):
    """Discovery says request and request_uri are not supported; OpenID Connect Core 6.1, 6.2: an OP that
    does not support one MUST answer with its error. Both were ignored, so a level asked for only inside the
    request object (AAL3_ANY here) was dropped and an AAL2 session got a code."""
    sign_in(client, person)  # Authenticator app: AAL2
    value = jwt.encode({"iss": service.pk, "aud": "careid", "client_id": service.pk, "response_type": "code",
                        "acr_values": "AAL3_ANY"}, rp_key, algorithm="RS256", headers={"kid": "ers-1"})
    if name == "request_uri":
        value = "https://ers.example.nhs.uk/requests/1"
    response, authorization = rp.authorize(client, service.pk, **{name: value})
    assert response.status_code == 302 and response["Location"].startswith(rp.REDIRECT_URI + "?")
    query = rp.query_of(response["Location"])
    assert query["error"] == error and "code" not in query and query["state"] == authorization.state
    assert not Token.objects.filter(type=Token.Type.AUTHORIZATION_CODE).exists()
    event = AuditEvent.objects.get(event=Event.OIDC_REFUSED)
    assert event.details["error"] == error and event.details["client"] == service.pk


def test_an_aal3_request_on_an_aal2_session_is_never_accepted(client, person, service):
    sign_in(client, person)
    response, _ = rp.authorize(client, service.pk, acr_values="AAL3_ANY")
    assert response.status_code == 403
    page = response.content.decode()
    assert "e-Referral Service needs a stronger login method" in page
    # The tab's title is words only (the contact paragraph's markup was in it, shown as typed).
    assert re.search(r"<title>(.*?)</title>", page, re.S).group(1) == (
        "e-Referral Service needs a stronger login method - NHS Care Identity")
    assert not Token.objects.filter(type=Token.Type.AUTHORIZATION_CODE).exists()


@pytest.mark.parametrize("asked", ["AAL3_CIS2_SMARTCARD", "AAL3_N3_SMARTCARD", "AAL3_N3_SMARTCARD AAL3_CIS2_SMARTCARD"])
def test_an_aal3_class_careid_does_not_offer_is_never_met_by_an_aal2_sign_in(client, person, service, asked):
    sign_in(client, person)  # Authenticator app: AAL2
    response, _ = rp.authorize(client, service.pk, acr_values=asked)
    assert response.status_code == 403
    assert "e-Referral Service needs a stronger login method" in response.content.decode()
    assert not Token.objects.filter(type=Token.Type.AUTHORIZATION_CODE).exists()


def test_unknown_classes_of_which_one_is_not_aal3_get_the_default_level(client, person, service, rp_key):
    # The service accepts any class it lists: the lowest floor is the default's.
    code, authorization = signed_in_code(client, person, service, acr_values="AAL3_CIS2_SMARTCARD AAL2_NHSMAIL")
    claims = rp.verified(client, rp.exchange(client, service.pk, rp_key, code, authorization).json()["id_token"],
                         service.pk)
    assert (claims["acr"], claims["authentication_assurance_level"]) == ("AAL2_OR_AAL3_ANY", "2")


def test_a_session_below_the_level_asked_for_is_stepped_up(client, person, service, rp_key):
    sign_in(client, person)
    session = client.session
    session[SESSION_AUTH] = {**session[SESSION_AUTH], "aal": 1, "acr": "AAL1_USERPASS"}  # a lower sign-in
    session.save()
    sid = session[SESSION_AUTH]["sid"]
    response, authorization = rp.authorize(client, service.pk)
    assert response.status_code == 302 and response["Location"].startswith("/login/?acr_values=AAL2_OR_AAL3_ANY")
    assert "reauth=1" in response["Location"]
    goto = rp.query_of(response["Location"])["goto"]
    before = client.session.session_key
    assert sign_in(client, person, goto=goto).url == goto
    assert client.session.session_key != before  # a new session id at step-up
    code = rp.code_of(client.get(goto), authorization)
    claims = rp.verified(client, rp.exchange(client, service.pk, rp_key, code, authorization).json()["id_token"],
                         service.pk)
    assert claims["authentication_assurance_level"] == "2" and claims["sid"] == sid


@pytest.mark.parametrize("extra", [{"prompt": "login"}, {"max_age": "0"}])
def test_prompt_login_and_max_age_force_a_new_sign_in(client, person, service, rp_key, extra):
    def id_token(authorization, code) -> dict:
        return rp.verified(client, rp.exchange(client, service.pk, rp_key, code, authorization).json()["id_token"],
                           service.pk)

    with time_machine.travel(timezone.now()) as traveller:
        sign_in(client, person)
        first_auth = client.session[SESSION_AUTH]["at"]
        traveller.shift(timedelta(minutes=10))
        response, authorization = rp.authorize(client, service.pk, **extra)
        assert response.status_code == 302 and response["Location"].startswith("/login/")
        goto = rp.query_of(response["Location"])["goto"]
        assert sign_in(client, person, goto=goto).url == goto
        signed_in_at = client.session[SESSION_AUTH]["at"]
        assert signed_in_at - first_auth >= 600
        code = rp.code_of(client.get(goto), authorization)  # no loop: the new sign-in satisfies it
        assert id_token(authorization, code)["auth_time"] == int(signed_in_at)
        replayed = client.get(goto)  # that sign-in has served: the same URL again asks again
        assert replayed.status_code == 302 and replayed["Location"].startswith("/login/")
        # A token issued ten minutes later for the same session still says when the person signed in.
        traveller.shift(timedelta(minutes=10))
        response, authorization = rp.authorize(client, service.pk)
        claims = id_token(authorization, rp.code_of(response, authorization))
    assert claims["auth_time"] == int(signed_in_at) and claims["iat"] - claims["auth_time"] >= 600


@pytest.mark.parametrize("extra", [{"prompt": "login"}, {"max_age": "0"}])
def test_a_person_not_signed_in_signs_in_once_for_prompt_login_and_max_age(client, person, service, extra):
    response, authorization = rp.authorize(client, service.pk, **extra)
    assert response.status_code == 302 and "reauth=1" not in response["Location"]
    goto = rp.query_of(response["Location"])["goto"]
    assert sign_in(client, person, goto=goto).url == goto
    rp.code_of(client.get(goto), authorization)


def test_prompt_login_lets_another_person_sign_in_at_the_same_browser_once(client, person, service, make_person):
    # Signing in as someone else flushes the session: what careid asked must outlive it.
    sign_in(client, person)
    other = make_person(email="mary.seacole@nhs.net")
    response, authorization = rp.authorize(client, service.pk, prompt="login")
    goto = rp.query_of(response["Location"])["goto"]
    assert sign_in(client, other, goto=goto).url == goto
    rp.code_of(client.get(goto), authorization)
    assert Token.objects.get(type=Token.Type.AUTHORIZATION_CODE).user == other.user


def test_prompt_login_in_several_tabs_is_satisfied_by_one_sign_in(client, person, service):
    sign_in(client, person)
    tabs = [rp.authorize(client, service.pk, prompt="login") for _ in range(3)]
    gotos = [rp.query_of(response["Location"])["goto"] for response, _ in tabs]
    assert sign_in(client, person, goto=gotos[0]).url == gotos[0]
    for goto, (_, authorization) in zip(gotos, tabs, strict=True):
        rp.code_of(client.get(goto), authorization)


def test_what_careid_asked_is_kept_in_a_host_only_cookie(client, person, service):
    response, _ = rp.authorize(client, service.pk, prompt="login")
    cookie = response.cookies["__Host-careid-reauth"]  # tests run with production (Secure) cookies
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
    assert cookie["max-age"] == 3600 and not cookie["domain"]


def another_browsers_reauth_id(service) -> str:
    """What anyone gets by opening an authorization URL with prompt=login while not signed in: the id in
    the goto of the redirect to the sign-in page (its time stays in that browser's cookie)."""
    response, _ = rp.authorize(Client(), service.pk, prompt="login")
    return rp.query_of(rp.query_of(response["Location"])["goto"])["careid_reauth"]


@pytest.mark.parametrize("extra", [{"prompt": "login"}, {"max_age": "60"}])
def test_a_reauth_id_from_another_browser_does_not_count_as_a_new_sign_in(client, person, service, extra):
    with time_machine.travel(timezone.now()) as traveller:
        request_id = another_browsers_reauth_id(service)  # minted elsewhere, before the sign-in
        traveller.shift(timedelta(minutes=1))
        sign_in(client, person)
        traveller.shift(timedelta(minutes=20))
        response, _ = rp.authorize(client, service.pk, careid_reauth=request_id, **extra)
    # The person signed in 20 minutes ago: prompt=login / max_age=60 sends them to sign in again.
    assert response.status_code == 302 and response["Location"].startswith("/login/"), response.get("Location")


def test_a_recent_enough_sign_in_satisfies_max_age(client, person, service):
    sign_in(client, person)
    response, authorization = rp.authorize(client, service.pk, max_age="600")
    rp.code_of(response, authorization)


def test_prompt_none_answers_login_required(client, db, service):
    response, authorization = rp.authorize(client, service.pk, prompt="none")
    assert response.status_code == 302
    query = rp.query_of(response["Location"])
    assert query["error"] == "login_required" and query["state"] == authorization.state


def test_prompt_none_with_a_session_signs_in_silently(client, person, service):
    sign_in(client, person)
    response, authorization = rp.authorize(client, service.pk, prompt="none")
    rp.code_of(response, authorization)


def test_a_service_registered_without_refresh_tokens_gets_none(client, person, db, rp_key):
    service, _ = rp.register(name="No refresh", key=rp_key, refresh_tokens=False)
    code, authorization = signed_in_code(client, person, service)
    tokens = rp.exchange(client, service.pk, rp_key, code, authorization).json()
    assert "access_token" in tokens and "id_token" in tokens
    assert "refresh_token" not in tokens and "refresh_expires_in" not in tokens
    assert not Token.objects.filter(client=service, type=Token.Type.REFRESH_TOKEN).exists()


def refresh(client, service, rp_key, refresh_token: str):
    return client.post("/oidc/token", {"grant_type": "refresh_token", "refresh_token": refresh_token,
                                       "client_assertion_type": rp.JWT_BEARER,
                                       "client_assertion": rp.assertion(service.pk, rp_key)})


def test_a_replayed_refresh_token_revokes_every_token_of_its_grant(client, person, service, rp_key):
    code, authorization = signed_in_code(client, person, service)
    first = rp.exchange(client, service.pk, rp_key, code, authorization).json()
    rotated = refresh(client, service, rp_key, first["refresh_token"])  # the thief (or the service) rotates it
    assert rotated.status_code == 200
    replay = refresh(client, service, rp_key, first["refresh_token"])  # the other presents the old one: a breach
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert refused("refresh token already rotated (reused)")
    # RFC 9700 4.14.2: whoever holds the newest tokens is stopped too.
    assert refresh(client, service, rp_key, rotated.json()["refresh_token"]).status_code == 400
    assert client.get("/oidc/userinfo", HTTP_AUTHORIZATION=f"Bearer {rotated.json()['access_token']}").status_code == 401
    assert not Token.objects.filter(type__in=[Token.Type.ACCESS_TOKEN, Token.Type.REFRESH_TOKEN]).exists()
    assert not Grant.objects.live().exists()  # nor listed any more where the person is signed in
    kept = RotatedRefreshToken.objects.get()  # a hash of the replaced token, never the token
    assert kept.token_hash == hashlib.sha256(first["refresh_token"].encode()).hexdigest()


def test_a_replayed_refresh_token_of_a_public_client_revokes_the_rotated_one(client, person, db):
    public, _ = rp.register(name="Public app", auth_method="none")
    sign_in(client, person)
    response, authorization = rp.authorize(client, public.pk)
    code = rp.code_of(response, authorization)
    first = client.post("/oidc/token", {"grant_type": "authorization_code", "code": code, "client_id": public.pk,
                                        "redirect_uri": rp.REDIRECT_URI, "code_verifier": authorization.verifier}).json()

    def refresh(token: str):
        return client.post("/oidc/token", {"grant_type": "refresh_token", "refresh_token": token, "client_id": public.pk})

    rotated = refresh(first["refresh_token"])
    assert rotated.status_code == 200, rotated.content
    assert refresh(first["refresh_token"]).status_code == 400
    assert refresh(rotated.json()["refresh_token"]).status_code == 400


def test_a_refresh_token_replayed_in_another_grant_leaves_that_grant_alone(client, person, service, rp_key):
    code, authorization = signed_in_code(client, person, service)
    first = rp.exchange(client, service.pk, rp_key, code, authorization).json()
    response, authorization = rp.authorize(client, service.pk)
    other = rp.exchange(client, service.pk, rp_key, rp.code_of(response, authorization), authorization).json()
    refresh(client, service, rp_key, first["refresh_token"])
    assert refresh(client, service, rp_key, first["refresh_token"]).status_code == 400
    assert refresh(client, service, rp_key, other["refresh_token"]).status_code == 200


def test_a_refresh_asking_for_fewer_scopes_keeps_the_refresh_token_whole(client, person, service, rp_key):
    """RFC 6749 6: a refresh may ask for a narrower access token, but the refresh token issued in its place has
    exactly the scope of the one it replaces. careid gave the new refresh token the narrowed scope, so a service
    that once asked for an access token for openid alone could never get profile, email or nhsperson again."""
    code, authorization = signed_in_code(client, person, service)
    tokens = rp.exchange(client, service.pk, rp_key, code, authorization).json()
    narrowed = client.post("/oidc/token", {
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "scope": "openid",
        "client_assertion_type": rp.JWT_BEARER, "client_assertion": rp.assertion(service.pk, rp_key)})
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "openid"
    info = client.get("/oidc/userinfo", HTTP_AUTHORIZATION=f"Bearer {narrowed.json()['access_token']}").json()
    assert "email" not in info and "name" not in info  # the access token is narrowed
    whole = client.post("/oidc/token", {
        "grant_type": "refresh_token", "refresh_token": narrowed.json()["refresh_token"], "scope": rp.SCOPE,
        "client_assertion_type": rp.JWT_BEARER, "client_assertion": rp.assertion(service.pk, rp_key)})
    assert whole.status_code == 200, whole.content
    assert whole.json()["scope"] == rp.SCOPE


def test_rotated_refresh_tokens_are_forgotten_after_the_refresh_token_lifetime(client, person, service, rp_key, settings):
    from oidc.tasks import forget_rotated_refresh_tokens_task

    code, authorization = signed_in_code(client, person, service)
    refresh(client, service, rp_key, rp.exchange(client, service.pk, rp_key, code, authorization).json()["refresh_token"])
    lifetime = timedelta(seconds=settings.IDP_OIDC_REFRESH_TOKEN_EXPIRES_IN)
    with time_machine.travel(timezone.now() + lifetime - timedelta(minutes=1)):
        assert forget_rotated_refresh_tokens_task() == 0  # the token issued in its place may still live
    with time_machine.travel(timezone.now() + lifetime + timedelta(minutes=1)):
        assert forget_rotated_refresh_tokens_task() == 1
    assert not RotatedRefreshToken.objects.exists()


def test_a_suspended_persons_refresh_token_stops_at_once(client, person, service, rp_key, make_person):
    from accounts.flows import suspend_user

    code, authorization = signed_in_code(client, person, service)
    tokens = rp.exchange(client, service.pk, rp_key, code, authorization).json()
    refreshed = client.post("/oidc/token", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                            "client_assertion_type": rp.JWT_BEARER,
                                            "client_assertion": rp.assertion(service.pk, rp_key)})
    assert refreshed.status_code == 200
    tokens = refreshed.json()
    assert rp.verified(client, tokens["id_token"], service.pk)["sid"] == client.session[SESSION_AUTH]["sid"]
    ra = make_person(email="ra.agent@nhs.net")
    suspend_user(user=person.user, actor=ra.user, reason="Left the trust")
    again = client.post("/oidc/token", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                        "client_assertion_type": rp.JWT_BEARER,
                                        "client_assertion": rp.assertion(service.pk, rp_key)})
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert client.get("/oidc/userinfo", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}").status_code == 401


def test_a_suspended_person_gets_no_tokens_for_a_code_issued_before(client, person, service, rp_key):
    from accounts.models import User

    code, authorization = signed_in_code(client, person, service)
    User.objects.filter(pk=person.user.pk).update(status=User.Status.SUSPENDED)
    response = rp.exchange(client, service.pk, rp_key, code, authorization)
    assert response.status_code == 400 and refused("profile suspended")


def test_userinfo_refuses_a_revoked_token(client, person, service, rp_key):
    code, authorization = signed_in_code(client, person, service)
    tokens = rp.exchange(client, service.pk, rp_key, code, authorization).json()
    revoked = client.post("/oidc/revoke", {"token": tokens["access_token"], "client_assertion_type": rp.JWT_BEARER,
                                           "client_assertion": rp.assertion(service.pk, rp_key)})
    assert revoked.status_code == 200
    assert client.get("/oidc/userinfo", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}").status_code == 401


# --- id_token_hint and the claims parameter (OpenID Connect Core 3.1.2.1, 5.5.1) --------------------


def id_token_for(person, service, rp_key) -> str:
    """An ID token careid issued to `service` for `person` (signed in on a browser of their own)."""
    from django.test import Client

    browser = Client()
    code, authorization = signed_in_code(browser, person, service)
    return rp.exchange(browser, service.pk, rp_key, code, authorization).json()["id_token"]


def sub_claim(uid: str) -> str:
    return json.dumps({"id_token": {"sub": {"value": uid}}})


def test_a_person_not_signed_in_with_an_id_token_hint_signs_in_first(client, person, service, rp_key):
    hint = id_token_for(person, service, rp_key)
    response, authorization = rp.authorize(client, service.pk, id_token_hint=hint)
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    goto = rp.query_of(response["Location"])["goto"]
    assert sign_in(client, person, goto=goto).url == goto
    rp.code_of(client.get(goto), authorization)


def test_a_person_not_signed_in_with_a_claims_parameter_signs_in_first(client, person, service):
    response, authorization = rp.authorize(client, service.pk, claims=sub_claim(person.user.uid))
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    goto = rp.query_of(response["Location"])["goto"]
    sign_in(client, person, goto=goto)
    rp.code_of(client.get(goto), authorization)


def test_an_id_token_hint_of_the_signed_in_person_gets_a_code(client, person, service, rp_key):
    hint = id_token_for(person, service, rp_key)
    code, authorization = signed_in_code(client, person, service, id_token_hint=hint)
    assert rp.exchange(client, service.pk, rp_key, code, authorization).status_code == 200


def test_an_expired_id_token_hint_still_names_the_person(client, person, service, rp_key, settings):
    settings.IDP_OIDC_ID_TOKEN_EXPIRES_IN = -10  # ID tokens last 5 minutes; a hint is who, not a credential
    hint = id_token_for(person, service, rp_key)
    signed_in_code(client, person, service, id_token_hint=hint)


def test_a_hint_or_sub_claim_naming_someone_else_answers_login_required(client, person, service, rp_key, make_person):
    other = make_person(email="mary.seacole@nhs.net")
    hint = id_token_for(other, service, rp_key)
    sign_in(client, person)
    for extra in [{"id_token_hint": hint}, {"claims": sub_claim(other.user.uid)}, {"id_token_hint": "not.a.jwt"}]:
        response, authorization = rp.authorize(client, service.pk, **extra)
        assert response.status_code == 302 and response["Location"].startswith(rp.REDIRECT_URI + "?"), extra
        query = rp.query_of(response["Location"])
        assert query["error"] == "login_required" and query["state"] == authorization.state and "code" not in query
    assert not Token.objects.filter(type=Token.Type.AUTHORIZATION_CODE, user=person.user).exists()


def test_a_claims_parameter_without_sub_is_no_obstacle(client, person, service):
    signed_in_code(client, person, service, claims=json.dumps({"userinfo": {"email": {"essential": True}}}))


def test_the_authorization_endpoint_takes_a_post_too(client, person, service, rp_key):
    """OpenID Connect Core 3.1.2.1: a service's form POSTs cross-site (no CSRF token, and no SameSite=Lax
    session cookie); careid answers with the same request as a GET, where the cookie comes along."""
    from django.test import Client

    sign_in(client, person)
    authorization = rp.Authorization()
    form_post = Client(enforce_csrf_checks=True)
    response = form_post.post("/oidc/authorize", authorization.params(service.pk, acr_values="AAL2_ANY"))
    assert response.status_code == 303
    location = response["Location"]
    assert location.startswith("/oidc/authorize?") and rp.query_of(location) == authorization.params(
        service.pk, acr_values="AAL2_ANY")
    code = rp.code_of(client.get(location), authorization)
    claims = rp.verified(client, rp.exchange(client, service.pk, rp_key, code, authorization).json()["id_token"],
                         service.pk)
    assert claims["acr"] == "AAL2_ANY" and claims["nonce"] == authorization.nonce


@pytest.mark.parametrize("auth_method", ["private_key_jwt", "client_secret_basic", "client_secret_post"])
def test_a_token_request_reads_the_service_once(client, person, rp_key, auth_method):
    import base64

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    service, secret = rp.register(key=rp_key if auth_method == "private_key_jwt" else None, auth_method=auth_method)

    def authenticated(data: dict) -> dict:
        if auth_method == "private_key_jwt":
            return {"data": {**data, "client_assertion_type": rp.JWT_BEARER,
                             "client_assertion": rp.assertion(service.pk, rp_key)}}
        if auth_method == "client_secret_post":
            return {"data": {**data, "client_id": service.pk, "client_secret": secret}}
        basic = base64.b64encode(f"{service.pk}:{secret}".encode()).decode()
        return {"data": data, "HTTP_AUTHORIZATION": f"Basic {basic}"}

    def service_reads(data: dict) -> tuple[int, dict]:
        with CaptureQueriesContext(connection) as captured:
            response = client.post("/oidc/token", **authenticated(data))
        assert response.status_code == 200, response.content
        return sum('FROM "allauth_idp_oidc_client"' in query["sql"] for query in captured.captured_queries), response.json()

    code, authorization = signed_in_code(client, person, service)
    reads, tokens = service_reads({"grant_type": "authorization_code", "code": code, "redirect_uri": rp.REDIRECT_URI,
                                   "code_verifier": authorization.verifier})
    assert reads == 1
    reads, _ = service_reads({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert reads == 1
