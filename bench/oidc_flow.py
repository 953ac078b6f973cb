"""Complete OpenID Connect code flows per second for a person already signed in: careid's provider
against django-allauth's stock provider on a bare Django project, measured alternately in one run.

A flow is what a relying service does for a person who is already signed in at the provider:
  1. GET  authorize, from the person's browser (session cookie), PKCE S256, state and nonce: a 302
     back to the service with a code;
  2. POST token with the code and the PKCE verifier, the client authenticated: ID token, access and
     refresh tokens;
  3. GET  userinfo with the access token.

careid: the service is registered for private_key_jwt with an inline JWKS (RSA 2048); every token
request carries a fresh RS256 assertion (new jti), signed before the round so that the client's
signing is not timed; scopes openid profile email nhsperson; each person signed in through careid's
real pages (e-mail and password, then the authenticator app's code).

Baseline, bench/stock_oidc_settings.py: allauth.idp.oidc as shipped (its URLs, its default adapter),
confidential clients with a secret (client_secret_basic), skip_consent, scopes openid profile email;
each user signed in with Django's login. Two baseline clients on the same server: the secret hashed
with Argon2 (careid's hasher, Django's default parameters) and with MD5 (about a microsecond). The
0.8 target is judged against the MD5 client: a slow hash on every token request is a cost of the
stock configuration that careid's private_key_jwt does not have, and would flatter careid.

Both projects are served by gunicorn (2 sync workers, DEBUG off, PostgreSQL with persistent
connections) on 127.0.0.1 and loaded in turn by the same client threads (one signed-in person each):
every round runs careid and the judged baseline back to back, taking turns at going first, then the
Argon2 client. The headline is the median of the per-round ratios (the two runs of a round are
seconds apart, so load from other work hits both alike); worker CPU per flow backs it up. Afterwards the queries each step makes, counted in-process with Django's test
client and CaptureQueriesContext on each project's own settings and database.

Run from the project root:  .venv/bin/python bench/oidc_flow.py [--rounds N] [--duration S]
    [--clients C] [--latency-flows N] [--show-sql]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import math
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))  # run as bench/oidc_flow.py: the project's packages

from bench.signin_page import (  # noqa: E402
    WORKERS,
    cpu_seconds,
    ensure_database,
    free_port,
    gunicorn,
    wait_for_workers,
    wait_until_serving,
    worker_pids,
)

TARGET_RATIO = 0.8
NOISY_SPREAD = 0.15
CONN_MAX_AGE = 60
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/careid_bench"
STOCK_DATABASE_NAME = "careid_bench_stock"
DEFAULT_CACHE_URL = "redis://127.0.0.1:6379/13"
SECRET_KEY = "bench-only-secret-key-not-used-anywhere-else"

REDIRECT_URI = "https://ers.example.nhs.uk/callback"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CAREID_CLIENT_ID = "bench-oidc-ers"
CAREID_SCOPE = "openid profile email nhsperson"
RP_KID = "bench-ers-1"
ASSERTION_LIFETIME = 280  # careid accepts up to 300 s
STOCK_SCOPE = "openid profile email"
STOCK_CLIENTS = {"stock-md5": "md5", "stock-argon2": "argon2"}  # client_id: hasher of its secret

CAREID, STOCK_MD5, STOCK_ARGON2 = "careid", "stock-md5", "stock-argon2"
LABELS = {CAREID: "careid", STOCK_MD5: "stock (MD5 secret)", STOCK_ARGON2: "stock (Argon2 secret)"}
JUDGED_BASELINE = STOCK_MD5


@dataclass(frozen=True)
class Endpoints:
    authorize: str
    token: str
    userinfo: str
    jwks: str


CAREID_ENDPOINTS = Endpoints("/oidc/authorize", "/oidc/token", "/oidc/userinfo", "/.well-known/jwks.json")
STOCK_ENDPOINTS = Endpoints("/identity/o/authorize", "/identity/o/api/token", "/identity/o/api/userinfo",
                            "/.well-known/jwks.json")


# --- what a relying service sends (shared by the load and by the in-process query count) --------------


@dataclass
class Authorization:
    """One authorization request's secrets, kept by the relying service."""

    state: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))

    def params(self, client_id: str, scope: str) -> dict[str, str]:
        challenge = base64.urlsafe_b64encode(hashlib.sha256(self.verifier.encode()).digest()).rstrip(b"=").decode()
        return {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": scope,
                "state": self.state, "nonce": self.nonce, "code_challenge": challenge,
                "code_challenge_method": "S256"}

    def code_from(self, status: int, location: str, body: bytes) -> str:
        if status != 302 or not location.startswith(REDIRECT_URI + "?"):
            raise FlowError(f"authorize answered {status} {location!r}: {body[:500]!r}")
        query = {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}
        if query.get("state") != self.state or "code" not in query:
            raise FlowError(f"authorize redirected without the code or with another state: {location!r}")
        return query["code"]

    def token_form(self, code: str) -> dict[str, str]:
        return {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                "code_verifier": self.verifier}


