"""The provider's endpoints. Authorize, token, revoke and logout wrap allauth's oauthlib server with
careid's validator (oidc/server.py); userinfo and the JWKS are allauth's own views."""

from __future__ import annotations

import json
from http import HTTPStatus
from urllib.parse import urlencode

from allauth.core.internal.httpkit import add_query_params, del_query_params
from allauth.idp.oidc.adapter import get_adapter
from allauth.idp.oidc.forms import RPInitiatedLogoutForm
from allauth.idp.oidc.internal.oauthlib.utils import convert_response, extract_params
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import cache_control
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from oauthlib.oauth2.rfc6749 import errors

from audit.models import Event, Outcome
from audit.record import record
from authenticators import registry
from signin.session import current

from . import discovery, flows, levels, reauth
from .models import RelyingService
from .server import get_server, refusal
from .signing import load_jwk_from_pem


class _ClientRedirect(HttpResponse):
    """A redirect to a registered client URI (HttpResponseRedirect refuses custom schemes)."""

    def __init__(self, location: str) -> None:
        super().__init__(status=HTTPStatus.FOUND)
        self["Location"] = location


def _refused(request: HttpRequest, where: str, error: errors.OAuth2Error | None = None, **details) -> None:
    reason, client_id = refusal(request) or (getattr(error, "description", None) or getattr(error, "error", ""), None)
    record(Event.OIDC_REFUSED, request=request, outcome=Outcome.FAILURE, endpoint=where, reason=str(reason)[:300],
           error=getattr(error, "error", ""), client=client_id or request.GET.get("client_id", "")
           or request.POST.get("client_id", ""), **details)


def _error_page(request: HttpRequest, error: errors.OAuth2Error, status: int = 400) -> HttpResponse:
    return render(request, "oidc/error.html", {"error": error}, status=status)


@csrf_exempt  # a POST only turns into the same request as a GET: it changes nothing
@require_http_methods(["GET", "POST"])
def authorize(request: HttpRequest) -> HttpResponse:
    """The authorization endpoint: a person who is not signed in, or not at the level asked for, or
    not recently enough, goes to CIS2 Authentication and comes back here; no consent screen.

    POST is accepted too (OpenID Connect Core 3.1.2.1). A service's form posts cross-site, and the
    session cookie (SameSite=Lax) only comes along on a top-level GET: the POST is answered with the
    same request as a GET, which then does everything (and is the address sign-in comes back to)."""
    if request.method == "POST":
        response = HttpResponseRedirect(f"{request.path}?{request.POST.urlencode()}")
        response.status_code = HTTPStatus.SEE_OTHER
        return response
    orequest = extract_params(request)
    server = get_server()
    try:
        scopes, info = server.validate_authorization_request(*orequest)
    except errors.FatalClientError as error:  # unknown client or redirect_uri: never redirect
        _refused(request, "authorize", error)
        return _error_page(request, error)
    except errors.OAuth2Error as error:
        _refused(request, "authorize", error)
        return _ClientRedirect(error.in_uri(error.redirect_uri))

    acr_values = request.GET.get("acr_values")
    prompted = "login" in info.get("prompt", ())
    since = reauth.asked_at(request)
    max_age = levels.parse_max_age(request.GET.get("max_age"))
    if not levels.session_satisfies(request, acr_values, max_age, reauthenticated_since=since, login_prompted=prompted):
        if request.user.is_authenticated and not levels.can_reach(request.user, acr_values):
            client = RelyingService.objects.get(pk=info["client_id"])
            return render(request, "oidc/level_not_available.html", {
                "service": client, "kinds": registry.types_for_level(acr_values),
            }, status=403)
        back = del_query_params(request.get_full_path(), reauth.PARAM)
        # Only prompt=login and max_age need to recognise the sign-in on the way back (so that max_age=0
        # does not loop); the id names this request in this browser's cookie.
        request_id = reauth.new_id() if prompted or max_age is not None else None
        if request_id:
            back = add_query_params(back, {reauth.PARAM: request_id})
        query = {"acr_values": " ".join(registry.levels(acr_values)), "goto": back}
        if request.user.is_authenticated:
            query["reauth"] = "1"  # "For your security, sign in again to continue."
        response = _ClientRedirect(f"{reverse('login')}?{urlencode(query)}")
        if request_id:
            reauth.remember(request, response, request_id)
        return response

    credentials = {"user": request.user, **{name: value for name, value in info.items() if name != "request"}}
    with transaction.atomic():
        try:
            headers, body, status = server.create_authorization_response(*orequest, scopes=scopes,
                                                                          credentials=credentials)
        except errors.FatalClientError as error:
            _refused(request, "authorize", error)
            return _error_page(request, error)
        except errors.OAuth2Error as error:
            _refused(request, "authorize", error)
            return _ClientRedirect(error.in_uri(error.redirect_uri))
    response = convert_response(headers, body, status)
    if since is not None:  # the sign-in it asked for has served: replaying this URL asks again
        reauth.forget(request, response)
    return response


