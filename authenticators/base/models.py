from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import F
from django.urls import reverse
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django_otp.models import Device, DeviceManager, TimestampMixin

from careid import tokens


class AuthenticatorManager(DeviceManager):
    def registered(self, user):
        """The person's confirmed authenticator of this type (a queryset of at most one)."""
        return self.filter(user=user, confirmed=True)


class Authenticator(TimestampMixin, Device):
    """What every authenticator type shares: one per person, time-stamped. Wrong answers are throttled on
    the account (signin/throttle.py, per factor, across processes), not per device: django-otp's
    ThrottlingMixin is not used."""

    objects = AuthenticatorManager()

    class Meta:
        abstract = True
        constraints = [
            models.UniqueConstraint(fields=["user"], name="%(app_label)s_%(class)s_one_per_user"),
        ]


class RegistrationLinkQuerySet(models.QuerySet["RegistrationLink"]):
    def by_token(self, token: str) -> RegistrationLink | None:
        if not token or len(token) > 100:
            return None
        return self.select_related("user").filter(token_hash=tokens.token_hash(token)).first()

    def revoke(self) -> tuple[int, int]:
        """End these links for good: those not yet used stop working, and the registrations under way through
        used ones end at once (their steps answer "Your registration has ended"; the types' clean-up forgets
        their secrets). Each row ended says when in `revoked_at`: its lifetime cannot tell, since the settings
        it was issued under may have changed since. Returns (links revoked, journeys ended)."""
        now = timezone.now()
        links = self.filter(used_at__isnull=True, expires_at__gt=now).update(expires_at=now, revoked_at=now)
        journeys = self.filter(used_at__isnull=False, completed_at__isnull=True,
                               journey_expires_at__gt=now).update(journey_expires_at=now, revoked_at=now)
        return links, journeys


