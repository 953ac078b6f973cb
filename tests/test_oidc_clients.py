"""Registering relying services: `manage.py register_client` and the admin, for platform operators only;
every change audited; the RA's person page shows the services a person signed into."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from audit.models import AuditEvent, Event
from oidc.models import RelyingService

from . import oidc_rp as rp
from .conftest import sign_in


def register_client(*args: str) -> dict:
    out = StringIO()
    call_command("register_client", *args, stdout=out)
    return json.loads(out.getvalue())


def test_register_client_prints_the_client_id_and_keeps_the_service(db, tmp_path):
    jwks = tmp_path / "ers.jwks.json"
    jwks.write_text(json.dumps({"keys": [rp.public_jwk(rp.new_key(), "ers-1")]}))
    printed = register_client("--name", "e-Referral Service", "--redirect-uri", "https://ers.nhs.uk/callback",
                              "--redirect-uri", "https://ers.nhs.uk/callback2",
                              "--post-logout-redirect-uri", "https://ers.nhs.uk/", "--backchannel-logout-uri",
                              "https://ers.nhs.uk/backchannel", "--jwks-file", str(jwks),
                              "--scopes", "openid profile email nhsperson")
    assert set(printed) == {"client_id"}
    service = RelyingService.objects.get(pk=printed["client_id"])
    assert service.auth_method == "private_key_jwt" and service.jwks["keys"][0]["kid"] == "ers-1"
    assert service.get_redirect_uris() == ["https://ers.nhs.uk/callback", "https://ers.nhs.uk/callback2"]
    assert service.get_post_logout_redirect_uris() == ["https://ers.nhs.uk/"]
    assert service.backchannel_logout_uri == "https://ers.nhs.uk/backchannel"
    assert service.get_scopes() == ["openid", "profile", "email", "nhsperson"]
    assert service.skip_consent and service.get_response_types() == ["code"]
    event = AuditEvent.objects.get(event=Event.CLIENT_CHANGED)
    assert event.details["client"] == service.pk and event.details["change"] == "registered"


def test_a_secret_is_printed_once_and_stored_hashed(db):
    printed = register_client("--name", "Legacy service", "--redirect-uri", "https://legacy.nhs.uk/cb", "--secret")
    service = RelyingService.objects.get(pk=printed["client_id"])
    assert printed["client_secret"] and printed["client_secret"] not in service.secret
    assert service.check_secret(printed["client_secret"])
    assert printed["client_secret"] not in str(AuditEvent.objects.get(event=Event.CLIENT_CHANGED).details)


def test_a_private_key_jwt_service_has_no_secret_that_could_match(db):
    printed = register_client("--name", "Keyed", "--redirect-uri", "https://keyed.nhs.uk/cb", "--jwks-uri",
                              "https://keyed.nhs.uk/jwks.json")
    service = RelyingService.objects.get(pk=printed["client_id"])
    assert service.secret.startswith("!") and not service.check_secret("")


@pytest.mark.parametrize("args, problem", [
    (["--redirect-uri", "http://ers.nhs.uk/cb", "--secret"], "must use https"),
    (["--redirect-uri", "https://ers.nhs.uk/cb#frag", "--secret"], "fragment"),
    (["--redirect-uri", "https://*.nhs.uk/cb", "--secret"], "wildcards"),
    (["--redirect-uri", "https://ers.nhs.uk/cb", "--backchannel-logout-uri", "ftp://ers.nhs.uk/", "--secret"], "https"),
    (["--redirect-uri", "https://ers.nhs.uk/cb", "--jwks-uri", "http://keys.example.com/jwks"], "must use https"),
    (["--redirect-uri", "https://ers.nhs.uk/cb", "--secret", "--scopes", "openid profile nationalrbacaccess"],
     "careid has no scope nationalrbacaccess .* ignored when a service asks for it"),
])
def test_bad_registrations_are_refused_and_change_nothing(db, args, problem):
    with pytest.raises(CommandError, match=problem):
        register_client("--name", "Bad", *args)
    assert not RelyingService.objects.exists() and not AuditEvent.objects.exists()


def test_a_jwks_with_a_private_key_is_refused(db, tmp_path):
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    private = json.loads(RSAAlgorithm.to_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    jwks = tmp_path / "leaked.json"
    jwks.write_text(json.dumps({"keys": [private]}))
    with pytest.raises(CommandError, match="private key"):
        register_client("--name", "Leaky", "--redirect-uri", "https://leaky.nhs.uk/cb", "--jwks-file", str(jwks))


@pytest.fixture
def operator(make_person):
    person = make_person(email="platform.operator@nhs.net", is_staff=True, is_superuser=True)
    client = Client()
    sign_in(client, person, goto="/admin/")
    return client


def test_a_platform_operator_registers_a_service_in_the_admin(operator):
    response = operator.post("/admin/oidc/relyingservice/add/", {
        "name": "Summary Care Record", "auth_method": "client_secret_post",
        "redirect_uris": "https://scr.nhs.uk/callback", "post_logout_redirect_uris": "", "backchannel_logout_uri": "",
        "jwks_uri": "", "jwks": "", "allowed_scopes": ["openid", "profile"],
    }, follow=True)
    page = response.content.decode()
    assert "The client secret is shown only this once" in page
    service = RelyingService.objects.get(name="Summary Care Record")
    assert service.auth_method == "client_secret_post"
    assert AuditEvent.objects.filter(event=Event.CLIENT_CHANGED, details__client=service.pk).exists()
    response = operator.post("/admin/oidc/relyingservice/add/", {
        "name": "Bad", "auth_method": "private_key_jwt", "redirect_uris": "https://bad.nhs.uk/cb",
        "allowed_scopes": ["openid"],
    })
    assert response.status_code == 200 and "needs the service&#x27;s public keys" in response.content.decode()


@pytest.mark.parametrize("role", ["RA Manager", "RA Agent", "Auditor"])
def test_ra_staff_cannot_see_or_touch_relying_services(ra_staff, role):
    service, _ = rp.register(key=rp.new_key())
    _person, client = ra_staff(role)
    assert "Relying services" not in client.get("/admin/").content.decode()
    for path in ["/admin/oidc/relyingservice/", f"/admin/oidc/relyingservice/{service.pk}/change/",
                 "/admin/oidc/relyingservice/add/"]:
        assert client.get(path).status_code == 403, path
    assert client.post(f"/admin/oidc/relyingservice/{service.pk}/change/", {"name": "Hijacked"}).status_code == 403
    service.refresh_from_db()
    assert service.name == "e-Referral Service"
    assert client.get("/admin/idp_oidc/client/").status_code == 404  # allauth's raw admin is gone
    assert client.get("/admin/idp_oidc/token/").status_code == 404


def test_the_ra_sees_which_services_a_person_signed_into(ra_staff, person, client):
    key = rp.new_key()
    service, _ = rp.register(key=key)
    sign_in(client, person)
    response, authorization = rp.authorize(client, service.pk)
    rp.code_of(response, authorization)
    _ra, ra_client = ra_staff("RA Agent")
    page = ra_client.get(f"/admin/accounts/user/{person.user.pk}/change/").content.decode()
    assert "Services signed into" in page and "e-Referral Service" in page


def change_form(service: RelyingService, **changes) -> dict:
    """The admin's change form for `service` as it stands, with `changes`."""
    from oidc.forms import RelyingServiceForm

    initial = RelyingServiceForm(instance=service).initial
    data = {name: initial.get(name, "") for name in ["name", "auth_method", "redirect_uris", "post_logout_redirect_uris",
                                                     "backchannel_logout_uri", "jwks_uri", "jwks"]}
    data["allowed_scopes"] = initial["allowed_scopes"]
    if initial.get("refresh_tokens"):
        data["refresh_tokens"] = "on"
    return {**data, **changes}


