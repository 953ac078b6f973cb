"""careid settings: one file, configured only through environment variables.

Every variable has a safe default: without any environment the project runs with
SQLite, in-process Celery, local-memory cache and console e-mail, DEBUG off.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONE, SELF

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("Set SECRET_KEY (or DEBUG=true for local development).")
    SECRET_KEY = "insecure-development-key-only-used-when-DEBUG-is-on"
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "careid.admin.CareIdAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "allauth",
    "allauth.account",
    "allauth.usersessions",
    "allauth.idp.oidc",
    "django_otp",
    "pgtrigger",
    "csp",  # for its system checks (a policy in the pre-4.0 format, a string of URL prefixes)
    "health_check",  # for `manage.py health_check health --no-http` (careid/health.py)
    "accounts",
    "signin",
    "authenticators",
    "oidc",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "careid.middleware.permissions_policy",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Inside whitenoise (static files keep its caching), outside the rest (it sees their final headers).
    "careid.middleware.no_store_by_default",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "signin.middleware.session_timeouts",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "careid.urls"
WSGI_APPLICATION = "careid.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "careid.context_processors.site",
            ],
        },
    },
]

# --- Components, and how long careid waits for each -------------------------------------------
# A component that is down or hangs must cost a request about a second, never the whole site: every
# client below has short connect and read timeouts, and the error pages need none of them
# (careid/views.py). README: "When a component is down".

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
# Persistent connections are the biggest single lever on throughput (TESTING.md: ~5x).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CAREID_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {}).update({
        # libpq: seconds to establish a connection (2 at least), then TCP keepalives and an unacknowledged-
        # send limit, so that a PostgreSQL host that vanished is noticed in seconds, not at TCP's 15 minutes.
        "connect_timeout": env.int("CAREID_DB_CONNECT_TIMEOUT", default=3),
        "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
        "tcp_user_timeout": 30_000,
    })
    # Web processes only: careid/wsgi.py sets it (30 s) for gunicorn; management commands (migrate,
    # onboard_users' COPY of a million rows, verify_audit) and Celery workers run without one unless
    # it is set in their environment. PostgreSQL cancels a statement that runs longer (a lock wait
    # included), so a stuck query frees its worker thread and the person gets the 503 page.
    if statement_timeout := env.int("CAREID_STATEMENT_TIMEOUT", default=0):
        options = DATABASES["default"]["OPTIONS"]  # keeps any `options` DATABASE_URL gives (e.g. a search_path)
        options["options"] = f"{options.get('options', '')} -c statement_timeout={statement_timeout * 1000}".strip()

# Redis (the cache, the throttle counters, the Celery broker): seconds to connect and to wait for each
# answer. redis-py's default is 5 s, paid several times per request when Redis is frozen.
CAREID_REDIS_TIMEOUT = env.float("CAREID_REDIS_TIMEOUT", default=0.5)


def _cache(*, ignore_exceptions: bool) -> dict:
    config = env.cache("CACHE_URL", default="locmemcache://careid")
    if "redis" in config["BACKEND"].lower():
        config["OPTIONS"] = {**config.get("OPTIONS", {}), "SOCKET_CONNECT_TIMEOUT": CAREID_REDIS_TIMEOUT,
                             "SOCKET_TIMEOUT": CAREID_REDIS_TIMEOUT, "IGNORE_EXCEPTIONS": ignore_exceptions}
    return config


CACHES = {
    # What only saves work (relying services' JWKS): without Redis it is simply not cached.
    "default": _cache(ignore_exceptions=True),
    # Per-IP and per-person limits (signin/throttle.py), on the same Redis: these fail closed. A step that
    # cannot count its attempt is refused with the 503 page, never let through uncounted.
    "throttle": _cache(ignore_exceptions=False),
}
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True

EMAIL_CONFIG = env.email("EMAIL_URL", default="consolemail://")
if EMAIL_CONFIG["EMAIL_BACKEND"] == "django.core.mail.backends.smtp.EmailBackend":
    EMAIL_CONFIG["EMAIL_BACKEND"] = "accounts.mail.SMTPBackend"  # waits CAREID_EMAIL_DATA_TIMEOUT (below) for DATA
vars().update(EMAIL_CONFIG)
EMAIL_TIMEOUT = env.int("CAREID_EMAIL_TIMEOUT", default=10)  # seconds for each SMTP operation (a Celery worker waits)
DEFAULT_FROM_EMAIL = env.str("CAREID_FROM_EMAIL", default="NHS Care Identity <no-reply@careid.localhost>")
# The outbox (accounts/outbox.py) retries an e-mail from 1 minute to an hour apart for this long.
CAREID_EMAIL_GIVE_UP_AFTER = timedelta(seconds=env.int("CAREID_EMAIL_GIVE_UP_AFTER", default=26 * 3600))
# A send taking longer than this was lost with its worker: the sweep queues the e-mail again. The send
# task is cut off well before (CAREID_EMAIL_TIME_LIMIT, below), so a send still under way is never taken.
CAREID_EMAIL_CLAIM = timedelta(seconds=env.int("CAREID_EMAIL_CLAIM", default=300))

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = ["accounts.backends.CareIdentityBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"

PASSWORD_HASHERS = [
    "accounts.hashers.CareIdArgon2PasswordHasher",  # Argon2id at the cost below; re-hashes others on sign-in
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
# Argon2id's cost (accounts/hashers.py). The default, m=64 MiB and t=3 (RFC 9106's second recommended
# setting, with one lane), is what makes the password check most of a sign-in's work (bench/signin_load.py:
# everything else is overhead); OWASP's cheaper minimums give about three times the sign-ins per core.
# The README's "Password hashing" has what each choice costs per sign-in here and the capacity per core.
CAREID_ARGON2_TIME_COST = env.int("CAREID_ARGON2_TIME_COST", default=3)
CAREID_ARGON2_MEMORY_COST = env.int("CAREID_ARGON2_MEMORY_COST", default=65536)  # KiB
CAREID_ARGON2_PARALLELISM = env.int("CAREID_ARGON2_PARALLELISM", default=1)  # checked at start: accounts/apps.py
CAREID_ARGON2_KEEP_MEMORY = env.bool("CAREID_ARGON2_KEEP_MEMORY", default=True)  # deploy/gunicorn.conf.py


AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator",
     "OPTIONS": {"user_attributes": ("email", "first_name", "last_name", "uid")}},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
CAREID_PASSWORD_MAX_LENGTH = 256

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "Europe/London"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
# Production runs collectstatic into CAREID_STATIC_ROOT; without it whitenoise serves from the finders.
STATIC_ROOT = env.str("CAREID_STATIC_ROOT", default="") or None
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("nhsuk", BASE_DIR / "node_modules" / "nhsuk-frontend" / "dist" / "nhsuk"),
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve straight from the finders, so neither `make run` nor the tests need collectstatic.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Sessions and cookies -------------------------------------------------------------
# Sessions live in PostgreSQL only. cached_db with a cache that ignores Redis errors would bring ended
# sessions back: a sign-out, suspension or closure while Redis is unreachable deletes the row but
# not the cached copy, which a Redis that comes back with its data (after a freeze or a network
# split) would serve again. One primary-key SELECT per signed-in request is the price. careid.sessions
# is Django's database store without the look-up before a new key's INSERT and the read before a DELETE.
SESSION_ENGINE = "careid.sessions"
SESSION_COOKIE_AGE = int(timedelta(hours=12).total_seconds())  # AAL2 absolute timeout: the stored session's expiry
# Closing the browser on a shared practice computer ends the sign-in: a browser-session cookie, never one
# kept on disk for the 12 hours. The idle and absolute timeouts (signin/session.py) hold on the server.
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
CSRF_FAILURE_VIEW = "careid.views.csrf_failure"
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if not DEBUG and env.bool("CAREID_SECURE_COOKIES", default=True):
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SESSION_COOKIE_NAME = "__Host-careid-session"
    CSRF_COOKIE_NAME = "__Host-careid-csrf"
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("CAREID_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^health/$"]  # load balancers probe the web processes over plain http

# --- Content Security Policy (django-csp) --------------------------------------------------
# No inline script or style anywhere, so no nonces; a view that needs one adds csp.constants.NONCE
# with django-csp's csp_update decorator and uses request.csp_nonce.
CAREID_CSP_REPORT_URI = env.str("CAREID_CSP_REPORT_URI", default="")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        # NHS.UK frontend's stylesheet loads the Frutiger web fonts from the NHS asset host.
        "font-src": [SELF, "https://assets.nhs.uk"],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "report-uri": [CAREID_CSP_REPORT_URI] if CAREID_CSP_REPORT_URI else None,
    },
}


def _csp_directives(policy: str, *, report_uri: str) -> dict[str, list[str] | bool | None]:
    """A policy written as in the header ("default-src 'self'; img-src 'self' data:") as django-csp's
    DIRECTIVES, exactly as written: django-csp would add `default-src 'self'` to a policy without one
    and silently drop a directive it does not know, so a misspelt one refuses to start instead."""
    from csp.utils import DEFAULT_DIRECTIVES

    directives: dict[str, list[str] | bool | None] = {"default-src": None}
    for part in filter(None, (part.strip() for part in policy.split(";"))):
        name, *values = part.split()
        if name.lower() not in DEFAULT_DIRECTIVES:
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured(f"CAREID_CSP_REPORT_ONLY: unknown directive {name!r}")
        directives[name.lower()] = values or True  # a directive without values (upgrade-insecure-requests)
    if report_uri and "report-uri" not in directives:
        directives["report-uri"] = [report_uri]
    return directives


# A second policy the browser reports on but does not enforce: try a stricter one before making it
# CONTENT_SECURITY_POLICY. The enforced policy above cannot be weakened or switched off from here.
if _report_only := env.str("CAREID_CSP_REPORT_ONLY", default=""):
    CONTENT_SECURITY_POLICY_REPORT_ONLY = {
        "DIRECTIVES": _csp_directives(_report_only, report_uri=CAREID_CSP_REPORT_URI),
    }

# --- Celery -----------------------------------------------------------------------------
# Without a broker, tasks run in-process (make run); with one, a worker runs them.
CELERY_TASK_ALWAYS_EAGER = not env.str("CELERY_BROKER_URL", default="")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="memory://")
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = env.str("CAREID_CELERY_QUEUE", default="careid")
# With the broker down or frozen, queuing a task (`.delay()` in a transaction.on_commit(robust=True)
# callback) gives up in about a second instead of blocking the page: the callback's error is logged
# and the page goes on; that e-mail or back-channel logout is not queued (README: "When a component
# is down"). The worker waits for the broker to come back instead of exiting.
CELERY_BROKER_CONNECTION_TIMEOUT = CAREID_REDIS_TIMEOUT
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None  # however long the broker is away (the default gives up after 100)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": CAREID_REDIS_TIMEOUT,
    "socket_timeout": CAREID_REDIS_TIMEOUT,  # the worker's BRPOP is read only once readable: unaffected
    # A task a worker has taken stays unacknowledged (acks_late) until it ends; Redis hands it to another
    # worker after this long, so it must exceed the longest a task may run (CELERY_TASK_TIME_LIMIT) and any
    # countdown. careid queues no task with a countdown: retries of e-mails and back-channel logouts wait
    # in their outbox rows (next_attempt_at, accounts.outbox.backoff: at most an hour) for the sweeps.
    "visibility_timeout": 2 * 3600,
}
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
# Every task is short (an e-mail, a logout token POSTed, a batch of the audit sealer, an hourly clean-up);
# one that runs this long is stuck on something and is stopped (soft: an exception in the task; hard:
# the process is replaced), so it cannot hold a worker forever. The outboxes' send tasks have shorter
# limits of their own (_send_time_limits below), which must end before their claims.
CELERY_TASK_SOFT_TIME_LIMIT = 300
CELERY_TASK_TIME_LIMIT = 360


def _send_time_limits(variable: str, *, default: int, claim: timedelta) -> dict[str, int]:
    """An outbox send task's own time limits: `variable` seconds (soft: SoftTimeLimitExceeded in the task,
    which counts a failed attempt and releases the row, or, once the other side has taken the delivery, is
    let pass while it is recorded: outbox.record_delivery), then 5 more (hard: the process is replaced). A
    per-read timeout does not bound a send (a server trickling its answer keeps it going), and a send still
    running when its claim runs out is handed to a second worker by the sweep and goes twice: so both limits
    end before the claim. Enforced by the prefork pool (the worker's default), not by --pool=solo or threads."""
    soft = env.int(variable, default=default)
    hard = soft + 5
    if soft < 1 or hard >= claim.total_seconds():
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"{variable}={soft}: give at least 1 and at most {int(claim.total_seconds()) - 6} "
                                   f"seconds, so that a send cut off at it (and 5 s later at the latest) ends before "
                                   f"its claim ({int(claim.total_seconds())} s) lets the sweep hand it to another worker.")
    return {"soft_time_limit": soft, "time_limit": hard}


