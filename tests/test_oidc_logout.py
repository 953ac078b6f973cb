"""Sessions ending at careid reach the relying services: back-channel logout tokens (signed, with the
session's sid) POSTed to a real endpoint on loopback when the person signs out, an RA suspends them,
their session times out, or someone else signs in on the same browser; and RP-initiated logout."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import jwt
import pytest
from django.conf import settings
from django.test import Client

from audit.models import AuditEvent, Event
from oidc.backchannel import BACKCHANNEL_EVENT
from oidc.models import BackchannelLogout
from signin.session import SESSION_AUTH, SESSION_LAST_SEEN

from . import oidc_rp as rp
from .conftest import require, sign_in


class Receiver(ThreadingHTTPServer):
    """A relying service's back-channel logout endpoint: records each logout token it is sent."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.status = 200
        self.answer = lambda: self.status  # the status of each answer, when it is sent
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                with receiver.arrived:
                    receiver.tokens.extend(parse_qs(body)["logout_token"])
                    receiver.arrived.notify_all()
                self.send_response(receiver.answer())
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/backchannel-logout"

    def wait_for(self, count: int, timeout: float = 10) -> list[str]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.tokens) < count:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{len(self.tokens)} logout tokens arrived, {count} expected"
                self.arrived.wait(remaining)
            return list(self.tokens)


@pytest.fixture
def receiver():
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def rp_key():
    return rp.new_key()


@pytest.fixture
def service(transactional_db, rp_key, receiver):
    service, _ = rp.register(key=rp_key, backchannel_logout_uri=receiver.url)
    return service


def signed_into(client, person, service, rp_key) -> dict:
    """Signed in at careid and into the service; the service's verified ID token claims and tokens."""
    if not client.session.get(SESSION_AUTH):
        sign_in(client, person)
    response, authorization = rp.authorize(client, service.pk)
    tokens = rp.exchange(client, service.pk, rp_key, rp.code_of(response, authorization), authorization).json()
    return {**rp.verified(client, tokens["id_token"], service.pk), "access_token": tokens["access_token"]}


def logout_claims(client, token: str, service) -> dict:
    jwks = client.get("/.well-known/jwks.json").json()
    key = next(k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == jwt.get_unverified_header(token)["kid"])
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=service.pk, issuer=settings.CAREID_BASE_URL)
    assert claims["events"] == {BACKCHANNEL_EVENT: {}} and "nonce" not in claims
    assert jwt.get_unverified_header(token)["typ"] == "logout+jwt"
    return claims


def test_signing_out_sends_each_service_a_logout_token_for_the_session(client, person, service, rp_key, receiver):
    id_token = signed_into(client, person, service, rp_key)
    client.post("/logout/")
    [token] = receiver.wait_for(1)
    claims = logout_claims(client, token, service)
    assert claims["sub"] == person.user.uid and claims["sid"] == id_token["sid"]
    delivery = BackchannelLogout.objects.get()
    assert delivery.state == BackchannelLogout.State.DELIVERED and delivery.reason == "signed out"
    assert AuditEvent.objects.filter(event=Event.OIDC_BACKCHANNEL_LOGOUT, outcome="success",
                                     details__client=service.pk).exists()
    # The service's tokens stopped with the session.
    assert client.get("/oidc/userinfo", HTTP_AUTHORIZATION=f"Bearer {id_token['access_token']}").status_code == 401


def test_a_code_issued_before_signing_out_cannot_be_exchanged_after(client, person, service, rp_key, receiver):
    from allauth.idp.oidc.models import Token

    sign_in(client, person)
    response, authorization = rp.authorize(client, service.pk)
    code = rp.code_of(response, authorization)
    client.post("/logout/")
    assert not Token.objects.filter(type=Token.Type.AUTHORIZATION_CODE).exists()
    exchanged = rp.exchange(client, service.pk, rp_key, code, authorization)
    assert exchanged.status_code == 400 and exchanged.json()["error"] == "invalid_grant"
    assert not Token.objects.filter(type=Token.Type.ACCESS_TOKEN).exists()


