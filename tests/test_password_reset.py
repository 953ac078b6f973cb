"""Forgotten your password? E-mail -> e-mailed One Time Password -> authenticator app code -> new password.

The same pages for every address; a lock that wrong passwords caused is lifted, one that wrong codes
caused is not; every other session ends; the person is e-mailed.
"""

from __future__ import annotations

import re
from datetime import timedelta
from importlib import import_module

import pytest
from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.test import Client, RequestFactory
from django.utils import timezone

from accounts.models import User
from audit.models import AuditEvent, Event

from .conftest import body, sign_in

START = "/login/authenticator-app/forgotten-password/"
CODE = START + "code/"
APP = START + "app/"
NEW = START + "password/"
NEW_PASSWORD = "a brand new passphrase for the ward"


@pytest.fixture
def person(transactional_db, make_person):
    return make_person()


def code_from(mailbox, email: str, count: int = 1) -> str:
    return re.search(r"\b(\d{8})\b", body(mailbox.wait_for(email, "One Time Password", count=count))).group(1)


def same_page(response, email: str = "") -> tuple[int, str]:
    page = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", response.content.decode())
    return response.status_code, page.replace(email, "") if email else page


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**8:08d}"


def test_a_person_locked_by_wrong_passwords_resets_and_signs_in_again(client, person, mailbox):
    user = person.user
    elsewhere = Client()
    sign_in(elsewhere, person)
    User.objects.filter(pk=user.pk).update(password_failures=100, locked_at=timezone.now(), lock_reason="passwords",
                                           last_signin_failure_at=timezone.now())
    assert "Forgotten your password?" in client.get("/login/authenticator-app/").content.decode()
    assert "Reset your password" in client.get(START).content.decode()
    response = client.post(START, {"email": user.email.upper()})
    assert response.status_code == 302 and response.url == CODE
    assert client.post(CODE, {"code": code_from(mailbox, user.email)}).url == APP
    assert client.post(APP, {"token": person.fresh_code()}).url == NEW
    response = client.post(NEW, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 302
    assert "Your password has been changed" in client.get(response.url).content.decode()

    user.refresh_from_db()
    assert not user.is_locked and user.password_failures == 0 and check_password(NEW_PASSWORD, user.password)
    notice = mailbox.wait_for(user.email, "Your Care Identity password has been changed")
    assert "Your Care Identity is unlocked" in body(notice)
    event = AuditEvent.objects.get(event=Event.PASSWORD_RESET, subject=user)
    assert event.details["unlocked"] is True and event.details["sessions_ended"] == 1
    assert NEW_PASSWORD not in str(event.details)
    # Signed out everywhere else; the old password is gone, the new one works.
    assert elsewhere.get("/profile/").status_code == 302
    refused = client.post("/login/authenticator-app/", {"email": user.email, "password": person.password})
    assert "Enter a correct email address and password" in refused.content.decode()
    person.password = NEW_PASSWORD
    assert sign_in(client, person).status_code == 302 and client.session.get("_auth_user_id")


AUTHORIZE = ("/oidc/authorize?response_type=code&client_id=demo-ers&redirect_uri=https%3A%2F%2Fers.example%2Fcallback"
             "&scope=openid&state=s&nonce=n")


def test_forgotten_password_brings_the_person_back_to_the_service(client, person, mailbox):
    """From eRS's sign-in page, "Forgotten your password?" then the reset: "Sign in" at the end led to careid's
    own sign-in page, the service forgotten."""
    from html import unescape
    from urllib.parse import urlencode

    page = client.get(f"/login/authenticator-app/?{urlencode({'goto': AUTHORIZE})}").content.decode()
    forgotten = unescape(re.search(r'href="([^"]*)">Forgotten your password\?<', page).group(1))
    assert forgotten == f"{START}?{urlencode({'goto': AUTHORIZE})}"
    assert client.post(forgotten, {"email": person.user.email}).url == CODE
    client.post(CODE, {"code": code_from(mailbox, person.user.email)})
    client.post(APP, {"token": person.fresh_code()})
    done = client.post(NEW, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD}, follow=True).content.decode()
    sign_in_link = unescape(re.search(r'href="([^"]*)"[^>]*>Sign in<', done).group(1))
    assert sign_in_link == f"/login/?{urlencode({'goto': AUTHORIZE})}"
    # Only where the sign-in itself would go: another site's address is dropped, at the start and at the end.
    page = client.get(f"/login/authenticator-app/?{urlencode({'goto': 'https://evil.example/'})}").content.decode()
    assert f'href="{START}">Forgotten your password?<' in page
    done = client.get(f"/login/authenticator-app/forgotten-password/done/?{urlencode({'goto': '//evil.example/'})}")
    assert re.search(r'href="([^"]*)"[^>]*>Sign in<', done.content.decode()).group(1) == "/login/"
    assert "evil" not in done.content.decode()


def test_start_again_after_too_many_wrong_codes_keeps_the_service(client, person, mailbox):
    from html import unescape
    from urllib.parse import urlencode

    assert client.post(f"{START}?{urlencode({'goto': AUTHORIZE})}", {"email": person.user.email}).url == CODE
    code = code_from(mailbox, person.user.email)
    for _attempt in range(4):
        client.post(CODE, {"code": wrong(code)})
    stopped = client.post(CODE, {"code": wrong(code)}).content.decode()
    assert "You have entered a wrong code too many times" in stopped
    start_again = unescape(re.search(r'href="([^"]*)">Start again<', stopped).group(1))
    assert start_again == f"{START}?{urlencode({'goto': AUTHORIZE})}"


def test_a_reset_that_timed_out_starts_again_on_the_way_to_the_service(client, person, mailbox):
    from urllib.parse import urlencode

    import time_machine
    from django.utils import timezone

    assert client.post(f"{START}?{urlencode({'goto': AUTHORIZE})}", {"email": person.user.email}).url == CODE
    with time_machine.travel(timezone.now() + timedelta(minutes=16)):
        assert client.get(CODE).url == f"{START}?{urlencode({'expired': '1', 'goto': AUTHORIZE})}"
    # A goto that is not one the sign-in would follow is dropped here too.
    session = client.session
    session["careid_password_reset"] = {**session["careid_password_reset"], "goto": "https://evil.example/"}
    session.save()
    with time_machine.travel(timezone.now() + timedelta(minutes=16)):
        assert client.get(CODE).url == f"{START}?expired=1"


