"""What every registration journey can run into, whatever the authenticator type."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class JourneyError(Exception):
    """The link or journey cannot go on; the page shows `title` and `message`."""

    title: str
    message: str
    status: int = 400


UNKNOWN_LINK = JourneyError(
    "This registration link is not valid",
    "Check you copied the whole link from the email, or ask your registration authority for a new one.",
    404,
)
EXPIRED_LINK = JourneyError(
    "This registration link has expired",
    "Registration links only work for a short time. Ask for a new registration link.",
    410,
)
USED_LINK = JourneyError(
    "This registration link has already been used",
    "Each registration link works once. Ask for a new registration link.",
    410,
)
OTHER_USER = JourneyError(
    "This registration link is for a different Care Identity",
    "You are signed in as someone else. Sign out, then open the link again.",
    403,
)
NOT_ACTIVE = JourneyError(
    "This Care Identity cannot register authenticators",
    "Contact your registration authority.",
    403,
)
NO_JOURNEY = JourneyError(
    "Your registration has ended",
    "The registration was completed, has timed out or was started in another browser. "
    "Ask for a new registration link to start again.",
    410,
)
TOO_MANY_FAILURES = JourneyError(
    "You have entered a wrong code too many times",
    "For your security this registration has stopped. Ask for a new registration link to start again.",
    403,
)
