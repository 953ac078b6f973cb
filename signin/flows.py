"""Use cases of CIS2 Authentication: a password as first factor, completing a sign-in, the
session's end (signing out, timing out, an RA ending every session).

Each flow writes its audit event in the transaction of its change. The login methods
(authenticators/<type>/flows.py) call these; none of this names a type.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import import_module

from allauth.usersessions.models import UserSession
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, login, logout, update_session_auth_hash
from django.contrib.auth.hashers import check_password, make_password
from django.contrib.sessions.backends.base import UpdateError
from django.db import DatabaseError, transaction
from django.http import HttpRequest
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from accounts.models import User
from accounts.notifications import notify_person
from audit.models import Event, Outcome
from audit.record import client_ip, record

from . import throttle
from .models import Factor
from .session import SESSION_AUTH, SESSION_LAST_SEEN, SESSION_TIMED_OUT, Authentication, current, has_timed_out
from .signals import session_key_changed, sessions_ended

logger = logging.getLogger(__name__)
# An unusable hash: Django's check_password then makes a hash with the configured hasher and cost
# (CAREID_ARGON2_*), so an unknown address costs the same Argon2 work as a wrong password.
NO_ACCOUNT = make_password(None)
_USER_AGENT_LENGTH = UserSession._meta.get_field("user_agent").max_length


def find_user_for_signin(email: str) -> User | None:
    return User.objects.with_email(email).first() if email else None


@contextmanager
def failing_closed(request: HttpRequest, event: Event, **fields) -> Iterator[None]:
    """Around a throttled step: when its counters cannot be reached (throttle.StoreUnavailable, which
    goes on to the 503 page), the refusal is audited as `event`, if the database can still be written;
    otherwise it is logged."""
    try:
        yield
    except throttle.StoreUnavailable:
        try:
            with transaction.atomic():
                record(event, request=request, outcome=Outcome.FAILURE, reason=throttle.STORE_UNAVAILABLE, **fields)
        except DatabaseError:
            logger.exception("Refused %s (%s) and could not audit it", event.value, throttle.STORE_UNAVAILABLE)
        raise


def begin_signin_attempt(request: HttpRequest, *, email: str, user: User | None, method: str,
                         factor: Factor = Factor.PASSWORD) -> str | None:
    """Take the account's attempt slot before checking anything; the refusal message otherwise."""
    return _audited_refusal(request, lambda: throttle.begin(request, email, user, factor),
                            email=email, user=user, method=method)


def begin_key_attempt(request: HttpRequest, *, email: str, user: User | None, method: str) -> str | None:
    """Count a key's answer against the client's address only (throttle.begin_for_client says why);
    the refusal message otherwise. A refused answer is then only audited: the account is not held."""
    return _audited_refusal(request, lambda: throttle.begin_for_client(request), email=email, user=user, method=method)


def _audited_refusal(request: HttpRequest, begin: Callable[[], throttle.Refusal | None], *, email: str,
                     user: User | None, method: str) -> str | None:
    with failing_closed(request, Event.SIGNIN_THROTTLED, subject=user, method=method, email=email[:254]):
        refused = begin()
    if refused is None:
        return None
    record(Event.SIGNIN_THROTTLED, request=request, subject=user, outcome=Outcome.FAILURE, method=method,
           reason=refused.reason, email=email[:254])
    return refused.message


def key_holder_locked_out(request: HttpRequest, *, user: User, method: str) -> str | None:
    """After a good key answer: the lock message when a lock stops keys (one for wrong codes, which only
    a registration authority lifts); only the key's holder learns of it. None when the sign-in may go on."""
    if not user.lock_stops(Factor.CODE):
        return None
    throttle.release_client(request)
    record(Event.SIGNIN_THROTTLED, request=request, subject=user, outcome=Outcome.FAILURE, method=method,
           reason="locked", email=user.email[:254])
    return throttle.lock_message(user)


