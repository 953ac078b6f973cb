"""Sign-in throttle state, kept in the database so that it holds across every web process and
survives anything that happens to the cache.

A Care Identity keeps it on its User row; an address that belongs to nobody keeps the same
fields, under the same rules, on an UnknownAddress row, so the answers never tell the two apart.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import salted_hmac


class Factor(models.TextChoices):
    PASSWORD = "password", "Password"
    CODE = "code", "Security code"


class LockReason(models.TextChoices):
    # 100 wrong passwords (anyone who knows the address can cause these): lifted by a password reset.
    PASSWORDS = "passwords", "Too many wrong passwords"
    # 30 wrong codes after the right password: only a registration authority unlocks.
    CODES = "codes", "Too many wrong security codes"


def signin_delay(failures: int) -> timedelta:
    """No delay for the first failures, then 1 s, 2 s, 4 s … from CAREID_SIGNIN_DELAY_FROM on."""
    if failures < settings.CAREID_SIGNIN_DELAY_FROM:
        return timedelta(0)
    exponent = min(failures - settings.CAREID_SIGNIN_DELAY_FROM, 30)
    return min(timedelta(seconds=2**exponent), settings.CAREID_SIGNIN_MAX_DELAY)


def lock_after(factor: Factor) -> int:
    return settings.CAREID_PASSWORD_LOCK_AFTER if factor == Factor.PASSWORD else settings.CAREID_CODE_LOCK_AFTER


def lock_reason_of(factor: Factor) -> LockReason:
    return LockReason.PASSWORDS if factor == Factor.PASSWORD else LockReason.CODES


THROTTLE_FIELDS = ["password_failures", "password_blocked_until", "code_failures", "code_blocked_until",
                   "last_signin_failure_at", "locked_at", "lock_reason"]


class SigninThrottle(models.Model):
    """Per factor: consecutive failures, growing delays and one attempt in flight; and the lock.

    The factors are counted and delayed apart, so a stranger's wrong passwords never hold up the codes
    of the person who knows the password (nor the code step of their password reset).
    """

    password_failures = models.PositiveIntegerField("consecutive wrong passwords", default=0)
    password_blocked_until = models.DateTimeField(null=True, blank=True)
    code_failures = models.PositiveIntegerField("consecutive wrong security codes", default=0)
    code_blocked_until = models.DateTimeField(null=True, blank=True)
    last_signin_failure_at = models.DateTimeField(null=True, blank=True)
    locked_at = models.DateTimeField(null=True, blank=True)
    lock_reason = models.CharField(max_length=10, choices=LockReason.choices, blank=True, default="")

    class Meta:
        abstract = True

    @property
    def is_locked(self) -> bool:
        return self.locked_at is not None

    @property
    def lock_is_lifted_by_password_reset(self) -> bool:
        """Only a lock that wrong passwords alone caused: wrong codes need the right password first."""
        return self.lock_reason == LockReason.PASSWORDS and self.code_failures < lock_after(Factor.CODE)

    def lock_stops(self, factor: Factor) -> bool:
        """Whether the lock (if any) stops attempts with `factor` (the rule hold_signin_attempt applies)."""
        if not self.is_locked:
            return False
        if factor == Factor.PASSWORD:
            return self.lock_reason != LockReason.CODES
        return self.lock_reason != LockReason.PASSWORDS or self.code_failures >= lock_after(Factor.CODE)

    def blocked_until(self, factor: Factor) -> datetime | None:
        return self.password_blocked_until if factor == Factor.PASSWORD else self.code_blocked_until

    def hold_signin_attempt(self, factor: Factor) -> bool:
        """Take this account's single attempt slot for `factor`; False while locked, delayed or held.

        One conditional UPDATE decides, so parallel requests in any number of processes cannot all
        pass the check before the first failure is counted. A lock for wrong codes still lets the
        password be checked: only the person who knows it learns that the account is locked. A lock for
        wrong passwords (which anyone who knows the address can cause) still lets a code or a key be
        checked: a stranger's guesses must not stop a key from signing its holder in, nor the app's code
        from resetting the password; it locks what a password opens, until a reset lifts it.
        """
        now = timezone.now()
        unlocked = Q(locked_at__isnull=True)
        if factor == Factor.PASSWORD:
            unlocked |= Q(lock_reason=LockReason.CODES)
        else:
            unlocked |= Q(lock_reason=LockReason.PASSWORDS, code_failures__lt=lock_after(Factor.CODE))
        slot = f"{factor}_blocked_until"
        held = (
            type(self)._default_manager.filter(unlocked, pk=self.pk)
            .filter(Q(**{f"{slot}__isnull": True}) | Q(**{f"{slot}__lte": now}))
            .update(**{slot: now + settings.CAREID_SIGNIN_ATTEMPT_HOLD})
        )
        if not held:  # say why from the row as it is now
            self.refresh_from_db(fields=THROTTLE_FIELDS)
        return bool(held)

    def end_signin_attempt(self, factor: Factor, *, failed: bool, succeeded: bool = False) -> bool:
        """Release the slot held by hold_signin_attempt; returns True when a failure locked the account.

        A right password ends the run of wrong passwords; a whole sign-in (`succeeded`) ends both runs. A
        failure is counted inside the caller's transaction (signin.flows.fail_signin_attempt), with its audit event.
        """
        now = timezone.now()
        counter, slot = f"{factor}_failures", f"{factor}_blocked_until"
        if not failed:
            fields = {slot: None, counter: 0}
            if succeeded:
                fields.update(password_failures=0, code_failures=0, last_signin_failure_at=None, **self._on_signin())
        else:
            # As the previous holder left it, and held until this transaction ends: only the holder of the slot
            # writes these fields, but a check that outlasted the hold let the next attempt in, and two
            # failures that each read the count and wrote it plus one would count one.
            held = type(self)._default_manager.select_for_update().only(*THROTTLE_FIELDS).get(pk=self.pk)
            for name in THROTTLE_FIELDS:
                setattr(self, name, getattr(held, name))
            recent = self.last_signin_failure_at and now - self.last_signin_failure_at <= settings.CAREID_SIGNIN_FAILURE_WINDOW
            failures = (getattr(self, counter) if recent else 0) + 1
            fields = {counter: failures, slot: now + signin_delay(failures), "last_signin_failure_at": now}
            if not recent and not self.is_locked:  # the other factor's old run is over too (unless it locked)
                fields["code_failures" if factor == Factor.PASSWORD else "password_failures"] = 0
            if failures >= lock_after(factor) and self.lock_reason != lock_reason_of(factor):
                # Wrong passwords lock even an account locked for wrong codes, so that it answers like any
                # other at the 100th; the codes it had counted still keep a password reset from lifting it.
                # Wrong codes (in a password reset) turn a lock for passwords into one that only an RA lifts.
                fields.update(locked_at=self.locked_at or now, lock_reason=lock_reason_of(factor))
        type(self)._default_manager.filter(pk=self.pk).update(**fields)
        for name, value in fields.items():
            setattr(self, name, value)
        return "lock_reason" in fields

    def unlock(self) -> None:
        """Clear the lock and every count and delay of sign-in throttling."""
        fields = {"locked_at": None, "lock_reason": "", "password_failures": 0, "password_blocked_until": None,
                  "code_failures": 0, "code_blocked_until": None, "last_signin_failure_at": None}
        type(self)._default_manager.filter(pk=self.pk).update(**fields)
        for name, value in fields.items():
            setattr(self, name, value)

    def _on_signin(self) -> dict:
        """Fields a whole successful sign-in also writes (the User records last_login)."""
        return {}


class UnknownAddressQuerySet(models.QuerySet["UnknownAddress"]):
    def for_email(self, email: str) -> UnknownAddress:
        """The row of an address that is no Care Identity, created on its first attempt."""
        key = UnknownAddress.key_for(email)
        row = self.filter(key=key).first()
        if row is not None:
            return row
        try:
            with transaction.atomic():
                return self.create(key=key)
        except IntegrityError:  # a parallel first attempt created it
            return self.get(key=key)

    def forget_stale(self) -> int:
        """Rows whose last failure is older than the failure window say nothing any more, unless they are
        locked: a Care Identity's lock outlasts the window, so an unknown address's must too."""
        cutoff = timezone.now() - settings.CAREID_SIGNIN_FAILURE_WINDOW
        stale = Q(last_signin_failure_at__lt=cutoff) | Q(last_signin_failure_at__isnull=True, created_at__lt=cutoff)
        return self.filter(stale, locked_at__isnull=True).delete()[0]


class UnknownAddress(SigninThrottle):
    """Throttle state of an e-mail address that belongs to no Care Identity (keyed by a keyed hash:
    the address itself is not kept)."""

    key = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = UnknownAddressQuerySet.as_manager()

    class Meta:
        verbose_name = "unknown address sign-in throttle"

    def __str__(self) -> str:
        return f"unknown address {self.key[:12]}…"

    @staticmethod
    def key_for(email: str) -> str:
        return salted_hmac("careid.signin.unknown-address", email.strip().lower(), algorithm="sha256").hexdigest()
