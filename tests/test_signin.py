"""CIS2 Authentication: choosing a method, the Authenticator app method, throttling, goto."""

from __future__ import annotations

import pytest
from django.utils import timezone

from accounts.models import User
from audit.models import AuditEvent, Event, Outcome

from .conftest import sign_in

APP = "/login/authenticator-app/"
CODE = "/login/authenticator-app/code/"
BAD = "Enter a correct email address and password"
COOKIE = "__Host-careid-login-method-AAL2_OR_AAL3_ANY"  # tests run with production (Secure) cookies


def test_the_method_page_lists_the_enabled_methods_with_the_cis2_wording(client, db):
    page = client.get("/login/").content.decode()
    for text in [
        "CIS2 Authentication", "Select your login method", "Authenticator app", "Agree to our Terms of Use",
        "By continuing, you agree to our", "Terms and Conditions", "Remember my selection",
        "Do not check this box if you are on a shared computer.", "Continue",
    ]:
        assert text in page


def test_a_disabled_type_disappears_from_the_method_page(client, db, settings):
    settings.CAREID_DISABLED_AUTHENTICATORS = ["authenticator-app"]
    page = client.get("/login/").content.decode()
    assert "Authenticator app" not in page
    assert client.post("/login/", {"method": "authenticator-app"}).status_code == 400


def test_choosing_a_method_without_remembering_sets_no_cookie(client, db):
    response = client.post("/login/?goto=/profile/", {"method": "authenticator-app"})
    assert response.status_code == 302
    assert response.url == f"{APP}?goto=%2Fprofile%2F&acr_values=AAL2_OR_AAL3_ANY"
    assert not response.cookies.get(COOKIE) or response.cookies[COOKIE].value == ""


def test_remember_my_selection_skips_to_the_method_for_two_years(client, db):
    response = client.post("/login/", {"method": "authenticator-app", "remember": "on"})
    cookie = response.cookies[COOKIE]
    assert cookie.value == "authenticator-app"
    assert int(cookie["max-age"]) == 2 * 365 * 24 * 3600
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Lax"
    response = client.get("/login/?goto=/profile/")
    assert response.status_code == 302 and response.url.startswith(APP)
    page = client.get(response.url).content.decode()
    assert "Choose another login method" in page
    assert client.get("/login/?choose=1").status_code == 200


def test_no_method_chosen_is_a_clear_error(client, db):
    response = client.post("/login/", {"method": "smartcard-that-does-not-exist"})
    assert response.status_code == 400
    assert "Select your login method" in response.content.decode()


def test_signing_in_records_method_aal_and_acr_in_a_new_session(client, person):
    client.get("/login/")
    client.post(APP, {"email": person.user.email, "password": person.password})
    before = client.session.session_key
    response = client.post(CODE, {"token": person.fresh_code()})
    assert response.status_code == 302 and response.url == "/"
    assert client.session.session_key != before
    auth = client.session["careid_auth"]
    assert auth["method"] == "authenticator-app" and auth["aal"] == 2 and auth["acr"] == "AAL2_TOTP"
    from allauth.usersessions.models import UserSession

    assert UserSession.objects.get(user=person.user).session_key == client.session.session_key
    person.user.refresh_from_db()
    assert person.user.last_login is not None
    event = AuditEvent.objects.get(event=Event.SIGNIN_SUCCEEDED)
    assert event.subject == person.user and event.method == "authenticator-app" and event.aal == 2
    assert "Care Identity Management" in client.get("/").content.decode()


def test_the_email_is_not_case_sensitive(client, person):
    client.post(APP, {"email": person.user.email.upper(), "password": person.password})
    assert client.post(CODE, {"token": person.fresh_code()}).status_code == 302


