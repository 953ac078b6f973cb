"""What the OpenID Connect provider keeps beside allauth's Client and Token models.

- RelyingService: allauth's Client with the registration metadata careid needs (how it authenticates,
  its keys, its back-channel logout endpoint), kept in Client.data["client_metadata"] under the
  names RFC 7591 and OpenID Connect registration give them.
- Grant: one sign-in of a person into a service (an authorization code and the tokens it brings),
  with how the person signed in (acr, amr, auth_time) and the careid session (sid) it belongs to.
- UsedAssertion: the `jti` of every private_key_jwt client assertion until it expires (replay).
- RotatedRefreshToken: the hash of every refresh token replaced by rotation, while the one issued in
  its place may live (a second use is a breach: RFC 9700 4.14.2).
- BackchannelLogout: one logout token to deliver to one service, until delivered or given up.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from allauth.idp.oidc import app_settings
from allauth.idp.oidc.models import Client, Token
from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from accounts.models import OUTBOX_CLOCK_SKEW


class AuthMethod(models.TextChoices):
    PRIVATE_KEY_JWT = "private_key_jwt", "private_key_jwt (signed assertion, recommended)"
    CLIENT_SECRET_BASIC = "client_secret_basic", "client_secret_basic"
    CLIENT_SECRET_POST = "client_secret_post", "client_secret_post"
    NONE = "none", "none (public client: PKCE required)"


SECRET_METHODS = (AuthMethod.CLIENT_SECRET_BASIC, AuthMethod.CLIENT_SECRET_POST)


class RelyingService(Client):
    """A relying service (eRS and others) registered to sign people in through careid."""

    class Meta:
        proxy = True
        verbose_name = "relying service"
        verbose_name_plural = "relying services"
        permissions = [("manage_relyingservice", "Can register and change relying services")]

    # --- registration metadata (RFC 7591 names) ---------------------------------------------
    def metadata(self) -> dict[str, Any]:
        data = self.data if isinstance(self.data, dict) else {}
        metadata = data.get("client_metadata")
        return metadata if isinstance(metadata, dict) else {}

    def set_metadata(self, **values: Any) -> None:
        data = dict(self.data) if isinstance(self.data, dict) else {}
        metadata = dict(data.get("client_metadata") or {})
        for name, value in values.items():
            if value in (None, "", []):
                metadata.pop(name, None)
            else:
                metadata[name] = value
        data["client_metadata"] = metadata
        self.data = data

    @property
    def auth_method(self) -> str:
        if self.type == Client.Type.PUBLIC:
            return AuthMethod.NONE
        return self.metadata().get("token_endpoint_auth_method") or AuthMethod.CLIENT_SECRET_BASIC

    @property
    def jwks_uri(self) -> str:
        return self.metadata().get("jwks_uri") or ""

    @property
    def jwks(self) -> dict | None:
        jwks = self.metadata().get("jwks")
        return jwks if isinstance(jwks, dict) else None

    @property
    def backchannel_logout_uri(self) -> str:
        return self.metadata().get("backchannel_logout_uri") or ""


class GrantQuerySet(models.QuerySet["Grant"]):
    def live(self) -> GrantQuerySet:
        return self.filter(ended_at__isnull=True)

    def end(self) -> None:
        """These sign-ins into services end: their codes not exchanged yet and their tokens stop at once (a code
        issued before the end brings no tokens after it), and they leave the lists of where the person is
        signed in."""
        grant_ids = list(self.values_list("grant_id", flat=True))
        Token.objects.filter(data__grant_id__in=grant_ids, type__in=[
            Token.Type.AUTHORIZATION_CODE, Token.Type.ACCESS_TOKEN, Token.Type.REFRESH_TOKEN]).delete()
        Grant.objects.filter(grant_id__in=grant_ids).update(ended_at=timezone.now())

    def services_by_session(self, user, session_keys: list[str]) -> dict[str, list[str]]:
        """For "Where you are signed in": session key -> the names of the services signed into from it."""
        found: dict[str, list[str]] = {}
        rows = (self.live().filter(user=user, session_key__in=session_keys)
                .values_list("session_key", "client__name").distinct().order_by("client__name"))
        for session_key, name in rows:
            found.setdefault(session_key, []).append(name)
        return found

    def services_of(self, user) -> list[dict]:
        """For the RA's person page: each service the person signed into, first and last time, how often."""
        return list(self.filter(user=user).values("client__name", "client_id")
                    .annotate(first=models.Min("created_at"), last=models.Max("created_at"), times=models.Count("id"))
                    .order_by("-last"))