# An SMTP send is a dozen exchanges of up to EMAIL_TIMEOUT each; one still going after two minutes is stuck.
CAREID_EMAIL_TASK_LIMITS = _send_time_limits("CAREID_EMAIL_TIME_LIMIT", default=120, claim=CAREID_EMAIL_CLAIM)
# Seconds for the SMTP server's reply to the end of a message: it may have queued the message already, so a
# send given up sooner goes twice. RFC 5321 (4.5.3.2.6) suggests 10 minutes; careid waits what the send's time
# limit allows, which ends before the claim (a longer wait needs both raised, and a lost task waits longer).
CAREID_EMAIL_DATA_TIMEOUT = env.int("CAREID_EMAIL_DATA_TIMEOUT",
                                    default=min(60, CAREID_EMAIL_TASK_LIMITS["soft_time_limit"]))
if not 1 <= CAREID_EMAIL_DATA_TIMEOUT <= CAREID_EMAIL_TASK_LIMITS["soft_time_limit"]:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"CAREID_EMAIL_DATA_TIMEOUT={CAREID_EMAIL_DATA_TIMEOUT}: give at least 1 and at most "
                               f"CAREID_EMAIL_TIME_LIMIT ({CAREID_EMAIL_TASK_LIMITS['soft_time_limit']} s), which cuts "
                               f"the send off; raise it (and CAREID_EMAIL_CLAIM) for a longer wait.")


