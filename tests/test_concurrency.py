"""Parallel requests against the real database: the guards hold when requests really overlap."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from allauth.account.models import EmailAddress, EmailConfirmationHMAC
from django.db import connection, connections, transaction
from django.test import Client, RequestFactory
from django.utils import timezone

from accounts.models import User
from audit.models import AuditEvent, Event
from authenticators.models import RegistrationLink
from signin import flows

from .conftest import require

pytestmark = pytest.mark.services


def in_parallel(count: int, work) -> list:
    barrier, results = threading.Barrier(count), [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_parallel_guesses_cannot_pass_the_lock(transactional_db, make_person, settings):
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    person = make_person()
    lock_after = settings.CAREID_PASSWORD_LOCK_AFTER
    User.objects.filter(pk=person.user.pk).update(password_failures=lock_after - 1, last_signin_failure_at=timezone.now())
    factory = RequestFactory()

    def guess(index: int):
        request = factory.post("/login/authenticator-app/", REMOTE_ADDR=f"10.0.0.{index}")
        return flows.check_password_step(request, email=person.user.email, password=f"guess {index}", method="test")

    results = in_parallel(16, guess)
    assert all(user is None for user, _message in results)
    person.user.refresh_from_db()
    assert person.user.password_failures == lock_after and person.user.is_locked
    # Exactly one guess was checked; the others were turned away while it was (SIGNIN_THROTTLED).
    assert AuditEvent.objects.filter(event=Event.SIGNIN_FAILED).count() == 1


def test_a_code_used_twice_at_once_signs_in_once(transactional_db, make_person):
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from authenticators.models import AuthenticatorApp

    person = make_person()
    token = person.fresh_code()
    results = in_parallel(8, lambda index: AuthenticatorApp.objects.get(user=person.user).verify_token(token))
    assert results.count(True) == 1


def test_the_per_ip_limit_holds_under_parallel_attempts(transactional_db, settings, fast_hashing):
    """Each attempt is counted before it is checked, so the limit holds whatever runs at once."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    settings.CAREID_IP_FAILURE_LIMIT = 10
    factory = RequestFactory()

    def guess(index: int):
        request = factory.post("/login/authenticator-app/", REMOTE_ADDR="203.0.113.40")
        return flows.check_password_step(request, email=f"nobody{index}@nhs.net", password="guess", method="test")

    results = in_parallel(40, guess)
    assert all(user is None for user, _message in results)
    assert AuditEvent.objects.filter(event=Event.SIGNIN_FAILED).count() == 10
    assert AuditEvent.objects.filter(event=Event.SIGNIN_THROTTLED, details__reason="ip_throttled").count() == 30


@contextmanager
def committed_once_waited_on(work) -> Iterator[list[bool]]:
    """Another transaction does `work()` and commits only once a request of the block waits on it
    (or after 5 seconds, when none does). Yields [True] once someone waited (the race really happened)."""
    done, waited, errors = threading.Event(), [], []

    def run() -> None:
        try:
            with transaction.atomic():
                work()
                done.set()
                deadline = time.monotonic() + 5
                with connection.cursor() as cursor:
                    while time.monotonic() < deadline and not waited:
                        cursor.execute("SELECT count(*) FROM pg_stat_activity "
                                       "WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))")
                        if cursor.fetchone()[0]:
                            waited.append(True)
                        else:
                            time.sleep(0.02)
        except BaseException as error:
            errors.append(error)
            done.set()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    assert done.wait(10)
    try:
        yield waited
    finally:
        thread.join()
    if errors:
        raise errors[0]


def verified_meanwhile(address: EmailAddress):
    """Another transaction verifies `address`, so a request of the block passed every check before the
    database's unique_verified_email decides."""
    return committed_once_waited_on(lambda: EmailAddress.objects.filter(pk=address.pk).update(verified=True))


def test_a_registration_that_loses_the_race_for_its_address_gets_the_conflict_page(invite, make_person, mailbox):
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from .test_registration_journey import start

    owner, link = invite()
    other = make_person()
    # Added before the invitation made it the owner's Care Identity e-mail, verified just as the owner does.
    pending = EmailAddress.objects.create(user=other.user, email=owner.email, verified=False, primary=False)
    client = Client()
    code = start(client, mailbox, link)

    with verified_meanwhile(pending) as waited:
        response = client.post("/register/authenticator-app/code/", {"code": code})

    assert waited, "the registration never waited on the other transaction: no race happened"
    assert response.status_code == 409
    assert "Your email address is in use on another Care Identity" in response.content.decode()
    assert not EmailAddress.objects.get(user=owner, email=owner.email).verified
    assert RegistrationLink.objects.get(user=owner, purpose=RegistrationLink.Purpose.PRESENCE).step == "otp"
    event = AuditEvent.objects.get(event=Event.EMAIL_REFUSED, subject=owner)
    assert event.details["held_by"] == [other.user.uid]


