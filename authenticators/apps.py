from django.apps import AppConfig


class AuthenticatorsConfig(AppConfig):
    name = "authenticators"
    verbose_name = "Authenticators"

    def ready(self) -> None:
        from . import emails  # noqa: F401  (registers its e-mails with the outbox in every process)
