"""A software WebAuthn authenticator and browser, for the server-side tests and the bench.

It makes what a browser sends back (PublicKeyCredential.toJSON()) from the options careid renders, with
real keys (cryptography, ECDSA P-256) and real CBOR (cbor2): attestation "none", "packed" self
attestation, or "packed" with a certificate chain; assertions signed as an authenticator signs them.
careid checks these with py_webauthn exactly as it checks a browser's answer; nothing is mocked. Every
field can be made wrong on purpose (origin, RP ID, challenge, flags, counter, user handle).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40


def options_from_page(html: str) -> dict:
    """The options a page gives its script (Django's json_script)."""
    found = re.search(r'<script id="webauthn-options" type="application/json">(.*?)</script>', html, re.S)
    assert found, "no WebAuthn options on the page"
    return json.loads(found.group(1))


def cose_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    numbers = key.public_key().public_numbers()
    return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


@dataclass
class Credential:
    credential_id: bytes
    key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0


@dataclass
class SoftAuthenticator:
    origin: str
    attachment: str = "cross-platform"
    transports: tuple[str, ...] = ("usb",)
    aaguid: bytes = bytes(16)
    user_verified: bool = True
    backup_eligible: bool = False
    counts: bool = True  # an authenticator with a signature counter
    credentials: dict[bytes, Credential] = field(default_factory=dict)

    def _flags(self, uv: bool | None, *, attested: bool) -> int:
        flags = UP | (UV if (self.user_verified if uv is None else uv) else 0)
        if self.backup_eligible:
            flags |= BE | BS
        return flags | (AT if attested else 0)

    @staticmethod
    def _client_data(kind: str, challenge: str, origin: str) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False}).encode()

    def create(self, options: dict, *, fmt: str = "none", origin: str | None = None, rp_id: str | None = None,
               challenge: str | None = None, uv: bool | None = None, attachment: str | None = None,
               attestation_key: ec.EllipticCurvePrivateKey | None = None, x5c: list[bytes] | None = None,
               credential_id: bytes | None = None, public_key: bytes | None = None) -> dict:
        """navigator.credentials.create(): a new credential (or, given `credential_id`, one this
        authenticator holds again), its attestation and the JSON a browser posts. `public_key`: the
        COSE key to put in the authenticator data instead of the credential's own."""
        rp_id = rp_id or options["rp"]["id"]
        if credential_id is None:
            credential_id = secrets.token_bytes(32)
            self.credentials[credential_id] = Credential(credential_id, ec.generate_private_key(ec.SECP256R1()),
                                                         options["rp"]["id"], base64url_to_bytes(options["user"]["id"]))
        key = self.credentials[credential_id].key
        client_data = self._client_data("webauthn.create", challenge or options["challenge"], origin or self.origin)
        auth_data = (hashlib.sha256(rp_id.encode()).digest() + bytes([self._flags(uv, attested=True)])
                     + (0).to_bytes(4, "big") + self.aaguid + len(credential_id).to_bytes(2, "big") + credential_id
                     + (cose_key(key) if public_key is None else public_key))
        signed = auth_data + hashlib.sha256(client_data).digest()
        if fmt == "none":
            statement = {}
        elif x5c:
            statement = {"alg": -7, "sig": sign(attestation_key, signed), "x5c": x5c}
        else:  # packed self attestation
            statement = {"alg": -7, "sig": sign(key, signed)}
        return {
            "id": bytes_to_base64url(credential_id), "rawId": bytes_to_base64url(credential_id), "type": "public-key",
            "response": {"clientDataJSON": bytes_to_base64url(client_data),
                         "attestationObject": bytes_to_base64url(cbor2.dumps({"fmt": fmt, "attStmt": statement,
                                                                               "authData": auth_data})),
                         "transports": list(self.transports)},
            "authenticatorAttachment": attachment or self.attachment, "clientExtensionResults": {},
        }

    def get(self, options: dict, *, credential_id: bytes | None = None, origin: str | None = None,
            rp_id: str | None = None, challenge: str | None = None, uv: bool | None = None,
            sign_count: int | None = None, user_handle: bytes | None = None) -> dict:
        """navigator.credentials.get(): the credential the options allow (or, with none listed, this
        authenticator's credential for the RP: a discoverable one), signed over the challenge."""
        if credential_id is None:
            allowed = [base64url_to_bytes(item["id"]) for item in options.get("allowCredentials") or []]
            held = [cid for cid in (allowed or list(self.credentials)) if cid in self.credentials]
            assert held, "this authenticator holds none of the credentials asked for"
            credential_id = held[0]
        credential = self.credentials[credential_id]
        if sign_count is None:
            if self.counts:
                credential.sign_count += 1
            sign_count = credential.sign_count
        client_data = self._client_data("webauthn.get", challenge or options["challenge"], origin or self.origin)
        auth_data = (hashlib.sha256((rp_id or options["rpId"]).encode()).digest()
                     + bytes([self._flags(uv, attested=False)]) + sign_count.to_bytes(4, "big"))
        signature = sign(credential.key, auth_data + hashlib.sha256(client_data).digest())
        handle = credential.user_handle if user_handle is None else user_handle
        return {
            "id": bytes_to_base64url(credential_id), "rawId": bytes_to_base64url(credential_id), "type": "public-key",
            "response": {"clientDataJSON": bytes_to_base64url(client_data),
                         "authenticatorData": bytes_to_base64url(auth_data),
                         "signature": bytes_to_base64url(signature),
                         "userHandle": bytes_to_base64url(handle)},
            "authenticatorAttachment": self.attachment, "clientExtensionResults": {},
        }