def test_a_verification_link_that_loses_the_race_gets_a_clear_page(transactional_db, seeded_allow_list, make_person):
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    first, second = make_person(), make_person(email="someone.else@nhs.net")
    # Nobody's Care Identity e-mail, waiting for its link on two profiles: the first verified wins.
    winner = EmailAddress.objects.create(user=first.user, email="shared.inbox@nhs.net", verified=False)
    loser = EmailAddress.objects.create(user=second.user, email="shared.inbox@nhs.net", verified=False)
    path = f"/profile/email/confirm/{EmailConfirmationHMAC(loser).key}/"

    with verified_meanwhile(winner) as waited:
        response = Client().post(path)

    assert waited, "the confirmation never waited on the other transaction: no race happened"
    assert response.status_code == 409
    assert "This email address cannot be verified on this Care Identity" in response.content.decode()
    loser.refresh_from_db()
    assert not loser.verified
    event = AuditEvent.objects.get(event=Event.EMAIL_REFUSED, subject=second.user)
    assert event.details["via"] == "link" and event.details["held_by"] == [first.user.uid]


def test_two_removals_at_once_leave_the_person_one_authenticator(transactional_db, make_person):
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from django.contrib.sessions.backends.db import SessionStore

    from authenticators import flows as authenticator_flows
    from authenticators.models import AuthenticatorApp, SecurityKey

    person = make_person()
    SecurityKey.objects.create(user=person.user, name="Security key", confirmed=True, credential_id=b"key",
                               public_key=b"public key", user_handle=b"handle")
    factory = RequestFactory()

    def removal(kind: str):
        request = factory.post(f"/profile/authenticators/{kind}/remove/")
        request.user = User.objects.get(pk=person.user.pk)
        request.session = SessionStore()  # the person's own session stays
        return lambda: authenticator_flows.remove_own_authenticator(request, kind=kind)

    # The key goes in a transaction that is still open while the app's removal runs.
    with committed_once_waited_on(removal("security-key")) as waited:
        with pytest.raises(authenticator_flows.LastAuthenticator):
            removal("authenticator-app")()

    assert waited, "the second removal never waited on the first: it did not see the person locked"
    assert not SecurityKey.objects.filter(user=person.user).exists()
    assert AuthenticatorApp.objects.filter(user=person.user).exists()
    assert AuditEvent.objects.filter(event=Event.AUTHENTICATOR_REMOVED, subject=person.user).count() == 1


def test_an_ra_removal_at_the_same_time_as_the_persons_leaves_them_one(transactional_db, make_person, ra_staff):
    """An RA removes the key while the person removes their app: the person's removal waits for the RA's and then
    sees the app as their last, as it would after it."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from django.contrib.sessions.backends.db import SessionStore

    from accounts.roles import RA_AGENT
    from authenticators import flows as authenticator_flows
    from authenticators.models import AuthenticatorApp, SecurityKey

    agent, _ = ra_staff(RA_AGENT)
    person = make_person()
    SecurityKey.objects.create(user=person.user, name="Security key", confirmed=True, credential_id=b"key",
                               public_key=b"public key", user_handle=b"handle")
    request = RequestFactory().post("/profile/authenticators/authenticator-app/remove/")
    request.user = User.objects.get(pk=person.user.pk)
    request.session = SessionStore()
    by_ra = lambda: authenticator_flows.remove_authenticator(  # noqa: E731
        user=User.objects.get(pk=person.user.pk), kind="security-key", actor=agent.user, reason="lost key")

    with committed_once_waited_on(by_ra) as waited:
        with pytest.raises(authenticator_flows.LastAuthenticator):
            authenticator_flows.remove_own_authenticator(request, kind="authenticator-app")

    assert waited, "the person's removal never waited on the RA's: it did not see the person locked"
    assert not SecurityKey.objects.filter(user=person.user).exists()
    assert AuthenticatorApp.objects.filter(user=person.user).exists()


def test_a_refresh_token_rotated_meanwhile_by_another_request_is_a_reuse(transactional_db, make_person):
    """The second request found the token before the first rotated it (and committed): the database
    tells it that it came second, and the grant is left no live token, as for a replay later on."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from allauth.idp.oidc.models import Token

    from . import oidc_rp as rp
    from .conftest import sign_in

    person, client = make_person(), Client()
    public, _ = rp.register(name="Public app", auth_method="none")
    sign_in(client, person)
    response, authorization = rp.authorize(client, public.pk)
    tokens = client.post("/oidc/token", {"grant_type": "authorization_code", "code": rp.code_of(response, authorization),
                                         "client_id": public.pk, "redirect_uri": rp.REDIRECT_URI,
                                         "code_verifier": authorization.verifier}).json()
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": public.pk}
    first = []
    with committed_once_waited_on(lambda: first.append(Client().post("/oidc/token", refresh))) as waited:
        second = Client().post("/oidc/token", refresh)

    assert waited, "the second refresh never waited on the first: the race did not happen"
    assert first[0].status_code == 200 and second.status_code == 400 and second.json()["error"] == "invalid_grant"
    assert not Token.objects.filter(type__in=[Token.Type.ACCESS_TOKEN, Token.Type.REFRESH_TOKEN]).exists()
    event = AuditEvent.objects.get(event=Event.OIDC_REFUSED)
    assert event.details["reason"].startswith("refresh token already rotated (reused)")


