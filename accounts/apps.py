from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Care Identities"

    def ready(self) -> None:
        from . import notifications  # noqa: F401  (registers its e-mails with the outbox in every process)