def _every(seconds: float, task: str) -> dict:
    # A run still queued when the next is due has expired: a worker back after an outage runs each
    # periodic task once, not once for every interval it missed (all at once, on the database).
    return {"task": task, "schedule": seconds, "options": {"expires": seconds}}


CELERY_BEAT_SCHEDULE = {
    "forget-abandoned-registrations": _every(3600.0, "authenticators.tasks.forget_abandoned_registrations_task"),
    "forget-stale-unknown-addresses": _every(3600.0, "signin.tasks.forget_stale_unknown_addresses_task"),
    "forget-expired-email-codes": _every(3600.0, "accounts.tasks.forget_expired_email_codes_task"),
    "forget-expired-sessions": _every(3600.0, "signin.tasks.forget_expired_sessions_task"),
    "sweep-timed-out-sessions": _every(300.0, "oidc.tasks.sweep_timed_out_sessions_task"),
    "sweep-outbox": _every(60.0, "accounts.tasks.sweep_outbox_task"),
    "sweep-backchannel-logouts": _every(60.0, "oidc.tasks.sweep_backchannel_logouts_task"),
    "seal-audit-trail": _every(10.0, "audit.tasks.seal_audit_trail_task"),
    "forget-used-assertions": _every(3600.0, "oidc.tasks.forget_used_assertions_task"),
    "forget-rotated-refresh-tokens": _every(3600.0, "oidc.tasks.forget_rotated_refresh_tokens_task"),
}