class Grant(models.Model):
    """A person signed into a relying service from one careid session (one authorization code)."""

    grant_id = models.CharField(max_length=64, unique=True)  # allauth's grant id on the code and its tokens
    client = models.ForeignKey(RelyingService, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="service_grants")
    sid = models.CharField(max_length=64)
    session_key = models.CharField(max_length=64, blank=True)
    acr = models.CharField(max_length=32)  # what the ID token says: the class asked for, or reached
    amr = models.JSONField(default=list)
    aal = models.PositiveSmallIntegerField()
    method = models.CharField(max_length=32)
    auth_time = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)

    objects = GrantQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["user", "sid"], name="grant_user_sid"),
            models.Index(fields=["session_key"], name="grant_session_key", condition=models.Q(ended_at__isnull=True)),
            models.Index(fields=["user", "-created_at"], name="grant_user_created"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} into {self.client_id} ({self.acr})"


class UsedAssertionQuerySet(models.QuerySet["UsedAssertion"]):
    def use(self, client_id: str, jti: str, expires_at) -> bool:
        """Record a client assertion's jti; False when it was used before (a replay)."""
        try:
            with transaction.atomic():
                self.create(client_id=client_id, jti=jti, expires_at=expires_at)
        except IntegrityError:
            return False
        return True

    def forget_expired(self) -> int:
        return self.filter(expires_at__lt=timezone.now()).delete()[0]


class UsedAssertion(models.Model):
    client_id = models.CharField(max_length=100)
    jti = models.CharField(max_length=255)
    expires_at = models.DateTimeField()

    objects = UsedAssertionQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["client_id", "jti"], name="used_assertion_once")]
        indexes = [models.Index(fields=["expires_at"], name="used_assertion_expiry")]


class RotatedRefreshTokenQuerySet(models.QuerySet["RotatedRefreshToken"]):
    def remember(self, token) -> bool:
        """Record that allauth's refresh `token` is being replaced; False when it already was (two requests
        with one token: the second waits here until the first commits, and learns it came second)."""
        try:
            with transaction.atomic():
                self.create(client_id=token.client_id, token_hash=token.hash, grant_id=token.get_grant_id() or "")
        except IntegrityError:
            return False
        return True

    def forget_expired(self) -> int:
        """A rotation older than the refresh token lifetime: the token issued in its place has expired too."""
        lifetime = app_settings.REFRESH_TOKEN_EXPIRES_IN
        if not lifetime:  # refresh tokens that never expire: neither can their families
            return 0
        return self.filter(rotated_at__lt=timezone.now() - timedelta(seconds=lifetime)).delete()[0]


class RotatedRefreshToken(models.Model):
    """A refresh token that rotation replaced (allauth deletes its row): its hash, never the token, as
    allauth's Token keeps it, and the grant whose tokens to revoke when it is presented again."""

    client = models.ForeignKey(RelyingService, on_delete=models.CASCADE, related_name="+")
    token_hash = models.CharField(max_length=255, unique=True)
    grant_id = models.CharField(max_length=64)
    rotated_at = models.DateTimeField(default=timezone.now)

    objects = RotatedRefreshTokenQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["rotated_at"], name="rotated_refresh_token_at")]

    def __str__(self) -> str:
        return f"refresh token of grant {self.grant_id[:8]}… rotated at {self.rotated_at:%Y-%m-%d %H:%M}"


class BackchannelLogoutQuerySet(models.QuerySet["BackchannelLogout"]):
    def due(self) -> BackchannelLogoutQuerySet:
        """Queued, due, and not being sent by a worker (or its worker is gone)."""
        now = timezone.now()
        return self.filter(state=BackchannelLogout.State.QUEUED, next_attempt_at__lte=now + OUTBOX_CLOCK_SKEW).filter(
            models.Q(claimed_until__isnull=True) | models.Q(claimed_until__lt=now))


class BackchannelLogout(models.Model):
    """A logout token owed to one service for one ended session (an outbox row: nothing is lost if the
    broker or the service is down; oidc/backchannel.py tries again, and its sweep re-queues)."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed (gave up)"

    client = models.ForeignKey(RelyingService, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    sid = models.CharField(max_length=64)
    reason = models.CharField(max_length=64)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    handed_over_at = models.DateTimeField(null=True, blank=True)  # as OutgoingEmail's
    delivered_at = models.DateTimeField(null=True, blank=True)

    objects = BackchannelLogoutQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["next_attempt_at"], name="backchannel_due", condition=models.Q(state="queued"))]

    def __str__(self) -> str:
        return f"logout of {self.sid[:8]}… to {self.client_id} ({self.state})"
