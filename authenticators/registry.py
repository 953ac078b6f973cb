"""The single place that knows the list of authenticator types.

The sign-in page, the profile, the admin and the OpenID Connect provider ask the registry; none of them
names a type. A new technology adds its module to KIND_MODULES (and, to be listed where the guide would
list it when registering, its key to REGISTRATION_ORDER) and nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from importlib import import_module
from typing import TYPE_CHECKING

from django.apps import apps
from django.conf import settings
from django.db.models import IntegerField, Value
from django.urls import reverse
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from .base.models import Authenticator

# Order is the order people see on the sign-in page (CIS2's order: Smartcard, Windows Hello, Security key,
# iPad app, Authenticator app, NHSmail, Passkey). An entry is a module holding `KIND`, or "module:NAME"
# when one module defines several types.
KIND_MODULES = [
    "authenticators.webauthn.kinds:WINDOWS_HELLO",
    "authenticators.webauthn.kinds:SECURITY_KEY",
    "authenticators.webauthn.kinds:IPAD",
    "authenticators.totp.kind",
    "authenticators.webauthn.kinds:PASSKEY",
]

# "Select authenticator type" lists the types as the guide's Step 4 does: iPad, Microsoft Authenticator,
# Windows Hello, Security key (not the sign-in page's order). Types not named here follow, in KIND_MODULES order.
REGISTRATION_ORDER = ["ipad", "authenticator-app", "windows-hello", "security-key"]


def _attribute(path: str, default: str | None = None):
    """"package.module:NAME" -> that attribute; "package.module" -> the module (or its `default`)."""
    module_path, _, name = path.partition(":")
    module = import_module(module_path)
    name = name or default
    return getattr(module, name) if name else module


@dataclass(frozen=True)
class AuthenticatorType:
    key: str  # stable identifier, also the URL and cookie value
    name: str  # as on "Select authenticator type", e.g. "Microsoft Authenticator"
    signin_label: str  # as on "Select your login method", e.g. "Authenticator app"
    description: str
    aal: int
    acr: str  # the class this method reaches (CIS2's names, e.g. AAL2_TOTP)
    amr: tuple[str, ...]  # authentication method references (RFC 8176) the ID token carries
    model_label: str  # "app_label.ModelName"
    enrol_url_name: str  # the page that starts registration for a signed-in person
    signin_url_name: str  # the first page of this login method
    urls: str  # URLconf of this type ("module" or "module:NAME" for (patterns, namespace)), mounted only when enabled
    link_view: str  # dotted path of the view that opens this type's registration links
    # Dotted path of a callable that forgets what abandoned registrations of this type left behind
    # (pending secrets, used challenges); returns how many rows it changed. Run hourly for every type.
    cleanup: str = ""
    # Name of a boolean setting that must be on for this type to be offered (a private beta), if any.
    feature_flag: str = ""
    manage: tuple[tuple[str, str], ...] = ()  # (label, URL name): what the profile offers beside it
    needs: str = ""  # what an invitation tells the person to have ready, e.g. "the … app installed on your phone"

    @cached_property
    def model(self) -> type[Authenticator]:
        return apps.get_model(self.model_label)

    @property
    def enabled(self) -> bool:
        if self.feature_flag and not getattr(settings, self.feature_flag, False):
            return False
        return self.key not in settings.CAREID_DISABLED_AUTHENTICATORS

    def urlconf(self):
        """What `include()` takes: the URLconf module, or a (patterns, namespace) pair."""
        return _attribute(self.urls)

    def enrol_url(self) -> str:
        return reverse(self.enrol_url_name)

    def signin_url(self) -> str:
        return reverse(self.signin_url_name)


# Levels a relying service may ask for (acr_values) and the AAL each needs (CIS2's names).
LEVELS = {"AAL3_ANY": 3, "AAL2_OR_AAL3_ANY": 2, "AAL2_ANY": 2, "AAL1_USERPASS": 1}
DEFAULT_LEVEL = "AAL2_OR_AAL3_ANY"

_types: dict[str, AuthenticatorType] | None = None


def _load() -> dict[str, AuthenticatorType]:
    global _types
    if _types is None:
        _types = {}
        for entry in KIND_MODULES:
            kind: AuthenticatorType = _attribute(entry, "KIND")
            _types[kind.key] = kind
    return _types


def all_types() -> list[AuthenticatorType]:
    return list(_load().values())


def enabled_types() -> list[AuthenticatorType]:
    return [kind for kind in all_types() if kind.enabled]


def types_for_registration() -> list[AuthenticatorType]:
    """The enabled types in the order a person picks one to register (REGISTRATION_ORDER)."""
    rank = {key: position for position, key in enumerate(REGISTRATION_ORDER)}
    return sorted(enabled_types(), key=lambda kind: rank.get(kind.key, len(rank)))


def specific_classes() -> list[str]:
    """The classes a service may ask for by name (each method's own, e.g. AAL2_TOTP)."""
    return list(dict.fromkeys(kind.acr for kind in enabled_types()))


def levels(requested: str | None) -> list[str]:
    """The levels and classes a service asked for that careid knows, in its order of preference (acr_values
    lists what it accepts, the first preferred). When none is known, never a level below what was asked: an
    AAL3 class careid does not offer (a smartcard) is met by any AAL3 method, so it counts as AAL3_ANY; the
    service accepts any value it listed, so if one of them is not an AAL3 class, the default applies."""
    values = (requested or "").split()
    known = set(LEVELS) | set(specific_classes())
    wanted = list(dict.fromkeys(value for value in values if value in known))
    if wanted:
        return wanted
    if values and all(value.startswith("AAL3_") for value in values):
        return ["AAL3_ANY"]
    return [DEFAULT_LEVEL]


def level(requested: str | None) -> str:
    """The level or class the service prefers of those careid knows (levels() says the rest)."""
    return levels(requested)[0]


def _types_for_one(wanted: str) -> list[AuthenticatorType]:
    if wanted not in LEVELS:
        return [kind for kind in enabled_types() if kind.acr == wanted]
    if wanted == "AAL2_ANY":
        return [kind for kind in enabled_types() if kind.aal == 2]
    return [kind for kind in enabled_types() if kind.aal >= LEVELS[wanted]]


def types_for_level(requested: str | None) -> list[AuthenticatorType]:
    """The enabled types that meet any of the levels a service asked for (an AAL3 service: AAL3 only;
    AAL2_ANY: the AAL2 types; a named class: the types of that class), those of its preferred level first."""
    return list(dict.fromkeys(kind for wanted in levels(requested) for kind in _types_for_one(wanted)))


def _reaches_one(wanted: str, *, aal: int, acr: str) -> bool:
    if wanted in LEVELS:
        return aal >= LEVELS[wanted]
    return acr == wanted


def reaches(requested: str | None, *, aal: int, acr: str) -> bool:
    """Whether a sign-in at `aal` with class `acr` meets any of the levels asked for: a higher level always
    meets a lower one, a named class only itself."""
    return any(_reaches_one(wanted, aal=aal, acr=acr) for wanted in levels(requested))


def level_reached(requested: str | None, *, aal: int, acr: str) -> str | None:
    """The service's most preferred level or class that this sign-in meets (None when it meets none)."""
    return next((wanted for wanted in levels(requested) if _reaches_one(wanted, aal=aal, acr=acr)), None)


def run_cleanups() -> int:
    """Every type's clean-up hook (each one once, also for types switched off: what they left behind
    still goes); the rows they changed, in all."""
    hooks = dict.fromkeys(kind.cleanup for kind in all_types() if kind.cleanup)
    return sum(import_string(hook)() for hook in hooks)


def get(key: str) -> AuthenticatorType | None:
    return _load().get(key)


def get_enabled(key: str) -> AuthenticatorType | None:
    kind = get(key)
    return kind if kind is not None and kind.enabled else None


@dataclass(frozen=True)
class RegisteredAuthenticator:
    """What the profile and admin show of one registered authenticator (no secrets)."""

    kind: AuthenticatorType
    pk: int
    created_at: datetime
    last_used_at: datetime | None

    @property
    def manage_links(self) -> list[tuple[str, str]]:
        """What the profile offers beside it: nothing while its type is switched off (its URLs are not mounted)."""
        return [(label, reverse(url_name)) for label, url_name in self.kind.manage] if self.kind.enabled else []


def union_over_types(select, *fields: str, types: list[AuthenticatorType] | None = None) -> list[tuple]:
    """Rows of (position in `types`, *fields) from each type's table (every type by default) in one
    UNION query, so a page's query count stays flat however many types the registry holds."""
    querysets = [
        select(kind.model).annotate(position=Value(position, output_field=IntegerField()))
        .values_list("position", *fields).order_by()
        for position, kind in enumerate(all_types() if types is None else types)
    ]
    if not querysets:
        return []
    return list(querysets[0].union(*querysets[1:], all=True) if len(querysets) > 1 else querysets[0])


def authenticators_of(user) -> list[RegisteredAuthenticator]:
    """Every authenticator a person has registered, in registry order."""
    types = all_types()
    rows = union_over_types(lambda model: model.objects.registered(user), "pk", "created_at", "last_used_at")
    return [
        RegisteredAuthenticator(types[position], pk, created, last_used)
        for position, pk, created, last_used in sorted(rows, key=lambda row: row[0])
    ]


def registered_types_of(users) -> dict[int, list[AuthenticatorType]]:
    """For a page of people: user id -> the types they have registered, in registry order."""
    types = all_types()
    found: dict[int, list[AuthenticatorType]] = {}
    rows = union_over_types(lambda model: model.objects.filter(user__in=users, confirmed=True), "user_id")
    for position, user_id in sorted(rows):
        found.setdefault(user_id, []).append(types[position])
    return found
