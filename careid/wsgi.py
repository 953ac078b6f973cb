import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "careid.settings")
# Web requests get a statement timeout (seconds; 0 for none); management commands and workers do not
# (careid/settings.py).
os.environ.setdefault("CAREID_STATEMENT_TIMEOUT", "30")
application = get_wsgi_application()
