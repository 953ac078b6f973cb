from __future__ import annotations

from typing import Any

import pgtrigger
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KT
from django.db.models.functions import Lower
from django.utils import timezone

from .mac import CHAINED_FIELDS, WRITTEN_FIELDS, check_details, written_mac
from .triggers import Check, Refuse


class Event(models.TextChoices):
    USER_INVITED = "user.invited", "Invitation sent"
    LINK_ISSUED = "link.issued", "Registration link issued"
    LINK_USED = "link.used", "Registration link used"
    LINK_EXPIRED = "link.expired", "Expired registration link refused"
    LINK_REFUSED = "link.refused", "Registration link refused"
    OTP_SENT = "otp.sent", "One-time password sent"
    OTP_FAILED = "otp.failed", "Wrong one-time password"
    EMAIL_ADDED = "email.added", "Email address added"
    EMAIL_VERIFIED = "email.verified", "Email address verified"
    EMAIL_LINK_SENT = "email.link_sent", "Email address verification link sent"
    EMAIL_REFUSED = "email.refused", "Email address refused"
    EMAIL_REMOVED = "email.removed", "Email address removed"
    EMAIL_PRIMARY_CHANGED = "email.primary_changed", "Care Identity email address changed"
    PASSWORD_SET = "password.set", "Password set"
    PASSWORD_REFUSED = "password.refused", "Password refused"
    PASSWORD_RESET_STARTED = "password.reset_started", "Password reset asked for"
    PASSWORD_RESET = "password.reset", "Password reset"
    PASSWORD_CHANGED = "password.changed", "Password changed"
    REGISTRATION_STEP = "registration.step", "Registration step completed"
    AUTHENTICATOR_REGISTERED = "authenticator.registered", "Authenticator registered"
    AUTHENTICATOR_REGISTRATION_FAILED = "authenticator.registration_failed", "Authenticator registration failed"
    SIGNIN_SUCCEEDED = "signin.succeeded", "Signed in"
    SIGNIN_FAILED = "signin.failed", "Sign-in failed"
    SIGNIN_THROTTLED = "signin.throttled", "Sign-in throttled"
    ACCOUNT_LOCKED = "account.locked", "Account locked"
    ACCOUNT_UNLOCKED = "account.unlocked", "Account unlocked"
    SIGNED_OUT = "signout", "Signed out"
    SESSION_EXPIRED = "session.expired", "Session timed out"
    USER_CREATED = "user.created", "Care Identity created"
    USER_CHANGED = "user.changed", "Care Identity details changed"
    USER_SUSPENDED = "user.suspended", "Care Identity suspended"
    USER_REINSTATED = "user.reinstated", "Care Identity reinstated"
    USER_CLOSED = "user.closed", "Care Identity closed"
    AUTHENTICATOR_REMOVED = "authenticator.removed", "Authenticator removed"
    AUTHENTICATOR_CLONE_SUSPECTED = "authenticator.clone_suspected", "Possibly cloned authenticator refused"
    SESSIONS_ENDED = "sessions.ended", "Sessions ended"
    ROLES_CHANGED = "roles.changed", "Roles changed"
    RA_REFUSED = "ra.refused", "Registration authority action refused"
    AUDIT_EXPORT_STARTED = "audit.export_started", "Audit trail export started"
    AUDIT_EXPORTED = "audit.exported", "Audit trail exported"  # at the end: success or failure, rows sent
    # The sealer, with nothing to seal for CAREID_AUDIT_HEARTBEAT, chains one of these: proof in the chain
    # that it ran, so an event inserted later with a date from that quiet time is found (chain.verify).
    AUDIT_HEARTBEAT = "audit.heartbeat", "Audit trail sealer running"
    ALLOW_LIST_CHANGED = "allowlist.changed", "Email domain allow list changed"
    USER_ONBOARDED = "user.onboarded", "Care Identity created by bulk onboarding"
    ONBOARDING_RUN = "onboarding.run", "Bulk onboarding run"
    USERS_EXPORTED = "users.exported", "Care Identities exported"
    OIDC_TOKEN_ISSUED = "oidc.token_issued", "Tokens issued to a relying service"
    OIDC_REFUSED = "oidc.refused", "Relying service request refused"
    OIDC_LOGOUT = "oidc.logout", "Signed out at a relying service's request"
    OIDC_BACKCHANNEL_LOGOUT = "oidc.backchannel_logout", "Back-channel logout sent to a relying service"
    CLIENT_CHANGED = "client.changed", "Relying service registered or changed"


