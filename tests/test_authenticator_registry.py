"""The registry is the one place that knows the types: entries naming an attribute, each type's own
clean-up hook run by the hourly task, and types behind a feature flag."""

from __future__ import annotations

import dataclasses

import pytest

from authenticators import registry
from authenticators.tasks import forget_abandoned_registrations_task

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
    assert forget_abandoned_registrations_task.delay().get() == 2
    assert CLEANED == ["extra"]


def test_a_type_behind_a_feature_flag_is_offered_only_when_the_flag_is_on(extra_type, settings):
    settings.CAREID_EXTRA_BETA = False
    assert extra_type not in registry.enabled_types() and registry.get_enabled("extra") is None
    settings.CAREID_EXTRA_BETA = True
    assert extra_type in registry.enabled_types() and registry.get_enabled("extra") is extra_type
    settings.CAREID_DISABLED_AUTHENTICATORS = ["extra"]  # switching off still wins
    assert registry.get_enabled("extra") is None
