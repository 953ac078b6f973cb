"""WebAuthn assertion verification per second: careid's sign-in with a security key against py_webauthn alone.

Baseline: py_webauthn's verify_authentication_response on a security key's assertion (client data,
authenticator data, ECDSA P-256 signature), with nothing else around it: the least any service that
accepts the assertion must do. Against it, in the same process and run, one after the other:
1. careid's check of an assertion without the web: flows.finish_signin as the sign-in page's POST calls
   it, with a request from Django's RequestFactory and a real session from settings.SESSION_ENGINE's
   store (PostgreSQL only): the challenge popped and claimed in PostgreSQL, the attempt held and
   released, the credential looked up, the signature checked, the sign count updated, the session
   rotated, the audit event written.
2. For comparison, the Authenticator app's code step the same way (totp.flows.finish_signin: the
   6-digit code checked and accepted once, then the same completion of the sign-in).
3. The sign-in page's POST through Django's whole stack (test client: middleware, CSRF-exempt client,
   the session in PostgreSQL, the redirect).
Prints per second, p50/p95 and CPU per assertion of each, and each one's rate over the baseline's
(its share of the time goes to the signature check; the rest is careid's).
The assertions are made by tests/soft_authenticator.py (real keys) before each timed step, so signing is
never timed. A new browser (client) signs in each time: its e-mail and the ceremony page are not timed.

Run from the project root:  .venv/bin/python bench/webauthn_assertions.py [--count N]
It creates and migrates $DATABASE_URL (default careid_bench_webauthn); Redis (the throttle's per-IP
counters) from $CACHE_URL.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))  # run as bench/webauthn_assertions.py: the project's packages

from bench.signin_page import ensure_database, migrate  # noqa: E402

ORIGIN = "https://careid.bench.example"
SETTINGS = {
    "DJANGO_SETTINGS_MODULE": "careid.settings",
    "SECRET_KEY": "bench-only-secret-key-not-used-anywhere-else",
    "CAREID_AUDIT_CHAIN_KEY": "bench-only-audit-chain-key-not-used-anywhere-else",
    "DEBUG": "false",
    "ALLOWED_HOSTS": "testserver",
    "CAREID_SSL_REDIRECT": "false",
    "CAREID_WEBAUTHN_RP_ID": "careid.bench.example",
    "CAREID_WEBAUTHN_ORIGINS": ORIGIN,
    "CAREID_LOG_LEVEL": "ERROR",
}
DEFAULTS = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/careid_bench_webauthn",
            "CACHE_URL": "redis://127.0.0.1:6379/15"}


def report(name: str, seconds: list[float], cpu: float, baseline: float | None = None) -> float:
    """Print one measurement (and its rate over the baseline's); returns its rate per second."""
    count = len(seconds)
    rate = count / sum(seconds)
    p50, p95 = statistics.median(seconds) * 1000, sorted(seconds)[int(count * 0.95) - 1] * 1000
    print(f"{name}: {rate:8.1f} per second (one thread), p50 {p50:.2f} ms, p95 {p95:.2f} ms, "
          f"{cpu / count * 1e6:,.0f} us of this process's CPU each"
          + (f"; ratio to the baseline {rate / baseline:.3f}" if baseline else " (the baseline)"))
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="assertions per measurement (default 2000)")
    arguments = parser.parse_args()

    environment = {**DEFAULTS, **os.environ, **SETTINGS}
    ensure_database(environment["DATABASE_URL"])
    migrate(environment)
    os.environ.update(environment)
    import django

    django.setup()

    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth.models import AnonymousUser
    from django.test import Client, RequestFactory
    from webauthn import verify_authentication_response
    from webauthn.helpers import bytes_to_base64url

    from accounts.models import User
    from authenticators.models import SecurityKey
    from authenticators.webauthn import ceremony, flows
    from authenticators.webauthn.kinds import SECURITY_KEY
    from tests.soft_authenticator import SoftAuthenticator, options_from_page

    # A person with a security key, registered as the ceremony registers one.
    email = f"bench.{time.time_ns()}@nhs.net"
    user = User.objects.create_user(email, first_name="Bench", last_name="Person")
    key = SoftAuthenticator(origin=ORIGIN)
    challenge = os.urandom(32)
    answer = key.create({"rp": {"id": ceremony.rp_id()}, "user": {"id": bytes_to_base64url(os.urandom(32))},
                         "challenge": bytes_to_base64url(challenge)})
    new = ceremony.verify_registration(SECURITY_KEY, ceremony.parse_registration(json.dumps(answer)), challenge=challenge)
    credential = SecurityKey.objects.create(
        user=user, name="Security key", confirmed=True, credential_id=new.credential_id, public_key=new.public_key,
        sign_count=new.sign_count, transports=new.transports, aaguid=new.aaguid, attachment=new.attachment,
        user_handle=os.urandom(32))
    print(f"{arguments.count} assertions per measurement; load average (1 min) {os.getloadavg()[0]:.2f}")

    SessionStore = import_module(settings.SESSION_ENGINE).SessionStore  # noqa: N806 - a class

    # Baseline: py_webauthn alone.
    options = {"challenge": bytes_to_base64url(challenge), "rpId": ceremony.rp_id()}
    answers = [key.get(options) for _ in range(arguments.count)]
    seconds, cpu = [], time.process_time()
    for answer in answers:
        started = time.perf_counter()
        verify_authentication_response(credential=answer, expected_challenge=challenge, expected_rp_id=ceremony.rp_id(),
                                       expected_origin=[ORIGIN], credential_public_key=new.public_key,
                                       credential_current_sign_count=0, require_user_verification=True)
        seconds.append(time.perf_counter() - started)
    baseline = report("py_webauthn verify_authentication_response", seconds, time.process_time() - cpu)

    # 1. careid's flow, without the web.
    factory = RequestFactory()
    seconds, cpu_total = [], 0.0
    for _ in range(arguments.count):
        request = factory.post("/login/security-key/verify/", REMOTE_ADDR="127.0.0.1")
        request.session = SessionStore()
        request.user = AnonymousUser()
        options = flows.signin_options(request, SECURITY_KEY, email)
        answer = json.dumps(key.get(options))
        cpu, started = time.process_time(), time.perf_counter()
        message = flows.finish_signin(request, SECURITY_KEY, email=email, response=answer)
        seconds.append(time.perf_counter() - started)
        cpu_total += time.process_time() - cpu
        if message is not None:
            raise SystemExit(f"the assertion was refused: {message}")
    report("careid flows.finish_signin (no web)", seconds, cpu_total, baseline)

    # 2. The Authenticator app's code step, for comparison (the same person, a TOTP secret of their own).
    from authenticators.models import AuthenticatorApp
    from authenticators.totp import codes
    from authenticators.totp import flows as totp_flows
    from tests.conftest import totp_code

    secret = codes.new_secret()
    app = AuthenticatorApp.objects.create(user=user, name="Microsoft Authenticator", key=secret, confirmed=True)
    seconds, cpu_total = [], 0.0
    for _ in range(arguments.count):
        request = factory.post("/login/authenticator-app/code/", REMOTE_ADDR="127.0.0.1")
        request.session = SessionStore()
        request.user = AnonymousUser()
        AuthenticatorApp.objects.filter(pk=app.pk).update(last_t=-1)  # each step's code is accepted once
        token = totp_code(secret)
        cpu, started = time.process_time(), time.perf_counter()
        message = totp_flows.finish_signin(request, user, token)
        seconds.append(time.perf_counter() - started)
        cpu_total += time.process_time() - cpu
        if message is not None:
            raise SystemExit(f"the code was refused: {message}")
    report("careid totp.flows.finish_signin (no web), for comparison", seconds, cpu_total, baseline)
    app.delete()

    # 3. The sign-in page's POST through Django's whole stack.
    seconds, cpu_total = [], 0.0
    for _ in range(arguments.count):
        client = Client()
        client.post("/login/security-key/", {"email": email})
        options = options_from_page(client.get("/login/security-key/verify/").content.decode())
        data = {"credential": json.dumps(key.get(options)), "client_error": ""}
        cpu, started = time.process_time(), time.perf_counter()
        response = client.post("/login/security-key/verify/", data)
        seconds.append(time.perf_counter() - started)
        cpu_total += time.process_time() - cpu
        if response.status_code != 302:
            raise SystemExit(f"the sign-in POST answered {response.status_code}")
    report("careid sign-in POST (Django test client)", seconds, cpu_total, baseline)
    credential.refresh_from_db()
    print(f"sign count now {credential.sign_count}; load average (1 min) {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
