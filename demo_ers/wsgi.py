import os

from django.core.wsgi import get_wsgi_application

# Not setdefault: a shell (or pytest) that runs careid has DJANGO_SETTINGS_MODULE=careid.settings.
os.environ["DJANGO_SETTINGS_MODULE"] = "demo_ers.settings"
application = get_wsgi_application()