def test_an_ra_suspension_logs_the_person_out_of_every_service(client, person, service, rp_key, receiver, make_person):
    from accounts.flows import suspend_user

    other_browser = Client()
    first = signed_into(client, person, service, rp_key)
    second = signed_into(other_browser, person, service, rp_key)
    assert first["sid"] != second["sid"]
    suspend_user(user=person.user, actor=make_person(email="ra.agent@nhs.net").user, reason="Left the trust")
    tokens = receiver.wait_for(2)
    assert {logout_claims(client, token, service)["sid"] for token in tokens} == {first["sid"], second["sid"]}
    assert {delivery.reason for delivery in BackchannelLogout.objects.all()} == {"suspended"}


def test_a_session_that_timed_out_is_swept_and_its_services_told(client, person, service, rp_key, receiver):
    from oidc.flows import sweep_timed_out_sessions

    id_token = signed_into(client, person, service, rp_key)
    assert sweep_timed_out_sessions() == 0  # a live session is left alone
    session = client.session
    session[SESSION_LAST_SEEN] = time.time() - 31 * 60  # the person walked away 31 minutes ago
    session.save()
    assert sweep_timed_out_sessions() == 1
    [token] = receiver.wait_for(1)
    assert logout_claims(client, token, service)["sid"] == id_token["sid"]
    assert AuditEvent.objects.filter(event=Event.SESSION_EXPIRED, subject=person.user).exists()
    assert client.get("/profile/").status_code == 302  # the session itself is gone
    assert sweep_timed_out_sessions() == 0


