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
        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        step = codes.matching_step(self.key, str(token), after_step=self.last_t)
        # Conditional update: of two simultaneous requests with the same code, one wins.
        fields = {"last_t": step, "last_used_at": timezone.now(), "throttling_failure_count": 0,
                  "throttling_failure_timestamp": None}
        accepted = step is not None and bool(AuthenticatorApp.objects.filter(pk=self.pk, last_t__lt=step).update(**fields))
        if accepted:
            for name, value in fields.items():
                setattr(self, name, value)
        else:
            self.throttle_increment()
        return accepted
