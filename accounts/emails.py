"""Parsing of e-mail addresses and the Care Identity allow-list check.

Kept apart from the models so forms, allauth's adapter and the onboarding command
share one definition of "the domain of an address".
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

NOT_ON_ALLOW_LIST = "This email domain is not on the Care Identity allow list"
ALREADY_ON_PROFILE = "This email address is already on your Care Identity profile"
INVALID_EMAIL = "Enter an email address in the correct format, like name@example.nhs.net"
MAX_LENGTH = 254  # RFC 5321's longest path, and every address column's length
TOO_LONG = f"Email address must be {MAX_LENGTH} characters or fewer"


def normalise_domain(domain: str) -> str:
    """Lower-case, without a trailing dot, in IDNA (punycode) form; raises ValueError."""
    domain = domain.strip().lower()
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain or domain.startswith(".") or ".." in domain:
        raise ValueError("empty label")
    # Unicode look-alikes (a Cyrillic "е" in "nhs.nеt") become xn--… labels and so never
    # match an allowed ASCII domain.
    return domain.encode("idna").decode("ascii")


def normalise_email(email: str) -> str:
    """The canonical form we store: lower case (as allauth stores it), domain in IDNA form.

    Raises ValidationError with a message for people when it is not an address.
    """
    email = (email or "").strip()
    local, at, domain = email.rpartition("@")
    if not at or not local:
        raise ValidationError(INVALID_EMAIL, code="invalid")
    try:
        domain = normalise_domain(domain)
    except (ValueError, UnicodeError):
        raise ValidationError(INVALID_EMAIL, code="invalid") from None
    email = f"{local}@{domain}".lower()
    if len(email) > MAX_LENGTH:  # an address within the limit as typed can pass it once its domain is xn--…
        raise ValidationError(TOO_LONG, code="max_length")
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationError(INVALID_EMAIL, code="invalid") from None
    return email


def domain_and_parents(domain: str) -> list[str]:
    """'a.b.nhs.uk' -> ['a.b.nhs.uk', 'b.nhs.uk', 'nhs.uk', 'uk'], label by label."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]
