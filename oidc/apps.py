from django.apps import AppConfig


class OidcConfig(AppConfig):
    name = "oidc"
    verbose_name = "Relying services (OpenID Connect)"

    def ready(self) -> None:
        from . import checks, receivers  # noqa: F401  (deploy checks; sessions ending -> back-channel logout)