def fail_signin_attempt(
    request: HttpRequest, *, email: str, user: User | None, method: str, reason: str,
    message: str = throttle.BAD_CREDENTIALS, factor: Factor = Factor.PASSWORD,
) -> str:
    """Count and audit a failed attempt; the message to show (the lock message once locked)."""
    with transaction.atomic():
        locked_message = throttle.fail(request, email, user, factor)
        record(Event.SIGNIN_FAILED, request=request, subject=user, outcome=Outcome.FAILURE, method=method,
               reason=reason, email=email[:254])
        if locked_message and user is not None:
            failures = user.password_failures if factor == Factor.PASSWORD else user.code_failures
            notify_person(record(Event.ACCOUNT_LOCKED, request=request, subject=user, outcome=Outcome.FAILURE,
                                 method=method, reason=user.lock_reason, failures=failures))
    return locked_message or message


def check_password_step(request: HttpRequest, *, email: str, password: str, method: str) -> tuple[User | None, str | None]:
    """A password as first factor.

    Returns (user, None) when the password is right and the person may go on to their second
    factor, or (None, message) with a message that is the same for an unknown address, a wrong
    password and a suspended or closed profile.
    """
    user = find_user_for_signin(email)
    refused = begin_signin_attempt(request, email=email, user=user, method=method)
    if refused:
        return None, refused
    if user is None:
        check_password(password, NO_ACCOUNT)  # the same Argon2 work as for a real account
        reason = "unknown email"
    elif not _check_password(request, user, password):
        reason = "wrong password"
    elif not user.is_active:
        reason = f"profile {user.status}"
    elif user.is_locked:  # locked for wrong codes: only someone with the right password learns it
        throttle.release(request, user, Factor.PASSWORD)
        record(Event.SIGNIN_THROTTLED, request=request, subject=user, outcome=Outcome.FAILURE, method=method,
               reason="locked", email=email[:254])
        return None, throttle.lock_message(user)
    else:
        throttle.release(request, user, Factor.PASSWORD)  # the code count resets only when the sign-in completes
        return user, None
    return None, fail_signin_attempt(request, email=email, user=user, method=method, reason=reason)


def _check_password(request: HttpRequest, user: User, password: str) -> bool:
    """The person's password. A right one on a hash of another cost is re-hashed (Django's check_password),
    and Django's check of each session of the person, made from the hash, then fails: every other session
    would end at its next request, unheard by its services, on the strength of a password step alone. The
    password is the same, so their sessions move to the new hash instead."""
    before = user.get_session_auth_hash()
    if not user.check_password(password):
        return False
    if user.get_session_auth_hash() != before:
        _sessions_follow_rehash(request, user, before)
    return True


def _sessions_follow_rehash(request: HttpRequest, user: User, before: str) -> None:
    """Only the sessions made under the hash before (a session of the list made under an older one is
    already ended). The step's attempt slot keeps a second re-hash of the person from running meanwhile; a
    request of one of these sessions that saves it while this runs can still write the old check back, and
    that session then ends at its next request, as all of them did before."""
    after = user.get_session_auth_hash()
    if constant_time_compare(request.session.get(HASH_SESSION_KEY, ""), before):
        # This browser's own (the person signing in again): its copy, which the request saves last.
        request.session[HASH_SESSION_KEY] = after
    store = import_module(settings.SESSION_ENGINE).SessionStore
    for listed in UserSession.objects.exclude(session_key=request.session.session_key or "").filter(user=user):
        session = store(listed.session_key)
        if constant_time_compare(session.get(HASH_SESSION_KEY, ""), before):
            session[HASH_SESSION_KEY] = after
            try:
                session.save()
            except UpdateError:  # ended meanwhile
                pass