def _oauth_response(request: HttpRequest, where: str, create) -> HttpResponse:
    orequest = extract_params(request)
    with transaction.atomic():
        try:
            headers, body, status = create(get_server(), orequest)
        except errors.OAuth2Error as error:  # raised past oauthlib's grant, which would add the content type
            headers, body, status = {**error.headers, "Content-Type": "application/json"}, error.json, error.status_code
        if status >= 400:
            _refused(request, where, _error_from(body), grant_type=request.POST.get("grant_type", ""))
    response = convert_response(headers, body, status)
    response["Cache-Control"] = "no-store"
    return response


def _error_from(body) -> errors.OAuth2Error:
    try:
        data = json.loads(body) if isinstance(body, str) else dict(body)
    except (TypeError, ValueError):
        data = {}
    error = errors.OAuth2Error(description=data.get("error_description"))
    error.error = data.get("error", "")
    return error


@csrf_exempt
@require_POST
def token(request: HttpRequest) -> HttpResponse:
    return _oauth_response(request, "token", lambda server, orequest: server.create_token_response(*orequest))


@csrf_exempt
@require_POST
def revoke(request: HttpRequest) -> HttpResponse:
    return _oauth_response(request, "revoke", lambda server, orequest: server.create_revocation_response(*orequest))


@csrf_exempt
@require_http_methods(["GET", "POST"])
def logout(request: HttpRequest) -> HttpResponse:
    """RP-initiated logout. With an id_token_hint for this very session the person is signed out at
    once; otherwise careid asks first (a service cannot sign a person out of careid on its own)."""
    form = RPInitiatedLogoutForm(request.POST if request.method == "POST" else request.GET)
    if not form.is_valid():
        return render(request, "oidc/logout_error.html", {"form": form}, status=400)
    data = form.cleaned_data
    client: RelyingService | None = RelyingService.objects.filter(pk=data["client"].pk).first() if data["client"] else None
    redirect_uri = data["post_logout_redirect_uri"]
    if redirect_uri and (client is None or redirect_uri not in client.get_post_logout_redirect_uris()):
        return render(request, "oidc/logout_error.html", {"form": form}, status=400)
    auth = current(request)
    hint = data["id_token_hint"] or {}
    matches = auth is not None and hint.get("sub") == request.user.uid and hint.get("sid") == auth.sid
    if auth is not None and not matches:
        if request.method != "POST" or request.POST.get("action") != "sign-out":
            return render(request, "oidc/logout_confirm.html", {"form": form, "service": client})
        if _csrf_failed(request):  # the answer must come from the person on careid's page, not the service
            return render(request, "403_csrf.html", status=403)
    if auth is not None:
        flows.sign_out_at_service_request(request, client=client, proven=matches)
    if redirect_uri:
        return _ClientRedirect(add_query_params(redirect_uri, {"state": data["state"]}) if data["state"] else redirect_uri)
    return render(request, "signin/signed_out.html")


def _csrf_failed(request: HttpRequest) -> bool:
    """CSRF checked by hand: the endpoint itself is exempt, since services may POST to it."""
    return CsrfViewMiddleware(lambda _request: HttpResponse()).process_view(request, None, (), {}) is not None


@require_GET
def jwks(request: HttpRequest) -> JsonResponse:
    """allauth's JWKS view with each key parsed once (oidc/signing.py): every active key, including one
    published ahead of signing, cached by clients as allauth's adapter says."""
    adapter = get_adapter()
    keys = [load_jwk_from_pem(key.pem)[0] for key in adapter.list_private_keys(is_active=True)]
    response = JsonResponse({"keys": keys})
    response["Access-Control-Allow-Origin"] = "*"
    response["Cache-Control"] = f"max-age={adapter.get_jwks_cache_control()}, must-revalidate"
    return response


@require_GET
@cache_control(public=True, max_age=3600)
def configuration(request: HttpRequest) -> JsonResponse:
    response = JsonResponse(discovery.metadata())
    response["Access-Control-Allow-Origin"] = "*"
    return response