def test_the_sweep_reads_sessions_in_bulk_not_one_query_each(client, person, service, rp_key, make_person):
    """Many live services' sessions cost the periodic sweep a few queries, not one per session."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from oidc.flows import sweep_timed_out_sessions
    from oidc.models import Grant

    signed_into(client, person, service, rp_key)
    grant = Grant.objects.get()
    for n in range(30):  # other people's live sessions at the same service
        browser = Client()
        other = make_person(email=f"nurse{n}@nhs.net")
        sign_in(browser, other)
        Grant.objects.create(grant_id=f"g{n}", client=service, user=other.user, sid=browser.session[SESSION_AUTH]["sid"],
                             session_key=browser.session.session_key, acr=grant.acr, amr=grant.amr, aal=grant.aal,
                             method=grant.method, auth_time=grant.auth_time)
    with CaptureQueriesContext(connection) as queries:
        assert sweep_timed_out_sessions() == 0
    assert len(queries) <= 4, [query["sql"][:120] for query in queries]


def test_signing_in_again_keeps_the_services_sessions_alive(client, person, service, rp_key, receiver):
    """Re-authentication gives the session a new key; the sweep must follow it, not log the person out."""
    from allauth.usersessions.models import UserSession

    from oidc.flows import sweep_timed_out_sessions
    from oidc.models import Grant

    signed_into(client, person, service, rp_key)
    before = client.session.session_key
    sign_in(client, person)
    assert client.session.session_key != before
    assert sweep_timed_out_sessions() == 0
    assert not receiver.tokens and not BackchannelLogout.objects.exists()
    # One session in the person's list (the one with the new key), and the service's grant follows it.
    assert list(UserSession.objects.filter(user=person.user).values_list("session_key", flat=True)) == [
        client.session.session_key]
    assert set(Grant.objects.values_list("session_key", flat=True)) == {client.session.session_key}


def test_changing_the_password_keeps_this_session_and_its_services(client, person, service, rp_key, receiver):
    """The new password gives this session a new key: it stays listed, and the services' sessions follow it
    (the sweep must not take them for expired and log the person out)."""
    from allauth.usersessions.models import UserSession

    from oidc.flows import sweep_timed_out_sessions
    from oidc.models import Grant

    signed_into(client, person, service, rp_key)
    before = client.session.session_key
    new = "a new phrase for the night shift"
    assert client.post("/profile/password/", {"password1": new, "password2": new}).status_code == 302
    after = client.session.session_key
    assert after != before
    page = client.get("/profile/sessions/").content.decode()
    assert "This session" in page
    assert list(UserSession.objects.filter(user=person.user).values_list("session_key", flat=True)) == [after]
    assert set(Grant.objects.values_list("session_key", flat=True)) == {after}
    assert sweep_timed_out_sessions() == 0
    assert not receiver.tokens and not BackchannelLogout.objects.exists()
    assert not AuditEvent.objects.filter(event__in=[Event.SESSION_EXPIRED, Event.SESSIONS_ENDED]).exists()


def test_a_timeout_noticed_on_the_next_request_tells_the_services(client, person, service, rp_key, receiver):
    id_token = signed_into(client, person, service, rp_key)
    session = client.session
    session[SESSION_AUTH] = {**session[SESSION_AUTH], "at": time.time() - 13 * 3600}  # past the 12-hour limit
    session.save()
    assert "Your session timed out" in client.get("/login/?choose=1").content.decode()
    [token] = receiver.wait_for(1)
    assert logout_claims(client, token, service)["sid"] == id_token["sid"]


def test_another_person_signing_in_on_the_same_browser_ends_the_first_ones_services(
        client, person, service, rp_key, receiver, make_person):
    first = signed_into(client, person, service, rp_key)
    sign_in(client, make_person(email="mary.seacole@nhs.net"))
    [token] = receiver.wait_for(1)
    claims = logout_claims(client, token, service)
    assert claims["sub"] == person.user.uid and claims["sid"] == first["sid"]


def test_a_service_that_does_not_answer_is_tried_again_then_given_up_with_an_audit_event(
        client, person, service, rp_key, receiver, settings):
    from django.utils import timezone

    from oidc.backchannel import sweep

    receiver.status = 503
    signed_into(client, person, service, rp_key)
    client.post("/logout/")
    receiver.wait_for(1)
    delivery = BackchannelLogout.objects.get()
    assert delivery.state == BackchannelLogout.State.QUEUED and "503" in delivery.last_error
    assert delivery.attempts == 1 and delivery.next_attempt_at > timezone.now()  # a minute from now
    assert sweep() == 0
    receiver.status = 200  # the service is back
    BackchannelLogout.objects.update(next_attempt_at=timezone.now())
    assert sweep() == 1
    receiver.wait_for(2)
    delivery.refresh_from_db()
    assert delivery.state == BackchannelLogout.State.DELIVERED and delivery.attempts == 2
    # A service down for longer than CAREID_BACKCHANNEL_GIVE_UP_AFTER: given up, and audited as such.
    receiver.status = 503
    BackchannelLogout.objects.update(state=BackchannelLogout.State.QUEUED, next_attempt_at=timezone.now(),
                                     created_at=timezone.now() - settings.CAREID_BACKCHANNEL_GIVE_UP_AFTER)
    sweep()
    delivery.refresh_from_db()
    assert delivery.state == BackchannelLogout.State.FAILED
    assert AuditEvent.objects.filter(event=Event.OIDC_BACKCHANNEL_LOGOUT, outcome="failure").exists()


def test_a_delivery_whose_worker_died_is_picked_up_again(client, person, service, rp_key, receiver):
    from datetime import timedelta

    from django.utils import timezone

    from oidc.backchannel import sweep

    receiver.status = 503
    signed_into(client, person, service, rp_key)
    client.post("/logout/")
    BackchannelLogout.objects.update(next_attempt_at=timezone.now(), claimed_until=timezone.now() + timedelta(seconds=30))
    assert sweep() == 0  # a worker is (said to be) on it
    receiver.status = 200
    BackchannelLogout.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert sweep() == 1
    assert BackchannelLogout.objects.get().state == BackchannelLogout.State.DELIVERED


def test_an_attempt_cut_off_at_the_tasks_time_limit_counts_and_is_given_up_in_the_end(
        transactional_db, person, service, settings, monkeypatch):
    """Celery's SoftTimeLimitExceeded (a service trickling its answer: test_celery_worker.py) is a failed
    attempt like an error answer: counted, shown, released for the sweep, and in the end given up and audited,
    never left claimed and handed over again every minute for ever."""
    from celery.exceptions import SoftTimeLimitExceeded
    from django.utils import timezone

    from oidc import backchannel

    def cut_off(*args, **kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(backchannel.requests, "post", cut_off)
    logout = BackchannelLogout.objects.create(client=service, user=person.user, sid="s" * 32, reason="signed out")
    assert backchannel.deliver_backchannel_logout(logout.pk) == BackchannelLogout.State.QUEUED
    logout.refresh_from_db()
    assert (logout.attempts, logout.claimed_until) == (1, None) and "time limit" in logout.last_error
    BackchannelLogout.objects.filter(pk=logout.pk).update(
        next_attempt_at=timezone.now(), created_at=timezone.now() - settings.CAREID_BACKCHANNEL_GIVE_UP_AFTER)
    assert backchannel.deliver_backchannel_logout(logout.pk) == BackchannelLogout.State.FAILED
    logout.refresh_from_db()
    assert (logout.state, logout.attempts, logout.claimed_until) == (BackchannelLogout.State.FAILED, 2, None)
    failure = AuditEvent.objects.get(event=Event.OIDC_BACKCHANNEL_LOGOUT, outcome="failure")
    assert "time limit" in failure.details["error"] and failure.details["attempts"] == 2


def test_a_delivery_that_outlived_its_claim_leaves_the_next_workers_outcome_alone(
        transactional_db, person, service, receiver, settings, caplog):
    """On a pool that does not enforce the task's time limit (solo, threads), a service stalling a POST for longer
    than CAREID_BACKCHANNEL_CLAIM lets a second worker take the logout and deliver it. The first worker's late
    failure, written by the row's id alone, then replaced the delivery: given up (past the give-up time) and audited
    as failed, though the service had the token."""
    import logging
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from oidc import backchannel

    require(connection.vendor == "postgresql", "PostgreSQL (two workers' writes to one row)")
    stalled, release, answered = threading.Event(), threading.Event(), []

    def first_stalls_then_fails() -> int:
        if answered:
            return 200
        answered.append(True)
        stalled.set()
        release.wait(30)
        return 503

    receiver.answer = first_stalls_then_fails
    settings.CAREID_BACKCHANNEL_CLAIM, settings.CAREID_BACKCHANNEL_TIMEOUT = timedelta(seconds=1), 30
    logout = BackchannelLogout.objects.create(client=service, user=person.user, sid="s" * 32, reason="signed out")
    BackchannelLogout.objects.filter(pk=logout.pk).update(
        created_at=timezone.now() - settings.CAREID_BACKCHANNEL_GIVE_UP_AFTER)  # a failure now gives up
    late = []

    def first_worker() -> None:
        try:
            late.append(backchannel.deliver_backchannel_logout(logout.pk))
        finally:
            connection.close()

    worker = threading.Thread(target=first_worker)
    try:
        worker.start()
        assert stalled.wait(10)
        time.sleep(1.1)  # the first worker's claim runs out while the service stalls it
        assert backchannel.deliver_backchannel_logout(logout.pk) == BackchannelLogout.State.DELIVERED
        with caplog.at_level(logging.WARNING, logger="oidc.backchannel"):
            release.set()  # the first worker's POST fails, long after its claim ran out
            worker.join(10)
    finally:
        release.set()
    logout.refresh_from_db()
    assert (logout.state, logout.attempts, logout.claimed_until) == (BackchannelLogout.State.DELIVERED, 1, None)
    assert late == [None]  # not this worker's to record any more
    assert not AuditEvent.objects.filter(event=Event.OIDC_BACKCHANNEL_LOGOUT, outcome="failure").exists()
    assert AuditEvent.objects.filter(event=Event.OIDC_BACKCHANNEL_LOGOUT, outcome="success").count() == 1
    assert any(f"logout {logout.pk}:" in message and "claim" in message for message in caplog.messages)


def test_a_logout_the_service_took_is_recorded_though_a_database_restart_ended_the_connection(
        transactional_db, person, service, receiver, monkeypatch):
    """PostgreSQL restarted (or failed over) while the service was answering: "delivered" could not be written
    on the ended connection, the row stayed claimed, and the sweep sent the logout token again once the claim
    ran out. It is written on a new connection instead."""
    import psycopg
    from django.db import connection

    from oidc import backchannel

    require(connection.vendor == "postgresql", "PostgreSQL (a connection the server ends)")
    post = backchannel.requests.post

    def answered_then_connection_ended(*args, **kwargs):
        response = post(*args, **kwargs)
        db = connection.settings_dict
        with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"],
                             autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
        return response

    monkeypatch.setattr(backchannel.requests, "post", answered_then_connection_ended)
    logout = BackchannelLogout.objects.create(client=service, user=person.user, sid="s" * 32, reason="signed out")
    assert backchannel.deliver_backchannel_logout(logout.pk) == BackchannelLogout.State.DELIVERED
    logout.refresh_from_db()
    assert (logout.state, logout.attempts, logout.claimed_until) == (BackchannelLogout.State.DELIVERED, 1, None)
    assert AuditEvent.objects.filter(event=Event.OIDC_BACKCHANNEL_LOGOUT, outcome="success").count() == 1
    assert len(receiver.tokens) == 1


@pytest.fixture
def slow_commit_of_delivered(transactional_db):
    """A COMMIT of "delivered" that takes a second (a deferred trigger, as a busy disk or a synchronous standby
    makes it). PostgreSQL's."""
    from django.db import connection

    require(connection.vendor == "postgresql", "PostgreSQL (a deferred trigger)")
    with connection.cursor() as cursor:
        cursor.execute("""
            CREATE FUNCTION test_slow_commit() RETURNS trigger AS $$
            BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$ LANGUAGE plpgsql;
            CREATE CONSTRAINT TRIGGER test_slow_commit AFTER UPDATE ON oidc_backchannellogout
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.state = 'delivered')
            EXECUTE FUNCTION test_slow_commit();""")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER test_slow_commit ON oidc_backchannellogout; DROP FUNCTION test_slow_commit();")