def test_an_unknown_address_gets_the_same_pages(client, person, mailbox):
    known, unknown = Client(), Client()
    assert same_page(known.post(START, {"email": person.user.email})) == same_page(
        unknown.post(START, {"email": "nobody@nhs.net"}))
    code = code_from(mailbox, person.user.email)
    assert same_page(known.get(CODE)) == same_page(unknown.get(CODE))
    for _attempt in range(4):
        assert same_page(known.post(CODE, {"code": wrong(code)})) == same_page(unknown.post(CODE, {"code": wrong(code)}))
    last_known, last_unknown = known.post(CODE, {"code": wrong(code)}), unknown.post(CODE, {"code": wrong(code)})
    assert same_page(last_known) == same_page(last_unknown)
    assert "You have entered a wrong code too many times" in last_known.content.decode()
    assert [m["To"] for m in mailbox.messages] == [person.user.email]  # nothing went to the unknown address
    # The code is dead: the right one no longer works, and the journey has to start again.
    assert known.post(CODE, {"code": code}).url == START + "?expired=1"


def test_an_unknown_address_waits_and_expires_as_a_real_code_does(client, person, mailbox, settings):
    """An address that gets no code answered "new code sent" to a resend within the minute, where a real
    code says "once a minute", and "not correct" after ten minutes, where a real code says it expired:
    two requests told a Care Identity with the app from an unknown address."""
    import time_machine

    known, unknown = Client(), Client()
    with time_machine.travel(timezone.now(), tick=False) as clock:
        known.post(START, {"email": person.user.email})
        unknown.post(START, {"email": "nobody@nhs.net"})
        code = code_from(mailbox, person.user.email)
        resent = known.post(CODE + "resend/", follow=True), unknown.post(CODE + "resend/", follow=True)
        assert same_page(resent[0]) == same_page(resent[1])
        assert "once a minute" in resent[0].content.decode()
        clock.shift(settings.CAREID_EMAIL_CODE_TTL)
        late = known.post(CODE, {"code": wrong(code)}), unknown.post(CODE, {"code": wrong(code)})
        assert same_page(late[0]) == same_page(late[1])
        assert late[0].status_code == 400 and "expired" in late[0].content.decode()
        clock.shift(settings.CAREID_EMAIL_CODE_COOLDOWN)
        resent = known.post(CODE + "resend/"), unknown.post(CODE + "resend/")
        assert [response.url for response in resent] == [CODE + "?sent=1"] * 2
        again = known.post(CODE, {"code": wrong(code)}), unknown.post(CODE, {"code": wrong(code)})
        assert same_page(again[0]) == same_page(again[1]) and "expired" not in again[0].content.decode()


def test_a_lock_for_wrong_codes_cannot_be_reset(client, person, mailbox):
    user = person.user
    User.objects.filter(pk=user.pk).update(code_failures=30, locked_at=timezone.now(), lock_reason="codes")
    response = client.post(START, {"email": user.email})
    assert response.url == CODE  # the same answer as for anyone
    notice = mailbox.wait_for(user.email, "Your Care Identity password cannot be reset")
    assert "locked after too many wrong security codes" in body(notice)
    assert not mailbox.to(user.email)[0]["Subject"].endswith("One Time Password")
    assert AuditEvent.objects.filter(event=Event.PASSWORD_RESET_STARTED, subject=user, outcome="failure",
                                     details__reason="locked").exists()


def test_a_suspended_care_identity_cannot_reset_its_password(client, person, mailbox):
    user = person.user
    User.objects.filter(pk=user.pk).update(status=User.Status.SUSPENDED)
    assert client.post(START, {"email": user.email}).url == CODE
    assert "not active" in body(mailbox.wait_for(user.email, "cannot be reset"))
    assert client.post(CODE, {"code": "12345678"}).status_code == 400


def test_wrong_app_codes_count_towards_the_code_lock(client, person, mailbox, settings):
    user = person.user
    User.objects.filter(pk=user.pk).update(code_failures=settings.CAREID_CODE_LOCK_AFTER - 1,
                                           last_signin_failure_at=timezone.now())
    client.post(START, {"email": user.email})
    client.post(CODE, {"code": code_from(mailbox, user.email)})
    wrong_token = person.wrong_code()
    response = client.post(APP, {"token": wrong_token})
    assert "Contact your registration authority" in response.content.decode()
    user.refresh_from_db()
    assert user.lock_reason == "codes"
    assert client.post(APP, {"token": person.fresh_code()}).url == START + "?expired=1"


def test_the_thirtieth_wrong_app_code_turns_a_lock_for_passwords_into_one_for_codes(client, person, mailbox, settings):
    """Locked by a stranger's wrong passwords, then 30 wrong app codes in the reset: a reset can no longer
    lift it, so the person is told to contact their RA (not to reset), and the lock is recorded as for codes."""
    user = person.user
    User.objects.filter(pk=user.pk).update(password_failures=100, locked_at=timezone.now(), lock_reason="passwords",
                                           code_failures=settings.CAREID_CODE_LOCK_AFTER - 1,
                                           last_signin_failure_at=timezone.now())
    client.post(START, {"email": user.email})
    client.post(CODE, {"code": code_from(mailbox, user.email)})
    wrong_token = person.wrong_code()
    page = client.post(APP, {"token": wrong_token}).content.decode()
    assert "locked after too many wrong security codes" in page and "Reset your password" not in page
    user.refresh_from_db()
    assert user.lock_reason == "codes" and not user.lock_is_lifted_by_password_reset
    assert AuditEvent.objects.filter(event=Event.ACCOUNT_LOCKED, subject=user, details__reason="codes").exists()
    page = Client().post("/login/authenticator-app/", {"email": user.email, "password": person.password})
    assert "locked after too many wrong security codes" in page.content.decode()


