"""The baseline of bench/oidc_flow.py: a bare Django project running django-allauth's stock
OpenID Connect provider (allauth.idp.oidc, its own URLs, its default adapter), nothing of careid.

What it shares with careid on purpose, so that the comparison measures the provider and not the
set-up: the PostgreSQL server (its own database), persistent connections with health checks, the
session engine (sessions in PostgreSQL only, `backends.db`), DEBUG off, the password hashers
that hash client secrets (careid's list, plus a cheap one for a second baseline client) and the
size of the signing key (RSA 2048). Everything else is what `django-admin startproject` gives, plus
allauth's account middleware.

Configured through the environment by bench/oidc_flow.py: DATABASE_URL, CACHE_URL, SECRET_KEY,
ALLOWED_HOSTS and BENCH_STOCK_OIDC_KEY_FILE (the signing key, a PEM file).
"""

from pathlib import Path

import environ

env = environ.Env()

DEBUG = False
SECRET_KEY = env.str("SECRET_KEY")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1"])

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "allauth",
    "allauth.account",
    "allauth.idp.oidc",
]

# startproject's middleware (no admin, no static files), plus the one allauth requires.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "bench.stock_oidc_urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = 60  # as careid (CAREID_CONN_MAX_AGE's default)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

CACHES = {"default": {**env.cache("CACHE_URL"), "KEY_PREFIX": "bench-stock-oidc"}}
SESSION_ENGINE = "django.contrib.sessions.backends.db"  # as careid: sessions in PostgreSQL only

# careid's hashers, so a secret made with make_password costs what it would in careid; MD5 only
# for the baseline client whose secret is hashed cheaply (a random 50-character secret needs no
# slow hash: that is for guessable passwords).
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.MD5PasswordHasher",
]

USE_TZ = True
TIME_ZONE = "Europe/London"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

IDP_OIDC_PRIVATE_KEY = Path(env.str("BENCH_STOCK_OIDC_KEY_FILE")).read_text()
