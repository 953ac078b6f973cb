"""Settings for bench/signin_page.py only: the project's settings plus the bench URLconf.

careid's settings are configured through the environment alone, and ROOT_URLCONF is not one of
the variables, so the benchmark selects this module with DJANGO_SETTINGS_MODULE instead.
"""

from careid.settings import *  # noqa: F403

ROOT_URLCONF = "bench.bare"
