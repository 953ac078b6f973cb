"""Secrets that e-mails carry but the database must not hold in a usable form.

A row keeps a random nonce; the secret sent to the person is an HMAC of that nonce under
SECRET_KEY. A Celery task can then take only the row's id and rebuild what to send, and a
copy of the database alone yields neither codes nor links.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

from django.utils.crypto import salted_hmac


def new_nonce() -> str:
    return secrets.token_hex(16)


def derive(purpose: str, nonce: str) -> bytes:
    return salted_hmac(f"careid.{purpose}", nonce, algorithm="sha256").digest()


def derive_token(purpose: str, nonce: str) -> str:
    """256 bits, URL-safe."""
    return base64.urlsafe_b64encode(derive(purpose, nonce)).rstrip(b"=").decode("ascii")


def derive_digits(purpose: str, nonce: str, digits: int) -> str:
    number = int.from_bytes(derive(purpose, nonce), "big") % 10**digits  # bias < 2**-200
    return f"{number:0{digits}d}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