def test_a_lock_for_codes_outlives_a_hundred_wrong_passwords_spread_out(person, settings):
    """Wrong passwords long after a lock for codes do not wipe the codes it counted: a reset still cannot
    lift it. The stranger sending them hears what any address locked by wrong passwords says."""
    user = person.user
    User.objects.filter(pk=user.pk).update(code_failures=30, locked_at=timezone.now(), lock_reason="codes",
                                           password_failures=99,
                                           last_signin_failure_at=timezone.now() - 2 * settings.CAREID_SIGNIN_FAILURE_WINDOW)
    settings.CAREID_PASSWORD_LOCK_AFTER = 1
    page = Client().post("/login/authenticator-app/", {"email": user.email, "password": "not the password"})
    page = page.content.decode()
    assert "Reset your password to unlock it" in page and "wrong security codes" not in page
    user.refresh_from_db()
    assert user.is_locked and not user.lock_is_lifted_by_password_reset


def test_the_new_password_follows_the_registration_rules(client, person, mailbox):
    user = person.user
    client.post(START, {"email": user.email})
    client.post(CODE, {"code": code_from(mailbox, user.email)})
    client.post(APP, {"token": person.fresh_code()})
    response = client.post(NEW, {"password1": "password", "password2": "password"})
    assert response.status_code == 400 and "too common" in response.content.decode()
    response = client.post(NEW, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD + "x"})
    assert "Passwords must match" in response.content.decode()
    user.refresh_from_db()
    assert check_password(person.password, user.password)


def test_a_reset_from_a_browser_signed_in_as_the_person_ends_there_too_with_the_done_page(client, person, mailbox):
    """Asked to sign in again (adding an address, a service's re-authentication), the person has forgotten their
    password and resets it in the browser that is still signed in: the reset ended that session with the others,
    then saving it at the end of the request found it gone, and the last step answered "There is a problem with
    your request" (400) though the password had changed."""
    sign_in(client, person)
    email = person.user.email
    assert client.post(START, {"email": email}).url == CODE
    assert client.post(CODE, {"code": code_from(mailbox, email)}).url == APP
    assert client.post(APP, {"token": person.fresh_code()}).url == NEW
    response = client.post(NEW, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 302
    assert "Your password has been changed" in client.get(response.url).content.decode()
    assert client.get("/profile/").status_code == 302  # signed out here too ("signed out everywhere")
    person.user.refresh_from_db()
    assert check_password(NEW_PASSWORD, person.user.password)
    assert AuditEvent.objects.get(event=Event.PASSWORD_RESET, subject=person.user).details["sessions_ended"] == 1


def test_a_reset_ends_the_wait_a_strangers_wrong_passwords_built_up(client, person, mailbox, settings):
    """Twenty wrong passwords from a stranger (not yet a lock) make everyone wait 15 minutes before the next
    password; the person resets theirs (their mailbox and their app), and signing in with the new one was still
    refused for the rest of those 15 minutes, where a reset of a locked Care Identity lets them in at once."""
    user = person.user
    User.objects.filter(pk=user.pk).update(password_failures=20, last_signin_failure_at=timezone.now(),
                                           password_blocked_until=timezone.now() + settings.CAREID_SIGNIN_MAX_DELAY)
    client.post(START, {"email": user.email})
    client.post(CODE, {"code": code_from(mailbox, user.email)})
    client.post(APP, {"token": person.fresh_code()})
    assert client.post(NEW, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD}).status_code == 302
    person.password = NEW_PASSWORD
    response = Client().post("/login/authenticator-app/", {"email": user.email, "password": NEW_PASSWORD})
    assert (response.status_code, response.get("Location")) == (302, "/login/authenticator-app/code/")


def test_steps_cannot_be_skipped(client, person, mailbox):
    client.post(START, {"email": person.user.email})
    assert client.post(APP, {"token": person.fresh_code()}).url == START + "?expired=1"
    assert client.post(NEW, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD}).url == START + "?expired=1"
    person.user.refresh_from_db()
    assert check_password(person.password, person.user.password)


def test_a_strangers_wrong_codes_do_not_spoil_the_persons_own_reset(person, mailbox, settings):
    """A code belongs to the reset that asked for it: one that anyone started for the address (knowing
    it is enough) and then got wrong five times dies alone, and the person's own reset goes on."""
    import time_machine

    stranger, own = Client(REMOTE_ADDR="203.0.113.9"), Client(REMOTE_ADDR="198.51.100.7")
    email = person.user.email
    with time_machine.travel(timezone.now(), tick=False) as clock:
        stranger.post(START, {"email": email})
        stranger_code = code_from(mailbox, email)
        clock.shift(settings.CAREID_EMAIL_CODE_COOLDOWN)  # one reset e-mail a minute (the tests below)
        own.post(START, {"email": email})
        own_code = code_from(mailbox, email, count=2)
        assert own_code != stranger_code
        for _attempt in range(4):
            stranger.post(CODE, {"code": wrong(stranger_code)})
        assert "You have entered a wrong code too many times" in stranger.post(CODE, {"code": wrong(stranger_code)}).content.decode()
        assert own.post(CODE, {"code": own_code}).url == APP


def _codes_sent(user: User) -> int:
    from accounts.models import OutgoingEmail

    return OutgoingEmail.objects.filter(user=user, kind="email_code").count()


def test_starting_again_within_the_minute_sends_no_new_code(client, person, mailbox):
    """Three posts of the address within a second sent three codes: starting again skipped the minute's wait
    that "Send a new code" keeps. From other browsers, a reset started again gets no code (the wait is the
    address's); from the same browser (a double click), its journey goes on with the code that was e-mailed."""
    email = person.user.email
    for _attempt in range(3):
        assert client.post(START, {"email": email}).url == CODE
    for _other_browser in range(2):
        assert Client(REMOTE_ADDR="203.0.113.9").post(START, {"email": email}).url == CODE
    assert _codes_sent(person.user) == 1 and len(mailbox.to(email)) == 1
    started = AuditEvent.objects.filter(event=Event.PASSWORD_RESET_STARTED, subject=person.user).order_by("id")
    assert [(event.details["emailed"], event.details.get("reason")) for event in started] == [
        (True, None), (False, "cooldown"), (False, "cooldown")]
    assert client.post(CODE, {"code": code_from(mailbox, email)}).url == APP