# --- allauth: e-mail addresses and their verification only ---------------------------------
ACCOUNT_ADAPTER = "accounts.adapter.CareIdentityAccountAdapter"
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*"]
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
# Days a verification link lasts from when it is sent; its e-mail and the page that sends a new one say so in
# words (accounts.notifications.verification_link_lifetime). 0 would make every link expired on arrival.
ACCOUNT_EMAIL_CONFIRMATION_EXPIRE_DAYS = env.int("CAREID_EMAIL_CONFIRMATION_EXPIRE_DAYS", default=1)
if ACCOUNT_EMAIL_CONFIRMATION_EXPIRE_DAYS < 1:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"CAREID_EMAIL_CONFIRMATION_EXPIRE_DAYS={ACCOUNT_EMAIL_CONFIRMATION_EXPIRE_DAYS}: give at "
                               "least 1 (days a verification link lasts; a link lasting 0 would be expired on arrival).")
ACCOUNT_EMAIL_SUBJECT_PREFIX = "NHS Care Identity: "
ACCOUNT_EMAIL_NOTIFICATIONS = False  # careid sends its own notifications (accounts/notifications)
USERSESSIONS_TRACK_ACTIVITY = False  # rows are written at sign-in (signin.flows.complete_signin)

# --- OpenID Connect provider (allauth.idp.oidc, extended in oidc/) ---------------------------------
IDP_OIDC_ADAPTER = "oidc.adapter.CareIdOIDCAdapter"
IDP_OIDC_AUTH_METHODS = ["private_key_jwt", "client_secret_basic", "client_secret_post", "none"]
IDP_OIDC_AUTHORIZATION_CODE_EXPIRES_IN = 60
IDP_OIDC_ID_TOKEN_EXPIRES_IN = 300
IDP_OIDC_ACCESS_TOKEN_EXPIRES_IN = env.int("CAREID_OIDC_ACCESS_TOKEN_LIFETIME", default=3600)
IDP_OIDC_REFRESH_TOKEN_EXPIRES_IN = env.int("CAREID_OIDC_REFRESH_TOKEN_LIFETIME", default=12 * 3600)
IDP_OIDC_RP_INITIATED_LOGOUT_ASKS_FOR_OP_LOGOUT = False  # careid's own logout view decides (oidc/views.py)


