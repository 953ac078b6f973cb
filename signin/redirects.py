"""Where a person may be sent after signing in (`goto`)."""

from __future__ import annotations

from urllib.parse import unquote, urlencode, urlsplit

from django.conf import settings


def safe_goto(goto: str | None) -> str | None:
    """`goto` when it is a same-site path or one of CAREID_ALLOWED_REDIRECT_URLS (the whole URL, exactly), else None.

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
    except ValueError:  # "https://[x": an unclosed IPv6 bracket
        return None
    if not parts.scheme and not parts.netloc:
        if goto.startswith("/") and not decoded.startswith("//"):
            return goto
        return None
    return goto if goto in settings.CAREID_ALLOWED_REDIRECT_URLS else None  # each checked in settings


def url_with_query(url: str, **query: str | None) -> str:
    """`url` with the query's non-empty values, in the order given: how a page links or redirects to the next one
    while carrying where the person was going (`goto`, absent when there is none) and what they asked for."""
    query = {key: value for key, value in query.items() if value}
    return f"{url}?{urlencode(query)}" if query else url
