"""Exceptions any part of careid may raise that the error pages know about."""

from __future__ import annotations


class ServiceUnavailable(Exception):
    """A component this step needs cannot be reached, and going on without it would be unsafe (a sign-in
    that cannot be counted, for one). The person gets the 503 page: try again in a few minutes."""