def _signing_keys() -> list[dict]:
    """PEM files from CAREID_OIDC_PRIVATE_KEY_FILES (comma-separated): the first signs, every one is
    published in the JWKS (the next key ahead of a rollover, the last one until its tokens expire).
    Development without one gets a key made on first use, kept in a git-ignored file."""
    from datetime import UTC, datetime, timedelta

    paths = env.list("CAREID_OIDC_PRIVATE_KEY_FILES", default=[])
    if not paths and DEBUG:
        development_key = BASE_DIR / ".oidc-development-key.pem"
        if not development_key.exists():
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa

            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            development_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
            development_key.chmod(0o600)
        paths = [str(development_key)]
    now = datetime.now(UTC)
    return [{"pem": Path(path).read_text(), "issued_at": now - timedelta(days=index)} for index, path in enumerate(paths)]


IDP_OIDC_PRIVATE_KEYS = _signing_keys()
# Seconds a service may take to connect and for each read of its answer: not for the whole answer, which
# CAREID_BACKCHANNEL_TIME_LIMIT bounds.
CAREID_BACKCHANNEL_TIMEOUT = 5
# Tried again from 1 minute to an hour apart (like the e-mails) for this long, then audited as failed.
CAREID_BACKCHANNEL_GIVE_UP_AFTER = timedelta(seconds=env.int("CAREID_BACKCHANNEL_GIVE_UP_AFTER", default=26 * 3600))
CAREID_BACKCHANNEL_CLAIM = timedelta(seconds=60)  # a delivery taking longer was lost with its worker
# A delivery is cut off after this long in all (a failed attempt), so a slow service holds a worker no longer.
CAREID_BACKCHANNEL_TASK_LIMITS = _send_time_limits("CAREID_BACKCHANNEL_TIME_LIMIT", default=30,
                                                   claim=CAREID_BACKCHANNEL_CLAIM)