def test_unknown_email_and_wrong_password_get_the_same_answer(client, person):
    unknown = client.post(APP, {"email": "nobody@nhs.net", "password": person.password})
    wrong = client.post(APP, {"email": person.user.email, "password": "not the password"})
    assert unknown.status_code == wrong.status_code == 400
    assert BAD in unknown.content.decode() and BAD in wrong.content.decode()
    strip = lambda r: r.content.decode().replace("nobody@nhs.net", "").replace(person.user.email, "")
    assert strip(unknown).split("csrfmiddlewaretoken")[0] == strip(wrong).split("csrfmiddlewaretoken")[0]
    reasons = set(AuditEvent.objects.filter(event=Event.SIGNIN_FAILED).values_list("details__reason", flat=True))
    assert reasons == {"unknown email", "wrong password"}


@pytest.mark.parametrize("status", [User.Status.SUSPENDED, User.Status.CLOSED])
def test_suspended_and_closed_people_cannot_sign_in(client, person, status):
    User.objects.filter(pk=person.user.pk).update(status=status)
    response = client.post(APP, {"email": person.user.email, "password": person.password})
    assert response.status_code == 400 and BAD in response.content.decode()
    assert "careid_pending_signin" not in client.session


def test_a_suspended_persons_session_stops_working(client, signed_in, person):
    User.objects.filter(pk=person.user.pk).update(status=User.Status.SUSPENDED)
    response = client.get("/profile/")
    assert response.status_code == 302 and response.url.startswith("/login/")


def test_someone_else_signs_in_at_a_browser_whose_session_holds_a_suspended_person(client, signed_in, person,
                                                                                    make_person):
    """A shared computer: the session still names someone the backend no longer accepts (suspended without
    their sessions being ended), so Django's login() flushes it and the new session has no key until it
    is saved. Listing it first failed (a 500 on every sign-in there until the session expired)."""
    from allauth.usersessions.models import UserSession

    User.objects.filter(pk=person.user.pk).update(status=User.Status.SUSPENDED)
    colleague = make_person(email="colleague@nhs.net")
    response = sign_in(client, colleague)
    assert response.status_code == 302 and response.url == "/"
    assert client.session["_auth_user_id"] == str(colleague.user.pk)
    assert UserSession.objects.filter(user=colleague.user, session_key=client.session.session_key).exists()
    assert client.get("/profile/").status_code == 200


def test_the_code_step_needs_the_password_step_first(client, person):
    response = client.post(CODE, {"token": person.code()})
    assert response.status_code == 302 and response.url.startswith(APP)
    assert not client.session.get("_auth_user_id")


def test_a_password_step_passed_before_a_password_change_cannot_be_finished_after_it(person):
    """Someone who had the old password (and can get a code: a shared phone, an app left open) passed the
    first step; the person then changed their password. The half-finished sign-in goes with the old password."""
    from django.test import Client

    other = Client(REMOTE_ADDR="203.0.113.9")
    assert other.post(APP, {"email": person.user.email, "password": person.password}).status_code == 302
    own = Client()
    sign_in(own, person)
    new = "a brand new passphrase for the ward"
    assert own.post("/profile/password/", {"password1": new, "password2": new}).status_code == 302

    response = other.post(CODE, {"token": person.fresh_code()})
    assert response.status_code == 302 and response.url.startswith(APP)
    assert not other.session.get("_auth_user_id")
    assert other.get(CODE).url.startswith(APP)  # the code step is gone: the password again


def test_a_wrong_code_does_not_sign_in(client, person):
    client.post(APP, {"email": person.user.email, "password": person.password})
    wrong = person.wrong_code()
    response = client.post(CODE, {"token": wrong})
    assert response.status_code == 400
    assert "The code is not correct" in response.content.decode()
    assert not client.session.get("_auth_user_id")
    assert AuditEvent.objects.filter(event=Event.SIGNIN_FAILED, details__reason="wrong code").exists()


