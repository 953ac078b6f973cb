"""A relying service asking for AAL3 gets it with a security key: end to end through the OpenID Connect
provider (authorize, CIS2 Authentication, the security key's assertion, the token endpoint with
private_key_jwt, the ID token checked against careid's JWKS)."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from signin.session import SESSION_AUTH

from . import oidc_rp as rp
from .conftest import sign_in as sign_in_with_app
from .webauthn_steps import authenticator_for, register, sign_in


@pytest.fixture(scope="session")
def rp_key():
    return rp.new_key()


@pytest.fixture
def service(db, rp_key):
    service, _secret = rp.register(key=rp_key)
    return service


@pytest.fixture
def security_key(signed_in, webauthn_site):
    key = authenticator_for("security-key", webauthn_site)
    assert register(signed_in, "security-key", key).status_code == 302
    return key


def methods_on(page: str) -> list[str]:
    return re.findall(r'nhsuk-radios__label" for="[^"]+">([^<]+)<', page)


def id_token_claims(client, service, rp_key, goto: str, authorization) -> dict:
    code = rp.code_of(client.get(goto), authorization)
    response = rp.exchange(client, service.pk, rp_key, code, authorization)
    assert response.status_code == 200, response.content
    return rp.verified(client, response.json()["id_token"], service.pk)


def test_a_service_asking_for_aal3_any_is_signed_into_with_a_security_key(service, rp_key, person, security_key):
    client = Client()
    response, authorization = rp.authorize(client, service.pk, acr_values="AAL3_ANY")
    assert response.status_code == 302 and response["Location"].startswith("/login/?acr_values=AAL3_ANY&goto=")
    goto = rp.query_of(response["Location"])["goto"]
    assert methods_on(client.get(response["Location"]).content.decode()) == ["Windows Hello", "Security key", "iPad app"]
    response = client.post(response["Location"], {"method": "security-key"})
    query = rp.query_of(response["Location"])
    assert response["Location"].startswith("/login/security-key/") and query == {"acr_values": "AAL3_ANY", "goto": goto}

    response = sign_in(client, "security-key", security_key, person.user.email, query=query)
    assert response.status_code == 302 and response.url == goto
    claims = id_token_claims(client, service, rp_key, goto, authorization)
    assert claims["sub"] == person.user.uid
    assert claims["authentication_assurance_level"] == "3"
    assert claims["acr"] == "AAL3_ANY"
    assert "hwk" in claims["amr"] and claims["amr"] == ["hwk", "user"]
    assert claims["sid"] == client.session[SESSION_AUTH]["sid"]


def test_an_aal3_class_careid_does_not_offer_is_met_by_any_aal3_method(service, rp_key, person, security_key):
    client = Client()
    response, authorization = rp.authorize(client, service.pk, acr_values="AAL3_CIS2_SMARTCARD")
    assert response["Location"].startswith("/login/?acr_values=AAL3_ANY&goto=")
    assert methods_on(client.get(response["Location"]).content.decode()) == ["Windows Hello", "Security key", "iPad app"]
    query = rp.query_of(response["Location"])
    sign_in(client, "security-key", security_key, person.user.email, query=query)
    claims = id_token_claims(client, service, rp_key, query["goto"], authorization)
    # What careid delivered: any AAL3 method, not the smartcard asked for.
    assert (claims["acr"], claims["authentication_assurance_level"]) == ("AAL3_ANY", "3")


def test_an_aal2_session_is_stepped_up_with_a_security_key_and_keeps_its_sid(service, rp_key, person, security_key):
    client = Client()
    sign_in_with_app(client, person)  # AAL2
    sid = client.session[SESSION_AUTH]["sid"]
    response, authorization = rp.authorize(client, service.pk, acr_values="AAL3_ANY")
    assert response.status_code == 302 and "reauth=1" in response["Location"]  # it can reach AAL3: step up
    query = {"acr_values": "AAL3_ANY", "goto": rp.query_of(response["Location"])["goto"]}
    before = client.session.session_key
    assert sign_in(client, "security-key", security_key, person.user.email, query=query).url == query["goto"]
    assert client.session.session_key != before
    claims = id_token_claims(client, service, rp_key, query["goto"], authorization)
    assert (claims["authentication_assurance_level"], claims["acr"], claims["sid"]) == ("3", "AAL3_ANY", sid)


def test_a_service_asking_for_aal3_fido2_gets_that_class(service, rp_key, person, security_key):
    client = Client()
    response, authorization = rp.authorize(client, service.pk, acr_values="AAL3_FIDO2")
    assert methods_on(client.get(response["Location"]).content.decode()) == ["Windows Hello", "Security key"]
    query = rp.query_of(response["Location"])
    sign_in(client, "security-key", security_key, person.user.email, query=query)
    claims = id_token_claims(client, service, rp_key, query["goto"], authorization)
    assert (claims["acr"], claims["authentication_assurance_level"]) == ("AAL3_FIDO2", "3")


def test_without_an_aal3_authenticator_the_service_needs_a_stronger_login_method(client, person, service):
    sign_in_with_app(client, person)
    response, _ = rp.authorize(client, service.pk, acr_values="AAL3_ANY")
    assert response.status_code == 403
    page = response.content.decode()
    assert "e-Referral Service needs a stronger login method" in page
    for name in ("Windows Hello", "Security key", "iPad"):
        assert name in page


def test_any_level_the_service_listed_is_met_in_its_order_of_preference(service, rp_key, person, security_key):
    """acr_values lists what the service accepts, the first preferred: only the first careid knew counted, so a
    session signed in with a security key (AAL3) asked for "AAL2_TOTP AAL3_ANY" was sent to sign in again with
    the app, and came back at AAL2, below what it had."""
    client = Client()
    asked = "AAL2_TOTP AAL3_ANY"
    response, authorization = rp.authorize(client, service.pk, acr_values=asked)
    assert response.status_code == 302 and response["Location"].startswith("/login/?")
    # Not signed in: every method that meets one of them is offered, the preferred first.
    assert methods_on(client.get(response["Location"]).content.decode()) == [
        "Authenticator app", "Windows Hello", "Security key", "iPad app"]
    goto = rp.query_of(response["Location"])["goto"]
    response = client.post(response["Location"], {"method": "security-key"})
    response = sign_in(client, "security-key", security_key, person.user.email, query=rp.query_of(response["Location"]))
    assert response.status_code == 302 and response.url == goto
    claims = id_token_claims(client, service, rp_key, goto, authorization)
    assert claims["acr"] == "AAL3_ANY" and claims["authentication_assurance_level"] == "3"

    # Signed in with the key already: a new request for either is answered at once, with what was met.
    response, authorization = rp.authorize(client, service.pk, acr_values=asked)
    assert rp.code_of(response, authorization)
