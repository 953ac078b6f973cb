"""Where a person may be sent after signing in (`goto`)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.utils.http import url_has_allowed_host_and_scheme

_LOOPBACK = {"localhost", "127.0.0.1", "[::1]"}


def safe_goto(goto: str | None) -> str | None:
    """`goto` when it is a same-site path or a URL on CAREID_ALLOWED_REDIRECT_HOSTS, else None.

    Refuses //host, https:host, /\\host, javascript:, control characters and their
    percent-encoded forms.
    """
    if not goto or len(goto) > 2048:
        return None
    decoded = unquote(unquote(goto))
    for text in (goto, decoded):
        if "\\" in text or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
            return None
    try:
        parts = urlsplit(goto)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:  # "https://[x": an unclosed IPv6 bracket, a bad port
        return None
    if not parts.scheme and not parts.netloc:
        if goto.startswith("/") and not decoded.startswith("//"):
            return goto
        return None
    netloc = parts.netloc.lower()
    if parts.username or parts.password or not host:
        return None
    allowed = {entry.lower() for entry in settings.CAREID_ALLOWED_REDIRECT_HOSTS}
    if netloc not in allowed:
        return None
    secure = parts.scheme == "https" or (parts.scheme == "http" and host in _LOOPBACK)
    if not secure:
        return None
    if not url_has_allowed_host_and_scheme(goto, allowed_hosts={netloc}, require_https=parts.scheme == "https"):
        return None
    return goto