def test_a_code_is_accepted_once_per_time_step(client, person):
    token = person.fresh_code()
    client.post(APP, {"email": person.user.email, "password": person.password})
    assert client.post(CODE, {"token": token}).status_code == 302
    client.post("/logout/")
    client.post(APP, {"email": person.user.email, "password": person.password})
    response = client.post(CODE, {"token": token})
    assert response.status_code == 400
    assert not client.session.get("_auth_user_id")


def test_two_simultaneous_uses_of_one_code_let_only_one_in(person):
    from authenticators.models import AuthenticatorApp

    token = person.fresh_code()
    first, second = AuthenticatorApp.objects.get(user=person.user), AuthenticatorApp.objects.get(user=person.user)
    # Both loaded before either saved: the conditional update decides.
    assert [first.verify_token(token), second.verify_token(token)] == [True, False]


def test_growing_delays_from_the_fifth_failure(client, person):
    for _attempt in range(5):
        client.post(APP, {"email": person.user.email, "password": "wrong password"})
    response = client.post(APP, {"email": person.user.email, "password": person.password})
    assert response.status_code == 400
    assert "Too many failed attempts. Wait" in response.content.decode()
    assert AuditEvent.objects.filter(event=Event.SIGNIN_THROTTLED, subject=person.user).exists()
    # Once the delay has passed the right password works, and success resets the count.
    User.objects.filter(pk=person.user.pk).update(password_blocked_until=None)
    sign_in(client, person)
    person.user.refresh_from_db()
    assert person.user.password_failures == 0


def test_unknown_addresses_are_throttled_the_same_way(client, db, fast_hashing):
    for _attempt in range(5):
        client.post(APP, {"email": "nobody@nhs.net", "password": "wrong password"})
    response = client.post(APP, {"email": "nobody@nhs.net", "password": "wrong password"})
    assert "Too many failed attempts. Wait" in response.content.decode()


def test_wrong_codes_count_towards_their_own_lock(client, person, settings):
    User.objects.filter(pk=person.user.pk).update(code_failures=settings.CAREID_CODE_LOCK_AFTER - 1,
                                                  last_signin_failure_at=timezone.now())
    client.post(APP, {"email": person.user.email, "password": person.password})
    wrong = person.wrong_code()
    response = client.post(CODE, {"token": wrong})
    assert "Your Care Identity is locked" in response.content.decode()


def test_one_address_cannot_walk_through_many_accounts(client, db, settings, fast_hashing):
    settings.CAREID_IP_FAILURE_LIMIT = 3
    for n in range(3):
        client.post(APP, {"email": f"person{n}@nhs.net", "password": "guess"})
    response = client.post(APP, {"email": "person99@nhs.net", "password": "guess"})
    assert "Too many failed attempts" in response.content.decode()



def test_the_per_ip_limit_counts_an_ipv6_client_by_its_64_block(client, db, settings, fast_hashing):
    """An IPv6 client holds a /64 and can take a new address from it for every request."""
    settings.CAREID_IP_FAILURE_LIMIT = 3
    for n in range(3):
        client.post(APP, {"email": f"person{n}@nhs.net", "password": "guess"}, REMOTE_ADDR=f"2001:db8:1:2::{n + 1}")
    refused = client.post(APP, {"email": "person99@nhs.net", "password": "guess"}, REMOTE_ADDR="2001:db8:1:2:ffff::9")
    assert "Too many failed attempts" in refused.content.decode()
    other = client.post(APP, {"email": "person98@nhs.net", "password": "guess"}, REMOTE_ADDR="2001:db8:1:3::1")
    assert "Too many failed attempts" not in other.content.decode()  # another block is another client

