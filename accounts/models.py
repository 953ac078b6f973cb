from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import timedelta

from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import IntegrityError, models, transaction
from django.db.models import F, Q
from django.db.models.functions import Lower
from django.utils import timezone

from signin.models import SigninThrottle

from .emails import NOT_ON_ALLOW_LIST, domain_and_parents, normalise_domain, normalise_email
from .validators import VisibleText, has_hidden_characters

EMAIL_EXISTS = "A Care Identity with this email address already exists"
EMAIL_VERIFIED_ELSEWHERE = "This email address is verified on another Care Identity (UID {uid})"


class EmailTaken(Exception):
    """The address belongs to another Care Identity (UserManager.holding_email); nothing was verified."""


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

    def holding_email(self, email: str):
        """The Care Identities an address belongs to: as their Care Identity e-mail (any case) or as
        a verified address on their profile. Nobody else may add it, verify it or be given it.

        The one definition of "this address is taken" (bulk onboarding applies the same two tests
        set-based, in SQL). Each half uses its own index; an OR of the two would scan every user.
        """
        email = (email or "").strip().lower()
        verified_on = EmailAddress.objects.filter(email=email, verified=True).values("user_id")
        return self.filter(pk__in=self.with_email(email).values("pk").union(verified_on))

    def check_email_free(self, email: str, *, other_than: User | None = None) -> None:
        """For the registration authority and operators, who may be told who holds an address:
        ValidationError when `email` belongs to a Care Identity other than `other_than`."""
        holders = self.holding_email(email)
        if other_than is not None:
            holders = holders.exclude(pk=other_than.pk)
        holder = holders.only("uid", "email").first()
        if holder is None:
            return
        if holder.email.lower() == email.strip().lower():
            raise ValidationError(EMAIL_EXISTS, code="email_exists")
        raise ValidationError(EMAIL_VERIFIED_ELSEWHERE.format(uid=holder.uid), code="email_verified_elsewhere")

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


class User(AbstractBaseUser, PermissionsMixin, SigninThrottle):
    """A Care Identity profile. Never deleted: closing it keeps the uid out of circulation.

    Its sign-in throttle state (SigninThrottle) lives on the row so it holds across every web process."""

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
    # How well the person's identity was checked (0-3, NHS identity assurance), released to relying
    # services as id_assurance_level and idassurancelevel.
    identity_assurance_level = models.PositiveSmallIntegerField(
        "identity assurance level", default=0, validators=[MaxValueValidator(3)],
        help_text="0 (not checked) to 3 (checked in person against photo ID)",
    )
    # The person's number in the employer's HR system (ESR), kept from bulk onboarding.
    external_id = models.CharField("external ID (HR/ESR number)", max_length=64, blank=True, default="",
                                   validators=[VisibleText("External ID")])

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

    def lock(self, *fields: str) -> None:
        """Lock this person's row until the transaction ends and read `fields` onto this instance as committed (a
        page read them before another RA's change may have committed). The lock is an UPDATE's own strength (no
        key): rows that only point at the person (audit events) are not held up. Every flow that changes the person
        takes it first, before rows of theirs (links, addresses, sessions), so that no two deadlock."""
        committed = User.objects.select_for_update(no_key=True).values(*fields or ("pk",)).get(pk=self.pk)
        for name in fields:
            setattr(self, name, committed[name])

    def lock_status(self) -> str:
        """Lock this person's row (lock) and read their status as committed: a suspension, reinstatement or closure
        by another RA may have committed since the page read it."""
        self.lock("status")
        return self.status

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

    def _on_signin(self) -> dict:
        return {"last_login": timezone.now()}  # with the throttle reset, in the same UPDATE


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


class EmailOneTimePasswordQuerySet(models.QuerySet["EmailOneTimePassword"]):
    def forget_expired(self) -> int:
        """Codes that expired long enough ago that nothing reads them any more: a registration journey or a reset
        that used one has ended (neither lasts a day), and the outbox has given up on any e-mail still owed for
        one (CAREID_EMAIL_GIVE_UP_AFTER). Registration links that pointed to one keep their row without it."""
        kept_for = max(settings.CAREID_EMAIL_GIVE_UP_AFTER, settings.CAREID_REGISTRATION_JOURNEY_TTL, timedelta(days=1))
        return self.filter(expires_at__lt=timezone.now() - kept_for).delete()[0]


