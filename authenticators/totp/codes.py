"""The TOTP ceremony itself (RFC 6238, 6 digits, 30 s), free of models and requests."""

from __future__ import annotations

import base64
import time
from binascii import unhexlify
from urllib.parse import quote, urlencode

import qrcode
import qrcode.image.svg
from django_otp.oath import TOTP
from django_otp.util import random_hex

ISSUER = "NHS Care Identity"
STEP = 30
DIGITS = 6
TOLERANCE = 1  # ±1 step for clock drift between phone and server


def new_secret() -> str:
    """160 bits, hex-encoded (what SECURITY.md and RFC 4226 ask for)."""
    return random_hex(20)


def base32(secret_hex: str) -> str:
    return base64.b32encode(unhexlify(secret_hex)).decode("ascii").rstrip("=")


def grouped(secret_hex: str) -> str:
    """The base32 secret in groups of four, easier to type into an app by hand."""
    text = base32(secret_hex)
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def matching_step(secret_hex: str, token: str, *, after_step: int = -1) -> int | None:
    """The time step at which `token` is valid (within tolerance), only if later than `after_step`."""
    if len(token) != DIGITS or not token.isdigit():
        return None
    totp = TOTP(unhexlify(secret_hex), step=STEP, digits=DIGITS)
    totp.time = time.time()
    if totp.verify(int(token), tolerance=TOLERANCE, min_t=after_step + 1):
        return totp.t()
    return None


def provisioning_uri(secret_hex: str, account: str) -> str:
    """The Key Uri Format: its values percent-encoded as RFC 3986 says (a space is %20; '+' would be shown as such)."""
    label = quote(f"{ISSUER}:{account}")
    query = urlencode({"secret": base32(secret_hex), "issuer": ISSUER, "algorithm": "SHA1", "digits": DIGITS, "period": STEP},
                      quote_via=quote)
    return f"otpauth://totp/{label}?{query}"


def qr_svg(data: str) -> str:
    """An inline SVG (no image request, nothing for a strict CSP to block)."""
    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=10, border=4)
    return image.to_string(encoding="unicode")