def test_a_reset_started_elsewhere_within_the_minute_sends_nothing_and_spoils_nothing(person, mailbox, settings):
    """Another browser, from another client address, starting a reset within the minute of the person's code
    sends nothing: its journey has no code that works yet (whatever it types is wrong, counted against it
    alone), the person's code still works, and its own "Send a new code" sends one once the minute is over."""
    import time_machine

    email = person.user.email
    own, other = Client(REMOTE_ADDR="198.51.100.7"), Client(REMOTE_ADDR="203.0.113.9")
    with time_machine.travel(timezone.now(), tick=False) as clock:
        own.post(START, {"email": email})
        own_code = code_from(mailbox, email)
        clock.shift(settings.CAREID_EMAIL_CODE_COOLDOWN / 2)
        assert other.post(START, {"email": email}).url == CODE
        assert _codes_sent(person.user) == 1
        assert other.post(CODE, {"code": own_code}).status_code == 400  # the person's code is not this journey's
        assert other.post(CODE + "resend/").url == CODE + "?resend=refused"  # its minute counts from its start
        clock.shift(settings.CAREID_EMAIL_CODE_COOLDOWN)
        assert other.post(CODE + "resend/").url == CODE + "?sent=1"
        other_code = code_from(mailbox, email, count=2)
        assert _codes_sent(person.user) == 2 and other_code != own_code
        assert own.post(CODE, {"code": own_code}).url == APP
        assert other.post(CODE, {"code": other_code}).url == APP


def test_a_resend_within_the_minute_of_another_journeys_e_mail_keeps_the_code_it_has(person, mailbox, settings):
    """The person's "Send a new code" a minute after their code but within the minute of a code another browser
    was sent: it is refused as within the minute, and the person's code goes on working (it was replaced by
    one that could not be sent, with the page saying a new code was sent)."""
    import time_machine

    email = person.user.email
    own, other = Client(REMOTE_ADDR="198.51.100.7"), Client(REMOTE_ADDR="203.0.113.9")
    with time_machine.travel(timezone.now(), tick=False) as clock:
        own.post(START, {"email": email})
        own_code = code_from(mailbox, email)
        clock.shift(settings.CAREID_EMAIL_CODE_COOLDOWN + timedelta(seconds=10))
        other.post(START, {"email": email})
        assert _codes_sent(person.user) == 2
        clock.shift(timedelta(seconds=30))
        assert own.post(CODE + "resend/").url == CODE + "?resend=refused"
        assert _codes_sent(person.user) == 2
        assert own.post(CODE, {"code": own_code}).url == APP


def test_a_start_from_elsewhere_within_the_minute_answers_as_for_an_unknown_address(person, mailbox, settings):
    """The same steps for a Care Identity (within the minute of a code sent to it) and an unknown address
    (within the minute of its start elsewhere): the same pages and statuses throughout."""
    import time_machine

    pages = {}
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for email in (person.user.email, "nobody.here@nhs.net"):
            first, second = Client(REMOTE_ADDR="198.51.100.7"), Client(REMOTE_ADDR="203.0.113.9")
            first.post(START, {"email": email})
            answers = [same_page(second.post(START, {"email": email}, follow=True), email)]
            answers += [same_page(second.post(CODE, {"code": "12345678"}), email)]
            answers += [same_page(second.post(CODE + "resend/", follow=True), email)]
            clock.shift(settings.CAREID_EMAIL_CODE_COOLDOWN)
            answers += [same_page(second.post(CODE + "resend/", follow=True), email)]
            answers += [same_page(second.post(CODE, {"code": "12345678"}), email) for _attempt in range(4)]
            pages[email] = answers
            clock.shift(-settings.CAREID_EMAIL_CODE_COOLDOWN)
    assert pages[person.user.email] == pages["nobody.here@nhs.net"]
    assert [status for status, _page in pages["nobody.here@nhs.net"]] == [200, 400, 200, 200, 400, 400, 400, 200]
    assert "You have entered a wrong code too many times" in pages["nobody.here@nhs.net"][-1][1]


def _a_strangers_resets(email: str, number: int, start_at, settings) -> list[tuple]:
    """What a stranger is shown, step by step (each redirect, the last status and the page, the address they
    typed and the form's token aside), asking for resets of `email` from several browsers and two client
    addresses of their own (`number` tells them apart: the per-client counters are the client's) at the
    waits and limits of a reset."""
    import time_machine

    from authenticators.totp.flows import RESET_EMAILS_PER_DAY, RESET_STARTS_PER_HOUR

    minute, first, second = settings.CAREID_EMAIL_CODE_COOLDOWN, f"198.51.100.{number}", f"203.0.113.{number}"
    one, two = Client(REMOTE_ADDR=first), Client(REMOTE_ADDR=second)
    seen = []

    def ask(browser: Client, path: str, data: dict | None = None) -> None:
        response = browser.post(path, data or {}, follow=True)
        seen.append(([(status, url) for url, status in response.redirect_chain], *same_page(response, email)))

    with time_machine.travel(start_at, tick=False) as clock:
        ask(one, START, {"email": email})  # a reset e-mail (the code, or the notice why not) is due
        ask(one, START, {"email": email})  # a double click: the same journey goes on
        ask(one, CODE + "resend/")  # within its own minute
        clock.shift(minute / 2)
        ask(two, START, {"email": email})  # within the minute of the first's e-mail: nothing is sent
        ask(two, CODE, {"code": "12345678"})
        ask(two, CODE + "resend/")  # within its own minute
        clock.shift(minute / 2 + timedelta(seconds=1))
        ask(one, CODE + "resend/")  # a minute on: sent
        clock.shift(minute / 2)
        ask(two, CODE + "resend/")  # its own minute is over, not the minute since the first's resend
        clock.shift(minute / 2 + timedelta(seconds=1))
        ask(two, CODE + "resend/")
        for _try in range(settings.CAREID_EMAIL_CODE_MAX_FAILURES - 1):  # one was tried before
            ask(two, CODE, {"code": "12345678"})
        for _reset in range(RESET_EMAILS_PER_DAY + 1):  # the day's e-mails from the first client address
            clock.shift(minute + timedelta(seconds=1))
            browser = Client(REMOTE_ADDR=first)
            ask(browser, START, {"email": email})
            clock.shift(minute + timedelta(seconds=1))
            ask(browser, CODE + "resend/")
        # Over the day's e-mails nothing is sent and no wait starts: the second browser's resend is answered as
        # sent, where within the day's e-mails it was refused as within the minute of the first's.
        three, four = Client(REMOTE_ADDR=first), Client(REMOTE_ADDR=first)
        clock.shift(minute + timedelta(seconds=1))
        ask(three, START, {"email": email})
        clock.shift(minute / 2)
        ask(four, START, {"email": email})
        clock.shift(minute / 2 + timedelta(seconds=1))
        ask(three, CODE + "resend/")
        clock.shift(minute / 2)
        ask(four, CODE + "resend/")
        hourly = Client(REMOTE_ADDR=second)
        for _start in range(RESET_STARTS_PER_HOUR):  # the second client address has started one already
            ask(hourly, START, {"email": email})
    return seen


