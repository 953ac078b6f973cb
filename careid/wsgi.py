import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "careid.settings")
# Web requests get a statement timeout (seconds; 0 for none); management commands and workers do not
# (careid/settings.py).
os.environ.setdefault("CAREID_STATEMENT_TIMEOUT", "30")
application = get_wsgi_application()


def _keep_hash_memory() -> None:
    # Before the worker's threads first allocate (gunicorn starts them on the first request).
    from django.conf import settings

    from accounts.hashers import keep_hash_memory

    if settings.CAREID_ARGON2_KEEP_MEMORY:
        keep_hash_memory(hashes_at_once=int(os.environ.get("CAREID_THREADS", 2)))


_keep_hash_memory()
