"""WebAuthn credentials: one abstract model, one concrete model per type (one per person each)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from django.db import IntegrityError, models, transaction
from django.utils import timezone

from authenticators.base.models import Authenticator

CHALLENGE_TTL = timedelta(minutes=5)


class WebAuthnCredential(Authenticator):
    """A public-key credential: what the server keeps of it (never a secret) and how it was last used.

    The user handle is random (never the UID) and the same for all of a person's credentials, so a
    browser that keeps several of them shows one account.
    """

    credential_id = models.BinaryField(max_length=1023, unique=True)
    public_key = models.BinaryField(help_text="COSE-encoded public key.")
    sign_count = models.PositiveBigIntegerField(default=0)
    transports = models.JSONField(default=list, blank=True)
    aaguid = models.CharField("AAGUID", max_length=36, blank=True, help_text="The authenticator's model.")
    attachment = models.CharField(max_length=16, blank=True, help_text="platform or cross-platform, as the browser said.")
    backup_eligible = models.BooleanField(default=False)
    backed_up = models.BooleanField(default=False)
    user_handle = models.BinaryField(max_length=64)

    class Meta(Authenticator.Meta):
        abstract = True

    def record_use(self, *, sign_count: int, backed_up: bool) -> bool:
        """After a verified assertion: the new count and use time. False when another request with a
        count at least as high got there first (the same assertion twice, or a copy of the key)."""
        fields = {"sign_count": sign_count, "backed_up": backed_up, "last_used_at": timezone.now()}
        # An authenticator without a counter always says 0; one with a counter must go up.
        behind = models.Q(sign_count__lt=sign_count) if sign_count else models.Q(sign_count=0)
        updated = type(self).objects.filter(behind, pk=self.pk).update(**fields)
        if updated:
            for name, value in fields.items():
                setattr(self, name, value)
        return bool(updated)


class SecurityKey(WebAuthnCredential):
    class Meta(WebAuthnCredential.Meta):
        verbose_name = "Security key"
        verbose_name_plural = "Security keys"


class WindowsHello(WebAuthnCredential):
    class Meta(WebAuthnCredential.Meta):
        verbose_name = "Windows Hello"
        verbose_name_plural = "Windows Hello"


class IPad(WebAuthnCredential):
    class Meta(WebAuthnCredential.Meta):
        verbose_name = "iPad"
        verbose_name_plural = "iPads"


class Passkey(WebAuthnCredential):
    class Meta(WebAuthnCredential.Meta):
        verbose_name = "Passkey"
        verbose_name_plural = "Passkeys"


class UsedChallenge(models.Model):
    """The digest of every challenge a ceremony used, until it could no longer be used anyway.

    The challenge itself lives in the session and is popped on use; two requests racing with the
    same session (each holding a copy of it) would both find it, so the first use is also claimed here.
    """

    digest = models.CharField(max_length=64, unique=True)
    used_at = models.DateTimeField(default=timezone.now, db_index=True)

    @classmethod
    def claim(cls, challenge: bytes) -> bool:
        """True the first time a challenge is used, False ever after."""
        try:
            with transaction.atomic():
                cls.objects.create(digest=hashlib.sha256(challenge).hexdigest())
        except IntegrityError:
            return False
        return True


def forget_used_challenges() -> int:
    """The WebAuthn types' clean-up hook (registry): challenges past their lifetime need no record."""
    return UsedChallenge.objects.filter(used_at__lt=timezone.now() - CHALLENGE_TTL).delete()[0]