def test_the_reset_waits_and_limits_answer_alike_for_every_address(transactional_db, make_person, mailbox, settings):
    """The waits and limits of a forgotten-password reset as a stranger meets them: the minute between reset
    e-mails (the address's, whichever journey, browser or client address asks), a resend refused within
    the minute of another journey's e-mail, a double click, a code's five wrong tries, the day's e-mails from
    one client address and the starts an hour from one. A Care Identity that can reset, one suspended, one
    closed, one without the app and an address that is nobody's get the same redirects, statuses and pages at
    every step, since the wait and the day's counts are kept for an address that is nobody's as for a Care
    Identity's; and nothing is sent to the address that is nobody's."""
    from accounts.models import OutgoingEmail
    from authenticators.totp.flows import RESET_EMAILS_PER_DAY
    from authenticators.totp.models import AuthenticatorApp

    can = make_person()
    suspended = make_person(email="mary.seacole@nhs.net", status=User.Status.SUSPENDED)
    closed = make_person(email="florence.nightingale@nhs.net", status=User.Status.CLOSED)
    no_app = make_person(email="agnes.hunt@nhs.net")
    AuthenticatorApp.objects.filter(user=no_app.user).delete()
    unknown, start_at = "nobody.here@nhs.net", timezone.now()
    addresses = (can.user.email, suspended.user.email, closed.user.email, no_app.user.email, unknown)
    answers = {email: _a_strangers_resets(email, number, start_at, settings)
               for number, email in enumerate(addresses, start=1)}
    for email in addresses[:-1]:
        assert answers[email] == answers[unknown], email
    pages = [page for _redirects, _status, page in answers[unknown]]
    assert [index for index, page in enumerate(pages) if "once a minute" in page] == [2, 5, 7]
    assert "You have entered a wrong code too many times" in pages[12]  # the journey's fifth wrong try
    assert answers[unknown][-1][1] == 400 and "too many times. Try again in an hour" in pages[-1]
    # Nothing for the address that is nobody's; the Care Identity that can reset was sent a code a minute at
    # most: the day's 5 from the first client address, 2 from the second (a resend, the first hourly start).
    assert not OutgoingEmail.objects.filter(to=unknown).exists() and not mailbox.to(unknown)
    assert _codes_sent(can.user) == RESET_EMAILS_PER_DAY + 2


def test_a_stranger_cannot_use_up_the_persons_codes_for_the_day(person, mailbox, settings):
    """New codes for one address are counted per client address as well as in all: a stranger who starts
    reset after reset gets the address its five codes a day from their address, not the person's from
    theirs; and 20 a day in all, however many addresses ask, keep its inbox from being flooded. (One a
    minute at most, whoever asks: the clock moves on a minute before each start.)"""
    import time_machine

    email = person.user.email

    with time_machine.travel(timezone.now(), tick=False) as clock:
        def start(address: str) -> Client:
            clock.shift(settings.CAREID_EMAIL_CODE_COOLDOWN)
            browser = Client(REMOTE_ADDR=address)
            browser.post(START, {"email": email})
            return browser

        for _attempt in range(6):
            start("203.0.113.9")
        assert _codes_sent(person.user) == 5
        own = start("198.51.100.7")
        assert _codes_sent(person.user) == 6
        assert own.post(CODE, {"code": code_from(mailbox, email, count=6)}).url == APP

        for address in range(2):
            for _attempt in range(5):
                start(f"192.0.2.{address + 1}")
        for _attempt in range(4):
            start("192.0.2.3")
        assert _codes_sent(person.user) == 20
        start("192.0.2.4")
        assert _codes_sent(person.user) == 20


def test_resends_count_against_the_days_emails(person, mailbox, settings):
    """A resend is an e-mail too: one reset cannot flood the inbox a code a minute. Over the limit it is
    answered as sent, as for an address that gets no code, and nothing goes."""
    import time_machine

    email = person.user.email
    own = Client(REMOTE_ADDR="198.51.100.7")
    with time_machine.travel(timezone.now(), tick=False) as clock:
        own.post(START, {"email": email})
        assert own.post(CODE + "resend/").url == CODE + "?resend=refused"  # once a minute
        for _resend in range(5):
            clock.shift(settings.CAREID_EMAIL_CODE_COOLDOWN)
            assert own.post(CODE + "resend/").url == CODE + "?sent=1"
        assert _codes_sent(person.user) == 5
        assert "once a minute" in own.post(CODE + "resend/", follow=True).content.decode()


def test_a_sign_in_half_done_with_the_old_password_cannot_be_finished_after_a_reset(person, mailbox):
    other = Client(REMOTE_ADDR="203.0.113.9")
    assert other.post("/login/authenticator-app/", {"email": person.user.email, "password": person.password}).status_code == 302
    own = Client(REMOTE_ADDR="198.51.100.7")
    own.post(START, {"email": person.user.email})
    assert own.post(CODE, {"code": code_from(mailbox, person.user.email)}).url == APP
    assert own.post(APP, {"token": person.fresh_code()}).url == NEW
    assert own.post(NEW, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD}).status_code == 302

    response = other.post("/login/authenticator-app/code/", {"token": person.fresh_code()})
    assert response.status_code == 302 and response.url.startswith("/login/authenticator-app/")
    assert not other.session.get("_auth_user_id")


