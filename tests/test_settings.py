"""Production settings come from the environment, with safe defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def settings_with(env: dict[str, str]) -> dict:
    code = (
        "import json, django; from django.conf import settings as s; django.setup(); print(json.dumps({"
        "'debug': s.DEBUG, 'hashers': s.PASSWORD_HASHERS, 'conn_max_age': s.DATABASES['default']['CONN_MAX_AGE'],"
        "'engine': s.DATABASES['default']['ENGINE'], 'session_secure': s.SESSION_COOKIE_SECURE,"
        "'csrf_secure': s.CSRF_COOKIE_SECURE, 'session_name': s.SESSION_COOKIE_NAME, 'hsts': s.SECURE_HSTS_SECONDS,"
        "'eager': s.CELERY_TASK_ALWAYS_EAGER, 'email': s.EMAIL_BACKEND, 'hosts': s.ALLOWED_HOSTS,"
        "'cache': s.CACHES['default']['BACKEND'], 'xfo': s.X_FRAME_OPTIONS, 'referrer': s.SECURE_REFERRER_POLICY}))"
    )
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "EMAIL_URL", "DEBUG", "SECRET_KEY", "CAREID_AUDIT_CHAIN_KEY", "CAREID_SSL_REDIRECT"}}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
        env={**clean, "DJANGO_SETTINGS_MODULE": "careid.settings", **env},
    )
    if result.returncode:
        return {"error": result.stderr}
    return json.loads(result.stdout)


def test_without_a_secret_key_and_debug_off_it_refuses_to_start():
    assert "Set SECRET_KEY" in settings_with({})["error"]


def test_without_an_audit_chain_key_and_debug_off_it_refuses_to_start():
    assert "Set CAREID_AUDIT_CHAIN_KEY" in settings_with({"SECRET_KEY": "k"})["error"]
    assert settings_with({"DEBUG": "true"})["debug"] is True  # make run


def test_defaults_are_safe_and_self_contained():
    s = settings_with({"SECRET_KEY": "k", "CAREID_AUDIT_CHAIN_KEY": "c"})
    assert s["debug"] is False
    assert s["hashers"][0] == "accounts.hashers.CareIdArgon2PasswordHasher"
    assert s["conn_max_age"] == 60
    assert s["engine"] == "django.db.backends.sqlite3"
    assert s["eager"] is True and s["email"] == "django.core.mail.backends.console.EmailBackend"
    assert s["session_secure"] and s["csrf_secure"] and s["session_name"].startswith("__Host-")
    assert s["hsts"] >= 31536000 and s["xfo"] == "DENY" and s["referrer"] == "same-origin"
    assert s["hosts"] == ["127.0.0.1", "localhost"]


def test_real_components_come_from_the_environment():
    s = settings_with({
        "SECRET_KEY": "k", "CAREID_AUDIT_CHAIN_KEY": "c", "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/careid",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/1", "CACHE_URL": "redis://127.0.0.1:6379/2",
        "EMAIL_URL": "smtp://127.0.0.1:2525", "ALLOWED_HOSTS": "careid.example.nhs.uk",
    })
    assert s["engine"] == "django.db.backends.postgresql"
    assert s["eager"] is False and "Redis" in s["cache"]
    assert s["email"] == "accounts.mail.SMTPBackend"  # Django's, waiting longer for the reply to a message
    assert s["hosts"] == ["careid.example.nhs.uk"]


def test_passwords_are_hashed_with_argon2(db):
    from accounts.models import User

    user = User.objects.create_user("a@nhs.net", "A", "B", password="a long pass phrase")
    assert user.password.startswith("argon2$argon2id$")


# The policy careid enforces, directive by directive (django-csp may write them in any order).
POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'", "https://assets.nhs.uk"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "frame-ancestors": ["'none'"],
}


def parsed(policy: str) -> dict[str, list[str]]:
    return {name: values for name, *values in (part.split() for part in policy.split(";") if part.strip())}


def test_pages_carry_the_security_headers(client, db):
    response = client.get("/login/")
    assert parsed(response.headers["Content-Security-Policy"]) == POLICY
    assert "Content-Security-Policy-Report-Only" not in response.headers  # none unless asked for
    assert response.headers["Permissions-Policy"] == "camera=(), microphone=(), geolocation=()"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_static_files_carry_the_policy_too(client, db):
    response = client.get("/static/nhsuk/nhsuk-frontend.min.css")
    assert response.status_code == 200
    assert parsed(response.headers["Content-Security-Policy"]) == POLICY
    assert response.headers["Permissions-Policy"] == "camera=(), microphone=(), geolocation=()"


def headers_with(env: dict[str, str]) -> dict:
    """The headers of /login/ from a process started with `env` (settings are read once, at start)."""
    code = (
        "import json, django; django.setup(); from django.test.utils import setup_test_environment;"
        "setup_test_environment(); from django.test import Client;"
        "print(json.dumps(dict(Client().get('/login/').headers)))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAREID_CSP_")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
        env={**clean, "DJANGO_SETTINGS_MODULE": "careid.settings", "SECRET_KEY": "k",
                                 "CAREID_AUDIT_CHAIN_KEY": "c", **env},
    )
    if result.returncode:
        return {"error": result.stderr}
    return json.loads(result.stdout)


def test_a_report_uri_and_a_report_only_policy_come_from_the_environment():
    headers = headers_with({
        "CAREID_CSP_REPORT_URI": "https://csp-reports.example.nhs.uk/careid",
        "CAREID_CSP_REPORT_ONLY": "script-src 'self'; style-src 'none' ; require-trusted-types-for 'script'; "
                                  "upgrade-insecure-requests",
    })
    # The enforced policy is unchanged, and now says where to report what it blocks.
    assert parsed(headers["Content-Security-Policy"]) == {**POLICY, "report-uri": ["https://csp-reports.example.nhs.uk/careid"]}
    # The report-only policy is exactly what was written (no default-src added), reporting to the same place.
    assert parsed(headers["Content-Security-Policy-Report-Only"]) == {
        "script-src": ["'self'"], "style-src": ["'none'"], "require-trusted-types-for": ["'script'"],
        "upgrade-insecure-requests": [], "report-uri": ["https://csp-reports.example.nhs.uk/careid"],
    }


def test_a_report_uri_alone_adds_no_report_only_policy():
    headers = headers_with({"CAREID_CSP_REPORT_URI": "/csp-report/"})
    assert parsed(headers["Content-Security-Policy"]) == {**POLICY, "report-uri": ["/csp-report/"]}
    assert "Content-Security-Policy-Report-Only" not in headers


def test_a_misspelt_report_only_directive_refuses_to_start():
    headers = headers_with({"CAREID_CSP_REPORT_ONLY": "default-src 'self'; scirpt-src 'self'"})
    assert "CAREID_CSP_REPORT_ONLY: unknown directive 'scirpt-src'" in headers["error"]


def test_the_nhsuk_frontend_is_served(client, db):
    response = client.get("/static/nhsuk/nhsuk-frontend.min.css")
    assert response.status_code == 200
    page = client.get("/login/").content.decode()
    for text in ["NHS Care Identity", "Skip to main content", "Terms and Conditions", "Cookies", "Accessibility statement"]:
        assert text in page


def webauthn_settings_with(env: dict[str, str]) -> dict:
    code = ("import json, django; django.setup(); from authenticators.webauthn import ceremony as c; "
            "from django.conf import settings as s; print(json.dumps({'rp_id': c.rp_id(), 'origins': c.origins(), "
            "'timeout': c.timeout_ms(), 'aaguids': s.CAREID_WEBAUTHN_ALLOWED_AAGUIDS, 'beta': s.CAREID_PASSKEY_BETA}))")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CAREID_", "DATABASE_URL", "CACHE_URL"))}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={**clean, "DJANGO_SETTINGS_MODULE": "careid.settings", "SECRET_KEY": "k",
                                 "CAREID_AUDIT_CHAIN_KEY": "c", **env})
    return {"error": result.stderr} if result.returncode else json.loads(result.stdout)


def test_webauthn_settings_default_to_the_base_url_and_come_from_the_environment(tmp_path):
    s = webauthn_settings_with({"CAREID_BASE_URL": "https://careid.example.nhs.uk"})
    assert s == {"rp_id": "careid.example.nhs.uk", "origins": ["https://careid.example.nhs.uk"], "timeout": 180_000,
                 "aaguids": [], "beta": False}
    roots = tmp_path / "roots.pem"
    roots.write_text("")
    s = webauthn_settings_with({
        "CAREID_WEBAUTHN_RP_ID": "nhs.example", "CAREID_WEBAUTHN_ORIGINS": "https://a.nhs.example,https://b.nhs.example/",
        "CAREID_WEBAUTHN_TIMEOUT": "5", "CAREID_WEBAUTHN_ALLOWED_AAGUIDS": "2FC0579F-8113-47EA-B116-BB5A8DB9202A",
        "CAREID_WEBAUTHN_ATTESTATION_ROOTS": str(roots), "CAREID_PASSKEY_BETA": "true",
    })
    assert s == {"rp_id": "nhs.example", "origins": ["https://a.nhs.example", "https://b.nhs.example"], "timeout": 5000,
                 "aaguids": ["2fc0579f-8113-47ea-b116-bb5a8db9202a"], "beta": True}


def test_an_aaguid_allow_list_without_attestation_roots_refuses_to_start():
    s = webauthn_settings_with({"CAREID_WEBAUTHN_ALLOWED_AAGUIDS": "2fc0579f-8113-47ea-b116-bb5a8db9202a"})
    assert "CAREID_WEBAUTHN_ALLOWED_AAGUIDS needs CAREID_WEBAUTHN_ATTESTATION_ROOTS" in s["error"]


def test_a_webauthn_timeout_longer_than_a_challenge_lives_refuses_to_start():
    assert webauthn_settings_with({"CAREID_WEBAUTHN_TIMEOUT": "300"})["timeout"] == 300_000
    for seconds in ("301", "3600", "0"):
        error = webauthn_settings_with({"CAREID_WEBAUTHN_TIMEOUT": seconds})["error"]
        assert "ImproperlyConfigured: CAREID_WEBAUTHN_TIMEOUT" in error and "between 1 and 300 seconds" in error


def test_a_back_channel_time_limit_that_outlasts_its_claim_refuses_to_start():
    """Cut off at the hard limit (5 s after the soft one) only after the 60 s claim ran out, a slow delivery
    would be handed to a second worker by the sweep and POSTed twice."""
    base = {"SECRET_KEY": "k", "CAREID_AUDIT_CHAIN_KEY": "c"}
    assert "error" not in settings_with({**base, "CAREID_BACKCHANNEL_TIME_LIMIT": "54"})
    for seconds in ("55", "300", "0"):
        error = settings_with({**base, "CAREID_BACKCHANNEL_TIME_LIMIT": seconds})["error"]
        assert f"ImproperlyConfigured: CAREID_BACKCHANNEL_TIME_LIMIT={seconds}: give at least 1 and at most 54" in error


def test_an_email_time_limit_that_outlasts_its_claim_refuses_to_start():
    base = {"SECRET_KEY": "k", "CAREID_AUDIT_CHAIN_KEY": "c"}
    assert "error" not in settings_with({**base, "CAREID_EMAIL_TIME_LIMIT": "294"})
    error = settings_with({**base, "CAREID_EMAIL_TIME_LIMIT": "295"})["error"]
    assert "ImproperlyConfigured: CAREID_EMAIL_TIME_LIMIT=295: give at least 1 and at most 294" in error
    assert "error" not in settings_with({**base, "CAREID_EMAIL_CLAIM": "600", "CAREID_EMAIL_TIME_LIMIT": "590"})


def test_an_email_data_timeout_the_time_limit_would_cut_off_refuses_to_start():
    base = {"SECRET_KEY": "k", "CAREID_AUDIT_CHAIN_KEY": "c"}
    assert "error" not in settings_with({**base, "CAREID_EMAIL_DATA_TIMEOUT": "120"})
    for seconds in ("121", "0"):
        error = settings_with({**base, "CAREID_EMAIL_DATA_TIMEOUT": seconds})["error"]
        assert f"ImproperlyConfigured: CAREID_EMAIL_DATA_TIMEOUT={seconds}: give at least 1 and at most " \
               "CAREID_EMAIL_TIME_LIMIT (120 s)" in error
    assert "error" not in settings_with({**base, "CAREID_EMAIL_CLAIM": "900", "CAREID_EMAIL_TIME_LIMIT": "720",
                                         "CAREID_EMAIL_DATA_TIMEOUT": "600"})  # RFC 5321's 10 minutes


def test_a_verification_link_lifetime_under_a_day_refuses_to_start():
    base = {"SECRET_KEY": "k", "CAREID_AUDIT_CHAIN_KEY": "c"}
    assert "error" not in settings_with({**base, "CAREID_EMAIL_CONFIRMATION_EXPIRE_DAYS": "1"})
    for days in ("0", "-1"):
        error = settings_with({**base, "CAREID_EMAIL_CONFIRMATION_EXPIRE_DAYS": days})["error"]
        assert f"ImproperlyConfigured: CAREID_EMAIL_CONFIRMATION_EXPIRE_DAYS={days}: give at least 1" in error


def test_the_deploy_checks_refuse_a_provider_without_signing_keys_or_a_public_address(settings):
    """Without CAREID_OIDC_PRIVATE_KEY_FILES the provider started with an empty JWKS, and without CAREID_BASE_URL
    with http://127.0.0.1:8000 as its issuer and its links' base: both only showed at the first sign-in."""
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.IDP_OIDC_PRIVATE_KEYS = []
    settings.CAREID_BASE_URL = "http://127.0.0.1:8000"
    with pytest.raises(SystemCheckError) as refused:
        call_command("check", deploy=True, tags=["security"])
    assert "careid.E001" in str(refused.value) and "careid.E002" in str(refused.value)


