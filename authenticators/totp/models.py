from __future__ import annotations

from django.db import models
from django.utils import timezone

from authenticators.base.models import Authenticator

from . import codes


class AuthenticatorApp(Authenticator):
    """Microsoft Authenticator (or any RFC 6238 app): the second factor after the password."""

    key = models.CharField(max_length=80, help_text="Hex-encoded TOTP secret (never shown).")
    last_t = models.BigIntegerField(default=-1, help_text="The last accepted time step (replay guard).")

    class Meta(Authenticator.Meta):
        verbose_name = "Microsoft Authenticator"
        verbose_name_plural = "Microsoft Authenticators"

    def verify_token(self, token) -> bool:
        step = codes.matching_step(self.key, str(token), after_step=self.last_t)
        # Conditional update: of two simultaneous requests with the same code, one wins.
        fields = {"last_t": step, "last_used_at": timezone.now()}
        accepted = step is not None and bool(AuthenticatorApp.objects.filter(pk=self.pk, last_t__lt=step).update(**fields))
        if accepted:
            for name, value in fields.items():
                setattr(self, name, value)
        return accepted


class AppRegistrationQuerySet(models.QuerySet["AppRegistration"]):
    def forget_abandoned(self) -> int:
        """Journeys past their deadline keep no pending secret or password hash."""
        return (
            self.filter(link__journey_expires_at__lt=timezone.now())
            .exclude(pending_secret="", pending_password="")
            .update(pending_secret="", pending_password="")
        )


def forget_abandoned_registrations() -> int:
    """The type's clean-up hook (registry): journeys past their deadline keep no pending secret."""
    return AppRegistration.objects.forget_abandoned()


class AppRegistration(models.Model):
    """What the Microsoft Authenticator journey keeps between its steps, beside its link."""

    link = models.OneToOneField(
        "authenticators.RegistrationLink", on_delete=models.CASCADE, primary_key=True, related_name="app_registration"
    )
    pending_secret = models.CharField(max_length=80, blank=True)
    pending_password = models.CharField(max_length=256, blank=True)  # a hash, applied on completion

    objects = AppRegistrationQuerySet.as_manager()

    def forget_secrets(self) -> None:
        AppRegistration.objects.filter(pk=self.pk).update(pending_secret="", pending_password="")
        self.pending_secret = self.pending_password = ""