class Outcome(models.TextChoices):
    SUCCESS = "success", "Success"
    FAILURE = "failure", "Failure"


# Events whose name already says that something failed, was refused or locked: a "Failed" tag beside them
# says it twice (or, beside "Account locked", that the lock did not happen).
NAMED_FAILURES = frozenset({
    Event.LINK_EXPIRED, Event.LINK_REFUSED, Event.OTP_FAILED, Event.EMAIL_REFUSED, Event.PASSWORD_REFUSED,
    Event.AUTHENTICATOR_REGISTRATION_FAILED, Event.SIGNIN_FAILED, Event.SIGNIN_THROTTLED,
    Event.AUTHENTICATOR_CLONE_SUSPECTED, Event.RA_REFUSED, Event.OIDC_REFUSED, Event.ACCOUNT_LOCKED,
})


# What PostgreSQL lets no UPDATE change (the trigger below): the content and the MAC careid wrote with it.
_UNCHANGEABLE = (*CHAINED_FIELDS, "written_mac")


def _chained(row: str) -> str:
    return "(" + ", ".join(f"{row}.{column}" for column in _UNCHANGEABLE) + ")"


# The address a Care Identity e-mail change replaced, as its event keeps it: indexed for those events only
# (a few in a hundred), so that the trail is found by a former address without reading every change.
FORMER_EMAIL_BY_RA = Lower(KT("details__before__email"))  # user.changed: {"before": {"email": …}}
FORMER_EMAIL_BY_PERSON = Lower(KT("details__before"))  # email.primary_changed: {"before": "…"}


class AuditEventQuerySet(models.QuerySet):
    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        for event in objs:
            event.set_written_mac()
        return super().bulk_create(objs, *args, **kwargs)

    def about_address(self, address: str) -> AuditEventQuerySet:
        """Events about whoever holds the address (User.objects.holding_email, as the RA's user search finds
        them), or held it as their Care Identity e-mail until it was changed (an RA's request quotes the
        address the person used then; the change's event keeps it as `before`)."""
        address = address.strip().lower()
        holders = set(get_user_model().objects.holding_email(address).values_list("pk", flat=True))
        holders.update(AuditEvent.objects.alias(by_ra=FORMER_EMAIL_BY_RA, by_person=FORMER_EMAIL_BY_PERSON)
                       .filter(Q(event=Event.USER_CHANGED, by_ra=address)
                               | Q(event=Event.EMAIL_PRIMARY_CHANGED, by_person=address))
                       .order_by().values_list("subject_id", flat=True))
        return self.filter(subject_id__in=holders)


