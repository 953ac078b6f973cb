from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import F, Q
from django.db.models.functions import Lower
from django.utils import timezone

from .emails import NOT_ON_ALLOW_LIST, domain_and_parents, normalise_domain, normalise_email
from .validators import VisibleText, has_hidden_characters


def generate_uid() -> str:
    """A random 12-digit Care Identity user ID (no leading zero)."""
    return str(10**11 + secrets.randbelow(9 * 10**11))


def is_uid(text: str) -> bool:
    """12 ASCII digits, not starting with 0: the form of every Care Identity user ID."""
    return len(text) == 12 and text.isascii() and text.isdigit() and text[0] != "0"


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def with_email(self, email: str):
        """Lookup by Care Identity e-mail through the lower(email) unique index (iexact's UPPER() cannot use it)."""
        return self.alias(email_lower=Lower("email")).filter(email_lower=(email or "").strip().lower())

    def create_user(
        self,
        email: str,
        first_name: str = "",
        last_name: str = "",
        password: str | None = None,
        **fields,
    ) -> User:
        email = normalise_email(email)
        for attempt in range(5):
            user = self.model(email=email, first_name=first_name, last_name=last_name, **fields)
            if password:
                user.set_password(password)
            else:
                user.set_unusable_password()
            try:
                with transaction.atomic():
                    user.save(using=self._db)
                return user
            except IntegrityError:
                # A clash on the random uid is retried; a clash on the e-mail is not.
                if self.with_email(email).exists() or attempt == 4:
                    raise
                fields.pop("uid", None)
        raise AssertionError("unreachable")

    def create_superuser(self, email: str, first_name: str = "", last_name: str = "", password: str | None = None, **fields) -> User:
        fields.update(is_staff=True, is_superuser=True)
        return self.create_user(email, first_name, last_name, password, **fields)


