"""Every page makes at most 8 queries (no N+1 as profiles, types and events grow).

Counted are the statements that do work (SELECT, INSERT, UPDATE, DELETE), not transaction
control (BEGIN, COMMIT, SAVEPOINT, RELEASE), whose number depends on whether the test itself
runs inside a transaction.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from .test_registration_journey import code_from, link_path, secret_from

MAX = 8


@pytest.fixture
def max_queries():
    @contextmanager
    def assert_at_most(limit: int):
        with CaptureQueriesContext(connection) as captured:
            yield
        work = [q["sql"] for q in captured.captured_queries if q["sql"].startswith(("SELECT", "INSERT", "UPDATE", "DELETE"))]
        assert len(work) <= limit, f"{len(work)} queries (limit {limit}):\n" + "\n".join(work)

    return assert_at_most


@pytest.mark.parametrize("path", ["/login/", "/login/?choose=1", "/login/authenticator-app/", "/terms/", "/cookies/", "/accessibility/", "/register/unknown/"])
def test_public_pages(client, db, max_queries, path):
    with max_queries(MAX):
        assert client.get(path).status_code in (200, 404)


@pytest.mark.parametrize("path", ["/", "/profile/", "/profile/email/add/", "/authenticators/", "/profile/sessions/",
                                  "/profile/activity/", "/profile/password/", "/help/", "/allowed-email-domains/",
                                  "/profile/authenticators/authenticator-app/remove/"])
def test_signed_in_pages(signed_in, max_queries, path):
    with max_queries(MAX):
        assert signed_in.get(path).status_code == 200


def test_signing_in(client, person, max_queries):
    with max_queries(MAX):
        assert client.post("/login/authenticator-app/", {"email": person.user.email, "password": person.password}).status_code == 302
    with max_queries(MAX):
        assert client.get("/login/authenticator-app/code/").status_code == 200
    token = person.fresh_code()
    # Not a page but the sign-in itself (a redirect), 9 statements: the session's load, and its row moved
    # to the new key with what it records (one UPDATE: careid.sessions), the person 1, the attempt hold and
    # its release (with last_login) 2, the code check 2, allauth's session list 1 (an INSERT: the key is
    # new) and the audit event.
    with max_queries(9):
        assert client.post("/login/authenticator-app/code/", {"token": token}).status_code == 302


def test_a_failed_sign_in(client, person, max_queries):
    with max_queries(MAX):
        assert client.post("/login/authenticator-app/", {"email": person.user.email, "password": "wrong"}).status_code == 400


def test_every_registration_page(client, invite, mailbox, max_queries):
    user, link = invite()
    with max_queries(MAX):
        assert client.get(link_path(link)).status_code == 200
    with max_queries(MAX):
        live = client.post(link_path(link), {"confirm": "on"}).url
    with max_queries(MAX):
        assert client.get(live).status_code == 200
    # Using the link (a redirect, not a page) creates the session and owes the code's e-mail (the outbox
    # row); in-process here, the delivery (claim, read, the code, sent: 4) runs inside the request too.
    with max_queries(MAX + 6):
        assert client.post(live, {"email": user.email}).status_code == 302
    with max_queries(MAX):
        assert client.get("/register/authenticator-app/code/").status_code == 200
    with max_queries(MAX):
        client.post("/register/authenticator-app/code/", {"code": code_from(mailbox, user.email)})
    with max_queries(MAX):
        client.get("/register/authenticator-app/password/")
    with max_queries(MAX):
        client.post("/register/authenticator-app/password/", {"password1": "a long pass phrase", "password2": "a long pass phrase"})
    with max_queries(MAX):
        secret = secret_from(client.get("/register/authenticator-app/qr/").content.decode())
    with max_queries(MAX):
        client.post("/register/authenticator-app/qr/")
    from .conftest import totp_code

    # The registration itself (a redirect): device, password, two audit events, the notification's outbox
    # row and, in-process here, its delivery (claim, read, the event, sent); the session is read from
    # PostgreSQL (sessions live there only); the invitation the link came from is used up; the person's
    # sessions under the password before are looked for, and their services' grants, to end them (2).
    with max_queries(MAX + 10):
        assert client.post("/register/authenticator-app/verify/", {"token": totp_code(secret)}).status_code == 302


def test_every_webauthn_page(client, signed_in, person, max_queries, webauthn_site):
    from django.test import Client

    from .webauthn_steps import authenticator_for, ceremony_url, options_of, post_answer, signin_verify_url

    key = authenticator_for("security-key", webauthn_site)
    with max_queries(MAX):
        assert signed_in.get("/authenticators/security-key/").status_code == 200
    with max_queries(MAX + 4):  # a redirect: the journey's link issued and used, each audited
        assert signed_in.post("/authenticators/security-key/", {"confirm": "on"}).status_code == 302
    with max_queries(MAX):
        options = options_of(signed_in, ceremony_url("security-key"))
    # The registration itself (a redirect): the challenge claimed, the credential looked for in every WebAuthn
    # type's table, saved with its audit event and the notification's outbox row.
    with max_queries(MAX + 6):
        assert post_answer(signed_in, ceremony_url("security-key"), key.create(options)).status_code == 302
    browser = Client()
    with max_queries(MAX):
        assert browser.get("/login/security-key/").status_code == 200
    with max_queries(MAX):
        assert browser.post("/login/security-key/", {"email": person.user.email}).status_code == 302
    with max_queries(MAX):
        options = options_of(browser, signin_verify_url("security-key"))
    # The sign-in itself: the session, the person by address, their credential, the challenge's claim, the
    # sign count's conditional update, then completing it as for the Authenticator app (test_signing_in), but
    # with no attempt held on the account (a key's answers count against the client's address only).
    with max_queries(MAX + 4):
        assert post_answer(browser, signin_verify_url("security-key"), key.get(options)).status_code == 302
