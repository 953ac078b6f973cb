"""No page careid renders may be kept by a browser or a proxy (Cache-Control: no-store by default).

The default is set once for every dynamic response (careid/middleware.py), so a new view cannot
forget it; a view that sets its own Cache-Control (the JWKS, the discovery document) keeps it, and whitenoise's
static files keep their own caching. Browser-observable proof: tests/e2e/test_back_button.py.
"""

from __future__ import annotations

from .conftest import sign_in
from .test_registration_journey import code_from, confirm, link_path

NEW_PASSWORD = "Seven kettles whistle at dawn"


def directives(response) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in response.get("Cache-Control", "").split(",") if part.strip()}


def assert_no_store(response, what: str) -> None:
    assert "no-store" in directives(response), f"{what}: Cache-Control is {response.get('Cache-Control')!r}"
    assert "private" in directives(response), what  # and no shared cache (a proxy) keeps it either


def test_every_step_of_the_registration_journey_is_no_store(client, invite, mailbox):
    user, invitation = invite()
    assert_no_store(client.get(link_path(invitation)), "the e-mailed link")
    live = confirm(client, invitation)
    assert_no_store(client.get(link_path(live)), "the e-mail address step")
    response = client.post(link_path(live), {"email": user.email})
    assert_no_store(response, "the redirect to the code page")

    response = client.get("/register/authenticator-app/code/")
    assert response.status_code == 200
    assert_no_store(response, "the code page")
    response = client.post("/register/authenticator-app/code/", {"code": "00000000"})
    assert response.status_code == 400
    assert_no_store(response, "the code page with an error")
    client.post("/register/authenticator-app/code/", {"code": code_from(mailbox, user.email)})

    response = client.get("/register/authenticator-app/password/")
    assert response.status_code == 200
    assert_no_store(response, "the password page")
    client.post("/register/authenticator-app/password/", {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})

    response = client.get("/register/authenticator-app/qr/")
    assert response.status_code == 200 and b'data-testid="totp-secret"' in response.content
    assert_no_store(response, "the QR page, which shows the TOTP key")
    client.post("/register/authenticator-app/qr/")

    response = client.get("/register/authenticator-app/verify/")
    assert response.status_code == 200
    assert_no_store(response, "the verification page")
    assert_no_store(client.get("/register/authenticator-app/qr/"), "the QR page refused out of order")


def test_the_sign_in_pages_are_no_store(client, person):
    assert_no_store(client.get("/login/"), "the login method page")
    assert_no_store(client.get("/login/authenticator-app/"), "the e-mail and password page")
    response = client.post("/login/authenticator-app/", {"email": person.user.email, "password": "wrong password"})
    assert response.status_code == 400
    assert_no_store(response, "a refused password")
    response = client.post("/login/authenticator-app/", {"email": person.user.email, "password": person.password})
    assert_no_store(response, "the redirect to the code page")
    response = client.get("/login/authenticator-app/code/")
    assert response.status_code == 200
    assert_no_store(response, "the sign-in code page")
    response = client.post("/login/authenticator-app/code/", {"token": person.fresh_code()})
    assert response.status_code == 302
    assert_no_store(response, "the redirect after signing in")


def test_the_signed_in_pages_are_no_store(client, person):
    sign_in(client, person)
    for path_ in ["/", "/profile/", "/profile/email/add/", "/authenticators/"]:
        response = client.get(path_)
        assert response.status_code == 200, path_
        assert_no_store(response, path_)
    assert_no_store(client.post("/logout/"), "the signed-out page")


def test_redirects_and_error_pages_are_no_store(client, db):
    response = client.get("/profile/")
    assert response.status_code == 302
    assert_no_store(response, "the redirect to sign in")
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert_no_store(response, "the 404 page")


def test_the_admin_keeps_djangos_own_never_cache(ra_staff):
    _, client = ra_staff("RA Manager")
    response = client.get("/admin/")
    assert response.status_code == 200
    assert_no_store(response, "the admin")


def test_static_files_keep_whitenoises_caching(client, db):
    response = client.get("/static/nhsuk/nhsuk-frontend.min.css")
    assert response.status_code == 200
    assert "no-store" not in directives(response) and "max-age" in directives(response)


# --- the views that opt into caching keep their own header ---------------------------------------


def test_the_jwks_keeps_its_own_caching(client, db):
    """Relying services cache the signing keys for allauth's IDP_OIDC_JWKS_CACHE_CONTROL (an hour)."""
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200 and response.json()["keys"]
    assert response["Cache-Control"] == "max-age=3600, must-revalidate"
    assert "Expires" not in response


def test_the_discovery_document_keeps_its_own_caching(client, db):
    response = client.get("/.well-known/openid-configuration")
    assert response.status_code == 200 and response.json()["jwks_uri"].endswith("/.well-known/jwks.json")
    assert response["Cache-Control"] == "public, max-age=3600"
    assert "Expires" not in response
