"""authenticators 0002 moves the registration journeys' One Time Passwords from the Authenticator app's
state (AppRegistration.email_code) to the link, and back when unapplied."""

from __future__ import annotations

import pytest
from django.utils import timezone

from .migrations import migrate, migrate_to_latest

BEFORE = ("authenticators", "0001_initial")
AFTER = ("authenticators", "0002_email_code_on_the_link")


@pytest.fixture
def at_latest(transactional_db):
    yield
    migrate_to_latest()


def test_journeys_keep_their_code_across_the_migration(at_latest):
    apps = migrate(BEFORE)
    User = apps.get_model("accounts", "User")
    Code = apps.get_model("accounts", "EmailOneTimePassword")
    Link = apps.get_model("authenticators", "RegistrationLink")
    AppRegistration = apps.get_model("authenticators", "AppRegistration")
    now = timezone.now()
    user = User.objects.create(uid="123456789012", email="mary.seacole@nhs.net", first_name="Mary", last_name="Seacole")
    code = Code.objects.create(user=user, email=user.email, purpose="registration", nonce="n" * 32, expires_at=now)
    with_code = Link.objects.create(user=user, kind="authenticator-app", purpose="presence", token_hash="a" * 64,
                                    expires_at=now)
    without = Link.objects.create(user=user, kind="authenticator-app", purpose="presence", token_hash="b" * 64,
                                  expires_at=now)
    AppRegistration.objects.create(link=with_code, email_code=code, pending_secret="00ff")
    AppRegistration.objects.create(link=without)

    apps = migrate(AFTER)
    Link = apps.get_model("authenticators", "RegistrationLink")
    assert Link.objects.get(pk=with_code.pk).email_code_id == code.pk
    assert Link.objects.get(pk=without.pk).email_code_id is None
    assert apps.get_model("authenticators", "AppRegistration").objects.get(pk=with_code.pk).pending_secret == "00ff"

    apps = migrate(BEFORE)
    AppRegistration = apps.get_model("authenticators", "AppRegistration")
    assert AppRegistration.objects.get(pk=with_code.pk).email_code_id == code.pk
    assert AppRegistration.objects.get(pk=without.pk).email_code_id is None