# --- the audit trail's hash chain (audit/chain.py) -------------------------------------------
# The key the chain is computed with. Keep it apart from the database (a copy of the database alone
# must not be enough to recompute the chain) and never change it: old links are checked with it. Not
# derived from SECRET_KEY outside DEBUG, so that rotating SECRET_KEY cannot break the whole trail.
CAREID_AUDIT_CHAIN_KEY = env.str("CAREID_AUDIT_CHAIN_KEY", default="")
if not CAREID_AUDIT_CHAIN_KEY:
    if not DEBUG:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("Set CAREID_AUDIT_CHAIN_KEY, the audit trail's hash chain key: a long random "
                                   "secret kept apart from the database and never changed (README, Configuration), "
                                   "or DEBUG=true for local development.")
    CAREID_AUDIT_CHAIN_KEY = __import__("hashlib").sha256(f"careid.audit-chain:{SECRET_KEY}".encode()).hexdigest()
# An event dated longer than this before one chained ahead of it was written outside careid (backdated);
# one written longer ago than this and still not sealed means the sealer has stopped.
CAREID_AUDIT_SEAL_TOLERANCE = timedelta(seconds=env.int("CAREID_AUDIT_SEAL_TOLERANCE", default=900))
# With nothing to seal for this long the sealer chains a heartbeat event (audit/chain.py): well under the
# tolerance, so an event inserted later with a date from a quiet time is dated before one chained ahead.
CAREID_AUDIT_HEARTBEAT = timedelta(seconds=env.int("CAREID_AUDIT_HEARTBEAT", default=300))

# --- help and contact ----------------------------------------------------------------------
# Who people are sent to wherever careid cannot help them itself (a lock, an expired link, a type
# already registered): the organisation's registration authority.
CAREID_HELP_CONTACT = env.str("CAREID_HELP_CONTACT", default="your registration authority (RA)")
CAREID_HELP_CONTACT_URL = env.str("CAREID_HELP_CONTACT_URL", default="")  # default: careid's help page
CAREID_AUTHENTICATORS_GUIDE_URL = env.str(
    "CAREID_AUTHENTICATORS_GUIDE_URL",
    default="https://digital.nhs.uk/services/care-identity-service/applications-and-services/cis2-authentication/guidance-for-nhs-staff-and-health-and-care-professionals")
CAREID_AUTHENTICATOR_APP_GUIDE_URL = env.str(
    "CAREID_AUTHENTICATOR_APP_GUIDE_URL",
    default="https://digital.nhs.uk/services/care-identity-service/applications-and-services/cis2-authentication/guidance-for-nhs-staff-and-health-and-care-professionals/register-an-authenticator-app")

