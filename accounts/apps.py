from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Care Identities"

    def ready(self) -> None:
        from django.conf import settings

        from . import notifications  # noqa: F401  (registers its e-mails with the outbox in every process)
        from .hashers import check_cost

        check_cost(time_cost=settings.CAREID_ARGON2_TIME_COST, memory_cost=settings.CAREID_ARGON2_MEMORY_COST,
                   parallelism=settings.CAREID_ARGON2_PARALLELISM)