def complete_signin(request: HttpRequest, *, user: User, kind) -> None:
    """Both factors passed (the last one checked holding the code slot): a new session (new id) that
    records how the person signed in.

    The OpenID Connect session id (sid) stays the same when the same person signs in again in this
    browser (a step-up or a re-authentication), so relying services keep one session to end.
    """
    previous = current(request)
    sid = previous.sid if previous is not None and request.user.pk == user.pk and previous.sid else secrets.token_urlsafe(24)
    with transaction.atomic():
        if request.user.is_authenticated and request.user.pk != user.pk:
            # Someone else was signed in here (a shared practice computer): their session ends first.
            _end_this_session(request, Event.SIGNED_OUT, reason="another person signed in")
        throttle.release(request, user, Factor.CODE, succeeded=True)
        before = None
        if request.user.is_authenticated:  # the same person again: login() would keep the key
            before = request.session.session_key
            request.session.cycle_key()
        login(request, user, backend="accounts.backends.CareIdentityBackend")  # a new session key
        request.session.pop(SESSION_TIMED_OUT, None)  # signed in by a method's own page: nothing left to say
        now = time.time()
        auth = Authentication(method=kind.key, aal=kind.aal, acr=kind.acr, amr=tuple(kind.amr), at=now, sid=sid)
        request.session[SESSION_AUTH] = auth.to_session()
        request.session[SESSION_LAST_SEEN] = now
        # The new key's row, with what it records, stands or falls with the rest. Saved before it is listed:
        # login() flushed a session that held someone the backend no longer accepts, so it may have no key yet.
        request.session.save()
        _list_this_session(request, user, before)
        record(Event.SIGNIN_SUCCEEDED, request=request, actor=user, subject=user, method=kind.key, aal=kind.aal,
               acr=kind.acr)


def _list_this_session(request: HttpRequest, user: User, before: str | None) -> None:
    """allauth's list of a person's sessions (how suspension and closure end them all at once, and what
    "Where you are signed in" lists) gets this session under its new key. Signing in again in this browser
    moves its row (it keeps when it was first signed in), and what follows the key. One statement either way:
    the key is new, so allauth's create_from_request (a look-up, then an insert, each in a savepoint) has
    nothing to find."""
    after = request.session.session_key
    client = {"ip": client_ip(request),
              "user_agent": request.META.get("HTTP_USER_AGENT", "")[:_USER_AGENT_LENGTH]}
    if before and _follow_new_key(user, before, after, last_seen_at=timezone.now(), **client):
        return
    UserSession.objects.create(user=user, session_key=after, **client)


def keep_this_session(request: HttpRequest, user: User) -> None:
    """After the signed-in person's password changed: this session stays valid under the new one with a
    new key (Django's update_session_auth_hash), and stays in their list of sessions and their services'."""
    before = request.session.session_key
    update_session_auth_hash(request, user)
    request.session.save()  # stored with the new password's hash, which a check of the list looks at
    if not _follow_new_key(user, before, request.session.session_key):
        # Ended meanwhile (an RA ended every session of the person): the save wrote it anew, and it stays ended.
        request.session.flush()


def sessions_after_new_password(request: HttpRequest, user: User, *, reason: str) -> int:
    """The person's password is new (changed, or set by a registration): Django would stop every session made
    under the old one at its next request, their services unheard. This one stays if it is theirs; every
    other ends now. Returns how many ended."""
    keep = None
    if request.user.is_authenticated and request.user.pk == user.pk:
        keep_this_session(request, user)
        keep = request.session.session_key  # None when it had been ended meanwhile
    return end_sessions(user, reason=reason, keep=keep)


def _follow_new_key(user: User, before: str, after: str, **listed) -> bool:
    """The person's session got a new key: its row on their list (updated with `listed`), and what else
    follows it by key (the services' grants, through session_key_changed), move to the new one. Whether
    the list had a row to move."""
    moved = UserSession.objects.filter(session_key=before).update(session_key=after, **listed)
    session_key_changed.send(sender=User, user=user, before=before, after=after)
    return bool(moved)


def _end_this_session(request: HttpRequest, event: Event, **details) -> None:
    user = request.user if request.user.is_authenticated else None
    auth = current(request)
    with transaction.atomic():
        if user is not None:
            record(event, request=request, subject=user, method=auth.method if auth else "",
                   aal=auth.aal if auth else None, **details)
            UserSession.objects.filter(session_key=request.session.session_key).delete()
            if auth is not None and auth.sid:
                sessions_ended.send(sender=User, user=user, sids=[auth.sid], reason=details.get("reason", "signed out"))
        logout(request)  # flushes the session: the id is gone from the store


def sign_out(request: HttpRequest) -> None:
    _end_this_session(request, Event.SIGNED_OUT)


def end_timed_out_session(request: HttpRequest) -> None:
    """The middleware found the session past its idle or absolute timeout. The browser's new session says so to
    the sign-in page, which this request most often only leads to (login_required, a service's authorization)."""
    _end_this_session(request, Event.SESSION_EXPIRED, reason="timed out")
    request.session[SESSION_TIMED_OUT] = True