# --- careid ------------------------------------------------------------------------------
CAREID_BASE_URL = env.str("CAREID_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
CAREID_INVITATION_LINK_TTL = timedelta(seconds=env.int("CAREID_INVITATION_LINK_TTL", default=24 * 3600))
CAREID_REGISTRATION_LINK_TTL = timedelta(seconds=env.int("CAREID_REGISTRATION_LINK_TTL", default=180))
CAREID_REGISTRATION_JOURNEY_TTL = timedelta(seconds=env.int("CAREID_REGISTRATION_JOURNEY_TTL", default=30 * 60))
CAREID_EMAIL_CODE_TTL = timedelta(seconds=env.int("CAREID_EMAIL_CODE_TTL", default=600))
CAREID_EMAIL_CODE_COOLDOWN = timedelta(seconds=env.int("CAREID_EMAIL_CODE_COOLDOWN", default=60))
CAREID_EMAIL_CODE_MAX_FAILURES = 5
# Wrong passwords lock at the 100th (NIST SP 800-63B's cap; anyone who knows an address can cause them, so
# the person lifts that lock by resetting their password); wrong codes, which need the right password
# first, lock at the 30th until a registration authority unlocks.
CAREID_PASSWORD_LOCK_AFTER = min(100, env.int("CAREID_PASSWORD_LOCK_AFTER", default=100))
CAREID_CODE_LOCK_AFTER = min(100, env.int("CAREID_CODE_LOCK_AFTER", default=30))
CAREID_SIGNIN_DELAY_FROM = 5  # failures before growing delays start
CAREID_SIGNIN_MAX_DELAY = timedelta(minutes=15)
# Failures older than this no longer count towards a lock (a lock itself stays until it is lifted).
CAREID_SIGNIN_FAILURE_WINDOW = timedelta(days=30)
# One attempt per account at a time: held while the password or code is checked, released after.
CAREID_SIGNIN_ATTEMPT_HOLD = timedelta(seconds=5)
CAREID_IP_FAILURE_LIMIT = env.int("CAREID_IP_FAILURE_LIMIT", default=100)  # per IP per window
CAREID_IP_FAILURE_WINDOW = timedelta(minutes=15)
# Proxies in front of careid that append to X-Forwarded-For (1 behind one TLS proxy). The client
# IP used for per-IP limits and the audit trail is the entry that many places from the right.
ALLAUTH_TRUSTED_PROXY_COUNT = env.int("CAREID_TRUSTED_PROXY_COUNT", default=0)
# Who that proxy is (addresses or networks, as gunicorn's forwarded_allow_ips reads the same variable;
# "*" for any): X-Forwarded-For is believed only from a peer among them. A client that reaches a web
# process directly (its port answers the load balancer's probes) writes the header itself.
CAREID_PROXY_IPS = env.list("CAREID_PROXY_IPS", default=["127.0.0.1"])
for _proxy in CAREID_PROXY_IPS:
    try:
        if _proxy != "*":
            ipaddress.ip_network(_proxy, strict=False)
    except ValueError:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"CAREID_PROXY_IPS: {_proxy!r} is not an address or a network") from None
CAREID_EMAIL_ADD_LIMIT = 5  # addresses a person may add per hour (each sends an e-mail)
CAREID_MAX_EMAIL_ADDRESSES = 5
# The authenticator type an invitation registers (the foundation journey).
CAREID_INVITATION_AUTHENTICATOR = env.str("CAREID_INVITATION_AUTHENTICATOR", default="authenticator-app")
# The whole URLs (exact match) outside careid that `goto` may send a person to after sign-in: a whole host
# would let any open redirect on that service become careid's.
CAREID_ALLOWED_REDIRECT_URLS = env.list("CAREID_ALLOWED_REDIRECT_URLS", default=[])
for _url in CAREID_ALLOWED_REDIRECT_URLS:
    _parts = urllib.parse.urlsplit(_url)
    if not (_parts.scheme == "https" or (_parts.scheme == "http" and _parts.hostname in {"localhost", "127.0.0.1", "::1"})) \
            or not _parts.hostname or _parts.username or _parts.password:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"CAREID_ALLOWED_REDIRECT_URLS: {_url!r} is not an https URL (http only on loopback)")
if env.list("CAREID_ALLOWED_REDIRECT_HOSTS", default=[]):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("CAREID_ALLOWED_REDIRECT_HOSTS is replaced by CAREID_ALLOWED_REDIRECT_URLS: list the whole "
                               "URLs people may be sent to (exact match), not hosts.")
# By the level signed in at (AAL1 exists only in test environments and is held to AAL2's limits).
CAREID_SESSION_IDLE_TIMEOUT = {1: timedelta(minutes=30), 2: timedelta(minutes=30), 3: timedelta(minutes=15)}
CAREID_SESSION_ABSOLUTE_TIMEOUT = {1: timedelta(hours=12), 2: timedelta(hours=12), 3: timedelta(hours=12)}
CAREID_REAUTHENTICATION_MAX_AGE = timedelta(minutes=5)
CAREID_REMEMBER_METHOD_MAX_AGE = int(timedelta(days=730).total_seconds())
# Authenticator types switched off here disappear from every page (registry.enabled_types()).
CAREID_DISABLED_AUTHENTICATORS = env.list("CAREID_DISABLED_AUTHENTICATORS", default=[])

