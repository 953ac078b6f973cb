from django.apps import AppConfig


class SigninConfig(AppConfig):
    name = "signin"
    verbose_name = "CIS2 Authentication"

    def ready(self) -> None:
        from django.contrib.auth.models import update_last_login
        from django.contrib.auth.signals import user_logged_in

        from . import checks  # noqa: F401  (deploy checks)

        # last_login is written with the sign-in's throttle reset, in the same UPDATE
        # (signin.throttle.release), instead of by a second UPDATE from this receiver.
        user_logged_in.disconnect(update_last_login, dispatch_uid="update_last_login")
