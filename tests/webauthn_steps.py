"""The WebAuthn pages as a browser goes through them, with a software authenticator (soft_authenticator.py)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from .soft_authenticator import SoftAuthenticator, options_from_page

# How each type's authenticator answers: a security key over USB, the others the computer's (or iPad's) own.
ATTACHMENTS = {
    "security-key": ("cross-platform", ("usb",)),
    "windows-hello": ("platform", ("internal",)),
    "ipad": ("platform", ("internal",)),
    "passkey": ("platform", ("internal", "hybrid")),
}


def authenticator_for(kind: str, origin: str, **fields) -> SoftAuthenticator:
    attachment, transports = ATTACHMENTS[kind]
    fields.setdefault("backup_eligible", kind == "passkey")  # passkeys are usually synced
    return SoftAuthenticator(origin=origin, attachment=attachment, transports=transports, **fields)


def ceremony_url(kind: str) -> str:
    return f"/register/{kind}/set-up/"


def start_registration(client, kind: str):
    """'Register …' with the sole-access checkbox ticked, from "Add other authenticators"."""
    response = client.post(f"/authenticators/{kind}/", {"confirm": "on"})
    assert response.status_code == 302 and response.url == ceremony_url(kind), response
    return response


def options_of(client, url: str) -> dict:
    response = client.get(url)
    assert response.status_code == 200, response.content.decode()[:2000]
    return options_from_page(response.content.decode())


def post_answer(client, url: str, answer: dict | None = None, client_error: str = ""):
    return client.post(url, {"credential": json.dumps(answer) if answer is not None else "",
                             "client_error": client_error})


def register(client, kind: str, authenticator: SoftAuthenticator, **create):
    start_registration(client, kind)
    options = options_of(client, ceremony_url(kind))
    return post_answer(client, ceremony_url(kind), authenticator.create(options, **create))


def signin_verify_url(kind: str, query: dict | None = None) -> str:
    url = "/login/passkey/" if kind == "passkey" else f"/login/{kind}/verify/"
    return url + (f"?{urlencode(query)}" if query else "")


def give_email(client, kind: str, email: str, query: dict | None = None):
    suffix = f"?{urlencode(query)}" if query else ""
    response = client.post(f"/login/{kind}/{suffix}", {"email": email})
    assert response.status_code == 302 and response.url == signin_verify_url(kind, query), response
    return response


def sign_in(client, kind: str, authenticator: SoftAuthenticator, email: str | None = None, *,
            query: dict | None = None, **get):
    """The e-mail address (not for a passkey), then the assertion; the last response."""
    if kind != "passkey":
        give_email(client, kind, email, query)
    url = signin_verify_url(kind, query)
    options = options_of(client, url)
    return post_answer(client, url, authenticator.get(options, **get))