class AuditEvent(models.Model):
    """One thing that happened. Append-only: rows are never changed or deleted."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    event = models.CharField(max_length=64, choices=Event.choices)
    outcome = models.CharField(max_length=7, choices=Outcome.choices, default=Outcome.SUCCESS)
    # No index of their own: the (…, at) indexes below lead with them and serve every look-up by person
    # (a person's events, PROTECT's check); each index is written again by every event and every seal.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    subject = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events",
        db_index=False,
    )
    ip = models.GenericIPAddressField("IP address", null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    method = models.CharField(max_length=32, blank=True)
    aal = models.PositiveSmallIntegerField("authentication assurance level (AAL)", null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)
    # The hash chain (audit/chain.py), set once by the sealer and never again.
    seq = models.BigIntegerField("place in the chain (seq)", null=True, blank=True, unique=True, editable=False)
    chain_hash = models.CharField(max_length=64, blank=True, editable=False, default="", db_default="")
    sealed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # HMAC of the content as careid inserted it (audit/mac.written_mac): what tells an event careid wrote
    # from one altered or slipped in by someone able to lift the triggers, chained or not.
    written_mac = models.CharField("written MAC", max_length=64, blank=True, editable=False, default="",
                                   db_default="")

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        triggers = [
            # PostgreSQL itself keeps the trail append-only, whoever connects and whatever they set (Refuse:
            # audit/triggers.py; Python's guard below is only for careid's own code): no DELETE and no UPDATE
            # but the one sealing. TRUNCATE needs the table's owner, which the application's role should not be
            # (README); a trail emptied or cut short is found against the chain head the sealer logs
            # (verify_audit --expect-head).
            Refuse(name="audit_no_delete", operation=pgtrigger.Delete),
            # Only the sealer gives an event its place: one inserted already sealed would become the head the
            # sealer chains every later event after (and verify would report events removed that never were).
            Refuse(name="audit_inserted_unsealed", operation=pgtrigger.Insert, condition=pgtrigger.Condition(
                "NEW.seq IS NOT NULL OR NEW.chain_hash IS DISTINCT FROM '' OR NEW.sealed_at IS NOT NULL")),
            Refuse(name="audit_sealed_once", operation=pgtrigger.Update, condition=pgtrigger.Condition(
                f"OLD.seq IS NOT NULL OR NEW.seq IS NULL OR {_chained('OLD')} IS DISTINCT FROM {_chained('NEW')}")),
            # Nor can the sealing UPDATE give a place of the updater's choosing: each follows one already given
            # when the statement ends (the sealer's batch, after the head), from 1. (A place right after the head
            # with a forged link is open to the application's role, but verify names that very event.)
            Check(name="audit_sealed_in_place", operation=pgtrigger.Update, when=pgtrigger.After,
                  condition=pgtrigger.Condition("OLD.seq IS NULL AND NEW.seq IS NOT NULL"), func=pgtrigger.Func(
                      "IF NEW.seq < 1 OR (NEW.seq > 1 AND NOT EXISTS (SELECT 1 FROM {meta.db_table} "
                      "WHERE seq = NEW.seq - 1)) THEN RAISE EXCEPTION 'pgtrigger: Cannot give % row % the place %, "
                      "which does not follow the chain', TG_TABLE_NAME, NEW.id, NEW.seq; END IF; RETURN NULL;")),
        ]
        indexes = [
            models.Index(fields=["subject", "-at"], name="audit_subject_at"),
            models.Index(fields=["actor", "-at"], name="audit_actor_at"),
            models.Index(fields=["event", "-at"], name="audit_event_at"),
            models.Index(FORMER_EMAIL_BY_RA, condition=Q(event="user.changed"), name="audit_former_email_by_ra"),
            models.Index(FORMER_EMAIL_BY_PERSON, condition=Q(event="email.primary_changed"), name="audit_former_email"),
        ]
        permissions = [
            ("view_all_auditevents", "Can read every audit event (not only their own actions)"),
            ("export_auditevent", "Can export the audit trail"),
        ]

    def __str__(self) -> str:
        return f"{timezone.localtime(self.at):%Y-%m-%d %H:%M:%S} {self.get_event_display()}"

    @property
    def failed_unsaid(self) -> bool:
        """A failure its name does not already tell ("Password reset", failed), for a "Failed" tag beside it."""
        return self.outcome == Outcome.FAILURE and self.event not in NAMED_FAILURES

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None and not self._state.adding:
            raise PermissionError("Audit events are append-only.")
        self.set_written_mac()
        super().save(*args, **kwargs)

    def set_written_mac(self) -> None:
        """Before the INSERT, however it is made (save or bulk_create): details the MAC can cover, and the MAC."""
        check_details(self.details)
        self.written_mac = self.content_mac()

    def content_mac(self) -> str:
        return written_mac(self.written_content())

    def written_content(self) -> dict[str, Any]:
        """The columns the MAC covers, as this event holds them: for one not saved, its fields' defaults where none
        was given (bulk onboarding starts each row's from one such event)."""
        return {name: getattr(self, name) for name in WRITTEN_FIELDS}

    def delete(self, *args, **kwargs):
        raise PermissionError("Audit events are append-only.")
