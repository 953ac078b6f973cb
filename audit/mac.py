"""The audit trail's keyed hashes, over an event's columns as the database gives them back: the MAC careid
writes with each event as it inserts it (`written_mac`), and the canonical form the hash chain's links
(audit/chain.py) are computed over. Keyed by CAREID_AUDIT_CHAIN_KEY, which the database does not hold.
No model here: audit/models.py computes an event's MAC with it before the INSERT."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache

from django.conf import settings

# An event's content: what its chain hash covers (audit/chain.py) and what PostgreSQL lets no UPDATE change
# (audit/models.py's trigger). Every column but the three the sealer writes (seq, chain_hash, sealed_at).
CHAINED_FIELDS = ("id", "at", "event", "outcome", "actor_id", "subject_id", "ip", "user_agent", "method", "aal",
                  "details")
# What the MAC careid writes with each event covers: its content but the id, which the database gives it.
# The MAC itself is not chained (the chain's links predate it), but no UPDATE changes it.
WRITTEN_FIELDS = CHAINED_FIELDS[1:]


def key() -> bytes:
    return settings.CAREID_AUDIT_CHAIN_KEY.encode()


def text(value) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def keyed_hash(message: object) -> str:
    """HMAC-SHA256 over `message` as canonical JSON (sorted keys, compact, not ASCII-escaped)."""
    encoded = json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hmac.new(key(), encoded.encode(), hashlib.sha256).hexdigest()


@lru_cache(maxsize=4096)  # verify() meets the same few addresses over and over
def _ip(value) -> str | None:
    """An address as both sides can write it: PostgreSQL's inet output and Python's string differ (IPv6
    zeros, IPv4-mapped and IPv4-compatible forms), the fully written-out form does not."""
    if not value:
        return None  # careid stores a blank address as NULL
    try:
        return ipaddress.ip_address(str(value)).exploded
    except ValueError:
        return str(value)


def check_details(value: object) -> None:
    """Raise TypeError if an event's details hold a float that PostgreSQL's jsonb would give back in another
    form: one Python writes with an exponent (1e+16, from 10**16 up) comes back as digits alone, an integer,
    so the MAC computed as the event is written would not match it read back, and verify_audit would report an
    untouched event as altered (infinities and NaN are not JSON at all). Other floats (2.5, 1e-05) come back
    as written. Record such numbers as integers or text."""
    if isinstance(value, float) and (not math.isfinite(value) or "e+" in repr(value)):
        raise TypeError(f"audit details hold {value!r}, which the database would give back in another form: "
                        "record an integer or text")
    if isinstance(value, Mapping):
        for item in value.values():
            check_details(item)
    elif isinstance(value, list | tuple):
        for item in value:
            check_details(item)


def written_mac(content: Mapping) -> str:
    """The MAC careid gives an event as it inserts it: keyed, over every column of its content but `id`
    (not known before the INSERT), written as verify() reads them back from the database. The sealer holds
    the key too, but only chains what it finds; without this, an event altered and unsealed by someone
    able to lift the triggers would be chained again as if careid had written it."""
    values = [_ip(content["ip"]) if name == "ip" else text(content[name]) for name in WRITTEN_FIELDS]
    return keyed_hash(["careid.audit-written.v1", values])