def delivered_once_though_the_soft_time_limit_came(person, service, receiver, signal_after: float) -> None:
    """The service takes the logout token; the task's soft time limit (CAREID_BACKCHANNEL_TIME_LIMIT) comes
    `signal_after` seconds after "delivered" begins to be written. Before, SoftTimeLimitExceeded ended the task
    with the row still claimed (or, in the COMMIT, Django's clean-up replaced it with a ProgrammingError and the
    write was not tried again), and the sweep POSTed the logout again once the claim ran out."""
    import signal
    from datetime import timedelta

    import time_machine
    from django.db import connection
    from django.utils import timezone

    from oidc import backchannel

    task_thread, signalled = threading.get_ident(), []

    def soft_limit_at_the_delivered_write(execute, sql, params, many, context):
        if (not signalled and sql.startswith('UPDATE "oidc_backchannellogout"')
                and BackchannelLogout.State.DELIVERED in params):
            signalled.append(sql)  # as the prefork pool signals the task's process
            threading.Timer(signal_after, signal.pthread_kill, (task_thread, signal.SIGUSR1)).start()
        return execute(sql, params, many, context)

    logout = BackchannelLogout.objects.create(client=service, user=person.user, sid="s" * 32, reason="signed out")
    with connection.execute_wrapper(soft_limit_at_the_delivered_write):
        backchannel.deliver_backchannel_logout(logout.pk)  # the task ends without an error
    assert signalled
    receiver.wait_for(1)
    time.sleep(signal_after + 0.2)  # nothing is still to come
    with time_machine.travel(timezone.now() + settings.CAREID_BACKCHANNEL_CLAIM + timedelta(seconds=1)):
        backchannel.sweep()  # a claim left behind would have run out
    time.sleep(0.3)
    assert len(receiver.tokens) == 1
    logout.refresh_from_db()
    assert (logout.state, logout.attempts, logout.claimed_until) == (BackchannelLogout.State.DELIVERED, 1, None)
    assert AuditEvent.objects.filter(event=Event.OIDC_BACKCHANNEL_LOGOUT, outcome="success").count() == 1