@pytest.mark.parametrize(
    "goto",
    [
        "//evil.example", "https:evil.example", "/\\evil.example", "javascript:alert(1)", "https://evil.example/",
        "%2F%2Fevil.example", "/%2F/evil.example", "/%5Cevil.example", "http://rp.example/", "https://rp.example@evil.example/",
        "\t//evil.example", "JAVASCRIPT:alert(1)",
        "https://[x", "https://rp.example:port/", "//[::1",  # not parseable: urlsplit raised (a 500, signed in)
        # On a registered service's host but not a registered URL: its own open redirect would become careid's.
        "https://rp.example/redirect?to=https://evil.example/", "https://rp.example/callback?state=2",
        "https://RP.example/", "https://rp.example:443/",
    ],
)
def test_open_redirects_are_refused(client, person, settings, goto):
    settings.CAREID_ALLOWED_REDIRECT_URLS = ["https://rp.example/callback?state=1", "https://rp.example/"]
    response = sign_in(client, person, goto=goto)
    assert response.status_code == 302
    assert response.url == "/?goto_refused=1", f"{goto!r} sent the person to {response.url!r}"


@pytest.mark.parametrize("goto", ["/profile/", "https://rp.example/callback?state=1"])
def test_same_site_paths_and_registered_services_are_allowed(client, person, settings, goto):
    settings.CAREID_ALLOWED_REDIRECT_URLS = ["https://rp.example/callback?state=1"]
    response = sign_in(client, person, goto=goto)
    assert response.url == goto


@pytest.mark.parametrize("path", ["/logout/", "/admin/logout/"])
def test_the_sign_out_address_opened_asks_first_and_its_button_signs_out(ra_staff, path):
    """/logout/ opened (a bookmark, typed) answered a blank 405; /admin/logout/ said "You have signed out"
    and signed nobody out, so the next person at a shared computer had the session. A GET changes nothing."""
    from accounts.roles import RA_AGENT

    _staff, client = ra_staff(RA_AGENT)
    key = client.session.session_key
    page = client.get(path)
    assert page.status_code == 200 and "<h1>Sign out</h1>" in page.content.decode()
    assert "You have signed out" not in page.content.decode()
    assert client.get("/profile/").status_code == 200  # still signed in
    done = client.post(path)
    assert "You have signed out" in done.content.decode()
    from django.contrib.sessions.models import Session

    assert not Session.objects.filter(session_key=key).exists()
    assert client.get("/profile/").status_code == 302


def test_the_sign_out_address_opened_when_signed_out_goes_to_sign_in(client, db):
    assert client.get("/logout/").url == "/login/"


def test_sign_out_ends_the_session(client, signed_in, person):
    key = client.session.session_key
    response = client.post("/logout/")
    assert "You have signed out" in response.content.decode()
    from django.contrib.sessions.models import Session

    assert not Session.objects.filter(session_key=key).exists()
    from allauth.usersessions.models import UserSession

    assert not UserSession.objects.filter(session_key=key).exists()
    assert client.get("/profile/").status_code == 302
    assert AuditEvent.objects.filter(event=Event.SIGNED_OUT, subject=person.user).exists()


def test_a_post_without_a_csrf_token_is_refused_and_changes_nothing(person):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    response = client.post(APP, {"email": person.user.email, "password": "wrong"})
    assert response.status_code == 403
    assert "Your form could not be sent" in response.content.decode()
    person.user.refresh_from_db()
    assert person.user.password_failures == 0


def test_the_admin_signs_in_through_this_page(client, db):
    response = client.get("/admin/")
    assert response.status_code == 302
    response = client.get(response.url)
    assert response.status_code == 302 and response.url.startswith("/login/?goto=%2Fadmin%2F")


def test_the_admin_password_form_cannot_sign_anyone_in(client, make_person):
    staff = make_person(email="ra.manager@nhs.net", is_staff=True, is_superuser=True)
    response = client.post("/admin/login/", {"username": staff.user.email, "password": staff.password})
    assert response.status_code == 302
    assert not client.session.get("_auth_user_id")


def test_staff_reach_the_admin_after_signing_in(client, make_person):
    staff = make_person(email="ra.manager@nhs.net", is_staff=True, is_superuser=True)
    response = sign_in(client, staff, goto="/admin/")
    assert response.url == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_people_who_are_not_staff_are_told_they_cannot_use_the_admin(client, signed_in):
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 403