class RegistrationLink(models.Model):
    """A single-use link that lets one person register one authenticator type.

    After it is used, the row also holds where that registration journey is (step, failures,
    deadline, the One Time Password that proves the e-mail address); the journey is bound to the
    browser session that used the link. State that only one type needs lives in that type's own
    model (e.g. totp.AppRegistration).
    """

    class Purpose(models.TextChoices):
        INVITATION = "invitation", "Invitation"
        PRESENCE = "presence", "Issued for immediate use"
        EMAILED = "emailed", "Sent by email"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="registration_links")
    kind = models.CharField(max_length=32)
    purpose = models.CharField(max_length=12, choices=Purpose.choices)
    nonce = models.CharField(max_length=32, default=tokens.new_nonce, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    issued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    confirmed_at = models.DateTimeField(null=True, blank=True)  # "only I will have access to the device"
    used_at = models.DateTimeField(null=True, blank=True)
    # Ended early by a suspension or closure (RegistrationLinkQuerySet.revoke): the link if it was not yet used,
    # else the journey through it. Its deadline (expires_at, journey_expires_at) became that moment too.
    revoked_at = models.DateTimeField(null=True, blank=True)
    # The journey, once the link is used.
    step = models.CharField(max_length=16, blank=True)
    journey_expires_at = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveSmallIntegerField(default=0)
    completed_at = models.DateTimeField(null=True, blank=True)
    email_code = models.ForeignKey("accounts.EmailOneTimePassword", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    # A link sent ahead of time (an invitation, an e-mailed link) is not used up by "I confirm only I will
    # have access": each confirmation issues a fresh 3-minute link from it, until a registration through
    # one of those completes (then this one is used) or it expires.
    issued_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    exchanges = models.PositiveSmallIntegerField(default=0)

    objects = RegistrationLinkQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["user", "-created_at"], name="reglink_user_created")]

    def __str__(self) -> str:
        return f"{self.kind} link for {self.user_id} ({self.get_purpose_display()})"

    def save(self, *args, **kwargs) -> None:
        if not self.token_hash:
            self.token_hash = tokens.token_hash(self.token)
        super().save(*args, **kwargs)

    @property
    def token(self) -> str:
        return tokens.derive_token("registration-link", self.nonce)

    @property
    def url(self) -> str:
        return settings.CAREID_BASE_URL + reverse("registration_link", args=[self.token])

    @property
    def is_used(self) -> bool:
        return self.used_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()

    @property
    def is_revoked(self) -> bool:
        """Ended by a suspension or closure, not by running out its time (either way it is expired)."""
        return self.revoked_at is not None

    @property
    def started_signed_in(self) -> bool:
        """Issued by the person to themselves: "Add other authenticators", after signing in (an RA never
        issues themselves one: accounts.roles.is_protected_from)."""
        return self.issued_by_id is not None and self.issued_by_id == self.user_id

    @property
    def journey_is_over(self) -> bool:
        return (
            self.completed_at is not None
            or self.journey_expires_at is None
            or self.journey_expires_at <= timezone.now()
        )

    def mark_used(self, step: str, **fields) -> bool:
        """Use the link exactly once: False when another request used it first or it expired."""
        now = timezone.now()
        fields.update(used_at=now, step=step, journey_expires_at=now + settings.CAREID_REGISTRATION_JOURNEY_TTL)
        used = RegistrationLink.objects.filter(pk=self.pk, used_at__isnull=True, revoked_at__isnull=True,
                                                expires_at__gt=now).update(**fields)
        if used:
            for name, value in fields.items():
                setattr(self, name, value)
        return bool(used)

    def advance(self, from_step: str, to_step: str, **fields) -> bool:
        """Move the journey on; False when it was not at `from_step` (a replayed or raced post) or has ended
        meanwhile (timed out, or revoked by a suspension)."""
        moved = RegistrationLink.objects.filter(pk=self.pk, step=from_step, completed_at__isnull=True, revoked_at__isnull=True,
                                                journey_expires_at__gt=timezone.now()).update(step=to_step, **fields)
        if moved:
            self.step = to_step
            for name, value in fields.items():
                setattr(self, name, value)
        return bool(moved)

    def complete(self, from_step: str) -> bool:
        """The registration is done: this link's journey ends, and the link it was issued from (an
        invitation) is used up with it. False when the journey was not at `from_step`."""
        now = timezone.now()
        if not self.advance(from_step, "done", completed_at=now):
            return False
        if self.issued_from_id:
            RegistrationLink.objects.filter(pk=self.issued_from_id, used_at__isnull=True).update(
                used_at=now, step="registered", completed_at=now)
        return True

    def exchange(self, limit: int) -> bool:
        """Count one more fresh link issued from this one; False when it is used, expired or spent."""
        now = timezone.now()
        return bool(RegistrationLink.objects.filter(pk=self.pk, used_at__isnull=True, revoked_at__isnull=True,
                                                    expires_at__gt=now, exchanges__lt=limit).update(exchanges=F("exchanges") + 1))

    def stop(self) -> None:
        """End the link and its journey for good (too many wrong answers)."""
        now = timezone.now()
        RegistrationLink.objects.filter(pk=self.pk, used_at__isnull=True).update(used_at=now)
        RegistrationLink.objects.filter(pk=self.pk).update(completed_at=now, step="stopped")
        self.completed_at, self.step = now, "stopped"

    @classmethod
    def ttl_for(cls, purpose: str) -> timedelta:
        if purpose == cls.Purpose.PRESENCE:
            return settings.CAREID_REGISTRATION_LINK_TTL
        return settings.CAREID_INVITATION_LINK_TTL

    @classmethod
    def lifetime_in_words(cls, purpose: str) -> str:
        """"3 minutes", "24 hours": how long a link issued for `purpose` lasts, as the RA is told."""
        seconds = int(cls.ttl_for(purpose).total_seconds())
        number, unit = next((seconds // size, name) for size, name in ((3600, "hour"), (60, "minute"), (1, "second"))
                            if seconds % size == 0)
        return f"{number} {unit}{'' if number == 1 else 's'}"

    @classmethod
    def issued_now_expiry(cls) -> str:
        """When a link issued for immediate use expires, as the guide's registration page says: "after 3
        minutes" (also the page whose Register button issues one)."""
        return f"after {cls.lifetime_in_words(cls.Purpose.PRESENCE)}"

    @property
    def expiry_in_words(self) -> str:
        """When this link expires, as its registration page says: after its lifetime for one issued for
        immediate use, the date and time for one sent ahead of time ("at 5:45pm on 11 July 2026")."""
        if self.purpose == self.Purpose.PRESENCE:
            return self.issued_now_expiry()
        expires = timezone.localtime(self.expires_at)
        return f"at {date_format(expires, 'g:i')}{date_format(expires, 'A').lower()} on {date_format(expires, 'j F Y')}"