class FlowError(Exception):
    pass


def sign_assertion(private_key, client_id: str, token_endpoint: str) -> str:
    """A private_key_jwt client assertion (RFC 7523) with a new jti."""
    import jwt

    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": token_endpoint, "iat": now,
              "exp": now + ASSERTION_LIFETIME, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, private_key, algorithm="RS256", headers={"kid": RP_KID})


def basic_auth(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


# --- set-up and query counts, run in a Django process of each project ----------------------------------


def internal_careid_setup(spec: dict[str, Any]) -> dict[str, Any]:
    """The relying service (private_key_jwt, the JWKS given) and `people` people with a fresh password
    and authenticator app, registered as the admin and register_client do."""
    from allauth.account.models import EmailAddress

    from accounts.models import User
    from authenticators.models import AuthenticatorApp
    from authenticators.totp import codes
    from oidc import flows
    from oidc.forms import RelyingServiceForm
    from oidc.models import RelyingService, UsedAssertion

    RelyingService.objects.filter(pk=CAREID_CLIENT_ID).delete()  # its codes, tokens and grants go with it
    UsedAssertion.objects.filter(client_id=CAREID_CLIENT_ID).delete()
    form = RelyingServiceForm(data={
        "name": "Bench e-Referral Service", "auth_method": "private_key_jwt", "redirect_uris": REDIRECT_URI,
        "post_logout_redirect_uris": "", "backchannel_logout_uri": "", "jwks_uri": "",
        "jwks": json.dumps(spec["jwks"]), "allowed_scopes": CAREID_SCOPE.split(), "refresh_tokens": True,
    })
    form.instance.pk = CAREID_CLIENT_ID
    if not form.is_valid():
        raise SystemExit(f"could not register the bench relying service: {form.errors}")
    flows.save_relying_service(form, actor=None)

    people = []
    for index in range(spec["people"]):
        email, password, secret = f"bench.oidc.{index}@nhs.net", secrets.token_urlsafe(18), codes.new_secret()
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            user = User.objects.create_user(email, "Bench", f"Flow{index}", password=password)
        user.set_password(password)
        user.status = User.Status.ACTIVE
        user.locked_at = user.last_signin_failure_at = user.password_blocked_until = None
        user.password_failures = 0
        user.save()
        EmailAddress.objects.update_or_create(user=user, email=user.email, defaults={"primary": True, "verified": True})
        AuthenticatorApp.objects.update_or_create(user=user, defaults={
            "name": "Microsoft Authenticator", "key": secret, "confirmed": True, "last_t": -1,
        })
        people.append({"email": email, "password": password, "secret": secret})
    return {"client_id": CAREID_CLIENT_ID, "people": people}


def internal_stock_setup(spec: dict[str, Any]) -> dict[str, Any]:
    """The baseline clients (one secret hashed with each hasher) and `people` users, each signed in
    with Django's login: their session cookies."""
    from allauth.account.models import EmailAddress
    from allauth.idp.oidc.models import Client
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.test import Client as TestClient

    User = get_user_model()
    clients = {}
    Client.objects.filter(id__in=list(STOCK_CLIENTS)).delete()
    for client_id, hasher in STOCK_CLIENTS.items():
        secret = secrets.token_urlsafe(40)
        client = Client(id=client_id, name=f"Bench relying service ({hasher} secret)", type=Client.Type.CONFIDENTIAL,
                        skip_consent=True, secret=make_password(secret, hasher=hasher))
        client.set_redirect_uris([REDIRECT_URI])
        client.set_scopes(STOCK_SCOPE.split())
        client.set_default_scopes(["openid"])
        client.set_response_types(["code"])
        client.set_grant_types([Client.GrantType.AUTHORIZATION_CODE, Client.GrantType.REFRESH_TOKEN])
        client.save()
        clients[client_id] = secret

    sessions = []
    for index in range(spec["people"]):
        email = f"bench.oidc.{index}@nhs.net"
        user, _ = User.objects.update_or_create(username=f"bench-oidc-{index}", defaults={
            "email": email, "first_name": "Bench", "last_name": f"Flow{index}", "is_active": True})
        user.set_unusable_password()
        user.save()
        EmailAddress.objects.update_or_create(user=user, email=email, defaults={"primary": True, "verified": True})
        browser = TestClient()
        browser.force_login(user)  # django.contrib.auth.login: signing in is not what is measured
        sessions.append(browser.cookies[settings.SESSION_COOKIE_NAME].value)
    return {"clients": clients, "cookie": settings.SESSION_COOKIE_NAME, "sessions": sessions}


STATEMENT_KINDS = ("SELECT", "INSERT", "UPDATE", "DELETE")


def captured_statements(run: Callable[[], Any]) -> tuple[Any, list[str]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        result = run()
    return result, [query["sql"] for query in captured.captured_queries]


def count_flow_queries(browser, service, authorization: Authorization, client_id: str, scope: str,
                       endpoints: Endpoints, token_extra: Callable[[], dict[str, Any]]) -> dict[str, list[str]]:
    """One flow through the test clients: `browser` carries the person's session, `service` (no
    cookies) is the relying service's own back-end calling the token and userinfo endpoints."""
    response, authorize_sql = captured_statements(
        lambda: browser.get(endpoints.authorize, authorization.params(client_id, scope)))
    code = authorization.code_from(response.status_code, response.get("Location", ""), response.content)
    extra = token_extra()
    headers = {name: value for name, value in extra.items() if name.startswith("HTTP_")}
    form = {**authorization.token_form(code), **{n: v for n, v in extra.items() if not n.startswith("HTTP_")}}
    response, token_sql = captured_statements(lambda: service.post(endpoints.token, form, **headers))
    if response.status_code != 200:
        raise FlowError(f"token answered {response.status_code}: {response.content[:500]!r}")
    access_token = response.json()["access_token"]
    response, userinfo_sql = captured_statements(
        lambda: service.get(endpoints.userinfo, HTTP_AUTHORIZATION=f"Bearer {access_token}"))
    if response.status_code != 200:
        raise FlowError(f"userinfo answered {response.status_code}: {response.content[:500]!r}")
    return {"authorize": authorize_sql, "token": token_sql, "userinfo": userinfo_sql}


def repeated_flow_queries(flow: Callable[[], dict[str, list[str]]]) -> dict[str, list[str]]:
    """The third of three flows (the first ones warm per-process caches); refuses counts that change."""
    flows = [flow() for _ in range(3)]
    counts = [{step: len(sql) for step, sql in one.items()} for one in flows]
    if counts[1] != counts[2]:
        raise SystemExit(f"query counts differ between flows: {counts}")
    return flows[2]


def internal_careid_queries(spec: dict[str, Any]) -> dict[str, Any]:
    """A person signed in through the real pages (test client), then flows with a fresh assertion each."""
    import pyotp
    from cryptography.hazmat.primitives import serialization
    from django.conf import settings
    from django.test import Client as TestClient

    from authenticators.totp import codes
    from oidc.server import token_endpoint

    person = spec["person"]
    host = urlsplit(settings.CAREID_BASE_URL).hostname
    browser, service = TestClient(SERVER_NAME=host), TestClient(SERVER_NAME=host)
    response = browser.post("/login/authenticator-app/", {"email": person["email"], "password": person["password"]})
    if response.status_code != 302:
        raise SystemExit(f"password step answered {response.status_code}")
    response = browser.post("/login/authenticator-app/code/", {"token": pyotp.TOTP(codes.base32(person["secret"])).now()})
    if response.status_code != 302 or response["Location"].startswith("/login"):
        raise SystemExit(f"code step answered {response.status_code} {response.get('Location')}")
    key = serialization.load_pem_private_key(Path(spec["rp_key_file"]).read_bytes(), password=None)

    def assertion() -> dict[str, str]:
        return {"client_assertion_type": JWT_BEARER,
                "client_assertion": sign_assertion(key, CAREID_CLIENT_ID, token_endpoint())}

    return repeated_flow_queries(lambda: count_flow_queries(
        browser, service, Authorization(), CAREID_CLIENT_ID, CAREID_SCOPE, CAREID_ENDPOINTS, assertion))


def internal_stock_queries(spec: dict[str, Any]) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.test import Client as TestClient

    browser, service = TestClient(SERVER_NAME="127.0.0.1"), TestClient(SERVER_NAME="127.0.0.1")
    browser.force_login(get_user_model().objects.get(username=spec["username"]))
    header = {"HTTP_AUTHORIZATION": basic_auth(JUDGED_BASELINE, spec["secret"])}
    return repeated_flow_queries(lambda: count_flow_queries(
        browser, service, Authorization(), JUDGED_BASELINE, STOCK_SCOPE, STOCK_ENDPOINTS, lambda: header))


INTERNAL = {
    "careid-setup": internal_careid_setup,
    "stock-setup": internal_stock_setup,
    "careid-queries": internal_careid_queries,
    "stock-queries": internal_stock_queries,
}


def run_internal(mode: str, path: str) -> None:
    """In a Django process (the settings come from the environment): spec in `path`, answer in path.out
    (not stdout: careid's console e-mail backend and logging write there)."""
    import django

    django.setup()
    spec = json.loads(Path(path).read_text())
    Path(path + ".out").write_text(json.dumps(INTERNAL[mode](spec)))


def in_django(mode: str, environment: dict[str, str], spec: dict[str, Any], scratch: Path) -> dict[str, Any]:
    path = scratch / f"{mode}.json"
    path.write_text(json.dumps(spec))
    command = [sys.executable, str(Path(__file__).resolve()), "--internal", mode, "--internal-file", str(path)]
    if subprocess.run(command, cwd=PROJECT_DIR, env=environment).returncode != 0:
        raise SystemExit(f"{mode} failed (output above)")
    return json.loads(Path(str(path) + ".out").read_text())


def migrate(environment: dict[str, str]) -> None:
    command = [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"]
    if subprocess.run(command, cwd=PROJECT_DIR, env=environment).returncode != 0:
        raise SystemExit(f"manage.py migrate failed for {environment['DJANGO_SETTINGS_MODULE']} (output above)")


# --- the load -----------------------------------------------------------------------------------------


class AssertionPool:
    """careid's client assertions, signed before a round; a round that outruns the pool signs inline
    (counted, and reported: that signing then is timed)."""

    def __init__(self, private_key, client_id: str, token_endpoint: str) -> None:
        self.private_key, self.client_id, self.token_endpoint = private_key, client_id, token_endpoint
        self.pool: deque[str] = deque()
        self.signed_inline = 0
        self._lock = threading.Lock()

    def refill(self, count: int) -> None:
        self.pool = deque(sign_assertion(self.private_key, self.client_id, self.token_endpoint) for _ in range(count))

    def take(self) -> str:
        try:
            return self.pool.popleft()
        except IndexError:
            with self._lock:
                self.signed_inline += 1
            return sign_assertion(self.private_key, self.client_id, self.token_endpoint)


@dataclass
class Side:
    key: str
    base_url: str
    endpoints: Endpoints
    client_id: str
    scope: str
    issuer: str
    cookie_name: str
    sessions: list[str]  # one signed-in person per client thread
    secret: str | None = None  # client_secret_basic
    assertions: AssertionPool | None = None  # private_key_jwt

    @property
    def label(self) -> str:
        return LABELS[self.key]

    @property
    def port(self) -> int:
        return urlsplit(self.base_url).port or 80

    def token_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self.secret is not None:
            headers["Authorization"] = basic_auth(self.client_id, self.secret)
        return headers

    def client_authentication(self) -> dict[str, str]:
        if self.assertions is None:
            return {}
        return {"client_assertion_type": JWT_BEARER, "client_assertion": self.assertions.take()}


def request(port: int, method: str, path: str, headers: dict[str, str], body: str | None = None
            ) -> tuple[int, str, bytes]:
    """One request on a new connection (gunicorn's sync workers close every connection)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Location", ""), response.read()
    finally:
        connection.close()


def flow(side: Side, person: int) -> tuple[float, dict[str, Any], dict[str, Any], Authorization]:
    """One complete code flow; the token request's seconds, the token response, the userinfo answer."""
    authorization = Authorization()
    query = urlencode(authorization.params(side.client_id, side.scope))
    status, location, body = request(side.port, "GET", f"{side.endpoints.authorize}?{query}",
                                     {"Cookie": f"{side.cookie_name}={side.sessions[person]}"})
    code = authorization.code_from(status, location, body)
    form = urlencode({**authorization.token_form(code), **side.client_authentication()})
    headers = side.token_headers()
    started = time.perf_counter()
    status, _, body = request(side.port, "POST", side.endpoints.token, headers, form)
    token_seconds = time.perf_counter() - started
    if status != 200:
        raise FlowError(f"{side.label}: token answered {status}: {body[:500]!r}")
    tokens = json.loads(body)
    if not tokens.get("id_token") or not tokens.get("access_token"):
        raise FlowError(f"{side.label}: token response without an ID token or access token: {tokens}")
    status, _, body = request(side.port, "GET", side.endpoints.userinfo,
                              {"Authorization": f"Bearer {tokens['access_token']}"})
    if status != 200:
        raise FlowError(f"{side.label}: userinfo answered {status}: {body[:500]!r}")
    info = json.loads(body)
    if not info.get("sub"):
        raise FlowError(f"{side.label}: userinfo without sub: {info}")
    return token_seconds, tokens, info, authorization


def check_flow(side: Side) -> str:
    """One flow checked as a relying service would: the ID token's signature against the provider's
    JWKS, its issuer, audience and nonce, userinfo about the same subject. Measure only what works."""
    import jwt

    _, tokens, info, authorization = flow(side, 0)
    status, _, body = request(side.port, "GET", side.endpoints.jwks, {})
    if status != 200:
        raise SystemExit(f"{side.label}: JWKS answered {status}")
    header = jwt.get_unverified_header(tokens["id_token"])
    key = next((key for key in jwt.PyJWKSet.from_dict(json.loads(body)).keys if key.key_id == header.get("kid")), None)
    if key is None:
        raise SystemExit(f"{side.label}: the ID token's kid is not in the JWKS")
    claims = jwt.decode(tokens["id_token"], key.key, algorithms=["RS256"], audience=side.client_id, issuer=side.issuer)
    if claims.get("nonce") != authorization.nonce or claims["sub"] != info["sub"]:
        raise SystemExit(f"{side.label}: nonce or sub do not match: {claims} / {info}")
    released = sorted(set(info) - {"sub"})
    return f"{side.label}: ID token verified (sub {claims['sub']}), userinfo releases {', '.join(released)}"


@dataclass
class Round:
    flows: int
    seconds: float
    token_seconds: list[float]
    worker_cpu: float  # seconds of gunicorn worker CPU during the round
    db_cpu: float | None  # seconds of PostgreSQL backend CPU (this side's database) during the round
    signed_inline: int = 0  # client assertions signed inside the timed loop (the pool ran out)

    @property
    def rate(self) -> float:
        return self.flows / self.seconds

    @property
    def worker_ms_per_flow(self) -> float:
        return self.worker_cpu / self.flows * 1000

    @property
    def db_ms_per_flow(self) -> float | None:
        return None if self.db_cpu is None else self.db_cpu / self.flows * 1000


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    workers: list[int]
    database_url: str
    log_path: Path


def backend_pids(database_url: str) -> list[int]:
    name = conninfo_to_dict(database_url).get("dbname") or urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(make_conninfo(database_url, dbname="postgres"), autocommit=True) as connection:
        rows = connection.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)).fetchall()
    return [pid for (pid,) in rows]


def readable_cpu(pids: Sequence[int]) -> dict[int, float]:
    """CPU seconds of each process still alive (a backend may end between two readings)."""
    seen = {}
    for pid in pids:
        try:
            seen[pid] = cpu_seconds([pid])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return seen


def load(side: Side, server: Server, clients: int, duration: float) -> Round:
    """`clients` threads, one signed-in person each, running flows back to back for `duration` seconds."""
    deadline = time.monotonic() + duration
    counts = [0] * clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[BaseException] = []

    def client(index: int) -> None:
        try:
            while time.monotonic() < deadline and not failures:
                token_seconds, *_ = flow(side, index)
                latencies[index].append(token_seconds)
                counts[index] += 1
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    inline_before = side.assertions.signed_inline if side.assertions else 0
    database = backend_pids(server.database_url)
    db_before = readable_cpu(database)
    cpu_before = cpu_seconds(server.workers)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    worker_cpu = cpu_seconds(server.workers) - cpu_before
    db_after = readable_cpu(database)
    if failures:
        raise SystemExit(f"{side.label}: a flow failed: {failures[0]}\n{server.log_path.read_text()[-3000:]}")
    # Backends that lived through the whole round; new connections would mean CONN_MAX_AGE did not hold.
    db_cpu = sum(db_after[pid] - db_before[pid] for pid in db_after if pid in db_before) if db_before else None
    inline = (side.assertions.signed_inline if side.assertions else 0) - inline_before
    return Round(sum(counts), seconds, [value for values in latencies for value in values], worker_cpu, db_cpu, inline)


def sequential_latency(sides: Sequence[Side], flows_per_side: int, block: int = 10) -> dict[str, list[float]]:
    """The token endpoint one request at a time (no queueing), sides alternating in blocks."""
    results: dict[str, list[float]] = {side.key: [] for side in sides}
    done = 0
    while done < flows_per_side:
        step = min(block, flows_per_side - done)
        for side in sides:
            if side.assertions is not None:
                side.assertions.refill(step)
            for _ in range(step):
                results[side.key].append(flow(side, 0)[0])
        done += step
    return results


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# --- careid's people sign in through the real pages ---------------------------------------------------


def sign_in_careid(base_url: str, person: dict[str, str], cookie_suffix: str) -> str:
    """E-mail and password, then the authenticator app's code, over HTTP; the session cookie."""
    import pyotp

    from bench.admin_lists import Browser, csrf_token

    browser = Browser(base_url)
    password_page = "/login/authenticator-app/"
    page = browser.page(password_page, {"csrfmiddlewaretoken": csrf_token(browser, password_page),
                                        "email": person["email"], "password": person["password"]})
    if page.status != 302:
        raise SystemExit(f"{person['email']}: the password step answered {page.status}:\n{page.text[:2000]}")
    code_page = page.location
    secret = base64.b32encode(bytes.fromhex(person["secret"])).decode().rstrip("=")
    page = browser.page(code_page, {"csrfmiddlewaretoken": csrf_token(browser, code_page),
                                    "token": pyotp.TOTP(secret).now()})
    if page.status != 302 or page.location.startswith("/login"):
        raise SystemExit(f"{person['email']}: the code step answered {page.status} {page.location}")
    session = browser.cookie(cookie_suffix)
    if not session:
        raise SystemExit(f"{person['email']}: signed in, but no session cookie")
    return session


# --- main -------------------------------------------------------------------------------------------------


def new_rsa_key(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return key


def public_jwks(key) -> dict[str, Any]:
    import jwt

    return {"keys": [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": RP_KID, "use": "sig"}]}


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8, help="rounds, each loading every side once (default 8)")
    parser.add_argument("--duration", type=float, default=5, help="seconds of load per side per round (default 5)")
    parser.add_argument("--clients", type=int, default=4,
                        help="concurrent client threads, one signed-in person each (default 4)")
    parser.add_argument("--latency-flows", type=int, default=100,
                        help="flows one at a time per side for the token endpoint's latency (default 100)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL),
                        help="careid's bench database (default $DATABASE_URL or careid_bench); the baseline "
                             f"uses {STOCK_DATABASE_NAME} on the same server")
    parser.add_argument("--show-sql", action="store_true", help="print every statement of each step")
    parser.add_argument("--internal", choices=sorted(INTERNAL), help=argparse.SUPPRESS)
    parser.add_argument("--internal-file", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.rounds < 1 or arguments.duration <= 0 or arguments.clients < 1 or arguments.latency_flows < 1:
        parser.error("--rounds, --duration, --clients and --latency-flows must be positive")
    return arguments


def environments(arguments: argparse.Namespace, careid_port: int, stock_port: int, scratch: Path
                 ) -> tuple[dict[str, str], dict[str, str]]:
    database_name = conninfo_to_dict(arguments.database_url).get("dbname") or ""
    if "bench" not in database_name:
        raise SystemExit(f"refusing to use {database_name!r}: the bench database's name must contain 'bench'")
    base = {**os.environ, "SECRET_KEY": SECRET_KEY, "DEBUG": "false", "ALLOWED_HOSTS": "127.0.0.1",
            "CACHE_URL": os.environ.get("CACHE_URL", DEFAULT_CACHE_URL)}
    careid = {
        **base, "DJANGO_SETTINGS_MODULE": "careid.settings", "DATABASE_URL": arguments.database_url,
        "CAREID_AUDIT_CHAIN_KEY": "bench-only-audit-chain-key-not-used-anywhere-else",
        "CAREID_SSL_REDIRECT": "false", "CAREID_CONN_MAX_AGE": str(CONN_MAX_AGE),
        "CAREID_BASE_URL": f"http://127.0.0.1:{careid_port}",
        "CAREID_OIDC_PRIVATE_KEY_FILES": str(scratch / "careid-signing.pem"),
    }
    stock = {
        **base, "DJANGO_SETTINGS_MODULE": "bench.stock_oidc_settings",
        "DATABASE_URL": urlsplit(arguments.database_url)._replace(path=f"/{STOCK_DATABASE_NAME}").geturl(),
        "BENCH_STOCK_OIDC_KEY_FILE": str(scratch / "stock-signing.pem"),
    }
    return careid, stock


def start(stack, environment: dict[str, str], port: int, scratch: Path, name: str, check_path: str) -> Server:
    log_path = scratch / f"{name}-gunicorn.log"
    # careid.wsgi only calls get_wsgi_application(): DJANGO_SETTINGS_MODULE picks the project.
    process = stack.enter_context(gunicorn(environment, port, log_path))
    wait_until_serving(process, f"http://127.0.0.1:{port}{check_path}", log_path)
    return Server(process, wait_for_workers(process.pid), environment["DATABASE_URL"], log_path)


def print_queries(queries: dict[str, dict[str, list[str]]], show_sql: bool) -> None:
    print("\nqueries per step (in-process, Django test client, CaptureQueriesContext; the third flow of three):")
    print(f"{'step':<10} {'careid':>30} {'stock':>30}")
    for step in ("authorize", "token", "userinfo"):
        cells = []
        for side in (CAREID, "stock"):
            kinds = [sql.split(None, 1)[0].upper() for sql in queries[side][step]]
            counted = [kind for kind in kinds if kind in STATEMENT_KINDS]
            detail = " ".join(f"{counted.count(kind)} {kind}" for kind in STATEMENT_KINDS if kind in counted)
            cells.append(f"{len(counted)}: {detail} (+{len(kinds) - len(counted)} tx)")
        print(f"{step:<10} {cells[0]:>30} {cells[1]:>30}")
    print("  tx = BEGIN, COMMIT and savepoint statements. Not captured on either side: the health check "
          "(SELECT 1) on a reused connection, once per request.")
    if show_sql:
        for side in (CAREID, "stock"):
            for step, statements in queries[side].items():
                print(f"\n--- {side} {step}")
                for sql in statements:
                    print("  " + (sql if len(sql) <= 200 else sql[:197] + "..."))


def main() -> None:
    arguments = parse_arguments()
    if arguments.internal:
        run_internal(arguments.internal, arguments.internal_file)
        return
    from contextlib import ExitStack

    careid_port, stock_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="careid-bench-oidc-") as scratch_name, ExitStack() as stack:
        scratch = Path(scratch_name)
        careid_env, stock_env = environments(arguments, careid_port, stock_port, scratch)
        new_rsa_key(scratch / "careid-signing.pem")  # the providers' signing keys: RSA 2048 both
        new_rsa_key(scratch / "stock-signing.pem")
        rp_key = new_rsa_key(scratch / "rp.pem")  # careid's relying service's own key (private_key_jwt)
        for environment in (careid_env, stock_env):
            ensure_database(environment["DATABASE_URL"])
            migrate(environment)
        people = arguments.clients + 1  # the last one is for the in-process query count
        careid_setup = in_django("careid-setup", careid_env, {"people": people, "jwks": public_jwks(rp_key)}, scratch)
        stock_setup = in_django("stock-setup", stock_env, {"people": people}, scratch)

        load_before = os.getloadavg()[0]
        careid_server = start(stack, careid_env, careid_port, scratch, "careid", "/.well-known/openid-configuration")
        stock_server = start(stack, stock_env, stock_port, scratch, "stock", "/.well-known/openid-configuration")
        careid_url, stock_url = careid_env["CAREID_BASE_URL"], f"http://127.0.0.1:{stock_port}"
        sessions = [sign_in_careid(careid_url, person, "careid-session")
                    for person in careid_setup["people"][: arguments.clients]]
        print(f"{len(sessions)} people signed in to careid through /login/authenticator-app/ (password, then code)")
        sides = {
            CAREID: Side(CAREID, careid_url, CAREID_ENDPOINTS, CAREID_CLIENT_ID, CAREID_SCOPE, careid_url,
                         "__Host-careid-session", sessions,
                         assertions=AssertionPool(rp_key, CAREID_CLIENT_ID, careid_url + CAREID_ENDPOINTS.token)),
            **{key: Side(key, stock_url, STOCK_ENDPOINTS, key, STOCK_SCOPE, stock_url, stock_setup["cookie"],
                         stock_setup["sessions"][: arguments.clients], secret=stock_setup["clients"][key])
               for key in (STOCK_MD5, STOCK_ARGON2)},
        }
        servers = {CAREID: careid_server, STOCK_MD5: stock_server, STOCK_ARGON2: stock_server}
        for side in sides.values():
            print(check_flow(side))

        # Warm-up: every worker imports, compiles and connects before anything is timed.
        sides[CAREID].assertions.refill(400)
        for side in sides.values():
            load(side, servers[side.key], arguments.clients, 2)

        print(f"\ntoken endpoint one request at a time: {arguments.latency_flows} flows per side")
        sequential = sequential_latency(list(sides.values()), arguments.latency_flows)

        print(f"{arguments.rounds} rounds of {arguments.duration:g} s per side, {arguments.clients} client threads; "
              f"gunicorn {WORKERS} sync workers per project, CONN_MAX_AGE={CONN_MAX_AGE}")
        runs: dict[str, list[Round]] = {key: [] for key in sides}
        expected_rate = 50.0
        for number in range(1, arguments.rounds + 1):
            # The judged pair back to back, taking turns at going first; the Argon2 client after them.
            order = [CAREID, STOCK_MD5] if number % 2 else [STOCK_MD5, CAREID]
            for key in [*order, STOCK_ARGON2]:
                side = sides[key]
                if side.assertions is not None:
                    side.assertions.refill(int(expected_rate * arguments.duration * 2) + 100)
                runs[key].append(load(side, servers[key], arguments.clients, arguments.duration))
                if key == CAREID:
                    expected_rate = max(expected_rate, runs[key][-1].rate)
            line = "   ".join(f"{LABELS[key]} {runs[key][-1].rate:6.1f}/s ({runs[key][-1].worker_ms_per_flow:5.1f} ms CPU)"
                              for key in sides)
            print(f"round {number}: {line}   ratio {runs[CAREID][-1].rate / runs[JUDGED_BASELINE][-1].rate:.2f}")
        for server in (careid_server, stock_server):
            if server.process.poll() is not None or worker_pids(server.process.pid) != server.workers:
                raise SystemExit(f"a gunicorn worker died during the run:\n{server.log_path.read_text()[-3000:]}")
        load_after = os.getloadavg()[0]
        inline = sum(r.signed_inline for r in runs[CAREID])

        stack.close()  # the servers stop; the query count runs in-process
        queries = {
            CAREID: in_django("careid-queries", careid_env,
                              {"person": careid_setup["people"][-1], "rp_key_file": str(scratch / "rp.pem")}, scratch),
            "stock": in_django("stock-queries", stock_env,
                               {"username": f"bench-oidc-{people - 1}", "secret": stock_setup["clients"][STOCK_MD5]},
                               scratch),
        }

    report(arguments, sides, runs, sequential, queries, load_before, load_after, inline)


def report(arguments, sides, runs, sequential, queries, load_before, load_after, inline) -> None:
    print(f"\n{'':<24} {'flows/s':>8} {'worker CPU/flow':>16} {'DB CPU/flow':>12} "
          f"{'token p50/p95 one at a time':>28} {'token p50/p95 under load':>26}")
    for key in sides:
        rounds = runs[key]
        db = [r.db_ms_per_flow for r in rounds if r.db_ms_per_flow is not None]
        loaded = [value for r in rounds for value in r.token_seconds]
        alone = sequential[key]
        print(f"{LABELS[key]:<24} {statistics.median(r.rate for r in rounds):8.1f} "
              f"{statistics.median(r.worker_ms_per_flow for r in rounds):13.1f} ms "
              f"{(statistics.median(db) if db else float('nan')):9.1f} ms "
              f"{statistics.median(alone) * 1000:15.1f} / {percentile(alone, 0.95) * 1000:6.1f} ms "
              f"{statistics.median(loaded) * 1000:13.1f} / {percentile(loaded, 0.95) * 1000:6.1f} ms")
    for baseline in (JUDGED_BASELINE, STOCK_ARGON2):
        ratios = [c.rate / b.rate for c, b in zip(runs[CAREID], runs[baseline], strict=True)]
        cpu = statistics.median(r.worker_ms_per_flow for r in runs[baseline]) / statistics.median(
            r.worker_ms_per_flow for r in runs[CAREID])
        verdict = ""
        if baseline == JUDGED_BASELINE:
            verdict = f"; {'meets' if statistics.median(ratios) >= TARGET_RATIO else 'BELOW'} the {TARGET_RATIO} target"
        print(f"ratio careid / {LABELS[baseline]}: {statistics.median(ratios):.2f} (median of per-round ratios "
              f"{', '.join(f'{r:.2f}' for r in ratios)}{verdict}); from worker CPU per flow: {cpu:.2f}")
        if baseline == JUDGED_BASELINE and max(ratios) - min(ratios) > NOISY_SPREAD:
            print(f"  warning: per-round ratios range {min(ratios):.2f}-{max(ratios):.2f}: other load on the machine?")
    if inline:
        print(f"warning: {inline} client assertions were signed inside the timed loop (the pool ran out)")
    print(f"configuration: gunicorn {WORKERS} sync workers per project, {arguments.clients} client threads, "
          f"CONN_MAX_AGE={CONN_MAX_AGE} with health checks, sessions in PostgreSQL only, {os.cpu_count()} CPUs; "
          f"load average (1 min) before/after: {load_before:.2f} / {load_after:.2f}")
    print_queries(queries, arguments.show_sql)


if __name__ == "__main__":
    main()
