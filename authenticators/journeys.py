"""What any registration journey can run into, whatever the authenticator type.

Each is a class, raised fresh every time (a shared exception instance would collect every
traceback, and the requests in them, for the life of the process).
"""

from __future__ import annotations


class JourneyError(Exception):
    """The link or journey cannot go on; the page shows `title` and `message`, nothing changes."""

    title = "This registration cannot go on"
    message = "Ask for a new registration link."
    status = 400
    reason = "refused"  # for the audit trail
    expired = False  # audited as link.expired (its time ran out, or a suspension or closure ended it), else link.refused


class UnknownLink(JourneyError):
    title = "This registration link is not valid"
    message = "Check you copied the whole link from the email, or ask your registration authority for a new one."
    status = 404
    reason = "unknown link"


class ExpiredLink(JourneyError):
    title = "This registration link has expired"
    message = "Registration links only work for a short time. Ask for a new registration link."
    status = 410
    reason = "expired"
    expired = True


class RevokedLink(ExpiredLink):
    """Ended early by a suspension or closure (RegistrationLink.is_revoked): audited with its own reason, for the
    RA. The page is an expired link's: whoever holds the link (a stolen invitation, a mailbox someone else reads)
    is not told that the RA acted on the Care Identity, as no page tells a suspended or closed profile apart."""

    reason = "revoked"


class UsedLink(JourneyError):
    title = "This registration link has already been used"
    message = "Each registration link works once. Ask for a new registration link."
    status = 410
    reason = "already used"


class SpentInvitation(JourneyError):
    title = "This invitation has been used too many times"
    message = "Each invitation gives a limited number of registration links. Ask your registration authority for a new invitation."
    status = 410
    reason = "spent"


class OtherUser(JourneyError):
    title = "This registration link is for a different Care Identity"
    message = "You are signed in as someone else. Sign out, then open the link again."
    status = 403
    reason = "signed in as someone else"


class NotActive(JourneyError):
    title = "This Care Identity cannot register authenticators"
    message = "Contact your registration authority."
    status = 403
    reason = "profile not active"


class AlreadyRegistered(JourneyError):
    title = "You already have this authenticator registered"
    message = ("You can register one of each type of authenticator. To replace it, remove the old one from your "
               "profile first, or ask your registration authority to.")
    status = 409
    reason = "already registered"


class EmailInUse(JourneyError):
    title = "Your email address is in use on another Care Identity"
    message = (
        "Your Care Identity email address is in use on another Care Identity profile, so it cannot be verified on "
        "yours and this registration cannot go on for now. Contact your registration authority. When they have "
        "sorted it out, you can carry on from this step, or ask them for a new registration link."
    )
    status = 409
    reason = "email belongs to another Care Identity"


class NoJourney(JourneyError):
    title = "Your registration has ended"
    message = (
        "The registration was completed, has timed out or was started in another browser. "
        "Ask for a new registration link to start again."
    )
    status = 410
    reason = "no journey"


class RevokedJourney(NoJourney):
    """A registration under way ended by a suspension or closure: audited with its own reason (a journey that ran
    out its time is not), and the page is any ended journey's, for the reason RevokedLink's is."""

    reason = "revoked"
    expired = True


class SignInAgain(JourneyError):
    """A journey the person started signed in ("Add other authenticators") goes on only within 5 minutes of
    their last sign-in, as its start did: the page sends them to sign in again, then back to the step."""

    title = "Sign in again to carry on"
    message = "For your security, sign in again to add an authenticator."
    status = 403
    reason = "re-authentication needed"


class WrongStep(JourneyError):
    title = "You cannot do this step yet"
    message = "Finish the registration steps in order. Go back to the step you were on."
    status = 409
    reason = "step out of order"


class TooManyFailures(JourneyError):
    title = "You have entered a wrong code too many times"
    message = "For your security this registration has stopped. Ask for a new registration link to start again."
    status = 403
    reason = "too many failures"


class TooManyWrongEmails(TooManyFailures):
    title = "You have entered a wrong email address too many times"


class TooManyRefusals(TooManyFailures):
    title = "Your authenticator was refused too many times"