def test_two_failures_that_overlap_are_both_counted(transactional_db, make_person, monkeypatch):
    """One attempt is in flight per account, but a check that outlasts the hold (CAREID_SIGNIN_ATTEMPT_HOLD, an
    Argon2 check on a swamped host) lets the next one in. Each failure then read the count and wrote it plus
    one: two overlapping failures counted one, and the delays and the locks at 100 and 30 came later."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from signin import models as throttle_models
    from signin.models import Factor

    person = make_person()
    both_read = threading.Barrier(2)
    delay = throttle_models.signin_delay

    def after_reading(failures: int):  # called between the read of the count and its write
        try:
            both_read.wait(timeout=1)  # the other failure reads too, unless the row is held
        except threading.BrokenBarrierError:
            pass
        return delay(failures)

    monkeypatch.setattr(throttle_models, "signin_delay", after_reading)

    def fail(index: int) -> None:
        with transaction.atomic():
            User.objects.get(pk=person.user.pk).end_signin_attempt(Factor.PASSWORD, failed=True)

    in_parallel(2, fail)
    person.user.refresh_from_db()
    assert person.user.password_failures == 2


def test_a_lock_for_codes_that_lands_while_a_reset_finishes_stays(transactional_db, make_person, monkeypatch):
    """A reset lifts a lock for wrong passwords, never one for wrong codes (only an RA lifts that). The reset
    read the person before its transaction: a 30th wrong code counted in between turned the lock into one
    for codes, and the reset, deciding from what it had read, lifted it."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from django.contrib.sessions.backends.db import SessionStore
    from django.db.models import F, Value
    from django.db.models.functions import Coalesce

    from authenticators.totp import flows as totp_flows

    person = make_person()
    now = timezone.now()
    User.objects.filter(pk=person.user.pk).update(password_failures=100, locked_at=now, lock_reason="passwords",
                                                   last_signin_failure_at=now)
    decided, landed = threading.Event(), threading.Event()
    refusal = totp_flows._reset_refusal

    def checked_then_waits(user, email):
        why = refusal(user, email)
        decided.set()
        landed.wait(timeout=1)  # the 30th wrong code lands now, unless the reset holds the row
        return why

    monkeypatch.setattr(totp_flows, "_reset_refusal", checked_then_waits)

    def work(index: int):
        if index == 0:
            request = RequestFactory().post("/login/authenticator-app/forgotten-password/password/")
            request.session = SessionStore()
            reset = totp_flows.PasswordReset(email=person.user.email, step="password", at=time.time(), user=person.user.pk,
                                             password_was=totp_flows._password_digest(User.objects.get(pk=person.user.pk)))
            return totp_flows.finish_password_reset(request, reset, "a brand new passphrase for the ward")
        decided.wait(timeout=5)
        # What the 30th wrong code writes (SigninThrottle.end_signin_attempt): the lock, now one for codes.
        User.objects.filter(pk=person.user.pk).update(code_failures=30, lock_reason="codes",
                                                       locked_at=Coalesce(F("locked_at"), Value(timezone.now())))
        landed.set()
        return None

    finished, _ = in_parallel(2, work)
    assert finished is not None  # the reset went through (it lifted the lock for passwords it had read)
    person.user.refresh_from_db()
    assert person.user.is_locked and person.user.lock_reason == "codes"


