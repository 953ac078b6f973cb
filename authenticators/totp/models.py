from __future__ import annotations

from django.conf import settings
from django.db import connection, models
from django.utils import timezone
from django.utils.crypto import salted_hmac

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
    """The type's clean-up hook (registry): journeys past their deadline keep no pending secret; password
    reset waits that are over are forgotten."""
    return AppRegistration.objects.forget_abandoned() + PasswordResetWait.objects.forget_over()


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


class PasswordResetWaitQuerySet(models.QuerySet["PasswordResetWait"]):
    def claim(self, key: str) -> bool:
        """Start the wait before the next reset e-mail to `key`, unless one is running: True when the caller
        may e-mail now. One insert-or-conditional-update decides, and its row stays locked until the caller's
        transaction ends (which also gives the wait back, should that transaction fail): of resets started
        at the same moment, in any number of processes, one e-mails. The same statement every time."""
        now = timezone.now()
        table, column = (connection.ops.quote_name(name) for name in (PasswordResetWait._meta.db_table, "emailed_at"))
        # One statement (PostgreSQL and SQLite): with an INSERT then an UPDATE, the hourly clean-up deleting the
        # row between them made the UPDATE find nothing, and a reset e-mail due was held back.
        with connection.cursor() as cursor:
            cursor.execute(
                f'INSERT INTO {table} ("key", {column}) VALUES (%s, %s) ON CONFLICT ("key") DO UPDATE '
                f"SET {column} = excluded.{column} WHERE {table}.{column} IS NULL OR {table}.{column} <= %s "
                f"RETURNING 1", [key, *(connection.ops.adapt_datetimefield_value(moment)  # as the ORM writes it
                                        for moment in (now, now - settings.CAREID_EMAIL_CODE_COOLDOWN))])
            return cursor.fetchone() is not None

    def forget_over(self) -> int:
        return self.filter(emailed_at__lte=timezone.now() - settings.CAREID_EMAIL_CODE_COOLDOWN).delete()[0]


class PasswordResetWait(models.Model):
    """When a password reset last e-mailed an address (its Care Identity's code, or why it cannot be reset), or,
    for an address that is no Care Identity's, would have: no reset e-mails it again before
    CAREID_EMAIL_CODE_COOLDOWN has passed, whichever journey, browser or client address asks. Kept for the
    address asked for, whoever holds it (a Care Identity's wait that an RA's change of its e-mail carried to
    another address told that the old one had been a Care Identity's), under a keyed hash of it (the address
    is not kept)."""

    key = models.CharField(max_length=64, unique=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    objects = PasswordResetWaitQuerySet.as_manager()

    def __str__(self) -> str:
        return f"password reset wait {self.key[:12]}…"

    @staticmethod
    def key_for(email: str) -> str:
        return salted_hmac("careid.totp.password-reset-wait", f"address:{email.strip().lower()}",
                           algorithm="sha256").hexdigest()