def _overlapping_wrong_codes(email: str, tries: int) -> list[str]:
    """`tries` wrong codes in one reset journey, sent at once: each request read the session before any
    of them wrote it (what parallel requests from one browser do)."""
    from importlib import import_module

    from django.conf import settings
    from django.test import RequestFactory

    from authenticators.totp import flows

    browser = Client(REMOTE_ADDR="203.0.113.9")
    browser.post(START, {"email": email})
    store = import_module(settings.SESSION_ENGINE).SessionStore
    requests = [RequestFactory().post(CODE, REMOTE_ADDR="203.0.113.9") for _ in range(tries)]
    for request in requests:
        request.session = store(browser.session.session_key)
    journeys = [flows.PasswordReset.of(request, "otp") for request in requests]  # all read first
    answers = []
    for request, journey in zip(requests, journeys, strict=True):
        answers.append(flows.check_reset_code(request, journey, "00000000").value)
        request.session.save()
    return answers


def test_overlapping_wrong_codes_run_out_for_an_unknown_address_as_for_a_real_one(person, mailbox, settings):
    """A real code's wrong tries are counted on its row, atomically; those of an address that gets no code
    were counted in the session, where overlapping requests each read 0 and wrote 1: five wrong codes at
    once ended a real address's reset and never an unknown one's, which told them apart."""
    tries = settings.CAREID_EMAIL_CODE_MAX_FAILURES
    assert _overlapping_wrong_codes(person.user.email, tries)[-1] == "exhausted"
    assert _overlapping_wrong_codes("nobody.here@nhs.net", tries) == ["wrong"] * (tries - 1) + ["exhausted"]


def test_a_reset_refused_for_too_many_from_one_address_is_audited(person, mailbox):
    from authenticators.totp.flows import RESET_STARTS_PER_HOUR

    client = Client(REMOTE_ADDR="203.0.113.9")
    for attempt in range(RESET_STARTS_PER_HOUR):
        client.post(START, {"email": f"someone{attempt}@nhs.net"})
    response = client.post(START, {"email": person.user.email})
    assert "too many times" in response.content.decode()
    refused = AuditEvent.objects.filter(event=Event.PASSWORD_RESET_STARTED).latest("id")
    assert (refused.subject, refused.outcome, refused.details["reason"]) == (person.user, "failure", "ip_throttled")
    assert refused.ip == "203.0.113.9"
    assert not mailbox.to(person.user.email)


def test_a_reset_that_cannot_go_on_any_more_is_audited(client, person, mailbox):
    """Suspended after the e-mailed code was accepted: the app step stops the reset, and says so in the trail."""
    client.post(START, {"email": person.user.email})
    assert client.post(CODE, {"code": code_from(mailbox, person.user.email)}).url == APP
    User.objects.filter(pk=person.user.pk).update(status=User.Status.SUSPENDED)
    response = client.post(APP, {"token": person.fresh_code()})
    assert "This password reset cannot go on" in response.content.decode()
    refused = AuditEvent.objects.filter(event=Event.PASSWORD_RESET).latest("id")
    assert (refused.subject, refused.outcome, refused.details["reason"]) == (person.user, "failure", "profile suspended")
    assert client.get(APP).url == START + "?expired=1"  # the journey is over


def test_a_care_identity_that_cannot_reset_is_told_why_once_a_minute(client, person, mailbox):
    """The notice why the password cannot be reset is a reset e-mail like a code: starting again within the
    minute does not send it again."""
    from accounts.models import OutgoingEmail

    User.objects.filter(pk=person.user.pk).update(status=User.Status.SUSPENDED)
    for _browser in range(3):
        assert Client(REMOTE_ADDR="203.0.113.9").post(START, {"email": person.user.email}).url == CODE
    assert OutgoingEmail.objects.filter(user=person.user, kind="notification").count() == 1
    started = AuditEvent.objects.filter(event=Event.PASSWORD_RESET_STARTED, subject=person.user).order_by("id")
    assert [(event.details["notified"], event.details.get("held_back")) for event in started] == [
        (True, None), (False, "cooldown"), (False, "cooldown")]