def test_resets_started_at_once_send_one_code(transactional_db, make_person, mailbox):
    """One reset e-mail a minute per address: resets of one address started at the same moment, from
    different browsers and client addresses, claim the wait in the database, and one of them sends a code."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from accounts.models import EmailOneTimePassword, OutgoingEmail

    person = make_person()

    def start(index: int) -> int:
        browser = Client(REMOTE_ADDR=f"10.0.1.{index}")
        return browser.post("/login/authenticator-app/forgotten-password/", {"email": person.user.email}).status_code

    assert in_parallel(6, start) == [302] * 6
    assert OutgoingEmail.objects.filter(user=person.user, kind="email_code").count() == 1
    assert EmailOneTimePassword.objects.filter(user=person.user, emailed=True).count() == 1
    assert EmailOneTimePassword.objects.filter(user=person.user).count() == 6  # a journey each


def test_a_suspension_that_lands_during_a_registration_step_is_refused_as_revoked(transactional_db, invite, mailbox,
                                                                                   ra_staff):
    """The step found its journey live, then an RA's suspension commits before the step moves it on: the step is
    refused as a journey the suspension ended (audited, with the page of any ended journey), not as one that
    timed out, which nothing records."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from accounts.flows import suspend_user
    from accounts.roles import RA_AGENT

    from .test_registration_journey import NEW_PASSWORD, start

    agent, _ = ra_staff(RA_AGENT)
    user, link = invite()
    client = Client()
    client.post("/register/authenticator-app/code/", {"code": start(client, mailbox, link)})
    suspended = []

    def suspend() -> None:
        try:
            suspend_user(user=User.objects.get(pk=user.pk), actor=agent.user, reason="invitation reported stolen")
            suspended.append(True)
        finally:
            connections.close_all()

    def suspension_first(execute, sql, params, many, context):
        if not suspended and sql.startswith('UPDATE "authenticators_registrationlink" SET "step"'):
            other = threading.Thread(target=suspend)
            other.start()
            other.join(10)
            assert suspended, "the suspension did not commit"
        return execute(sql, params, many, context)

    with connection.execute_wrapper(suspension_first):
        response = client.post("/register/authenticator-app/password/",
                               {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})

    assert suspended, "the step never reached its move: no race happened"
    assert response.status_code == 410
    assert "Your registration has ended" in response.content.decode()
    refused = AuditEvent.objects.get(event=Event.LINK_EXPIRED, subject=user)
    assert refused.outcome == "failure" and refused.details["reason"] == "revoked"
    assert RegistrationLink.objects.get(pk=refused.details["link_id"]).step == "password"


def two_agents(ra_staff) -> tuple[User, Client]:
    """Two RA agents: a colleague, whose action commits first, and the test's own client."""
    from accounts.roles import RA_AGENT

    colleague, _ = ra_staff(RA_AGENT, email="colleague@nhs.net")
    _, client = ra_staff(RA_AGENT)
    return colleague.user, client


def by_colleague(colleague: User, flow: str, person: User, reason: str):
    """The colleague's status change of `person` (accounts.flows.<flow>), as another request makes it."""
    from accounts import flows as account_flows

    return lambda: getattr(account_flows, flow)(user=User.objects.get(pk=person.pk), actor=colleague, reason=reason)


