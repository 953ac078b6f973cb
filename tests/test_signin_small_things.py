"""What a person meets on the sign-in pages: one throttle they can understand, errors that lead to
the field, a refused destination said out loud, and a signed-in person offered a way on."""

from __future__ import annotations

import re

import pytest

from .conftest import sign_in

APP = "/login/authenticator-app/"
CODE = "/login/authenticator-app/code/"



def test_a_right_code_straight_after_a_wrong_one_signs_in(client, person):
    client.post(APP, {"email": person.user.email, "password": person.password})
    assert "The code is not correct" in client.post(CODE, {"token": person.wrong_code()}).content.decode()
    response = client.post(CODE, {"token": person.fresh_code()})
    assert response.status_code == 302 and client.session.get("_auth_user_id")


def test_wrong_credentials_lead_to_the_field_and_mark_both_invalid(client, person):
    page = client.post(APP, {"email": person.user.email, "password": "wrong"}).content.decode()
    summary = re.search(r'<div class="nhsuk-error-summary".*?</div>\s*</div>\s*</div>', page, re.S).group(0)
    assert '<a href="#id_email">Enter a correct email address and password</a>' in summary
    assert re.search(r'<input[^>]*id="id_email"[^>]*aria-invalid="true"', page)
    assert re.search(r'<input[^>]*id="id_password"[^>]*aria-invalid="true"', page)


def described_by(page: str, input_id: str) -> str:
    """What is read out with a field after its label: the text of the elements its aria-describedby names
    (an NHS.UK error message holds a visually hidden "Error: " in a span of its own)."""
    field = re.search(rf'<input[^>]*id="{input_id}"[^>]*>', page).group(0)
    ids = re.search(r'aria-describedby="([^"]*)"', field)
    texts = [re.search(rf'id="{id_}"[^>]*>((?:<span[^>]*>[^<]*</span>)?[^<]*)<', page) for id_ in
             (ids.group(1).split() if ids else [])]
    return " ".join(" ".join(re.sub(r"<[^>]+>", "", text.group(1)).split()) for text in texts if text)


def test_wrong_credentials_are_explained_at_the_first_field_and_read_with_both(client, person):
    wrong_password = client.post(APP, {"email": person.user.email, "password": "not the password"}).content.decode()
    assert '<div class="nhsuk-form-group nhsuk-form-group--error">' in wrong_password
    for field in ("id_email", "id_password"):
        assert described_by(wrong_password, field).endswith("Error: Enter a correct email address and password")
    assert "not the password" not in wrong_password

    unknown = client.post(APP, {"email": "nobody@nhs.net", "password": "not the password"}).content.decode()

    def form(page: str) -> str:  # without the CSRF token, masked anew on every page
        return re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", re.search(r'<form method="post".*?</form>', page, re.S).group(0))

    assert form(unknown) == form(wrong_password).replace(person.user.email, "nobody@nhs.net")


def test_a_field_error_marks_only_its_field(client, db):
    page = client.post(APP, {"email": "", "password": "x"}).content.decode()
    assert re.search(r'<input[^>]*id="id_email"[^>]*aria-invalid="true"', page)
    assert not re.search(r'<input[^>]*id="id_password"[^>]*aria-invalid="true"', page)


def test_a_refused_destination_is_said_rather_than_silently_dropped(client, person):
    response = sign_in(client, person, goto="https://evil.example.com/")
    assert response.url == "/?goto_refused=1"
    page = client.get(response.url).content.decode()
    assert "could not send you back to the address you came from" in page


def test_a_signed_in_person_opening_the_sign_in_page_is_offered_to_go_on_or_sign_out(client, person):
    sign_in(client, person)
    page = client.get("/login/?choose=1").content.decode()
    assert "You are signed in as Edith Cavell" in page
    assert 'href="/"' in page and ">Sign out</button>" in page
    assert "Select your login method" in page  # and can still sign in again (another person, or step-up)


def test_registration_successful_offers_sign_in_to_someone_not_signed_in(client, db):
    page = client.get("/register/authenticator-app/done/").content.decode()
    assert "Registration successful" in page and 'href="/login/"' in page and ">Sign in<" in page


def test_a_remembered_method_still_says_why_the_person_must_sign_in_again(client, person):
    """'Remember my selection' skips the method page, which is where "For your security, sign in again to
    continue." is said: asked to sign in again (before adding an e-mail address, a step-up), the person landed on
    the method's own page, signed in and asked for their password again with no word why. The method page now
    says it, with the remembered method chosen."""
    client.post("/login/", {"method": "authenticator-app", "remember": "on"})
    sign_in(client, person)
    session = client.session
    session["careid_auth"] = {**session["careid_auth"], "at": session["careid_auth"]["at"] - 6 * 60}
    session.save()

    page = client.get("/profile/email/add/", follow=True).content.decode()
    assert "For your security, sign in again to continue." in page
    assert re.search(r'<input[^>]*value="authenticator-app"[^>]*checked', page)
    assert client.get("/login/").url.startswith(APP)  # otherwise still straight to the remembered method


@pytest.mark.parametrize("remembered", [False, True], ids=["method chosen", "method remembered"])
def test_a_session_that_timed_out_says_so_on_the_way_to_sign_in(client, person, remembered):
    """'Your session timed out. Sign in again.' was said only when the request that found the timeout was the
    sign-in page's own: from any other page (the profile, a service sending the person back to sign in) the
    timed-out request answered with a redirect to the sign-in page, which had nothing left to say."""
    if remembered:
        client.post("/login/", {"method": "authenticator-app", "remember": "on"})
    sign_in(client, person)
    session = client.session
    session["careid_last_seen"] -= 31 * 60
    session.save()

    page = client.get("/profile/", follow=True).content.decode()
    assert "Your session timed out. Sign in again." in page
    assert "Your session timed out" not in client.get("/login/?choose=1").content.decode()  # said once