def _statements(queries: list[dict]) -> list[str]:
    """The statements that do work, without their values (transaction control aside)."""
    work = [query["sql"] for query in queries if query["sql"].startswith(("SELECT", "INSERT", "UPDATE", "DELETE"))]
    return [re.sub(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b|\bNULL\b|\btrue\b|\bfalse\b", "?", sql) for sql in work]


def test_every_step_does_the_same_database_work_and_celery_hand_over_for_every_address(
        db, make_person, settings, django_capture_on_commit_callbacks):
    """A start made 7 statements and handed Celery the code for a Care Identity's address, 4 and the notice for
    one that cannot reset, and 3 and nothing for an unknown address; a wrong code 6, 3 and 3; a resend 6, 2
    and 2: about 9 ms against 5 in process for a start, which a client can measure. Now each step makes the
    same statements in the same order for all three, and hands Celery one e-mail where one is due: for an
    unknown address, one that no worker ever sends."""
    import time_machine
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.models import OutgoingEmail

    can, cannot = make_person(), make_person(email="mary.seacole@nhs.net")
    User.objects.filter(pk=cannot.user.pk).update(status=User.Status.SUSPENDED)
    work = {}
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for email in (can.user.email, cannot.user.email, "nobody.here@nhs.net"):
            first, second = Client(REMOTE_ADDR="198.51.100.7"), Client(REMOTE_ADDR="203.0.113.9")
            steps = [("start", first, START, {"email": email}),
                     ("start again within the minute", second, START, {"email": email}),
                     ("wrong code", first, CODE, {"code": "12345678"}),
                     ("resend within the minute", first, CODE + "resend/", {}),
                     ("resend", first, CODE + "resend/", {}),
                     ("wrong code after the resend", first, CODE, {"code": "12345678"})]
            work[email] = []
            for name, browser, path, data in steps:
                if name == "resend":
                    clock.shift(settings.CAREID_EMAIL_CODE_COOLDOWN)
                with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks() as handed_over:
                    browser.post(path, data)
                work[email].append((name, _statements(queries.captured_queries), len(handed_over)))
            clock.shift(-settings.CAREID_EMAIL_CODE_COOLDOWN)  # the next address's steps at the same moments
    assert work[can.user.email] == work["nobody.here@nhs.net"]
    assert work[cannot.user.email] == work["nobody.here@nhs.net"]
    assert [(name, len(statements), handed) for name, statements, handed in work["nobody.here@nhs.net"]] == [
        ("start", 7, 1), ("start again within the minute", 6, 0), ("wrong code", 5, 0),
        ("resend within the minute", 2, 0), ("resend", 7, 1), ("wrong code after the resend", 5, 0)]
    # What was handed over for an unknown address (and the resend of a profile that cannot reset) goes to nobody.
    assert set(OutgoingEmail.objects.filter(user=None).values_list("state", "to")) == {(OutgoingEmail.State.CANCELLED, "")}
    assert OutgoingEmail.objects.filter(user=None).count() == 3


# --- double submissions, a clean-up, a release before ------------------------------------------------


def test_a_double_submitted_right_code_does_not_send_the_journey_back_to_the_code_step(person, mailbox):
    """The person double-clicks Continue on the code page with the right code: two requests read the session,
    the first accepts the code and moves the journey to the app step, the second (the code now used) saves
    the journey as it read it, at the code step. The browser is left at a step whose code is used: every
    code it types is "already used", "Send a new code" is refused for ever, and the app step sends it back
    to the start."""
    from authenticators.totp import flows

    email = person.user.email
    browser = Client(REMOTE_ADDR="198.51.100.7")
    browser.post(START, {"email": email})
    code = code_from(mailbox, email)
    requests = _requests_that_read_the_session_first(browser, CODE)
    journeys = [flows.PasswordReset.of(request, "otp") for request in requests]  # both read first
    answers = []
    for request, journey in zip(requests, journeys, strict=True):
        answers.append(flows.check_reset_code(request, journey, code).value)
        if request.session.modified:  # as SessionMiddleware saves it
            request.session.save()
    assert answers[0] == "accepted"
    assert browser.post(APP, {"token": person.fresh_code()}).url == NEW


def _requests_that_read_the_session_first(browser: Client, path: str, count: int = 2) -> list:
    store = import_module(settings.SESSION_ENGINE).SessionStore
    requests = [RequestFactory().post(path, REMOTE_ADDR="198.51.100.7") for _ in range(count)]
    for request in requests:
        request.session = store(browser.session.session_key)
    return requests


def test_a_finished_journey_sets_the_password_once(person, mailbox):
    """The last step double-submitted (two tabs, a double click): both requests read the journey at the
    password step before either ended it, and both set a password, end the person's sessions and e-mail
    them, with two successful password.reset events. A journey that has set the password is finished."""
    from audit.models import AuditEvent, Event
    from authenticators.totp import flows

    email = person.user.email
    browser = Client(REMOTE_ADDR="198.51.100.7")
    browser.post(START, {"email": email})
    assert browser.post(CODE, {"code": code_from(mailbox, email)}).url == APP
    assert browser.post(APP, {"token": person.fresh_code()}).url == NEW
    requests = _requests_that_read_the_session_first(browser, NEW)
    journeys = [flows.PasswordReset.of(request, "password") for request in requests]
    done = []
    for request, journey, password in zip(requests, journeys, ("first new passphrase", "second new passphrase"),
                                          strict=True):
        done.append(flows.finish_password_reset(request, journey, password) is not None)
        if request.session.modified:  # as SessionMiddleware saves it
            request.session.save()
    assert AuditEvent.objects.filter(event=Event.PASSWORD_RESET, subject=person.user, outcome="success").count() == 1
    assert done == [True, False]


def test_a_wait_that_is_over_or_cleaned_up_never_holds_back_a_reset_e_mail(db):
    """The wait is claimed in one statement: as an INSERT then an UPDATE, the hourly clean-up deleting a wait
    that was over between the two made the UPDATE find nothing, and a reset e-mail due was held back."""
    import time_machine

    from authenticators.totp.models import PasswordResetWait

    key = PasswordResetWait.key_for("nobody.here@nhs.net")
    with time_machine.travel(timezone.now(), tick=False) as clock:
        assert PasswordResetWait.objects.claim(key) is True
        assert PasswordResetWait.objects.claim(key) is False  # within the minute
        clock.shift(settings.CAREID_EMAIL_CODE_COOLDOWN)
        assert PasswordResetWait.objects.claim(key) is True  # the minute is over
        clock.shift(settings.CAREID_EMAIL_CODE_COOLDOWN)
        assert PasswordResetWait.objects.forget_over() == 1
        assert PasswordResetWait.objects.claim(key) is True  # cleaned up: a new wait
        assert PasswordResetWait.objects.claim(key) is False


def test_a_double_click_on_the_start_page_keeps_the_code_that_was_e_mailed(person, mailbox):
    """A double click on Continue (or Back and Continue while the e-mail is on its way) starts a second journey
    in the same browser within the minute: it e-mails nothing (README), but it also replaces the browser's
    journey, so the one code that was e-mailed, in answer to this browser, is refused in it, and typing it
    spends the new journey's tries (five kill it). Nobody else's journey is involved: the browser's own
    journey for the same address could be kept, for every address alike."""
    email = person.user.email
    browser = Client(REMOTE_ADDR="198.51.100.7")
    assert browser.post(START, {"email": email}).url == CODE
    assert browser.post(START, {"email": email}).url == CODE
    code = code_from(mailbox, email)
    assert len(mailbox.to(email)) == 1
    response = browser.post(CODE, {"code": code})
    assert (response.status_code, response.get("Location")) == (302, APP)


def _page_and_location(response) -> tuple[int, str, str | None]:
    page = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", response.content.decode())
    return response.status_code, page, response.get("Location")


def test_journeys_of_the_release_before_go_on_alike_for_every_address(transactional_db, make_person, mailbox):
    """The release before (284ce74^) gave a journey a code row only when it e-mailed a code: to a Care Identity
    that can reset. An unknown address, a profile that cannot reset and one over the day's e-mails kept
    code None. This release sends a journey at the code step without a code back to the start ("started by
    an older release: start again"), and lets one with a code go on: at the deploy, every journey started
    in the 15 minutes before tells whether its address is a Care Identity with the app. A client that keeps
    a journey open for each of many addresses (restarting them every 15 minutes) learns that at each deploy
    from one GET of the code page per address."""
    import secrets
    import time

    from accounts.models import EmailOneTimePassword, User
    from authenticators.totp.flows import SESSION_RESET

    can, cannot = make_person(), make_person(email="mary.seacole@nhs.net")
    User.objects.filter(pk=cannot.user.pk).update(status=User.Status.SUSPENDED)

    def journey_of_the_release_before(email: str, user: User | None, code: int | None, address: str) -> Client:
        browser = Client(REMOTE_ADDR=address)
        session = browser.session
        now = time.time()
        session[SESSION_RESET] = {"email": email, "step": "otp", "at": now, "user": user.pk if user else None,
                                  "code": code, "sent_at": now, "journey": secrets.token_urlsafe(16)}
        session.save()
        return browser

    sent = EmailOneTimePassword.issue(user=can.user, email=can.user.email, purpose="password-reset")
    known = journey_of_the_release_before(can.user.email, can.user, sent.pk, "198.51.100.7")
    refused = journey_of_the_release_before(cannot.user.email, cannot.user, None, "198.51.100.8")
    unknown = journey_of_the_release_before("nobody.here@nhs.net", None, None, "198.51.100.9")
    pages = [_page_and_location(browser.get(CODE)) for browser in (known, refused, unknown)]
    assert pages[0] == pages[2], (pages[0][0], pages[0][2], pages[2][0], pages[2][2])
    assert pages[1] == pages[2]


def test_a_reset_started_for_an_address_an_ra_has_since_replaced_cannot_go_on(person, mailbox, settings):
    """The RA changed the Care Identity e-mail (the old mailbox lost or compromised): "Send a new code" went on
    e-mailing codes to the old address, and its code still led to a new password."""
    import time_machine

    from accounts.models import OutgoingEmail

    old = person.user.email
    browser = Client(REMOTE_ADDR="198.51.100.7")
    with time_machine.travel(timezone.now(), tick=False) as clock:
        browser.post(START, {"email": old})
        code = code_from(mailbox, old)
        User.objects.filter(pk=person.user.pk).update(email="a.new.address@nhs.net")
        clock.shift(settings.CAREID_EMAIL_CODE_COOLDOWN)
        assert browser.post(CODE + "resend/").url == CODE + "?sent=1"  # as for any address that gets no code
        assert OutgoingEmail.objects.filter(to=old, kind="email_code").count() == 1  # the first code only
        assert browser.post(CODE, {"code": code}).status_code == 400  # replaced by the resend, which went nowhere
    sent = AuditEvent.objects.filter(event=Event.OTP_SENT, subject=person.user, outcome="failure").get()
    assert sent.details["reason"] == "email changed"


def test_an_address_an_ra_replaced_during_a_reset_waits_as_an_address_that_was_never_anyones(
        transactional_db, make_person, mailbox, settings):
    """The minute between reset e-mails was kept per Care Identity, and per address only for an address that is
    nobody's: once an RA replaced the Care Identity e-mail, a journey started for the old address before (whose
    resend waited on the Care Identity's minute) no longer waited on the minute of one started for the same
    address after (which waited on the address's). A stranger with both open saw "We have sent a new code"
    where for an address that was never anyone's the same steps say "once a minute": the old address had been
    a Care Identity's. The wait is now the address's, whoever holds it."""
    import time_machine

    person, minute = make_person(), settings.CAREID_EMAIL_CODE_COOLDOWN
    seen = {}
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for email in (person.user.email, "never.anyones@nhs.net"):
            before, after = Client(REMOTE_ADDR="198.51.100.7"), Client(REMOTE_ADDR="203.0.113.9")
            before.post(START, {"email": email})
            User.objects.filter(pk=person.user.pk).update(email="a.new.address@nhs.net")  # (no-op the second time)
            clock.shift(minute + timedelta(seconds=1))
            after.post(START, {"email": email})
            clock.shift(timedelta(seconds=1))
            seen[email] = same_page(before.post(CODE + "resend/", follow=True), email)
            clock.shift(-minute - timedelta(seconds=2))
    assert seen[person.user.email] == seen["never.anyones@nhs.net"]
    assert "once a minute" in seen["never.anyones@nhs.net"][1]


def test_codes_expired_over_a_day_ago_are_forgotten_every_hour(person, mailbox):
    """Each reset started, by anyone for any address, leaves a One Time Password row: the hourly clean-up takes
    those nothing can read any more (expired more than the outbox goes on trying to send one, 26 hours), and
    leaves a code still in use."""
    import time_machine

    from accounts.models import EmailOneTimePassword
    from accounts.tasks import forget_expired_email_codes_task

    from .conftest import run_task

    assert "forget-expired-email-codes" in settings.CELERY_BEAT_SCHEDULE
    Client().post(START, {"email": person.user.email})
    Client().post(START, {"email": "nobody@nhs.net"})
    code_from(mailbox, person.user.email)
    assert EmailOneTimePassword.objects.count() == 2
    assert run_task(forget_expired_email_codes_task) == 0

    with time_machine.travel(timezone.now() + timedelta(hours=26, minutes=5)):
        assert run_task(forget_expired_email_codes_task) == 0  # expired 25 h 55 min ago: its e-mail may still be owed
    with time_machine.travel(timezone.now() + timedelta(hours=26, minutes=15)):
        fresh = Client()
        fresh.post(START, {"email": person.user.email})
        assert run_task(forget_expired_email_codes_task) == 2
        assert list(EmailOneTimePassword.objects.values_list("user", flat=True)) == [person.user.pk]
        assert fresh.post(CODE, {"code": code_from(mailbox, person.user.email, count=2)}).url == APP