def test_a_reinstatement_racing_a_closure_leaves_the_profile_closed(transactional_db, ra_staff, make_person, mailbox):
    """The RA's page read the person as suspended before another RA's closure committed: the reinstatement
    waits for it, then finds the profile closed and changes nothing (a closed profile is closed for good)."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    colleague, client = two_agents(ra_staff)
    person = make_person(status=User.Status.SUSPENDED).user
    close = by_colleague(colleague, "close_user", person, "left the trust")

    with committed_once_waited_on(close) as waited:
        response = client.post(f"/admin/accounts/user/{person.pk}/reinstate/", {"reason": "back from leave"})

    assert waited, "the reinstatement never waited on the closure: no race happened"
    person.refresh_from_db()
    assert person.status == User.Status.CLOSED
    assert response.status_code == 400
    assert "This Care Identity is closed: it cannot be reinstated." in response.content.decode()
    assert not AuditEvent.objects.filter(event=Event.USER_REINSTATED, subject=person).exists()


def test_two_suspensions_at_once_suspend_and_tell_the_person_once(transactional_db, ra_staff, make_person, mailbox):
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    colleague, client = two_agents(ra_staff)
    person = make_person().user
    suspend = by_colleague(colleague, "suspend_user", person, "lost smartcard")

    with committed_once_waited_on(suspend) as waited:
        response = client.post(f"/admin/accounts/user/{person.pk}/suspend/", {"reason": "lost phone"})

    assert waited, "the second suspension never waited on the first: no race happened"
    assert response.status_code == 400
    assert "This Care Identity is suspended: it cannot be suspended." in response.content.decode()
    assert AuditEvent.objects.filter(event=Event.USER_SUSPENDED, subject=person).count() == 1


def test_a_link_issued_while_a_suspension_commits_is_refused_not_left_for_after_reinstatement(
        transactional_db, seeded_allow_list, ra_staff, make_person, mailbox):
    """The link page read the person as active before a colleague's suspension committed: a link issued then
    would have escaped the suspension's revocation and worked again once the person was reinstated."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    colleague, client = two_agents(ra_staff)
    person = make_person().user
    suspend = by_colleague(colleague, "suspend_user", person, "lost smartcard")

    with committed_once_waited_on(suspend) as waited:
        response = client.post(f"/admin/accounts/user/{person.pk}/link/",
                               {"kind": "security-key", "purpose": "emailed", "reason": "new key"})

    assert waited, "the link was issued without waiting on the suspension"
    assert response.status_code == 403
    assert not RegistrationLink.objects.filter(user=person, kind="security-key").exists()
    refused = AuditEvent.objects.get(event=Event.RA_REFUSED, subject=person)
    assert refused.details["attempted"] == "issue a registration link" and refused.details["reason"] == "profile suspended"


def test_two_ras_changing_one_email_at_once_each_record_what_they_replaced(transactional_db, seeded_allow_list,
                                                                           ra_staff, make_person, mailbox):
    """The second RA's page read the person before the first RA's change committed: the second change replaces
    the first one's address, and says so (the trail's "before", the notice to the old address), not the address
    both pages read."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from accounts import flows as account_flows
    from accounts.models import OutgoingEmail
    from accounts.roles import RA_AGENT

    colleague, _ = two_agents(ra_staff)
    agent, _ = ra_staff(RA_AGENT, email="agent@nhs.net")
    person = make_person()
    read_by_both = User.objects.get(pk=person.user.pk)
    first = lambda: account_flows.change_user_details(  # noqa: E731
        user=User.objects.get(pk=person.user.pk), actor=colleague, changes={"email": "first.change@nhs.net"},
        reason="typo")

    with committed_once_waited_on(first) as waited:
        account_flows.change_user_details(user=read_by_both, actor=agent.user,
                                          changes={"email": "second.change@nhs.net"}, reason="new job")

    assert waited, "the second change never waited on the first: no race happened"
    assert User.objects.get(pk=person.user.pk).email == "second.change@nhs.net"
    second = AuditEvent.objects.filter(event=Event.USER_CHANGED, subject=person.user).latest("id")
    assert second.details["before"] == {"email": "first.change@nhs.net"}
    assert OutgoingEmail.objects.filter(kind="email_changed_old_address", to="first.change@nhs.net").exists()
    assert EmailAddress.objects.filter(user=person.user, primary=True).get().email == "second.change@nhs.net"


def test_adding_a_key_while_a_suspension_commits_is_refused_with_a_page(transactional_db, seeded_allow_list, person,
                                                                        ra_staff, client):
    """The person, signed in, registers a key while an RA suspends them: issuing its link waits for the suspension,
    reads the profile as suspended and answers with a page, not a 500."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from .conftest import sign_in

    assert sign_in(client, person).status_code == 302
    colleague, _ = two_agents(ra_staff)
    suspend = by_colleague(colleague, "suspend_user", person.user, "lost phone")

    with committed_once_waited_on(suspend) as waited:
        response = client.post("/authenticators/security-key/", {"confirm": "on"})

    assert waited, "the link was issued without waiting on the suspension"
    assert response.status_code == 403
    assert "This Care Identity cannot register authenticators" in response.content.decode()
    assert not RegistrationLink.objects.filter(user=person.user, kind="security-key").exists()