class EmailOneTimePassword(models.Model):
    """An 8-digit one-time password sent to an address to prove the person holds it.

    The code is derived from `nonce` (careid.tokens), so the row never holds it. Sending a
    new code replaces the nonce but keeps `failures`: after CAREID_EMAIL_CODE_MAX_FAILURES
    wrong codes the challenge is dead, however many codes are sent.

    Every password reset journey has one, e-mailed or not: one that nobody was sent (`emailed` false: an
    address that is no Care Identity's, which has no `user`, a Care Identity that cannot reset its password,
    or sending held back) is never right, and counts its wrong tries, waits and expires as a sent one does.
    """

    class Result(models.TextChoices):
        ACCEPTED = "accepted"
        WRONG = "wrong"
        EXPIRED = "expired"
        EXHAUSTED = "exhausted"
        USED = "used"

    DIGITS = 8

    user = models.ForeignKey(User, null=True, blank=True, on_delete=models.CASCADE, related_name="email_codes")
    email = models.EmailField(max_length=254)
    purpose = models.CharField(max_length=32)
    nonce = models.CharField(max_length=32)
    sent_at = models.DateTimeField(default=timezone.now)  # or said to be sent, when not `emailed`
    expires_at = models.DateTimeField()
    failures = models.PositiveSmallIntegerField(default=0)
    used_at = models.DateTimeField(null=True, blank=True)
    # Whether the current code went out by e-mail; a database default too, for the INSERTs of the release before.
    emailed = models.BooleanField(default=True, db_default=True)

    objects = EmailOneTimePasswordQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.purpose} code for {self.user_id or 'an address that is no Care Identity'}"

    @classmethod
    def issue(cls, *, user: User | None, email: str, purpose: str, emailed: bool = True) -> EmailOneTimePassword:
        from careid import tokens

        now = timezone.now()
        return cls.objects.create(
            user=user,
            email=email,
            purpose=purpose,
            nonce=tokens.new_nonce(),
            sent_at=now,
            expires_at=now + settings.CAREID_EMAIL_CODE_TTL,
            emailed=emailed,
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

    def replace(self, *, emailed: bool = True, email: str | None = None) -> bool:
        """A new code (the old one stops working), e-mailed or not, to `email` when given (else to the same
        address); False while cooling down or once dead."""
        from careid import tokens

        now = timezone.now()
        fields = {"nonce": tokens.new_nonce(), "sent_at": now, "expires_at": now + settings.CAREID_EMAIL_CODE_TTL,
                  "emailed": emailed, **({"email": email} if email is not None else {})}
        replaced = EmailOneTimePassword.objects.filter(
            pk=self.pk,
            used_at__isnull=True,
            failures__lt=settings.CAREID_EMAIL_CODE_MAX_FAILURES,
            sent_at__lte=now - settings.CAREID_EMAIL_CODE_COOLDOWN,
        ).update(**fields)
        if replaced:
            for name, value in fields.items():
                setattr(self, name, value)
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
        right = constant_time_compare(code.strip(), self.code) and self.emailed  # a code nobody was sent never is
        if right and live.filter(nonce=self.nonce).update(used_at=timezone.now()):
            return self.Result.ACCEPTED
        live.update(failures=F("failures") + 1)
        self.refresh_from_db(fields=["failures"])
        return self.Result.EXHAUSTED if self.is_exhausted else self.Result.WRONG


# How far the clocks of the hosts writing an outbox row and sending it may differ: a row written by a web
# server whose clock is a little ahead is due for the worker that picks its task up at once (without this
# the task found it not due yet and the row waited for the sweep to take its task for lost).
OUTBOX_CLOCK_SKEW = timedelta(seconds=5)


class OutgoingEmailQuerySet(models.QuerySet["OutgoingEmail"]):
    def due(self) -> OutgoingEmailQuerySet:
        return self.filter(state=OutgoingEmail.State.QUEUED, next_attempt_at__lte=timezone.now() + OUTBOX_CLOCK_SKEW)

    def abandoned(self) -> OutgoingEmailQuerySet:
        """Taken by a worker that never finished (killed, or its host lost)."""
        return self.filter(state=OutgoingEmail.State.SENDING, claimed_until__lt=timezone.now())


class OutgoingEmail(models.Model):
    """One e-mail careid owes someone: written in the same transaction as the change that causes it,
    sent by Celery, retried until delivered or given up (accounts/outbox.py).

    It keeps what to render from (`kind`, `object_id`), never the rendered message: e-mails carry
    one-time passwords and registration links that the database must not hold in a usable form
    (careid/tokens.py). That is why careid does not use django-post-office, which stores the message.
    """

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed (gave up)"
        CANCELLED = "cancelled", "Not needed any more"

    kind = models.CharField(max_length=40)
    object_id = models.BigIntegerField()
    extra = models.JSONField(default=dict, blank=True)
    to = models.EmailField(max_length=254)
    user = models.ForeignKey(User, null=True, blank=True, on_delete=models.CASCADE, related_name="outgoing_emails")
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    # When a task to send it was last given to Celery (accounts.outbox.hand_over): the sweep gives another
    # only once it is due again since, or that task looks lost.
    handed_over_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)

    objects = OutgoingEmailQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["next_attempt_at"], name="outbox_due", condition=Q(state="queued")),
            models.Index(fields=["claimed_until"], name="outbox_sending", condition=Q(state="sending")),
            models.Index(fields=["user", "-created_at"], name="outbox_user"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} to {self.to} ({self.state})"
