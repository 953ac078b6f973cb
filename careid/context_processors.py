from __future__ import annotations

from functools import cache

from django.conf import settings
from django.http import HttpRequest
from django.templatetags.static import static
from django.urls import reverse


@cache
def _site() -> dict[str, dict[str, str]]:
    # Worked out once per process: every page's header and footer links and assets are the same,
    # and resolving them on each render was most of the sign-in page's cost (bench/signin_page.py).
    return {
        "urls": {name: reverse(name) for name in ("home", "login", "logout", "profile", "terms", "cookies", "accessibility",
                                                  "help", "allowed_domains")},
        # Who to ask, wherever a page sends people to their registration authority (templates/includes/contact.html).
        "help": {"contact": settings.CAREID_HELP_CONTACT, "contact_url": settings.CAREID_HELP_CONTACT_URL or reverse("help"),
                 "authenticators_guide": settings.CAREID_AUTHENTICATORS_GUIDE_URL,
                 "authenticator_app_guide": settings.CAREID_AUTHENTICATOR_APP_GUIDE_URL},
        "assets": {
            "css": static("nhsuk/nhsuk-frontend.min.css"),
            "careid_css": static("careid/careid.css"),
            "js": static("careid/init.js"),
            "webauthn_js": static("careid/webauthn.js"),
            "favicon": static("nhsuk/assets/images/favicon.ico"),
            "favicon_svg": static("nhsuk/assets/images/favicon.svg"),
        },
    }


def site(request: HttpRequest | None) -> dict[str, dict[str, str]]:
    return _site()