class User(AbstractBaseUser, PermissionsMixin):
    """A Care Identity profile. Never deleted: closing it keeps the uid out of circulation."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        CLOSED = "closed", "Closed"

    uid = models.CharField("Care Identity user ID", max_length=12, unique=True, default=generate_uid, editable=False)
    title = models.CharField(max_length=35, blank=True, validators=[VisibleText("Title")])
    first_name = models.CharField(max_length=100, validators=[VisibleText("First name")])
    last_name = models.CharField(max_length=100, validators=[VisibleText("Last name")])
    email = models.EmailField("Care Identity email address", max_length=254)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)
    invited_at = models.DateTimeField(null=True, blank=True)
    # The person's number in the employer's HR system (ESR), kept from bulk onboarding.
    external_id = models.CharField("external ID (HR/ESR number)", max_length=64, blank=True, default="",
                                   validators=[VisibleText("External ID")])
    # Sign-in throttling lives on the row so it holds across every web process.
    signin_failures = models.PositiveIntegerField(default=0)
    last_signin_failure_at = models.DateTimeField(null=True, blank=True)
    signin_blocked_until = models.DateTimeField(null=True, blank=True)
    locked_at = models.DateTimeField(null=True, blank=True)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = ["first_name", "last_name"]

    class Meta:
        permissions = [
            ("issue_registration_link", "Can issue registration links"),
            ("suspend_user", "Can suspend and reinstate Care Identities"),
            ("close_user", "Can close Care Identities"),
            ("unlock_user", "Can unlock Care Identities"),
            ("remove_authenticator", "Can remove authenticators"),
            ("manage_ra_agents", "Can give and take the RA Agent role"),
        ]
        constraints = [
            models.UniqueConstraint(Lower("email"), name="user_email_unique_ci"),
            models.CheckConstraint(condition=Q(uid__regex=r"^[1-9][0-9]{11}$"), name="user_uid_12_digits"),
            models.UniqueConstraint(fields=["external_id"], condition=~Q(external_id=""), name="user_external_id_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.get_full_name()} ({self.uid})"

    @property
    def is_active(self) -> bool:  # type: ignore[override]
        return self.status == self.Status.ACTIVE

    @classmethod
    def validate_values(cls, **values: str) -> None:
        """Run the fields' own validators (length, no control or invisible characters) on values about to
        be saved without a form; raises ValidationError naming each field."""
        errors: dict[str, list[str]] = {}
        for name, value in values.items():
            try:
                cls._meta.get_field(name).run_validators(value)
            except ValidationError as error:
                errors[name] = error.messages
        if errors:
            raise ValidationError(errors)

    def get_full_name(self) -> str:
        return " ".join(part for part in (self.title, self.first_name, self.last_name) if part)

    def get_short_name(self) -> str:
        return self.first_name

    # --- sign-in throttling (orchestrated by accounts.throttle) -----------------------------
    @property
    def is_locked(self) -> bool:
        return self.locked_at is not None

    def hold_signin_attempt(self) -> bool:
        """Take this account's single attempt slot; False while locked, delayed or already held.

        One conditional UPDATE decides, so parallel requests in any number of processes cannot
        all pass the check before the first failure is counted.
        """
        now = timezone.now()
        held = (
            User.objects.filter(pk=self.pk, locked_at__isnull=True)
            .filter(Q(signin_blocked_until__isnull=True) | Q(signin_blocked_until__lte=now))
            .update(signin_blocked_until=now + settings.CAREID_SIGNIN_ATTEMPT_HOLD)
        )
        if not held:  # say why from the row as it is now
            self.refresh_from_db(fields=_THROTTLE_FIELDS)
        return bool(held)

    def end_signin_attempt(self, *, failed: bool, reset: bool = False) -> bool:
        """Release the slot held by hold_signin_attempt; returns True when a failure locked the account."""
        now = timezone.now()
        if not failed:
            fields = {"signin_blocked_until": None}
            if reset:  # the whole sign-in succeeded
                fields.update(signin_failures=0, last_signin_failure_at=None, last_login=now)
        else:
            self.refresh_from_db(fields=_THROTTLE_FIELDS)  # as the previous holder left it
            recent = self.last_signin_failure_at and now - self.last_signin_failure_at <= settings.CAREID_SIGNIN_FAILURE_WINDOW
            failures = (self.signin_failures if recent else 0) + 1
            fields = {"signin_failures": failures, "last_signin_failure_at": now,
                      "signin_blocked_until": now + signin_delay(failures)}
            if failures >= settings.CAREID_SIGNIN_LOCK_AFTER and self.locked_at is None:
                fields["locked_at"] = now
        # Only the holder of the slot writes these fields, so this is not a lost update.
        User.objects.filter(pk=self.pk).update(**fields)
        for name, value in fields.items():
            setattr(self, name, value)
        return "locked_at" in fields


    def unlock(self) -> None:
        """Clear the lock and every count and delay of sign-in throttling."""
        fields = {"locked_at": None, "signin_failures": 0, "last_signin_failure_at": None, "signin_blocked_until": None}
        User.objects.filter(pk=self.pk).update(**fields)
        for name, value in fields.items():
            setattr(self, name, value)


_THROTTLE_FIELDS = ["signin_failures", "last_signin_failure_at", "signin_blocked_until", "locked_at"]


def signin_delay(failures: int) -> timedelta:
    """No delay for the first failures, then 1 s, 2 s, 4 s … from CAREID_SIGNIN_DELAY_FROM on."""
    if failures < settings.CAREID_SIGNIN_DELAY_FROM:
        return timedelta(0)
    return min(timedelta(seconds=2 ** (failures - settings.CAREID_SIGNIN_DELAY_FROM)), settings.CAREID_SIGNIN_MAX_DELAY)


class AllowedEmailDomainQuerySet(models.QuerySet["AllowedEmailDomain"]):
    def allows(self, email: str) -> bool:
        """True when the (normalised) address's domain is allowed; one query."""
        domain = email.rpartition("@")[2]
        if not domain:
            return False
        exact, *parents = domain_and_parents(domain)
        return self.filter(Q(domain=exact) | Q(domain__in=parents, include_subdomains=True)).exists()

    def allows_many(self) -> Callable[[str], bool]:
        """allows() for a stream of addresses (bulk onboarding): the list is read once, here."""
        exact: set[str] = set()
        with_subdomains: set[str] = set()
        for domain, include_subdomains in self.values_list("domain", "include_subdomains"):
            exact.add(domain)
            if include_subdomains:
                with_subdomains.add(domain)

        def allows(email: str) -> bool:
            domain = email.rpartition("@")[2]
            if not domain:
                return False
            own, *parents = domain_and_parents(domain)
            return own in exact or any(parent in with_subdomains for parent in parents)

        return allows

    def check_email(self, email: str) -> str:
        """Normalise and check an address; raises ValidationError with the person's message."""
        email = normalise_email(email)
        if not self.allows(email):
            raise ValidationError(NOT_ON_ALLOW_LIST, code="domain_not_allowed")
        return email