def end_sessions(user: User, *, reason: str, keep: str | None = None, signed_in_with: str | None = None) -> int:
    """End the person's sessions at once (allauth's list of them, and each from the store): every one, or
    every one but the session keyed `keep`, or only those signed in with the login method `signed_in_with`
    (an authenticator removed); returns how many ended. Called inside the transaction of the change that
    ends them, whose own audit event says how many, and which has locked the person's row first (User.lock_status,
    or their password's change): complete_signin's throttle release locks it before a session moves to a new key,
    so a sign-in again under way has moved it before the list is read, or waits. Read the other way, the old key was
    ended, gone by then, and the list's row deleted under the new one: the browser stayed signed in, on no list."""
    sessions = list(UserSession.objects.filter(user=user).exclude(session_key=keep or ""))
    sids = None
    if keep is not None or signed_in_with is not None:  # the services hear of exactly the sessions that end
        stored = [(session, _stored_authentication(session)) for session in sessions]
        if signed_in_with is not None:
            stored = [(session, auth) for session, auth in stored if auth is not None and auth.method == signed_in_with]
        sessions = [session for session, _ in stored]
        sids = [auth.sid for _, auth in stored if auth is not None and auth.sid]
    for session in sessions:
        session.end()
    sessions_ended.send(sender=User, user=user, sids=sids, reason=reason)
    return len(sessions)


def _stored_authentication(session: UserSession) -> Authentication | None:
    return Authentication.from_session(import_module(settings.SESSION_ENGINE).SessionStore(session.session_key).load())


# --- the person's sessions ("Where you are signed in", the RA's person page) ------------------------


def seen_now(request: HttpRequest) -> None:
    UserSession.objects.filter(session_key=request.session.session_key).update(last_seen_at=timezone.now())


def sessions_of(user: User) -> list[UserSession]:
    """The person's live sessions, newest first (rows whose session has gone are cleared on the way). A session
    past its idle or absolute timeout is not one: its next request ends it (the middleware), so it is left out,
    read with the others in one query."""
    listed = UserSession.objects.purge_and_list(user)
    store = import_module(settings.SESSION_ENGINE).SessionStore
    stored = dict(store.get_model_class().objects.filter(session_key__in=[session.session_key for session in listed])
                  .values_list("session_key", "session_data"))
    live = [session for session in listed if not has_timed_out(store().decode(stored.get(session.session_key, "")))]
    return sorted(live, key=lambda session: session.created_at, reverse=True)


def forget_expired_sessions() -> int:
    """Stored sessions past their expiry, with their rows on people's lists of sessions; returns how many went.
    Django never deletes them by itself (its clearsessions command does). A session expires 12 hours after its last
    change (SESSION_COOKIE_AGE), past every timeout, and is never loaded again: none of them is in use."""
    expired = import_module(settings.SESSION_ENGINE).SessionStore.get_model_class().objects.filter(
        expire_date__lt=timezone.now())
    with transaction.atomic():
        UserSession.objects.filter(session_key__in=expired.values("session_key")).delete()
        return expired.delete()[0]


def end_session(*, user: User, session: UserSession, actor: User, reason: str,
                request: HttpRequest | None = None) -> None:
    """End one of the person's sessions (by themselves, from another browser, or by an RA): that browser
    is signed out at its next request, and the services it signed into are told."""
    if session.user_id != user.pk:
        raise PermissionError("Not this person's session")
    auth = _stored_authentication(session)
    with transaction.atomic():
        session.end()
        record(Event.SESSIONS_ENDED, request=request, actor=actor, subject=user, sessions_ended=1, reason=reason,
               ip=session.ip)
        if auth is not None and auth.sid:
            sessions_ended.send(sender=User, user=user, sids=[auth.sid], reason=reason)


def end_other_sessions(request: HttpRequest, *, reason: str) -> int:
    """Every session of the signed-in person but this one, in one audit event; returns how many ended."""
    with transaction.atomic():
        request.user.lock_status()
        ended = end_sessions(request.user, reason=reason, keep=request.session.session_key)
        if ended:
            record(Event.SESSIONS_ENDED, request=request, actor=request.user, subject=request.user,
                   sessions_ended=ended, reason=reason)
    return ended
