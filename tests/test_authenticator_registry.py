"""The registry is the one place that knows the types: entries naming an attribute, each type's own
clean-up hook run by the hourly task, types behind a feature flag, and each list in the guide's order."""

from __future__ import annotations

import dataclasses
import html
import re

import pytest

from authenticators import registry
from authenticators.tasks import forget_abandoned_registrations_task

from .conftest import run_task

CLEANED: list[str] = []


def count_cleanup() -> int:
    CLEANED.append("extra")
    return 2


@pytest.fixture
def extra_type(monkeypatch):
    """A second type sharing the Authenticator app's model, with its own hook and a feature flag."""
    app = registry.get("authenticator-app")
    extra = dataclasses.replace(app, key="extra", cleanup=f"{__name__}.count_cleanup", feature_flag="CAREID_EXTRA_BETA")
    monkeypatch.setattr(registry, "_types", {**registry._load(), "extra": extra})
    CLEANED.clear()
    return extra


def test_an_entry_may_name_an_attribute_of_a_module():
    assert registry._attribute("authenticators.totp.kind", "KIND") is registry.get("authenticator-app")
    assert registry._attribute("authenticators.totp.kind:KIND") is registry.get("authenticator-app")


def test_the_hourly_clean_up_runs_every_types_own_hook_once(db, extra_type, monkeypatch):
    twin = dataclasses.replace(extra_type, key="twin")  # the same hook twice runs once
    monkeypatch.setattr(registry, "_types", {**registry._types, "twin": twin})
    assert run_task(forget_abandoned_registrations_task) == 2
    assert CLEANED == ["extra"]


def test_a_type_behind_a_feature_flag_is_offered_only_when_the_flag_is_on(extra_type, settings):
    settings.CAREID_EXTRA_BETA = False
    assert extra_type not in registry.enabled_types() and registry.get_enabled("extra") is None
    settings.CAREID_EXTRA_BETA = True
    assert extra_type in registry.enabled_types() and registry.get_enabled("extra") is extra_type
    settings.CAREID_DISABLED_AUTHENTICATORS = ["extra"]  # switching off still wins
    assert registry.get_enabled("extra") is None


def radio_labels(page: str) -> list[str]:
    return [html.unescape(label) for label in
            re.findall(r'<label class="nhsuk-label nhsuk-radios__label"[^>]*>(.*?)</label>', page)]


def test_select_authenticator_type_lists_the_types_in_the_guides_order(signed_in):
    """The guide's Step 4 lists iPad, Microsoft Authenticator, Windows Hello, Security key. This person has
    the app already, so the page offers the other three in that order."""
    guide = ["iPad", "Microsoft Authenticator", "Windows Hello", "Security key"]
    shown = radio_labels(signed_in.get("/authenticators/").content.decode())
    assert [label for label in shown if label in guide] == ["iPad", "Windows Hello", "Security key"], shown


def test_the_sign_in_page_keeps_the_order_the_guide_shows_there(client, db):
    """The guide's Step 5 ("CIS2 Authentication"): Smartcard, Windows Hello, Security key, iPad app,
    Authenticator app, NHSmail, Passkey (private beta); careid has no Smartcard or NHSmail yet."""
    shown = radio_labels(client.get("/login/").content.decode())
    assert shown == ["Windows Hello", "Security key", "iPad app", "Authenticator app"], shown


# --- every part lists the WebAuthn types through the registry, with no code of their own -----------------


@pytest.fixture
def with_a_security_key(make_person):
    from authenticators.models import SecurityKey

    person = make_person(email="key.holder@nhs.net")
    SecurityKey.objects.create(user=person.user, name="Security key", confirmed=True, credential_id=b"\x01" * 32,
                               public_key=b"cose", user_handle=b"\x02" * 32)
    return person


def test_the_profile_lists_every_type_registered(client, with_a_security_key):
    from .conftest import sign_in

    sign_in(client, with_a_security_key)
    page = client.get("/profile/").content.decode()
    assert "Security key" in page and "Microsoft Authenticator" in page


def test_the_ra_lists_and_actions_cover_the_webauthn_types(ra_staff, with_a_security_key, settings):
    from accounts.roles import RA_MANAGER
    from audit.models import AuditEvent, Event
    from authenticators.models import SecurityKey

    _, client = ra_staff(RA_MANAGER)
    person = with_a_security_key.user
    page = client.get("/admin/accounts/user/")
    shown = {user.pk: [kind.name for kind in user.registered_types] for user in page.context["cl"].result_list}
    assert shown[person.pk] == ["Security key", "Microsoft Authenticator"]  # registry (CIS2) order
    listed = client.get("/admin/accounts/user/?authenticator=security-key").context["cl"].result_list
    assert [user.pk for user in listed] == [person.pk]
    from django.contrib import admin

    from authenticators.admin import SHARED_FIELDS

    for kind in registry.all_types():  # one admin per model, shared fields only: never key material
        assert admin.site._registry[kind.model].fields == SHARED_FIELDS

    from django.utils import timezone

    from accounts.models import User

    User.objects.filter(pk=person.pk).update(locked_at=timezone.now(), code_failures=30)
    assert client.post(f"/admin/accounts/user/{person.pk}/unlock/", {"reason": "Checked by phone"}).status_code == 302
    assert User.objects.get(pk=person.pk).locked_at is None
    page = client.get(f"/admin/accounts/user/{person.pk}/change/").content.decode()
    assert "Remove Security key" in page
    response = client.post(f"/admin/accounts/user/{person.pk}/authenticators/security-key/remove/", {"reason": "Lost key"})
    assert response.status_code == 302 and not SecurityKey.objects.exists()
    assert AuditEvent.objects.filter(event=Event.AUTHENTICATOR_REMOVED, subject=person, details__name="Security key").exists()