# --- WebAuthn (security keys, Windows Hello, iPad, passkeys: authenticators/webauthn/) ---------------
# The relying party ID and the origins a browser may run a ceremony on; empty: worked out from
# CAREID_BASE_URL when used (its host, and the URL itself). An RP ID must be a domain name (browsers
# refuse IP addresses): use http://localhost:8000, not 127.0.0.1, for development.
CAREID_WEBAUTHN_RP_ID = env.str("CAREID_WEBAUTHN_RP_ID", default="")
CAREID_WEBAUTHN_ORIGINS = [origin.rstrip("/") for origin in env.list("CAREID_WEBAUTHN_ORIGINS", default=[])]
# Seconds the browser waits for an authenticator, at most 300: a ceremony's challenge lives 5 minutes
# whatever this says (authenticators/webauthn/models.py), so an answer after a longer wait would be refused.
CAREID_WEBAUTHN_TIMEOUT = env.int("CAREID_WEBAUTHN_TIMEOUT", default=180)
if not 1 <= CAREID_WEBAUTHN_TIMEOUT <= 300:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"CAREID_WEBAUTHN_TIMEOUT={CAREID_WEBAUTHN_TIMEOUT}: give between 1 and 300 seconds "
                               "(a WebAuthn challenge lives 5 minutes, so a longer wait ends in a refused answer).")
# Security key models (AAGUIDs) an organisation accepts, e.g. FIDO2 Certified Level 2 keys; empty: any,
# with attestation "none". When set, a security key's registration must carry an attestation certificate
# chain to one of the roots in CAREID_WEBAUTHN_ATTESTATION_ROOTS (a PEM file, e.g. from the FIDO
# Metadata Service): an AAGUID no certificate vouches for is only what the authenticator claims. It covers
# the types in CAREID_WEBAUTHN_ATTESTED_TYPES (registry keys; security keys by default, Windows Hello's TPM
# can be added); the others (an iPad's anonymous attestation, a synced passkey's none) are not refused by it.
CAREID_WEBAUTHN_ALLOWED_AAGUIDS = [aaguid.strip().lower() for aaguid in env.list("CAREID_WEBAUTHN_ALLOWED_AAGUIDS", default=[])]
CAREID_WEBAUTHN_ATTESTED_TYPES = env.list("CAREID_WEBAUTHN_ATTESTED_TYPES", default=["security-key"])
CAREID_WEBAUTHN_ATTESTATION_ROOTS = env.str("CAREID_WEBAUTHN_ATTESTATION_ROOTS", default="")
if CAREID_WEBAUTHN_ALLOWED_AAGUIDS and not CAREID_WEBAUTHN_ATTESTATION_ROOTS:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("CAREID_WEBAUTHN_ALLOWED_AAGUIDS needs CAREID_WEBAUTHN_ATTESTATION_ROOTS (a PEM file of "
                               "the attestation roots that vouch for those AAGUIDs).")
# Passkeys (AAL2) are a private beta, offered only when this is on.
CAREID_PASSKEY_BETA = env.bool("CAREID_PASSKEY_BETA", default=False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("CAREID_LOG_LEVEL", default="WARNING")},
    # The audit chain's head, which a verifier keeps off this host (verify_audit --expect-head): logged
    # whatever CAREID_LOG_LEVEL says. Its own level lets the INFO record through to the root's handlers,
    # Django's here and Celery's in a worker (which replaces the root's handlers but not loggers' levels).
    "loggers": {"careid.audit.head": {"level": "INFO"}},
}

# User.email is unique case-insensitively (a UniqueConstraint on Lower("email")), which the
# auth check cannot see.
SILENCED_SYSTEM_CHECKS = ["auth.W004"]