def test_sole_access_confirmed_while_a_suspension_commits_is_refused_as_expired(transactional_db, seeded_allow_list,
                                                                               invite, ra_staff):
    """"Only I will have access" on an invitation waits for a suspension under way, then finds the invitation
    revoked. (It locks the person before the invitation, as a suspension does, so the two cannot deadlock.)"""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from .test_registration_journey import link_path

    user, link = invite()
    colleague, _ = two_agents(ra_staff)
    suspend = by_colleague(colleague, "suspend_user", user, "invitation reported stolen")

    with committed_once_waited_on(suspend) as waited:
        response = Client().post(link_path(link), {"confirm": "on"})

    assert waited, "the confirmation never waited on the suspension: no race happened"
    assert response.status_code == 410 and "This registration link has expired" in response.content.decode()
    assert User.objects.get(pk=user.pk).status == User.Status.SUSPENDED
    assert not RegistrationLink.objects.filter(user=user, purpose=RegistrationLink.Purpose.PRESENCE).exists()


def blocked_by(backend_pid: int, timeout: float = 10) -> bool:
    """Whether another PostgreSQL session comes to wait on `backend_pid`'s locks within `timeout` (asked over a
    connection of its own, from a thread of its own)."""
    found = []

    def poll() -> None:
        try:
            deadline = time.monotonic() + timeout
            with connection.cursor() as cursor:
                while time.monotonic() < deadline:
                    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                                   [backend_pid])
                    if cursor.fetchone()[0]:
                        found.append(True)
                        return
                    time.sleep(0.02)
        finally:
            connections.close_all()

    thread = threading.Thread(target=poll)
    thread.start()
    thread.join(timeout + 5)
    return bool(found)


