"""The provider parses each signing key once per process (oidc/signing.py), and what it signs
still verifies against what it publishes, through a key rollover too."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from oidc import signing
from oidc.adapter import CareIdOIDCAdapter

from . import oidc_rp as rp
from .conftest import sign_in


@pytest.fixture
def pem_loads(monkeypatch):
    """How many times a private key PEM is parsed, from a cold cache."""
    loads = []
    real = serialization.load_pem_private_key

    def counting(data, *args, **kwargs):
        loads.append(data)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(serialization, "load_pem_private_key", counting)
    signing._parsed.cache_clear()
    yield loads
    signing._parsed.cache_clear()


def new_pem() -> str:
    return rp.new_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()


def id_token_of_a_flow(client, service, rp_key) -> str:
    response, authorization = rp.authorize(client, service.pk)
    tokens = rp.exchange(client, service.pk, rp_key, rp.code_of(response, authorization), authorization)
    assert tokens.status_code == 200, tokens.content
    return tokens.json()["id_token"]


def test_the_signing_key_is_parsed_once_for_many_id_tokens_and_they_verify(client, person, db, pem_loads):
    rp_key = rp.new_key()
    service, _ = rp.register(key=rp_key)
    sign_in(client, person)
    id_tokens = [id_token_of_a_flow(client, service, rp_key) for _ in range(3)]
    for id_token in id_tokens:
        assert rp.verified(client, id_token, service.pk)["sub"] == person.user.uid  # the JWKS as published
    assert len(pem_loads) == 1


def test_a_rolled_key_is_parsed_in_its_turn_and_both_are_published(client, person, db, settings, op_signing_key,
                                                                   pem_loads):
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    settings.IDP_OIDC_PRIVATE_KEYS = [{"pem": new_pem(), "issued_at": now},  # the newest signs
                                      {"pem": op_signing_key, "issued_at": now - timedelta(days=1)}]
    rp_key = rp.new_key()
    service, _ = rp.register(key=rp_key)
    sign_in(client, person)
    id_token = id_token_of_a_flow(client, service, rp_key)
    assert rp.verified(client, id_token, service.pk)["sub"] == person.user.uid
    kids = [key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]]
    assert len(set(kids)) == 2
    assert len(pem_loads) == 2  # each key once, however many requests


def test_callers_get_their_own_copy_of_the_public_jwk(op_signing_key):
    jwk, key = signing.load_jwk_from_pem(op_signing_key)
    jwk["kid"] = "changed by a caller"
    again, same_key = signing.load_jwk_from_pem(op_signing_key)
    assert again["kid"] != "changed by a caller" and same_key is key


class AdapterAddingAClaim(CareIdOIDCAdapter):
    """A deployment's adapter using allauth's populate_id_token hook."""

    def populate_id_token(self, id_token, client, scopes, **kwargs) -> None:
        id_token["org_code"] = "RX1"


def test_the_id_token_goes_through_the_adapters_populate_id_token_hook(client, person, db, settings):
    settings.IDP_OIDC_ADAPTER = f"{__name__}.AdapterAddingAClaim"
    rp_key = rp.new_key()
    service, _ = rp.register(key=rp_key)
    sign_in(client, person)
    claims = rp.verified(client, id_token_of_a_flow(client, service, rp_key), service.pk)
    assert claims["org_code"] == "RX1" and claims["acr"] == "AAL2_OR_AAL3_ANY"


def test_the_adapter_finds_a_person_by_the_sub_it_gives(db, make_person):
    from allauth.idp.oidc.adapter import get_adapter

    person = make_person()
    adapter = get_adapter()
    assert adapter.get_user_by_sub(None, adapter.get_user_sub(None, person.user)) == person.user
    assert adapter.get_user_by_sub(None, str(person.user.pk)) is None
