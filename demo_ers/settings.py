"""Settings of the demo eRS, configured only through environment variables (all with safe defaults).

No database: sessions are signed cookies, and the back-channel logouts received live in a small
file store under DEMO_ERS_STATE_DIR. careid and the demo share the host 127.0.0.1 under `make run`
and cookies are not port-specific, so every cookie here has a name of its own.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import urlsplit

import environ

from demo_ers.files import made_once

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEMO_ERS_ISSUER = env.str("DEMO_ERS_ISSUER", default="http://127.0.0.1:8000").rstrip("/")
DEMO_ERS_CLIENT_ID = env.str("DEMO_ERS_CLIENT_ID", default="demo-ers")
DEMO_ERS_BASE_URL = env.str("DEMO_ERS_BASE_URL", default="http://127.0.0.1:8001").rstrip("/")
DEMO_ERS_KEY_FILE = Path(env.str("DEMO_ERS_KEY_FILE", default=str(BASE_DIR / ".demo-ers-key.pem")))
DEMO_ERS_STATE_DIR = Path(env.str("DEMO_ERS_STATE_DIR", default=str(BASE_DIR / ".demo-ers")))
DEMO_ERS_SCOPES = "openid profile email nhsperson"
DEMO_ERS_HTTP_TIMEOUT = 10  # seconds careid has to answer the demo's back-end calls
DEMO_ERS_STATE_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)


def _secret_key() -> str:
    """DEMO_ERS_SECRET_KEY, or one made on first start and kept in the state directory: signed-cookie
    sessions are only as safe as this key, so there is no fixed default to forget to change."""
    if configured := env.str("DEMO_ERS_SECRET_KEY", default=""):
        return configured
    return made_once(DEMO_ERS_STATE_DIR / "secret-key", lambda: secrets.token_urlsafe(50).encode()).decode().strip()


SECRET_KEY = _secret_key()
DEBUG = False
_own_host = urlsplit(DEMO_ERS_BASE_URL).hostname or "127.0.0.1"
ALLOWED_HOSTS = list(dict.fromkeys([_own_host, "127.0.0.1", "localhost"]))

INSTALLED_APPS = ["django.contrib.staticfiles", "demo_ers"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "demo_ers.middleware.security_headers",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "demo_ers.middleware.backchannel_logout",
]
ROOT_URLCONF = "demo_ers.urls"
WSGI_APPLICATION = "demo_ers.wsgi.application"
DATABASES: dict = {}
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    },
]

# --- sessions and cookies: names of their own (careid's are `sessionid`/`csrftoken` under `make run`)
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
SESSION_COOKIE_NAME = "demo-ers-session"
SESSION_COOKIE_AGE = 8 * 3600
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"  # sent on the top-level redirect back from careid to /callback
CSRF_COOKIE_NAME = "demo-ers-csrf"
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = DEMO_ERS_BASE_URL.startswith("https://")
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- NHS.UK frontend from node_modules, served by whitenoise (no collectstatic needed)
STATIC_URL = "/static/"
STATICFILES_DIRS = [("nhsuk", BASE_DIR / "node_modules" / "nhsuk-frontend" / "dist" / "nhsuk")]
WHITENOISE_USE_FINDERS = True

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "Europe/London"
USE_I18N = False
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("DEMO_ERS_LOG_LEVEL", default="WARNING")},
}
