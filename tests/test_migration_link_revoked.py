"""authenticators 0008 records which links a suspension or closure revoked (RegistrationLink.revoked_at); 0009 marks
the links revoked before it as the outbox told them until then, by their lifetime against the settings."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from .migrations import migrate, migrate_to_latest

BEFORE = ("authenticators", "0007_drop_old_device_throttle_columns")
AFTER = ("authenticators", "0009_mark_links_revoked_before")


@pytest.fixture
def at_latest(transactional_db):
    yield
    migrate_to_latest()


def test_links_revoked_before_the_migration_are_marked_revoked(at_latest, settings):
    apps = migrate(BEFORE)
    User = apps.get_model("accounts", "User")
    Link = apps.get_model("authenticators", "RegistrationLink")
    user = User.objects.create(uid="123456789012", email="mary.seacole@nhs.net", first_name="Mary", last_name="Seacole")
    now, ttl, journey = timezone.now(), settings.CAREID_INVITATION_LINK_TTL, settings.CAREID_REGISTRATION_JOURNEY_TTL
    issued = now - 2 * ttl

    def link(name: str, **fields):
        fields.setdefault("created_at", issued)
        return Link.objects.create(user=user, kind="authenticator-app", purpose="invitation", token_hash=name * 64,
                                   **fields)

    revoked = link("a", expires_at=issued + ttl / 2)
    ran_out = link("b", expires_at=issued + ttl)
    working = link("c", created_at=now - timedelta(minutes=1), expires_at=now + ttl / 2)  # issued when shorter
    journey_ended = link("d", expires_at=issued + ttl, used_at=issued, journey_expires_at=issued + journey / 3)  # left alone
    journey_ran_out = link("e", expires_at=issued + ttl, used_at=issued, journey_expires_at=issued + journey)
    completed = link("f", expires_at=issued + ttl, used_at=issued, journey_expires_at=issued + journey / 3,
                     completed_at=issued + journey / 3)

    apps = migrate(AFTER)
    revoked_at = dict(apps.get_model("authenticators", "RegistrationLink").objects.values_list("pk", "revoked_at"))
    assert revoked_at == {revoked.pk: revoked.expires_at, ran_out.pk: None, working.pk: None,
                          journey_ended.pk: None, journey_ran_out.pk: None,
                          completed.pk: None}