def test_the_session_ends_after_30_idle_minutes(client, signed_in):
    session = client.session
    session["careid_last_seen"] -= 31 * 60
    session.save()
    response = client.get("/profile/")
    assert response.status_code == 302


def test_the_session_ends_after_12_hours_whatever_the_activity(client, signed_in):
    session = client.session
    session["careid_auth"] = {**session["careid_auth"], "at": session["careid_auth"]["at"] - 12 * 3600 - 1}
    session.save()
    assert client.get("/profile/").status_code == 302


def test_the_session_cookie_ends_when_the_browser_closes(client, person, settings):
    """On a shared practice computer closing the browser ends the sign-in: a browser-session cookie (no
    Expires or Max-Age), not one kept for 12 hours. The stored session still goes after 12 hours at most."""
    from datetime import timedelta

    from django.contrib.sessions.models import Session

    cookie = sign_in(client, person).cookies[settings.SESSION_COOKIE_NAME]
    assert not cookie["expires"] and not cookie["max-age"]
    assert Session.objects.get(session_key=cookie.value).expire_date <= timezone.now() + timedelta(hours=12)


def test_failures_are_audited_without_the_password(client, person):
    client.post(APP, {"email": person.user.email, "password": "hunter2-not-it"})
    event = AuditEvent.objects.get(event=Event.SIGNIN_FAILED)
    assert event.outcome == Outcome.FAILURE and event.ip == "127.0.0.1"
    assert "hunter2" not in str(event.details)


def test_one_account_has_one_attempt_in_flight(rf, person):
    """A second attempt while the first is being checked waits: parallel guesses are not all checked."""
    from signin import throttle

    request = rf.post("/", REMOTE_ADDR="10.0.0.9")
    assert throttle.begin(request, person.user.email, person.user) is None
    second = throttle.begin(request, person.user.email, person.user)
    assert second is not None and second.reason == "throttled"
    throttle.fail(request, person.user.email, person.user)
    person.user.refresh_from_db()
    assert person.user.password_failures == 1
    assert throttle.begin(request, person.user.email, person.user) is None  # no delay before the 5th failure


def test_behind_a_trusted_proxy_the_client_address_is_the_forwarded_one(client, db, settings, fast_hashing):
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 1
    settings.CAREID_PROXY_IPS = ["10.0.0.0/24"]
    settings.CAREID_IP_FAILURE_LIMIT = 2
    for n in range(2):
        client.post(APP, {"email": f"p{n}@nhs.net", "password": "x"}, HTTP_X_FORWARDED_FOR="203.0.113.7", REMOTE_ADDR="10.0.0.1")
    # Another client behind the same proxy is not affected by the first one's failures.
    response = client.post(APP, {"email": "p9@nhs.net", "password": "x"}, HTTP_X_FORWARDED_FOR="198.51.100.2", REMOTE_ADDR="10.0.0.1")
    assert "Too many failed attempts" not in response.content.decode()
    response = client.post(APP, {"email": "p8@nhs.net", "password": "x"}, HTTP_X_FORWARDED_FOR="203.0.113.7", REMOTE_ADDR="10.0.0.1")
    assert "Too many failed attempts" in response.content.decode()
    assert AuditEvent.objects.filter(ip="203.0.113.7").exists() and not AuditEvent.objects.filter(ip="10.0.0.1").exists()