# A DNS label once in IDNA form: letters, digits and inner hyphens.
_DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class AllowedEmailDomain(models.Model):
    domain = models.CharField(max_length=253, unique=True, validators=[VisibleText("Domain")],
                              help_text="For example nhs.net (lower case, no trailing dot).")
    include_subdomains = models.BooleanField(
        default=False, help_text="Also allow every subdomain, e.g. trust.nhs.uk when the domain is nhs.uk."
    )

    objects = AllowedEmailDomainQuerySet.as_manager()

    class Meta:
        ordering = ["domain"]
        verbose_name = "allowed email domain"

    def __str__(self) -> str:
        return f"{self.domain} (and subdomains)" if self.include_subdomains else self.domain

    def clean(self) -> None:
        if has_hidden_characters(self.domain):
            return  # the field's validator says so
        try:
            self.domain = normalise_domain(self.domain)
        except (ValueError, UnicodeError):
            raise ValidationError({"domain": "Enter a domain such as nhs.net"}) from None
        if not all(_DOMAIN_LABEL.fullmatch(label) for label in self.domain.split(".")):
            raise ValidationError({"domain": "Enter a domain such as nhs.net"})
        if "." not in self.domain:
            raise ValidationError({"domain": "Enter a whole domain such as nhs.net, not a top-level domain alone"})


class EmailOneTimePassword(models.Model):
    """An 8-digit one-time password sent to an address to prove the person holds it.

    The code is derived from `nonce` (careid.tokens), so the row never holds it. Sending a
    new code replaces the nonce but keeps `failures`: after CAREID_EMAIL_CODE_MAX_FAILURES
    wrong codes the challenge is dead, however many codes are sent.
    """

    class Result(models.TextChoices):
        ACCEPTED = "accepted"
        WRONG = "wrong"
        EXPIRED = "expired"
        EXHAUSTED = "exhausted"
        USED = "used"

    DIGITS = 8

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="email_codes")
    email = models.EmailField(max_length=254)
    purpose = models.CharField(max_length=32)
    nonce = models.CharField(max_length=32)
    sent_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    failures = models.PositiveSmallIntegerField(default=0)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.purpose} code for {self.user_id}"

    @classmethod
    def issue(cls, *, user: User, email: str, purpose: str) -> EmailOneTimePassword:
        from careid import tokens

        now = timezone.now()
        return cls.objects.create(
            user=user,
            email=email,
            purpose=purpose,
            nonce=tokens.new_nonce(),
            sent_at=now,
            expires_at=now + settings.CAREID_EMAIL_CODE_TTL,
        )

    @property
    def code(self) -> str:
        from careid import tokens

        return tokens.derive_digits("email-otp", self.nonce, self.DIGITS)

    @property
    def is_exhausted(self) -> bool:
        return self.failures >= settings.CAREID_EMAIL_CODE_MAX_FAILURES

    def resend_wait(self) -> timedelta:
        return max(timedelta(0), self.sent_at + settings.CAREID_EMAIL_CODE_COOLDOWN - timezone.now())

    def replace(self) -> bool:
        """A new code (the old one stops working); False while cooling down or once dead."""
        from careid import tokens

        now = timezone.now()
        nonce = tokens.new_nonce()
        replaced = EmailOneTimePassword.objects.filter(
            pk=self.pk,
            used_at__isnull=True,
            failures__lt=settings.CAREID_EMAIL_CODE_MAX_FAILURES,
            sent_at__lte=now - settings.CAREID_EMAIL_CODE_COOLDOWN,
        ).update(nonce=nonce, sent_at=now, expires_at=now + settings.CAREID_EMAIL_CODE_TTL)
        if replaced:
            self.nonce, self.sent_at, self.expires_at = nonce, now, now + settings.CAREID_EMAIL_CODE_TTL
        return bool(replaced)

    def verify(self, code: str) -> Result:
        from django.utils.crypto import constant_time_compare

        # The checks below read this instance; the conditional updates decide under races.
        if self.used_at is not None:
            return self.Result.USED
        if self.is_exhausted:
            return self.Result.EXHAUSTED
        if self.expires_at <= timezone.now():
            return self.Result.EXPIRED
        live = EmailOneTimePassword.objects.filter(
            pk=self.pk, used_at__isnull=True, failures__lt=settings.CAREID_EMAIL_CODE_MAX_FAILURES
        )
        if constant_time_compare(code.strip(), self.code) and live.filter(nonce=self.nonce).update(used_at=timezone.now()):
            return self.Result.ACCEPTED
        live.update(failures=F("failures") + 1)
        self.refresh_from_db(fields=["failures"])
        return self.Result.EXHAUSTED if self.is_exhausted else self.Result.WRONG