def test_a_logout_the_service_took_is_recorded_though_the_tasks_soft_time_limit_came_meanwhile(
        transactional_db, person, service, receiver, soft_time_limit_handled_as_a_worker_does):
    delivered_once_though_the_soft_time_limit_came(person, service, receiver, signal_after=0)


def test_a_logout_the_service_took_is_recorded_though_the_soft_time_limit_came_in_its_commit(
        transactional_db, person, service, receiver, slow_commit_of_delivered, soft_time_limit_handled_as_a_worker_does):
    delivered_once_though_the_soft_time_limit_came(person, service, receiver, signal_after=0.4)


# --- RP-initiated logout -------------------------------------------------------------------------


def id_token_of(client, person, service, rp_key) -> tuple[str, dict]:
    sign_in(client, person)
    response, authorization = rp.authorize(client, service.pk)
    tokens = rp.exchange(client, service.pk, rp_key, rp.code_of(response, authorization), authorization).json()
    return tokens["id_token"], rp.verified(client, tokens["id_token"], service.pk)


def test_a_service_signs_the_person_out_with_its_id_token(client, person, service, rp_key, receiver):
    other, _ = rp.register(name="Summary Care Record", key=rp_key, backchannel_logout_uri=receiver.url)
    id_token, claims = id_token_of(client, person, service, rp_key)
    response, authorization = rp.authorize(client, other.pk)
    rp.exchange(client, other.pk, rp_key, rp.code_of(response, authorization), authorization)
    response = client.get("/oidc/logout", {"id_token_hint": id_token, "post_logout_redirect_uri": rp.POST_LOGOUT_URI,
                                           "state": "xyz"})
    assert response.status_code == 302 and response["Location"] == rp.POST_LOGOUT_URI + "?state=xyz"
    assert client.get("/profile/").status_code == 302
    # The other service is told; the one that asked already knows.
    [token] = receiver.wait_for(1)
    assert logout_claims(client, token, other)["sid"] == claims["sid"]
    assert AuditEvent.objects.filter(event=Event.OIDC_LOGOUT, details__client=service.pk).exists()


