"""What a relying service asks for (acr_values, prompt, max_age) against how the person signed in."""

from __future__ import annotations

from django.http import HttpRequest

from authenticators import registry
from signin.session import Authentication, current


def parse_max_age(value) -> int | None:
    try:
        max_age = int(value)
    except (TypeError, ValueError):
        return None
    return max_age if max_age >= 0 else None


def reaches(acr_values: str | None, auth: Authentication) -> bool:
    return registry.reaches(acr_values, aal=auth.aal, acr=auth.acr)


def session_satisfies(request: HttpRequest, acr_values: str | None, max_age, *, reauthenticated_since: float | None = None,
                      login_prompted: bool = False) -> bool:
    """The signed-in session reaches the level asked for, is young enough for max_age, and (for
    prompt=login) was made after careid asked the person to sign in again."""
    auth = current(request)
    if auth is None or not reaches(acr_values, auth):
        return False
    fresh = reauthenticated_since is not None and auth.at >= reauthenticated_since
    if login_prompted and not fresh:
        return False
    max_age = parse_max_age(max_age)
    return max_age is None or fresh or auth.age() <= max_age


def acr_claim(acr_values: str | None, auth: Authentication) -> str:
    """What the ID token's acr says: the service's most preferred level this sign-in meets, as CIS2 echoes
    the level asked for (AAL3_ANY), or, when that is a specific class, the class reached (which is that class)."""
    wanted = registry.level_reached(acr_values, aal=auth.aal, acr=auth.acr) or registry.level(acr_values)
    return wanted if wanted in registry.LEVELS else auth.acr


def can_reach(user, acr_values: str | None) -> bool:
    """The person has an authenticator registered that reaches the level asked for."""
    kinds = {kind.key for kind in registry.types_for_level(acr_values)}
    return any(item.kind.key in kinds for item in registry.authenticators_of(user))
