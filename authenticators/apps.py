from django.apps import AppConfig


class AuthenticatorsConfig(AppConfig):
    name = "authenticators"
    verbose_name = "Authenticators"

    def ready(self) -> None:
        from . import emails  # noqa: F401  (registers its e-mails with the outbox in every process)

        _check_attested_types()


def _check_attested_types() -> None:
    """A misspelt type in CAREID_WEBAUTHN_ATTESTED_TYPES would silently leave it outside the allow-list:
    refuse to start instead (in every process, web and worker alike)."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from .registry import all_types
    from .webauthn.models import WebAuthnCredential

    webauthn = {kind.key for kind in all_types() if issubclass(kind.model, WebAuthnCredential)}
    for key in settings.CAREID_WEBAUTHN_ATTESTED_TYPES:
        if key not in webauthn:
            raise ImproperlyConfigured(f"CAREID_WEBAUTHN_ATTESTED_TYPES names {key}, which is no WebAuthn type "
                                       f"(these are: {', '.join(sorted(webauthn))}).")