@contextmanager
def meanwhile_waiting(statement: str, work) -> Iterator[tuple[list, list[bool]]]:
    """Once this connection has run a statement starting with `statement` (and holds its row), `work()` starts in
    another thread, on a connection of its own, and the block's request goes on only once that has come to wait on
    it. Yields (outcome, waited): outcome gets "done" or the exception `work` raised; waited [True] once it waited."""
    outcome, waited = [], []

    def run() -> None:
        try:
            work()
            outcome.append("done")
        except BaseException as error:
            outcome.append(error)
        finally:
            connections.close_all()

    other = threading.Thread(target=run)

    def started_meanwhile(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not waited and sql.startswith(statement):
            other.start()
            waited.append(blocked_by(connection.connection.info.backend_pid))
        return result

    with connection.execute_wrapper(started_meanwhile):
        yield outcome, waited
    if waited:
        other.join(15)


def test_a_suspension_while_the_app_is_verified_waits_for_the_registration_instead_of_deadlocking(
        transactional_db, invite, mailbox, ra_staff, fast_hashing):
    """The Authenticator app's last step ends its journey and sets the person's password; a suspension locks the
    person, then revokes their links and ends their journeys. Taken in opposite orders (the link, then the person),
    the two deadlock and PostgreSQL aborts one of them: the person or the RA gets an error page. The step locks the
    person first, as the suspension does: the suspension waits for it, then suspends the person it registered."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from accounts.roles import RA_AGENT
    from authenticators.totp.models import AuthenticatorApp

    from .conftest import totp_code
    from .test_registration_journey import NEW_PASSWORD, secret_from, start

    agent, _ = ra_staff(RA_AGENT)
    user, link = invite()
    client = Client()
    client.post("/register/authenticator-app/code/", {"code": start(client, mailbox, link)})
    client.post("/register/authenticator-app/password/", {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    secret = secret_from(client.get("/register/authenticator-app/qr/").content.decode())
    client.post("/register/authenticator-app/qr/")
    suspend = by_colleague(agent.user, "suspend_user", user, "invitation reported stolen")

    # Once the journey's row is held, the suspension comes to wait on this request.
    with meanwhile_waiting('UPDATE "authenticators_registrationlink" SET "step"', suspend) as (suspension, waited):
        response = client.post("/register/authenticator-app/verify/", {"token": totp_code(secret)})

    assert waited == [True], "the suspension never waited on the registration: no race happened"
    assert response.status_code == 302 and response.url == "/register/authenticator-app/done/"
    assert suspension == ["done"]
    user.refresh_from_db()
    assert user.status == User.Status.SUSPENDED
    assert AuthenticatorApp.objects.registered(user).exists()
    assert AuditEvent.objects.filter(event=Event.AUTHENTICATOR_REGISTERED, subject=user).count() == 1
    assert AuditEvent.objects.filter(event=Event.USER_SUSPENDED, subject=user).count() == 1


def test_an_ra_saving_a_page_read_before_a_colleagues_change_keeps_what_they_did_not_touch(db, ra_staff, make_person):
    """An RA opens a person's page; a colleague then opens it too, gives the person the RA Agent role, corrects
    their last name and saves; the first RA changes the title and saves. Only the title is the first RA's change:
    their page sent back every field as it showed it, and the colleague's name and role stay."""
    from accounts.roles import RA_AGENT, RA_MANAGER, roles_of

    from .forms import form_fields

    _, colleague = ra_staff(RA_MANAGER, email="colleague@nhs.net")
    _, client = ra_staff(RA_MANAGER)
    person = make_person().user
    page = f"/admin/accounts/user/{person.pk}/change/"
    posted = form_fields(client.get(page).content.decode(), "user_form")
    assert posted["last_name"] == person.last_name and "roles" not in posted

    theirs = form_fields(colleague.get(page).content.decode(), "user_form")
    response = colleague.post(page, {**theirs, "last_name": "Seacole-Grant", "roles": [RA_AGENT],
                                     "reason": "married; joined the RA team", "_save": "Save"})
    assert response.status_code == 302, response.content.decode()[-3000:]
    response = client.post(page, {**posted, "title": "Dr", "reason": "qualified", "_save": "Save"})

    assert response.status_code == 302, response.content.decode()[-3000:]
    person.refresh_from_db()
    assert (person.title, person.last_name) == ("Dr", "Seacole-Grant")
    assert roles_of(person) == {RA_AGENT}
    change = AuditEvent.objects.filter(event=Event.USER_CHANGED, subject=person).latest("id")
    assert change.details["fields"] == ["title"] and change.details["reason"] == "qualified"
    assert AuditEvent.objects.filter(event=Event.ROLES_CHANGED, subject=person).count() == 1


def test_a_person_making_an_address_their_care_identity_email_while_an_ra_changes_it_waits_instead_of_deadlocking(
        transactional_db, seeded_allow_list, make_person, ra_staff, client, mailbox):
    """The person's "make this my Care Identity email address" updated their address rows, then their own row; an
    RA's change of their e-mail locks the person's row, then replaces the address rows. Taken in opposite orders
    the two deadlock, and PostgreSQL aborts one of them: the RA (or the person) gets an error page. The person's
    change locks their row first, as the RA's does: the RA waits for it, then replaces the address it made, and
    says so (the trail's "before", the notice to the old address)."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from accounts.flows import change_user_details
    from accounts.models import OutgoingEmail
    from accounts.roles import RA_AGENT

    from .conftest import sign_in

    agent, _ = ra_staff(RA_AGENT)
    person = make_person()
    spare = EmailAddress.objects.create(user=person.user, email="edith@nhs.net", verified=True, primary=False)
    assert sign_in(client, person).status_code == 302

    def ra_change() -> None:
        change_user_details(user=User.objects.get(pk=person.user.pk), actor=agent.user,
                            changes={"email": "edith.new.job@nhs.net"}, reason="new job")

    # Once the person's addresses are held, the RA comes to wait on this request.
    with meanwhile_waiting('UPDATE "account_emailaddress"', ra_change) as (change, waited):
        response = client.post(f"/profile/email/{spare.pk}/make-care-identity-email/")

    assert waited == [True], "the RA's change never waited on the person's: no race happened"
    assert response.status_code == 302 and response.url == "/profile/"
    assert change == ["done"]
    assert User.objects.get(pk=person.user.pk).email == "edith.new.job@nhs.net"
    assert EmailAddress.objects.get(user=person.user, primary=True).email == "edith.new.job@nhs.net"
    assert AuditEvent.objects.get(event=Event.EMAIL_PRIMARY_CHANGED, subject=person.user).details == {
        "before": "edith.cavell@nhs.net", "after": "edith@nhs.net"}
    assert AuditEvent.objects.get(event=Event.USER_CHANGED, subject=person.user).details["before"] == {
        "email": "edith@nhs.net"}
    assert OutgoingEmail.objects.filter(kind="email_changed_old_address", to="edith@nhs.net").exists()


def test_an_address_added_twice_at_once_is_added_once_and_the_second_says_so(transactional_db, seeded_allow_list,
                                                                              make_person, client, mailbox):
    """A double click on "Add email address": both requests found the address not yet on the profile, and the second
    one's insert, refused by allauth's unique (user, email), answered with a server error (500)."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from .conftest import sign_in

    person = make_person()
    assert sign_in(client, person).status_code == 302
    added = lambda: EmailAddress.objects.create(user=person.user, email="edith@nhs.net")  # noqa: E731

    with committed_once_waited_on(added) as waited:
        response = client.post("/profile/email/add/", {"email": "edith@nhs.net"})

    assert waited, "the second addition never waited on the first: no race happened"
    assert response.status_code == 400
    assert "This email address is already on your Care Identity profile" in response.content.decode()
    assert EmailAddress.objects.filter(user=person.user, email="edith@nhs.net").count() == 1
    assert not AuditEvent.objects.filter(event=Event.EMAIL_ADDED, subject=person.user).exists()  # the refused one


def test_a_verification_link_followed_twice_at_once_verifies_once(transactional_db, seeded_allow_list, make_person):
    """A double click on "Verify": both requests read the address as not verified, and both verified it, each
    with an email.verified event and a notice to the person. The second now finds it verified and says the link
    has been used."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from accounts.flows import confirm_email_address
    from accounts.models import OutgoingEmail

    person = make_person()
    address = EmailAddress.objects.create(user=person.user, email="edith@nhs.net", verified=False)
    path = f"/profile/email/confirm/{EmailConfirmationHMAC(address).key}/"

    def first_click() -> None:
        request = RequestFactory().post(path)
        request.user = person.user
        confirm_email_address(request, EmailConfirmationHMAC(EmailAddress.objects.get(pk=address.pk)))

    with committed_once_waited_on(first_click) as waited:
        response = Client().post(path)

    assert waited, "the second click never waited on the first: no race happened"
    assert response.status_code == 409 and "This link is not valid" in response.content.decode()
    assert EmailAddress.objects.get(pk=address.pk).verified
    assert AuditEvent.objects.filter(event=Event.EMAIL_VERIFIED, subject=person.user).count() == 1
    assert OutgoingEmail.objects.filter(kind="notification", user=person.user).count() == 1


def test_signed_out_everywhere_while_signing_in_again_keeps_that_browser_on_the_persons_list(
        transactional_db, make_person, ra_staff, settings):
    """Signing in again moves the browser's session to a new key. An RA's 'Sign out everywhere' that read the
    person's sessions just before that committed ended the old key, gone by then, and deleted the list's row,
    moved to the new one: the browser stayed signed in on no list, so the RA's page said 'signed in nowhere'
    and a second 'Sign out everywhere' ended nothing. Ending sessions locks the person's row first, as the
    sign-in does before it moves its session: the sign-in waits, and what it makes is on the list."""
    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    from allauth.usersessions.models import UserSession

    from accounts.flows import sign_out_everywhere
    from accounts.roles import RA_AGENT

    from .conftest import sign_in

    agent, _ = ra_staff(RA_AGENT)
    person = make_person()
    browser = Client()
    sign_in(browser, person)
    assert browser.post("/login/authenticator-app/", {"email": person.user.email, "password": person.password}).status_code == 302
    token = person.fresh_code()

    def sign_in_again() -> None:
        try:
            browser.post("/login/authenticator-app/code/", {"token": token})
        finally:
            connections.close_all()

    other, started = threading.Thread(target=sign_in_again), []

    def signing_in_meanwhile(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not started and sql.startswith("SELECT") and 'FROM "usersessions_usersession"' in sql:
            started.append(True)
            other.start()  # the RA has read the list: the sign-in either commits now or waits for the RA
            deadline = time.monotonic() + 10
            while other.is_alive() and time.monotonic() < deadline:
                if blocked_by(connection.connection.info.backend_pid, timeout=0.2):
                    break
        return result

    with connection.execute_wrapper(signing_in_meanwhile):
        sign_out_everywhere(user=User.objects.get(pk=person.user.pk), actor=agent.user, reason="laptop stolen")
    other.join(15)

    assert started and not other.is_alive()
    key = browser.cookies[settings.SESSION_COOKIE_NAME].value
    assert UserSession.objects.filter(user=person.user, session_key=key).exists()
    sign_out_everywhere(user=User.objects.get(pk=person.user.pk), actor=agent.user, reason="laptop stolen")
    assert browser.get("/profile/").status_code == 302