def test_a_client_that_reaches_the_web_process_itself_cannot_forge_its_address(client, db, settings, fast_hashing):
    """Behind a proxy, X-Forwarded-For was believed whoever sent it: a client connecting to gunicorn directly (a
    load balancer's probes reach it) wrote a new address for every attempt and walked round the per-IP limit,
    and put a made-up address in the trail. Only the proxy's own (CAREID_PROXY_IPS) is believed."""
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 1
    settings.CAREID_PROXY_IPS = ["127.0.0.1"]
    settings.CAREID_IP_FAILURE_LIMIT = 2
    answers = [client.post(APP, {"email": f"p{n}@nhs.net", "password": "x"}, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}",
                           REMOTE_ADDR="203.0.113.66").content.decode() for n in range(4)]
    assert ["Too many failed attempts" in answer for answer in answers] == [False, False, True, True]
    assert set(AuditEvent.objects.values_list("ip", flat=True)) == {"203.0.113.66"}


def test_a_forged_forwarded_header_is_ignored_without_a_trusted_proxy(client, db, fast_hashing):
    client.post(APP, {"email": "p@nhs.net", "password": "x"}, HTTP_X_FORWARDED_FOR="203.0.113.7", REMOTE_ADDR="10.0.0.1")
    assert AuditEvent.objects.get(event=Event.SIGNIN_FAILED).ip == "10.0.0.1"


# An AAL3 class careid does not offer yet (smartcards), alone or several: any AAL3 method, never less.
@pytest.mark.parametrize("asked", ["AAL3_ANY", "AAL3_CIS2_SMARTCARD", "AAL3_N3_SMARTCARD+AAL3_CIS2_SMARTCARD"])
def test_a_method_below_the_level_asked_for_cannot_be_used(client, person, asked):
    response = client.get(f"/login/?acr_values={asked}")
    assert "Authenticator app" not in response.content.decode()
    response = client.post(f"{APP}?acr_values={asked}&goto=/profile/", {"email": person.user.email, "password": person.password})
    assert response.status_code == 302 and response.url.startswith("/login/?acr_values=AAL3_ANY")
    response = client.post(f"{CODE}?acr_values={asked}", {"token": person.fresh_code()})
    assert response.status_code == 302 and not client.session.get("_auth_user_id")


def test_the_page_asked_for_is_reached_after_signing_in(client, person):
    response = client.get("/profile/")
    assert response.url == "/login/?next=/profile/"
    response = client.get(response.url)
    assert response.status_code == 200
    assert sign_in(client, person, goto="/profile/").url == "/profile/"
    client.post("/logout/")
    client.post(f"{APP}?next=/profile/", {"email": person.user.email, "password": person.password})
    assert client.post(f"{CODE}?next=/profile/", {"token": person.fresh_code()}).url == "/profile/"


def test_a_lock_is_notified_and_an_unlock_restores_access(transactional_db, client, make_person, mailbox):
    from io import StringIO

    from django.core.management import call_command

    person = make_person()
    User.objects.filter(pk=person.user.pk).update(password_failures=99, last_signin_failure_at=timezone.now())
    client.post(APP, {"email": person.user.email, "password": "wrong password"})
    mailbox.wait_for(person.user.email, "Your Care Identity has been locked")
    with pytest.raises(Exception, match="No Care Identity"):
        call_command("unlock_user", uid="999999999999", reason="x")
    out = StringIO()
    call_command("unlock_user", uid=person.user.uid, reason="Called the service desk", stdout=out)
    assert "Unlocked" in out.getvalue()
    mailbox.wait_for(person.user.email, "Your Care Identity has been unlocked")
    assert AuditEvent.objects.filter(event=Event.ACCOUNT_UNLOCKED, details__reason="Called the service desk").exists()
    assert sign_in(client, person).status_code == 302
    assert client.session.get("_auth_user_id")


def test_the_admin_password_form_is_gone(client, make_person):
    staff = make_person(email="ra.manager@nhs.net", is_staff=True, is_superuser=True)
    sign_in(client, staff, goto="/admin/")
    assert client.get("/admin/password_change/").status_code == 404
    assert client.post("/admin/password_change/", {"old_password": staff.password, "new_password1": "x" * 20,
                                                    "new_password2": "x" * 20}).status_code == 404
    assert client.get("/admin/account/emailaddress/").status_code == 404