def test_without_an_id_token_for_this_session_the_person_is_asked(client, person, service, rp_key):
    sign_in(client, person)
    page = client.get("/oidc/logout", {"client_id": service.pk, "post_logout_redirect_uri": rp.POST_LOGOUT_URI})
    assert page.status_code == 200 and "Sign out of NHS Care Identity?" in page.content.decode()
    assert client.get("/profile/").status_code == 200  # asking changed nothing
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.cookies = client.cookies
    forged = csrf_client.post("/oidc/logout", {"client_id": service.pk, "action": "sign-out"})
    assert forged.status_code == 403 and client.get("/profile/").status_code == 200
    response = client.post("/oidc/logout", {"client_id": service.pk, "post_logout_redirect_uri": rp.POST_LOGOUT_URI,
                                            "action": "sign-out"})
    assert response.status_code == 302 and response["Location"] == rp.POST_LOGOUT_URI
    assert client.get("/profile/").status_code == 302


def test_a_client_id_alone_does_not_spare_that_service_its_back_channel_logout(client, person, service, rp_key,
                                                                               receiver):
    """A logout URL with only a client_id proves nothing about who sent it (anyone can write
    /oidc/logout?client_id=…, which is why careid asks the person first). Once the person signs out on careid's
    page, every service of the session must be told; careid skipped the one named by client_id ("it knows
    already"), so that service kept the person signed in though careid's session had ended."""
    claims = signed_into(client, person, service, rp_key)
    page = client.get("/oidc/logout", {"client_id": service.pk})
    assert page.status_code == 200 and "Sign out of NHS Care Identity?" in page.content.decode()
    client.post("/oidc/logout", {"client_id": service.pk, "action": "sign-out"})
    assert client.get("/profile/").status_code == 302
    [token] = receiver.wait_for(1)
    assert logout_claims(client, token, service)["sid"] == claims["sid"]
    assert AuditEvent.objects.filter(event=Event.OIDC_LOGOUT, details__client=service.pk).exists()


def test_an_unregistered_post_logout_uri_is_never_followed(client, person, service, rp_key):
    id_token, _ = id_token_of(client, person, service, rp_key)
    response = client.get("/oidc/logout", {"id_token_hint": id_token,
                                           "post_logout_redirect_uri": "https://evil.example.com/"})
    assert response.status_code == 400 and "Location" not in response
    assert client.get("/profile/").status_code == 200
