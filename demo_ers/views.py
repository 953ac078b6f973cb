"""The demo eRS's pages and endpoints: its page, login and callback, logout, back-channel logout, JWKS."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import requests
from authlib.integrations.base_client import OAuthError
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import cache_control
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from joserfc.errors import JoseError
from joserfc.jws import extract_compact

from . import careid, keys, session, store

log = logging.getLogger(__name__)

# What the demo may ask careid for: eRS accepts AAL2 or AAL3; the AAL3 button shows a step-up refusal.
LEVELS = {"AAL2_OR_AAL3_ANY": "Log in with your NHS Care Identity",
          "AAL3_ANY": "Log in with a smartcard or security key (AAL3)"}
DEFAULT_LEVEL = "AAL2_OR_AAL3_ANY"
SHOWN_LOGOUTS = 20


def _callback_uri() -> str:
    return f"{settings.DEMO_ERS_BASE_URL}/callback"


def _when(epoch: float | int | None) -> str:
    if not isinstance(epoch, int | float):
        return ""
    return timezone.localtime(datetime.fromtimestamp(epoch, UTC)).strftime("%d %B %Y %H:%M:%S %Z")


def _error(request: HttpRequest, title: str, detail: str, status: int = 400) -> HttpResponse:
    return render(request, "demo_ers/error.html", {"title": title, "detail": detail}, status=status)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if request.GET.get("state"):  # back from careid's end_session_endpoint (RP-initiated logout)
        try:
            careid.client().validate_logout_response(request)
        except OAuthError:
            session.end(request, notice="That logout link was not started here, or was used already.")
        else:
            session.end(request, notice="You have logged out of the e-Referral Service (demo), and NHS Care Identity "
                                        "has ended your session there too.")
        return redirect("home")
    person = session.person(request)
    context: dict[str, Any] = {"notice": session.pop_notice(request), "levels": LEVELS, "issuer": settings.DEMO_ERS_ISSUER,
                               "logouts": _logouts(request)}
    if person is not None:
        claims, userinfo = person["claims"], person["userinfo"]
        context.update(
            claims=claims, userinfo=userinfo, kid=extract_compact(person["id_token"].encode()).headers().get("kid"),
            amr=", ".join(claims.get("amr") or []), auth_time=_when(claims.get("auth_time")),
            all_claims=[(name, json.dumps(value)) for name, value in sorted(claims.items())],
            all_userinfo=[(name, json.dumps(value)) for name, value in sorted(userinfo.items())],
        )
    return render(request, "demo_ers/home.html", context)


def _logouts(request: HttpRequest) -> list[dict[str, str]]:
    """This browser's, not every visitor's: whose sessions ended is none of a passer-by's business."""
    mine = set(session.sids(request))
    newest_first = [logout for logout in reversed(store.received()) if logout.sid in mine][:SHOWN_LOGOUTS]
    return [{"when": _when(logout.received_at), "sub": logout.sub, "sid": logout.sid} for logout in newest_first]


@require_POST
def login(request: HttpRequest) -> HttpResponse:
    """Off to careid's authorization endpoint: Authlib adds state, nonce and a PKCE S256 challenge
    and keeps them (with the verifier) in the session for the callback."""
    level = request.POST.get("acr_values")
    level = level if level in LEVELS else DEFAULT_LEVEL
    try:
        response = careid.client().authorize_redirect(request, _callback_uri(), acr_values=level)
    except requests.RequestException as error:
        log.warning("careid's discovery document could not be read: %s", error)
        return _error(request, "NHS Care Identity cannot be reached",
                      f"Its discovery document at {settings.DEMO_ERS_ISSUER} could not be read. Is careid running?", 502)
    request.session[session.ASKED_LEVEL] = level
    return response


@require_GET
def callback(request: HttpRequest) -> HttpResponse:
    """Back from careid: Authlib checks the state, exchanges the code (private_key_jwt, the PKCE
    verifier) and verifies the ID token (signature against careid's JWKS, iss, aud, exp, nonce);
    the demo then checks the level and fetches userinfo."""
    app = careid.client()
    asked = request.session.pop(session.ASKED_LEVEL, DEFAULT_LEVEL)
    try:
        token = app.authorize_access_token(request)
        if "userinfo" not in token:
            raise OAuthError(error="invalid_token", description="no ID token came back")
        claims = dict(token["userinfo"])  # Authlib's name for the verified ID token's claims
        userinfo = dict(app.userinfo(token=token))
    except OAuthError as error:  # careid's error answer, or a state this session did not start (or used)
        return _error(request, "You were not logged in", f"{error.error}: {error.description or ''}".strip(": "))
    except (JoseError, ValueError) as error:
        log.warning("ID token refused: %s", error)
        return _error(request, "You were not logged in", f"The ID token did not verify: {error}")
    except requests.RequestException as error:
        log.warning("careid could not be reached: %s", error)
        return _error(request, "NHS Care Identity cannot be reached", "Try again in a moment.", 502)
    if userinfo.get("sub") != claims["sub"]:  # OpenID Connect Core 5.3.2
        return _error(request, "You were not logged in", "userinfo is about someone else than the ID token.")
    if claims.get("acr") != asked:
        return _error(request, "You were not logged in", f"NHS Care Identity signed you in at {claims.get('acr')}, "
                                                        f"not at the level asked for ({asked}).")
    session.sign_in(request, id_token=token["id_token"], claims=claims, userinfo=userinfo)
    return redirect("home")


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    """End the demo session, then RP-initiated logout at careid with the ID token as hint, so the
    careid session ends too; careid sends the person back to / with the state Authlib kept."""
    person = session.end(request)
    if person is None:
        return redirect("home")
    if person.get("sid"):
        store.remember_logged_out(person["sid"])
    try:
        return careid.client().logout_redirect(request, post_logout_redirect_uri=f"{settings.DEMO_ERS_BASE_URL}/",
                                               id_token_hint=person["id_token"])
    except requests.RequestException:
        return _error(request, "NHS Care Identity cannot be reached",
                      "You are logged out of the e-Referral Service (demo), but your NHS Care Identity session may "
                      "still be open: sign out there too.", 502)


def _refused(error: str, description: str, status: int = 400) -> JsonResponse:
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt  # careid's server POSTs here; the logout token's signature is what authenticates it
@require_POST
def backchannel_logout(request: HttpRequest) -> HttpResponse:
    token = request.POST.get("logout_token", "")
    if not token:
        return _refused("invalid_request", "logout_token missing")
    try:
        claims = careid.verify_logout_token(token)
    except careid.LogoutTokenError as error:
        log.warning("Back-channel logout refused: %s", error)
        return _refused("invalid_request", str(error))
    except requests.RequestException as error:  # careid's keys could not be fetched: careid tries again later
        log.warning("Back-channel logout not checked, careid's JWKS unreachable: %s", error)
        return _refused("temporarily_unavailable", "careid's keys could not be fetched", status=503)
    if not store.record(sub=str(claims.get("sub", "")), sid=claims["sid"], jti=claims["jti"]):
        return _refused("invalid_request", "logout token received before (replay)")
    response = HttpResponse(status=200)
    response["Cache-Control"] = "no-store"
    return response


@require_GET
@cache_control(public=True, max_age=300)
def jwks(request: HttpRequest) -> JsonResponse:
    return JsonResponse(keys.public_jwks())