def test_the_deploy_checks_refuse_throttle_counters_kept_in_each_process(settings, op_signing_key):
    """Without CACHE_URL the per-IP limits, the reset e-mails' limits and an unknown address's tries are counted
    in each web process's memory (locmem): every process would allow them anew."""
    from django.core import checks

    settings.CAREID_BASE_URL = "https://careid.example.nhs.uk"
    settings.CACHES = {name: {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": name}
                       for name in ("default", "throttle")}
    found = checks.run_checks(tags=["security"], include_deployment_checks=True)
    assert [message.id for message in found if message.id.startswith("careid.")] == ["careid.E003"]


def test_the_deploy_checks_pass_a_provider_with_signing_keys_and_a_public_address(settings, op_signing_key):
    from django.core import checks

    settings.CAREID_BASE_URL = "https://careid.example.nhs.uk"
    settings.CACHES = {name: {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                              "LOCATION": "redis://127.0.0.1:6379/4"} for name in ("default", "throttle")}
    found = checks.run_checks(tags=["security"], include_deployment_checks=True)
    assert not [message.id for message in found if message.id.startswith("careid.")]


def test_redirect_urls_are_whole_https_urls_and_the_old_host_list_is_refused():
    base = {"SECRET_KEY": "k", "CAREID_AUDIT_CHAIN_KEY": "c"}
    assert "error" not in settings_with({**base, "CAREID_ALLOWED_REDIRECT_URLS": "https://ers.example.nhs.uk/home"})
    error = settings_with({**base, "CAREID_ALLOWED_REDIRECT_URLS": "http://ers.example.nhs.uk/home"})["error"]
    assert "is not an https URL" in error
    error = settings_with({**base, "CAREID_ALLOWED_REDIRECT_HOSTS": "ers.example.nhs.uk"})["error"]
    assert "CAREID_ALLOWED_REDIRECT_HOSTS is replaced by CAREID_ALLOWED_REDIRECT_URLS" in error