def secret_shown(response) -> str | None:
    import html
    import re

    found = re.search(r"Copy it now: <code>([^<]+)</code>", response.content.decode())
    return html.unescape(found.group(1)) if found else None


def test_switching_a_service_to_a_client_secret_shows_its_new_secret_once(operator):
    service, _ = rp.register(key=rp.new_key())
    response = operator.post(f"/admin/oidc/relyingservice/{service.pk}/change/",
                             change_form(service, auth_method="client_secret_basic", jwks=""), follow=True)
    secret = secret_shown(response)
    assert secret
    service.refresh_from_db()
    assert service.auth_method == "client_secret_basic" and service.check_secret(secret)
    event = AuditEvent.objects.filter(event=Event.CLIENT_CHANGED, details__client=service.pk).latest("pk")
    assert event.details["change"] == "changed" and event.details["new_credentials"] is True
    assert secret not in str(event.details)
    assert secret_shown(operator.get(f"/admin/oidc/relyingservice/{service.pk}/change/")) is None  # only once


def test_an_operator_rotates_a_client_secret_and_the_old_one_stops(operator):
    service, old = rp.register(auth_method="client_secret_post")
    unchanged = operator.post(f"/admin/oidc/relyingservice/{service.pk}/change/",
                              change_form(service, name="Legacy service"), follow=True)
    assert secret_shown(unchanged) is None  # another change keeps the secret
    service.refresh_from_db()
    assert service.name == "Legacy service" and service.check_secret(old)

    response = operator.post(f"/admin/oidc/relyingservice/{service.pk}/change/",
                             change_form(service, new_secret="on"), follow=True)
    new = secret_shown(response)
    assert new and new != old
    service.refresh_from_db()
    assert service.check_secret(new) and not service.check_secret(old)
    event = AuditEvent.objects.filter(event=Event.CLIENT_CHANGED, details__client=service.pk).latest("pk")
    assert event.details["new_credentials"] is True and event.actor.email == "platform.operator@nhs.net"


def test_a_service_without_a_secret_cannot_be_given_one_by_rotation(operator):
    service, _ = rp.register(key=rp.new_key())
    before = service.secret
    response = operator.post(f"/admin/oidc/relyingservice/{service.pk}/change/",
                             change_form(service, new_secret="on"))
    assert response.status_code == 200 and "only a service that authenticates with a client secret" in (
        response.content.decode())
    service.refresh_from_db()
    assert service.secret == before
    assert not AuditEvent.objects.filter(event=Event.CLIENT_CHANGED, details__change="changed").exists()
